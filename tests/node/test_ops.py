"""node.ops: trust uploads and deletions planned without I/O, and the list filter (R-OP-*, R-REPL-4, -8)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node import certs
from node.catalog import UNITS, Role, Usage
from node.errors import BadInput, NotFound, Refused
from node.ops import (
    ListFilter,
    Put,
    Remove,
    UploadPlan,
    check_store,
    parse_when,
    plan_trust_delete,
    plan_trust_upload,
)

ORIGIN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
NOW = ORIGIN + 100 * DAY


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make(
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    *,
    start: dt.datetime = ORIGIN,
    days: int = 365,
    ca: bool = True,
    serial: int | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return certs.build_certificate(
        subject=subject,
        public_key=key.public_key(),
        issuer=subject,
        issuer_key=key,
        not_before=start,
        not_after=start + dt.timedelta(days=days),
        extensions=[(x509.BasicConstraints(ca=ca, path_length=None), True)],
        serial=serial,
    )


@pytest.fixture(scope="module")
def root(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make(key, "Lab Root CA")


@pytest.fixture(scope="module")
def leaf(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make(key, "ldap.lab.example", ca=False)


# --- store checks ----------------------------------------------------------------------------


def test_unknown_store(root: x509.Certificate) -> None:
    with pytest.raises(NotFound, match=r"unknown trust store 'bogus-trust'; known: .*tomcat-trust"):
        plan_trust_upload(Role.CUCM, "bogus-trust", [root], {}, NOW)


@pytest.mark.parametrize(
    ("role", "store"),
    [
        (Role.IMP, "CallManager-trust"),
        (Role.IMP, "CAPF-trust"),
        (Role.IMP, "Phone-SAST-trust"),
        (Role.CUCM, "cup-trust"),
    ],
)
def test_store_of_the_wrong_role(root: x509.Certificate, role: Role, store: str) -> None:
    """Role table: IM&P nodes have no CallManager/CAPF/Phone stores; Unified CM nodes have no cup stores."""
    with pytest.raises(NotFound, match=rf"a {role.value} node has no '{store}' store; it has: .*tomcat-trust"):
        plan_trust_upload(role, store, [root], {}, NOW)


def test_identity_unit_name_as_store_points_at_its_trust_store(root: x509.Certificate) -> None:
    """R-OP-UPLOAD-1: a CA goes to `<unit>-trust`, not to the unit itself."""
    with pytest.raises(NotFound, match=r"'tomcat' is an identity unit, not a trust store; .*'tomcat-trust'"):
        plan_trust_upload(Role.CUCM, "tomcat", [root], {}, NOW)


def test_identity_unit_without_trust_store(root: x509.Certificate) -> None:
    with pytest.raises(NotFound, match=r"^'ITLRecovery' is an identity unit, not a trust store$"):
        plan_trust_upload(Role.CUCM, "ITLRecovery", [root], {}, NOW)


def test_check_store_returns_the_spec() -> None:
    assert check_store(Role.IMP, "cup-xmpp-trust").name == "cup-xmpp-trust"


# --- uploads ---------------------------------------------------------------------------------


def test_upload_adds_to_the_store(root: x509.Certificate) -> None:
    """R-OP-UPLOAD-1: a CA root goes to the chosen trust store under its entry name."""
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [root], {}, NOW)
    assert plan == UploadPlan(puts=(Put("tomcat-trust", "Lab_Root_CA", certs.der_of(root)),), added=("Lab_Root_CA",))


def test_upload_of_a_chain_adds_every_certificate(key: ec.EllipticCurvePrivateKey, root: x509.Certificate) -> None:
    inter = make(key, "Lab Issuing CA")
    plan = plan_trust_upload(Role.IMP, "cup-trust", [root, inter], {}, NOW)
    assert plan.added == ("Lab_Root_CA", "Lab_Issuing_CA")
    assert [p.store for p in plan.puts] == ["cup-trust", "cup-trust"]


def test_expired_certificate_is_stored_with_a_warning(key: ec.EllipticCurvePrivateKey) -> None:
    """Issue 14: an expired trust certificate is uploaded, with a warning every door shows (notes)."""
    old = make(key, "Old CA", start=ORIGIN - 400 * DAY, days=30)
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [old], {}, NOW)
    assert plan.added == ("Old_CA",)
    assert len(plan.notes) == 1
    assert re.match(
        r"warning: certificate 1 \(Old CA\) is expired on 2024-12-27T00:00:00Z \(the lab clock is at 2026-04-11",
        plan.notes[0],
    )


def test_not_yet_valid_certificate_is_stored_with_a_warning(key: ec.EllipticCurvePrivateKey) -> None:
    future = make(key, "Future CA", start=NOW + DAY)
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [future], {}, NOW)
    assert plan.added == ("Future_CA",)
    assert plan.notes[0].startswith("warning: certificate 1 (Future CA) is not yet valid: it starts")


def test_one_bad_certificate_refuses_the_whole_upload(key: ec.EllipticCurvePrivateKey, root: x509.Certificate) -> None:
    twins = [make(key, "Twin CA", serial=1), make(key, "Twin CA", serial=2)]
    with pytest.raises(Refused, match=r"^certificate 3 \(Twin CA\): two different certificates named"):
        plan_trust_upload(Role.CUCM, "tomcat-trust", [root, *twins], {}, NOW)


def test_repl4_capf_ca_also_goes_to_callmanager_trust(root: x509.Certificate) -> None:
    """R-REPL-4: uploading the CAPF CA root also copies it into CallManager-trust."""
    plan = plan_trust_upload(Role.CUCM, "CAPF-trust", [root], {}, NOW)
    der = certs.der_of(root)
    assert plan.puts == (Put("CAPF-trust", "Lab_Root_CA", der), Put("CallManager-trust", "Lab_Root_CA", der))
    assert plan.added == ("Lab_Root_CA",)
    assert len(plan.notes) == 1
    assert plan.notes[0].startswith("R-REPL-4:")
    assert "CallManager-trust" in plan.notes[0]


def test_repl4_leaf_to_capf_trust_stays_there(leaf: x509.Certificate) -> None:
    """R-REPL-4: only a CA certificate is copied; a leaf uploaded to CAPF-trust stays in CAPF-trust."""
    plan = plan_trust_upload(Role.CUCM, "CAPF-trust", [leaf], {}, NOW)
    assert [p.store for p in plan.puts] == ["CAPF-trust"]
    assert plan.notes == ()


def test_repl4_applies_to_capf_trust_only(root: x509.Certificate) -> None:
    """R-REPL-4: a CA uploaded to tomcat-trust is not copied anywhere else by the planner."""
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [root], {}, NOW)
    assert [p.store for p in plan.puts] == ["tomcat-trust"]


def test_repl4_capf_ca_already_held_is_still_copied_to_callmanager_trust(root: x509.Certificate) -> None:
    """R-REPL-4: re-uploading a CAPF CA that CallManager-trust lacks fills the gap."""
    der = certs.der_of(root)
    plan = plan_trust_upload(Role.CUCM, "CAPF-trust", [root], {("CAPF-trust", "Lab_Root_CA"): der}, NOW)
    assert plan.unchanged == ("Lab_Root_CA",)
    assert plan.added == ()
    assert plan.puts == (Put("CallManager-trust", "Lab_Root_CA", der),)


def test_identical_certificate_is_unchanged(root: x509.Certificate) -> None:
    """R-REPL-8: the same certificate again is not a replacement; nothing is written."""
    existing = {("tomcat-trust", "Lab_Root_CA"): certs.der_of(root)}
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [root], existing, NOW)
    assert plan == UploadPlan(puts=(), unchanged=("Lab_Root_CA",))


def test_repl8_later_start_replaces(key: ec.EllipticCurvePrivateKey) -> None:
    """R-REPL-8: same name, different serial, later validity start: it replaces the existing one."""
    old = make(key, "Same Name CA", start=ORIGIN, serial=1)
    new = make(key, "Same Name CA", start=ORIGIN + DAY, serial=2)
    existing = {("tomcat-trust", "Same_Name_CA"): certs.der_of(old)}
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [new], existing, NOW)
    assert plan.replaced == ("Same_Name_CA",)
    assert plan.added == ()
    assert plan.puts == (Put("tomcat-trust", "Same_Name_CA", certs.der_of(new)),)


@pytest.mark.parametrize("offset", [dt.timedelta(0), -DAY], ids=["equal-start", "earlier-start"])
def test_repl8_earlier_or_equal_start_is_refused(key: ec.EllipticCurvePrivateKey, offset: dt.timedelta) -> None:
    """R-REPL-8: a same-name certificate whose validity does not start later is refused."""
    held = make(key, "Same Name CA", start=ORIGIN + DAY, serial=1)
    upload = make(key, "Same Name CA", start=ORIGIN + DAY + offset, serial=2)
    existing = {("CallManager-trust", "Same_Name_CA"): certs.der_of(held)}
    with pytest.raises(Refused, match=r"R-REPL-8") as info:
        plan_trust_upload(Role.CUCM, "CallManager-trust", [upload], existing, NOW)
    assert "CallManager-trust already holds 'Same_Name_CA' (serial 1," in info.value.message


def test_repl8_is_per_store(key: ec.EllipticCurvePrivateKey) -> None:
    """R-REPL-8: a newer same-name certificate in another store does not block this one."""
    held = make(key, "Same Name CA", start=ORIGIN + DAY, serial=1)
    upload = make(key, "Same Name CA", start=ORIGIN, serial=2)
    existing = {("Phone-trust", "Same_Name_CA"): certs.der_of(held)}
    plan = plan_trust_upload(Role.CUCM, "tomcat-trust", [upload], existing, NOW)
    assert plan.added == ("Same_Name_CA",)


def test_two_different_certificates_with_one_name_in_one_upload(key: ec.EllipticCurvePrivateKey) -> None:
    a = make(key, "Twin", serial=1)
    b = make(key, "Twin", serial=2)
    with pytest.raises(Refused, match=r"two different certificates named 'Twin' in one upload"):
        plan_trust_upload(Role.CUCM, "tomcat-trust", [a, b], {}, NOW)


# --- deletions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "unit"),
    [(Role.CUCM, "tomcat"), (Role.CUCM, "CAPF"), (Role.CUCM, "CallManager-ECDSA"), (Role.IMP, "cup")],
)
def test_rop_delete1_identity_units_cannot_be_deleted(role: Role, unit: str) -> None:
    """R-OP-DELETE-1: only trust certificates can be deleted; a system-generated identity cannot."""
    assert unit in UNITS
    with pytest.raises(Refused, match=r"cannot be deleted; only trust certificates can be deleted \(R-OP-DELETE-1\)"):
        plan_trust_delete(role, unit, "anything", {"anything"})


def test_delete_missing_name_is_not_found() -> None:
    with pytest.raises(NotFound, match=r"^no certificate named 'ghost' in tomcat-trust$"):
        plan_trust_delete(Role.CUCM, "tomcat-trust", "ghost.pem", {"Lab_Root_CA"})


@pytest.mark.parametrize("given", ["Lab_Root_CA", "Lab_Root_CA.pem", "Lab_Root_CA.der", "tomcat-trust/Lab_Root_CA.pem"])
def test_delete_accepts_file_names(given: str) -> None:
    """R-OP-DELETE-1 and the CLI's `set cert delete <store> <file>.pem`."""
    assert plan_trust_delete(Role.CUCM, "tomcat-trust", given, {"Lab_Root_CA"}) == Remove("tomcat-trust", "Lab_Root_CA")


def test_delete_from_unknown_or_foreign_store() -> None:
    with pytest.raises(NotFound, match=r"unknown trust store"):
        plan_trust_delete(Role.CUCM, "bogus-trust", "x", {"x"})
    with pytest.raises(NotFound, match=r"a imp node has no 'CAPF-trust' store"):
        plan_trust_delete(Role.IMP, "CAPF-trust", "x", {"x"})


# --- list filter -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def described(key: ec.EllipticCurvePrivateKey) -> dict[str, object]:
    return certs.describe(make(key, "cucm1.lab.example", start=ORIGIN, days=365))  # expires 2027-01-01


def test_from_args_empty_matches_everything(described: dict[str, object]) -> None:
    """R-OP-LIST: with no filters every certificate is listed."""
    f = ListFilter.from_args({"store": "", "usage": None, "cn": "", "key_type": "", "expires_before": ""})
    assert f == ListFilter()
    assert f.matches("tomcat-trust", Usage.TRUST, described)
    assert f.matches("tomcat", Usage.IDENTITY, described)


def test_from_args_parses_every_field() -> None:
    f = ListFilter.from_args(
        {
            "store": "tomcat-trust",
            "usage": "trust",
            "cn": "CUCM",
            "key_type": "ec",
            "expires_before": "2027-01-31",
            "expires_after": "2026-06-01T12:00:00Z",
        }
    )
    assert f == ListFilter(
        store="tomcat-trust",
        usage=Usage.TRUST,
        cn="CUCM",
        key_type="EC",
        expires_before=dt.datetime(2027, 1, 31, tzinfo=dt.UTC),
        expires_after=dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ({"usage": "own"}, r"unknown usage 'own'; use identity or trust"),
        ({"key_type": "DSA"}, r"unknown key type 'DSA'; use RSA or EC"),
        ({"key_type": "ed25519"}, r"unknown key type"),
        ({"expires_before": "31/01/2027"}, r"^expires_before: '31/01/2027' is not an ISO date"),
        ({"expires_after": "tomorrow"}, r"^expires_after: 'tomorrow' is not an ISO date"),
    ],
)
def test_from_args_bad_values(args: dict[str, str], pattern: str) -> None:
    """R-OP-LIST: a filter that cannot be understood is refused, naming the field."""
    with pytest.raises(BadInput, match=pattern):
        ListFilter.from_args(args)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (ListFilter(store="tomcat-trust"), True),
        (ListFilter(store="CallManager-trust"), False),
        (ListFilter(usage=Usage.TRUST), True),
        (ListFilter(usage=Usage.IDENTITY), False),
        (ListFilter(cn="LAB.EXAMPLE"), True),
        (ListFilter(cn="cucm2"), False),
        (ListFilter(key_type="EC"), True),
        (ListFilter(key_type="RSA"), False),
        (ListFilter(expires_before=dt.datetime(2027, 1, 2, tzinfo=dt.UTC)), True),
        (ListFilter(expires_before=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), False),  # strictly before
        (ListFilter(expires_after=dt.datetime(2026, 12, 31, tzinfo=dt.UTC)), True),
        (ListFilter(expires_after=dt.datetime(2027, 1, 1, tzinfo=dt.UTC)), False),  # strictly after
        (ListFilter(store="tomcat-trust", cn="cucm1", key_type="EC", usage=Usage.TRUST), True),
        (ListFilter(store="tomcat-trust", cn="cucm1", key_type="RSA", usage=Usage.TRUST), False),
    ],
)
def test_matches(described: dict[str, object], flt: ListFilter, expected: bool) -> None:
    """R-OP-LIST: filters on common name, expiry date, key type and usage."""
    assert flt.matches("tomcat-trust", Usage.TRUST, described) is expected


def test_matches_entry_without_cn(described: dict[str, object]) -> None:
    assert ListFilter(cn="x").matches("tomcat-trust", Usage.TRUST, {**described, "cn": None}) is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2027-01-31", dt.datetime(2027, 1, 31, tzinfo=dt.UTC)),
        ("2027-01-31T12:00:00Z", dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)),
        ("2027-01-31T12:00:00", dt.datetime(2027, 1, 31, 12, tzinfo=dt.UTC)),
        ("2027-01-31T12:00:00+02:00", dt.datetime(2027, 1, 31, 10, tzinfo=dt.UTC)),
    ],
)
def test_parse_when(raw: str, expected: dt.datetime) -> None:
    value = parse_when(raw)
    assert value.tzinfo is not None
    assert value == expected
