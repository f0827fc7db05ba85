"""The pure core of certificate operations (node.certops): no broker, no database."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from cluster.labca import LabCA
from node import certops, certs
from node.catalog import (
    PHONE_INTERACTION,
    SERVICES,
    UNITS,
    KeyAlgo,
    Role,
    services_for,
    units_for,
)
from node.certops import AuthzKey, NodeInfo, PendingCSR, ServiceState
from node.clock import SimClock
from node.errors import BadInput, NotFound, Refused

ORIGIN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOW = ORIGIN + dt.timedelta(days=1)
FQDN = "cucm1.lab.example"
SUBJECT = certs.SubjectFields()


@pytest.fixture(scope="module")
def rsa_keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def ca() -> LabCA:
    lab_ca = LabCA(SimClock(ORIGIN))
    lab_ca.create_ca("Root", cn="Test Root")
    lab_ca.create_ca("Issuing", issuer="Root", cn="Test Issuing")
    return lab_ca


def pending(unit: str, key: certs.PrivateKey, *, multi: bool = False, san: list[str] | None = None) -> PendingCSR:
    spec = UNITS[unit]
    csr = certops.build_unit_csr(spec, certops.csr_cn(spec, FQDN, multi_server=multi), san or [FQDN], key, SUBJECT)
    return PendingCSR(unit, certs.csr_pem(csr).encode(), certs.key_pem(key), multi)


# --- CSR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["tomcat", "CallManager", "CAPF", "ipsec", "TVS", "cup-xmpp"])
def test_csr_carries_the_units_extensions(unit: str, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    """R-OP-CSR-1: a real PKCS#10 request, SHA-256, with the unit's key usage, EKU and SAN."""
    spec = UNITS[unit]
    csr = certops.build_unit_csr(spec, certs.unit_cn(spec, FQDN), [FQDN], rsa_keys[0], SUBJECT)
    assert csr.is_signature_valid
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    assert sorted(certs.key_usage_bits(csr)) == sorted(k.value for k in spec.ku)
    eku = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert (ExtendedKeyUsageOID.CLIENT_AUTH in eku) == (unit != "CAPF")
    assert certs.csr_san(csr) == [FQDN]
    assert csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca == (unit == "CAPF")


def test_ecdsa_csr_is_ec() -> None:
    """R-UNIT-1 / R-OP-CSR-1: -ECDSA units carry EC keys."""
    spec = UNITS["tomcat-ECDSA"]
    key = certs.new_private_key(KeyAlgo.EC, certops.choose_key_size(spec, None, None, regen=False))
    csr = certops.build_unit_csr(spec, certs.unit_cn(spec, FQDN), [FQDN], key, SUBJECT)
    assert certs.describe_csr(csr)["key_type"] == "EC"
    assert certs.common_name(csr.subject) == "cucm1-EC.lab.example"


def test_multi_server_san_lists_every_node_of_the_role() -> None:
    """R-OP-CSR-1: one multi-server CSR on the publisher names every node of its role in the SAN."""
    peers = [
        NodeInfo("cucm2", "cucm2.lab.example", "cucm"),
        NodeInfo("cucm3", "cucm3.lab.example", "cucm"),
        NodeInfo("imp1", "imp1.lab.example", "imp"),
    ]
    san = certops.csr_san(UNITS["tomcat"], FQDN, peers, Role.CUCM, multi_server=True)
    assert san == [FQDN, "cucm2.lab.example", "cucm3.lab.example"]
    assert certops.csr_cn(UNITS["tomcat"], FQDN, multi_server=True) == "cucm1-ms.lab.example"
    assert certops.csr_san(UNITS["tomcat"], FQDN, peers, Role.CUCM, multi_server=False) == [FQDN]


def test_multi_server_only_for_multi_server_units_on_the_publisher() -> None:
    """R-OP-CSR-1: multi-server CSRs exist for tomcat, CallManager, cup-xmpp(-s2s), on the publisher."""
    certops.check_multi_server(UNITS["CallManager"], publisher=True)
    certops.check_multi_server(UNITS["cup-xmpp-s2s-ECDSA"], publisher=True)
    with pytest.raises(Refused, match="not a multi-server unit"):
        certops.check_multi_server(UNITS["TVS"], publisher=True)
    with pytest.raises(Refused, match="on the publisher"):
        certops.check_multi_server(UNITS["tomcat"], publisher=False)


def test_capf_only_on_the_publisher_and_units_per_role() -> None:
    """R-OP-CSR-1: CAPF on the first node only; an IM&P node has no CallManager; trust stores are not units."""
    assert certops.identity_unit(Role.CUCM, True, "CAPF", op="csr gen").name == "CAPF"
    with pytest.raises(Refused, match="publisher"):
        certops.identity_unit(Role.CUCM, False, "CAPF", op="csr gen")
    with pytest.raises(NotFound, match="no 'CallManager'"):
        certops.identity_unit(Role.IMP, True, "CallManager", op="csr gen")
    with pytest.raises(NotFound, match="is a trust store"):
        certops.identity_unit(Role.CUCM, True, "tomcat-trust", op="regen")


def test_key_sizes() -> None:
    """R-UNIT-1, R-OP-REGEN-1: RSA 2048/3072/4096; regen keeps the length or goes to 3072/4096; EC curves."""
    tomcat, ec_unit = UNITS["tomcat"], UNITS["tomcat-ECDSA"]
    assert certops.choose_key_size(tomcat, None, 3072, regen=True) == 3072
    assert certops.choose_key_size(tomcat, 4096, 2048, regen=True) == 4096
    with pytest.raises(BadInput, match="not allowed"):
        certops.choose_key_size(tomcat, 2048, 3072, regen=True)
    with pytest.raises(BadInput, match="not allowed"):
        certops.choose_key_size(tomcat, 1024, None, regen=False)
    with pytest.raises(BadInput, match="not a number"):
        certops.choose_key_size(tomcat, "big", None, regen=False)
    assert certops.choose_key_size(ec_unit, 384, 256, regen=True) == 384
    with pytest.raises(BadInput, match="EC key"):
        certops.choose_key_size(ec_unit, 2048, 256, regen=False)


# --- identity upload -------------------------------------------------------------------------


def test_signed_certificate_installs_with_its_verified_chain(ca: LabCA, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    """R-OP-UPLOAD-3: key matches the pending CSR, chain verifies against the trust store (root and intermediate)."""
    req = pending("tomcat", rsa_keys[0])
    signed = ca.sign_csr("leaf", issuer="Issuing", csr_pem=req.csr_pem)
    trust = [ca.get("Root").cert, ca.get("Issuing").cert]
    plan = certops.plan_identity_upload(UNITS["tomcat"], [signed.cert], {"tomcat": req}, trust, NOW)
    assert plan.leaf == signed.cert
    assert [certs.common_name(c.subject) for c in plan.chain] == ["Test Issuing"]  # a trusted intermediate anchors
    assert plan.flags == ()
    # the extensions of the CSR survive signing (R-KU-1 not triggered)
    assert sorted(certs.key_usage_bits(signed.cert)) == sorted(k.value for k in UNITS["tomcat"].ku)


def test_refusals_name_the_reason(ca: LabCA, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    """R-OP-UPLOAD-1/3, R-UNIT-1: CA-only upload, untrusted issuer, missing intermediate, no/other CSR, key type."""
    tomcat = UNITS["tomcat"]
    req = pending("tomcat", rsa_keys[0])
    other = pending("CallManager", rsa_keys[1])
    signed = ca.sign_csr("leaf", issuer="Issuing", csr_pem=req.csr_pem)
    for_cm = ca.sign_csr("cm", issuer="Issuing", csr_pem=other.csr_pem)
    root, issuing = ca.get("Root").cert, ca.get("Issuing").cert
    full = [root, issuing]
    with pytest.raises(Refused, match="R-OP-UPLOAD-1"):
        certops.plan_identity_upload(tomcat, [root, issuing], {"tomcat": req}, full, NOW)
    with pytest.raises(Refused, match="is empty"):
        certops.plan_identity_upload(tomcat, [signed.cert], {"tomcat": req}, [], NOW)
    with pytest.raises(Refused, match="is not trusted"):
        certops.plan_identity_upload(tomcat, [signed.cert], {"tomcat": req}, [ca.create_ca("Other").cert], NOW)
    with pytest.raises(Refused, match="intermediate CA 'Test Issuing' is not in tomcat-trust"):
        certops.plan_identity_upload(tomcat, [signed.cert, issuing], {"tomcat": req}, [root], NOW)
    with pytest.raises(Refused, match="no pending CSR"):
        certops.plan_identity_upload(tomcat, [signed.cert], {}, full, NOW)
    with pytest.raises(Refused, match="issued for the CSR of 'CallManager'"):
        certops.plan_identity_upload(tomcat, [for_cm.cert], {"tomcat": req, "CallManager": other}, full, NOW)
    with pytest.raises(Refused, match="does not match the pending CSR"):
        certops.plan_identity_upload(tomcat, [for_cm.cert], {"tomcat": req}, full, NOW)
    with pytest.raises(Refused, match="carries an EC key"):
        certops.plan_identity_upload(UNITS["tomcat-ECDSA"], [signed.cert], {"tomcat": req}, full, NOW)
    with pytest.raises(Refused, match="expired"):
        certops.plan_identity_upload(tomcat, [signed.cert], {"tomcat": req}, full, NOW + dt.timedelta(days=400))


def test_data_encipherment_lost_is_flagged(ca: LabCA, rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    """R-KU-1: a CA that drops data encipherment: installed, flagged."""
    req = pending("CallManager", rsa_keys[1])
    signed = ca.sign_csr("cm", issuer="Root", csr_pem=req.csr_pem, drop_data_encipherment=True)
    assert "data_encipherment" not in certs.key_usage_bits(signed.cert)
    plan = certops.plan_identity_upload(
        UNITS["CallManager"], [signed.cert], {"CallManager": req}, [ca.get("Root").cert], NOW
    )
    assert plan.flags == ("R-KU-1",)
    assert certops.ku1_flagged("CallManager", signed.cert, "ca-signed")
    assert not certops.ku1_flagged("CAPF", signed.cert, "ca-signed")  # CAPF never had DE


def test_chain_with_a_loop_has_no_end_certificate(ca: LabCA) -> None:
    """R-OP-UPLOAD-1: two CAs that issue each other leave no application certificate."""
    a = ca.create_ca("LoopA", cn="Loop")
    b_key = ec.generate_private_key(ec.SECP256R1())
    b = certs.build_certificate(
        subject=SUBJECT.name("Loop B"),
        public_key=b_key.public_key(),
        issuer=a.cert.subject,
        issuer_key=a.key,  # type: ignore[arg-type]
        not_before=ORIGIN,
        not_after=ORIGIN + dt.timedelta(days=30),
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    a2 = certs.build_certificate(
        subject=a.cert.subject,
        public_key=a.cert.public_key(),  # type: ignore[arg-type]
        issuer=b.subject,
        issuer_key=b_key,
        not_before=ORIGIN,
        not_after=ORIGIN + dt.timedelta(days=30),
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    with pytest.raises(BadInput, match="loop"):
        certops.end_certificate([a2, b])


# --- regenerate and services -------------------------------------------------------------------


def test_regenerated_certificate_starts_after_the_one_it_replaces(ca: LabCA) -> None:
    """R-OP-REGEN-1 with R-REPL-8: the new certificate's validity starts later, so it replaces the old copy."""
    old = ca.get("Root").cert
    start = certops.regen_start(old, old.not_valid_before_utc)
    assert start > old.not_valid_before_utc
    assert certops.regen_start(None, NOW) == NOW


def test_advice_after_a_change() -> None:
    """R-SVC-1, R-OP-REGEN-2, R-OP-REGEN-3, R-OP-UPLOAD-4: services, CTL update, backup, phone interaction."""
    services = services_for(Role.CUCM, publisher=True)
    tomcat = certops.after_change_advice("tomcat", services, {}, regenerated=True)
    assert set(tomcat["restart"]) == {"Cisco Tomcat", "Cisco TFTP", "Cisco DRF Local", "Cisco DRF Master"}
    assert tomcat["ctl_update_needed"] is False and tomcat["phones"] is None
    assert tomcat["message"] == "Successfully regenerated certificate for tomcat."
    capf = certops.after_change_advice("CAPF", services, {}, regenerated=True)
    assert set(capf["restart"]) == {
        "Cisco Certificate Authority Proxy Function",
        "Cisco TFTP",
        "Cisco Trust Verification Service",
    }
    assert capf["ctl_update_needed"] and capf["backup_due"]
    assert capf["phones"] == "reset automatically"
    manual = certops.after_change_advice(
        "TVS", services, {PHONE_INTERACTION: "Reset Phones Manually"}, regenerated=True
    )
    assert manual["phones"] == "reset manually"
    assert set(manual["restart"]) == {"Cisco Trust Verification Service", "Cisco TFTP"}
    assert certops.after_change_advice("ipsec", services, {}, regenerated=True)["restart"] == [
        "Cisco DRF Local",
        "Cisco DRF Master",
        "IPsec Services",
    ]


def test_services_catalog_per_role() -> None:
    """R-SVC-1: services per role; every unit a service loads exists; CAPF and DRF Master on the publisher only."""
    for spec in SERVICES.values():
        assert all(u in UNITS for u in spec.loads)
    sub = {s.name for s in services_for(Role.CUCM, publisher=False)}
    assert "Cisco Certificate Authority Proxy Function" not in sub and "Cisco DRF Master" not in sub
    imp = {s.name for s in services_for(Role.IMP, publisher=True)}
    assert "Cisco XCP Authentication Service" in imp and "Cisco CallManager" not in imp
    # every identity unit of a role is loaded by some service of that role, except AUTHZ (its key is the OAuth key)
    for role in Role:
        loaded = {u for s in services_for(role, publisher=True) for u in s.loads}
        assert {u.name for u in units_for(role, publisher=True)} - loaded <= {"AUTHZ"}


def test_service_keeps_what_it_loaded_until_restarted() -> None:
    """R-OP-UPLOAD-4: pending items are those whose current value differs from what the service loaded."""
    tftp = SERVICES["Cisco TFTP"]
    loaded = certops.current_items(tftp, {"tomcat": "old", "CallManager": "cm"}, {})
    state = ServiceState("Cisco TFTP", "running", loaded, 0)
    assert certops.pending_items(state, loaded) == []
    now = certops.current_items(tftp, {"tomcat": "new", "CallManager": "cm"}, {})
    assert certops.pending_items(state, now) == ["tomcat"]
    tomcat = SERVICES["Cisco Tomcat"]
    extras = {certops.param_item("HTTPS Ciphers"): certops.material_sha("All Ciphers")}
    assert "param:HTTPS Ciphers" in certops.current_items(tomcat, {}, extras)


def test_params_are_checked() -> None:
    """R-OP-ECDSA, R-OP-REGEN-3: known parameters, known values."""
    assert certops.check_param("HTTPS Ciphers", "All Ciphers") == ("HTTPS Ciphers", "All Ciphers")
    with pytest.raises(NotFound):
        certops.check_param("Nope", "x")
    with pytest.raises(BadInput, match="use one of"):
        certops.check_param(PHONE_INTERACTION, "sometimes")


# --- tokens ------------------------------------------------------------------------------------


def test_tokens_refused_after_key_regeneration(rsa_keys: list[rsa.RSAPrivateKey]) -> None:
    """R-OP-AUTHZ: tokens verify with the current keys; after regeneration the old ones are refused."""
    enc = AuthzKey("encryption", b"k" * 32, '[1, 0, "pub"]')
    sig = AuthzKey("signing", certs.key_pem(rsa_keys[2]), '[1, 1, "pub"]')
    keys = {"encryption": enc, "signing": sig}
    refresh = certops.issue_token(enc, {"sub": "u"}, NOW)
    access = certops.issue_token(sig, {"sub": "u"}, NOW)
    assert certops.verify_token(refresh, keys, NOW)["sub"] == "u"
    assert certops.verify_token(access, keys, NOW)["sub"] == "u"
    new_keys = {**keys, "encryption": AuthzKey("encryption", b"n" * 32, '[2, 0, "pub"]')}
    with pytest.raises(Refused, match="regenerated"):
        certops.verify_token(refresh, new_keys, NOW)
    assert certops.verify_token(access, new_keys, NOW)["sub"] == "u"
    forged = access[:-4] + ("AAAA" if not access.endswith("AAAA") else "BBBB")
    with pytest.raises(Refused, match="signature"):
        certops.verify_token(forged, keys, NOW)
    with pytest.raises(Refused, match="expired"):
        certops.verify_token(access, keys, NOW + dt.timedelta(hours=2))
    with pytest.raises(BadInput, match="not a certsim token"):
        certops.verify_token("garbage", keys, NOW)


# --- listing fields ----------------------------------------------------------------------------


def test_listing_has_the_14su2_fields_and_extensions_by_oid(ca: LabCA) -> None:
    """R-OP-LIST: IssuerDN, Start Date, End Date, SubjectDN, Public Key, Modulus; extensions by OID."""
    d = certs.describe(ca.get("Root").cert)
    for name in ("IssuerDN", "Start Date", "End Date", "SubjectDN", "Public Key", "Modulus"):
        assert d[name], name
    assert d["Public Key"] == "RSA (2048 bits)"
    assert int(d["Modulus"], 16) == ca.get("Root").cert.public_key().public_numbers().n  # type: ignore[union-attr]
    assert d["extensions"]["2.5.29.19"] == {"critical": True, "value": "CA:TRUE"}
    assert "2.5.29.15" in d["extensions"]
