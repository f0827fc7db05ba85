"""The catalog tables against DOMAIN.md: units, trust stores, replication policy, release profiles."""

from __future__ import annotations

import pytest

from node.catalog import (
    DEFAULT_RELEASE,
    DEFAULT_RSA_KEY_SIZE,
    EKU,
    EKU_OIDS,
    KU,
    MAX_CLUSTER_NODES,
    PEER_TRUST_UNITS,
    RELEASES,
    RSA_KEY_SIZES,
    STORES,
    UNITS,
    DeleteMode,
    KeyAlgo,
    Role,
    StorePolicy,
    replicated_stores,
    store_policy,
    stores_for,
    units_for,
)

ADD_EVERYWHERE = {"tomcat-trust", "CallManager-trust", "Phone-SAST-trust"}  # R-REPL-1
DELETE_EVERYWHERE = ADD_EVERYWHERE | {"CAPF-trust"}  # R-REPL-3
MODERN_RELEASES = [name for name, profile in RELEASES.items() if profile.delete_mode is DeleteMode.TOMBSTONE]

CUCM_UNITS = {
    "tomcat",
    "tomcat-ECDSA",
    "CallManager",
    "CallManager-ECDSA",
    "ipsec",
    "TVS",
    "ITLRecovery",
    "CAPF",
    "AUTHZ",
}
IMP_UNITS = {
    "cup",
    "cup-ECDSA",
    "cup-xmpp",
    "cup-xmpp-ECDSA",
    "cup-xmpp-s2s",
    "cup-xmpp-s2s-ECDSA",
    "ipsec",
    "tomcat",
    "tomcat-ECDSA",
}
CUCM_STORES = {
    "tomcat-trust",
    "CallManager-trust",
    "CAPF-trust",
    "Phone-SAST-trust",
    "ipsec-trust",
    "TVS-trust",
    "Phone-trust",
    "Phone-VPN-trust",
    "Phone-CTL-trust",
}
IMP_STORES = {"tomcat-trust", "cup-trust", "cup-xmpp-trust", "ipsec-trust"}

_S, _C, _I = EKU.SERVER, EKU.CLIENT, EKU.IPSEC
_FULL = {KU.DS, KU.KE, KU.DE, KU.KA}
# DOMAIN.md "Key usage per unit": unit -> (multi-server, EKU, KU)
KEY_USAGE_TABLE = {
    "CallManager": (True, {_S, _C}, _FULL),
    "CallManager-ECDSA": (True, {_S, _C}, _FULL),
    "CAPF": (False, {_S}, {KU.DS, KU.KCS}),
    "ipsec": (False, {_S, _C, _I}, _FULL),
    "tomcat": (True, {_S, _C, _I}, _FULL),
    "tomcat-ECDSA": (True, {_S, _C, _I}, _FULL),
    "TVS": (False, {_S, _C}, {KU.DS, KU.KE, KU.DE}),
    "cup": (False, {_S, _C, _I}, _FULL),
    "cup-ECDSA": (False, {_S, _C, _I}, _FULL),
    "cup-xmpp": (True, {_S, _C, _I}, _FULL),
    "cup-xmpp-ECDSA": (True, {_S, _C, _I}, _FULL),
    "cup-xmpp-s2s": (True, {_S, _C, _I}, _FULL),
    "cup-xmpp-s2s-ECDSA": (True, {_S, _C, _I}, _FULL),
}


def _names(items: object) -> set[str]:
    return {i.name for i in items}  # type: ignore[attr-defined]


# --- replication policy ---------------------------------------------------------------------


@pytest.mark.parametrize("store", sorted(ADD_EVERYWHERE))
def test_repl1_uploads_to_cluster_wide_stores_replicate(store: str) -> None:
    """R-REPL-1: uploads to tomcat-trust, CallManager-trust and Phone-SAST-trust go to every node."""
    assert STORES[store].replicate_add is True
    assert store_policy(store, RELEASES[DEFAULT_RELEASE]).replicate_add is True


def test_repl2_capf_trust_uploads_stay_local() -> None:
    """R-REPL-2: CAPF-trust uploads do not replicate."""
    assert STORES["CAPF-trust"].replicate_add is False
    for release in RELEASES.values():
        assert store_policy("CAPF-trust", release).replicate_add is False


@pytest.mark.parametrize("store", sorted(DELETE_EVERYWHERE))
def test_repl3_deletions_replicate(store: str) -> None:
    """R-REPL-3: deletions from CAPF-, tomcat-, CallManager- and Phone-SAST-trust reach every node."""
    assert STORES[store].replicate_delete is True
    policy = store_policy(store, RELEASES[DEFAULT_RELEASE])
    assert policy.replicate_delete is True
    assert policy.tombstone is True


@pytest.mark.parametrize("store", sorted(set(STORES) - DELETE_EVERYWHERE))
def test_repl7_other_stores_are_node_local(store: str) -> None:
    """R-REPL-7: stores not named by R-REPL-1..3 neither replicate uploads nor deletions."""
    spec = STORES[store]
    assert (spec.replicate_add, spec.replicate_delete) == (False, False)
    for release in RELEASES.values():
        assert store_policy(store, release) == StorePolicy(False, False, False)


def test_repl7_local_store_list_is_the_documented_one() -> None:
    """R-REPL-7: exactly ipsec-trust, TVS-trust, Phone-*-trust other than SAST, cup-trust, cup-xmpp-trust."""
    local = {name for name, s in STORES.items() if not (s.replicate_add or s.replicate_delete)}
    assert local == {
        "ipsec-trust",
        "TVS-trust",
        "Phone-trust",
        "Phone-VPN-trust",
        "Phone-CTL-trust",
        "cup-trust",
        "cup-xmpp-trust",
    }


def test_replication_policy_table_is_exact() -> None:
    """R-REPL-1, R-REPL-2, R-REPL-3, R-REPL-7: the whole (add, delete) table under a current release."""
    policies = {name: store_policy(name, RELEASES["15"]) for name in STORES}
    table = {name: (p.replicate_add, p.replicate_delete) for name, p in policies.items()}
    expected = {name: (name in ADD_EVERYWHERE, name in DELETE_EVERYWHERE) for name in CUCM_STORES | IMP_STORES}
    assert table == expected


def test_replicated_stores_are_those_with_any_replication() -> None:
    """R-REPL-1 and R-REPL-3: the stores whose changes ever travel on the bus."""
    assert set(replicated_stores()) == DELETE_EVERYWHERE


def test_repl4_capf_ca_is_also_placed_in_callmanager_trust() -> None:
    """R-REPL-4: a CA uploaded to CAPF-trust also goes to CallManager-trust; no other store copies."""
    assert STORES["CAPF-trust"].ca_also_into == ("CallManager-trust",)
    assert {name for name, s in STORES.items() if s.ca_also_into} == {"CAPF-trust"}
    # ... and CallManager-trust replicates, so the copy reaches every node (R-REPL-1)
    assert STORES["CallManager-trust"].replicate_add is True


@pytest.mark.parametrize("release", MODERN_RELEASES)
def test_repl9_current_releases_leave_tombstones(release: str) -> None:
    """R-REPL-9: from 11.0 a replicated deletion leaves a tombstone, so it is never undone."""
    for name, spec in STORES.items():
        policy = store_policy(name, RELEASES[release])
        assert policy.replicate_delete == spec.replicate_delete
        assert policy.tombstone == spec.replicate_delete


def test_repl9_release_10_5_deletes_locally_without_tombstones() -> None:
    """R-REPL-9: before 11.0 a deletion applies to one node only; uploads still replicate per R-REPL-1."""
    profile = RELEASES["10.5"]
    assert profile.delete_mode is DeleteMode.LOCAL
    for name, spec in STORES.items():
        policy = store_policy(name, profile)
        assert policy.replicate_delete is False
        assert policy.tombstone is False
        assert policy.replicate_add == spec.replicate_add


def test_release_profiles() -> None:
    """R-REPL-9 and R-REPL-6: the known releases, their delete modes and the 1800 s resync."""
    assert set(RELEASES) == {"15", "14", "12.5", "10.5"}
    assert DEFAULT_RELEASE in RELEASES
    assert set(MODERN_RELEASES) == {"15", "14", "12.5"}
    assert all(p.resync_interval_s == 1800 for p in RELEASES.values())
    assert all(p.name == name for name, p in RELEASES.items())


def test_store_policy_of_unknown_store_raises() -> None:
    with pytest.raises(KeyError):
        store_policy("no-such-trust", RELEASES["15"])


# --- units and stores per role --------------------------------------------------------------


def test_units_for_cucm_publisher() -> None:
    """R-NODE-2 and the role table: a Unified CM publisher holds all nine Unified CM units."""
    assert _names(units_for(Role.CUCM, publisher=True)) == CUCM_UNITS


def test_units_for_cucm_subscriber_has_no_capf() -> None:
    """Role table: CAPF is publisher only; ITLRecovery and AUTHZ are issued by the publisher."""
    names = _names(units_for(Role.CUCM, publisher=False))
    assert "CAPF" not in names
    assert names == CUCM_UNITS - {"CAPF", "ITLRecovery", "AUTHZ"}


@pytest.mark.parametrize("publisher", [True, False])
def test_units_for_imp(publisher: bool) -> None:
    """Role table: IM&P nodes hold the cup, cup-xmpp, cup-xmpp-s2s units plus ipsec and tomcat."""
    names = _names(units_for(Role.IMP, publisher=publisher))
    assert names == IMP_UNITS
    assert "CAPF" not in names


def test_only_capf_is_publisher_only() -> None:
    """Role table: CAPF (publisher only) is the one unit that exists on the first node only."""
    assert {u.name for u in UNITS.values() if u.publisher_only} == {"CAPF"}
    assert {u.name for u in UNITS.values() if u.publisher_issued} == {"ITLRecovery", "AUTHZ"}


def test_stores_for_each_role() -> None:
    """Role table: the trust stores of a Unified CM node and of an IM&P node."""
    assert _names(stores_for(Role.CUCM)) == CUCM_STORES
    assert _names(stores_for(Role.IMP)) == IMP_STORES


def test_ldap_trust_goes_to_tomcat_trust_on_both_roles() -> None:
    """R-UNIT-2: directory trust certificates go into tomcat-trust, which every node has."""
    assert STORES["tomcat-trust"].roles == frozenset({Role.CUCM, Role.IMP})


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_runit1_ecdsa_units_are_ec_others_rsa(unit: str) -> None:
    """R-UNIT-1: -ECDSA units carry EC keys; all others RSA."""
    expected = KeyAlgo.EC if unit.endswith("-ECDSA") else KeyAlgo.RSA
    assert UNITS[unit].key_algo is expected


def test_runit1_rsa_key_sizes() -> None:
    """R-UNIT-1: key lengths 2048, 3072, 4096."""
    assert RSA_KEY_SIZES == (2048, 3072, 4096)
    assert DEFAULT_RSA_KEY_SIZE in RSA_KEY_SIZES


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_unit_trust_store_exists_for_its_roles(unit: str) -> None:
    """R-OP-UPLOAD-1: a unit's `<unit>-trust` store exists in STORES on every role that has the unit."""
    spec = UNITS[unit]
    if spec.trust_store is None:
        assert unit in {"ITLRecovery", "AUTHZ"}
        return
    assert spec.trust_store in STORES
    assert spec.roles <= STORES[spec.trust_store].roles


def test_ecdsa_units_share_the_trust_store_of_their_rsa_twin() -> None:
    """Role table: CallManager-trust is shared by CallManager and CallManager-ECDSA (likewise tomcat, cup)."""
    for name, spec in UNITS.items():
        if name.endswith("-ECDSA"):
            twin = UNITS[name.removesuffix("-ECDSA")]
            assert spec.trust_store == twin.trust_store
            assert (spec.cn_prefix, spec.cn_suffix) != (twin.cn_prefix, twin.cn_suffix)


def test_unit_names_are_not_store_names() -> None:
    assert not set(UNITS) & set(STORES)
    assert all(name.endswith("-trust") for name in STORES)


@pytest.mark.parametrize("unit", sorted(KEY_USAGE_TABLE))
def test_key_usage_table(unit: str) -> None:
    """DOMAIN.md key usage per unit: multi-server flag, EKU and KU as the CSR extension lists give them."""
    multi, eku, ku = KEY_USAGE_TABLE[unit]
    spec = UNITS[unit]
    assert spec.multi_server is multi
    assert set(spec.eku) == eku
    assert set(spec.ku) == ku


def test_tvs_has_no_key_agreement_and_capf_is_a_ca() -> None:
    """DOMAIN.md key usage per unit: TVS lacks key agreement; CAPF signs (keyCertSign) and is a CA."""
    assert KU.KA not in UNITS["TVS"].ku
    assert KU.KCS in UNITS["CAPF"].ku
    assert UNITS["CAPF"].is_ca is True
    assert {u.name for u in UNITS.values() if u.is_ca} == {"CAPF"}


def test_eku_oids() -> None:
    """DOMAIN.md: serverAuth 1.3.6.1.5.5.7.3.1, clientAuth .2, ipsecEndSystem .5."""
    assert {e: o.dotted_string for e, o in EKU_OIDS.items()} == {
        EKU.SERVER: "1.3.6.1.5.5.7.3.1",
        EKU.CLIENT: "1.3.6.1.5.5.7.3.2",
        EKU.IPSEC: "1.3.6.1.5.5.7.3.5",
    }


def test_repl5_peer_trust_units() -> None:
    """R-REPL-5: each node's tomcat and tomcat-ECDSA certificates belong in its peers' tomcat-trust."""
    assert PEER_TRUST_UNITS == {"tomcat": "tomcat-trust", "tomcat-ECDSA": "tomcat-trust"}
    assert all(store in STORES and STORES[store].replicate_add for store in PEER_TRUST_UNITS.values())


def test_rnode1_cluster_size_limit() -> None:
    """R-NODE-1: real clusters have at most 21 servers."""
    assert MAX_CLUSTER_NODES == 21
