"""cluster.labca: the lab CA makes real roots, intermediates and leaves dated by the simulated clock."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.labca import Issued, LabCA
from node import certs
from node.catalog import EKU, KU, KeyAlgo
from node.clock import SimClock
from node.errors import BadInput, NotFound

ORIGIN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SLACK = dt.timedelta(minutes=1)  # the SimClock runs at wall speed while the tests run


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


@pytest.fixture(scope="module")
def ca() -> LabCA:
    lab = LabCA(SimClock(ORIGIN))
    lab.create_ca("root", cn="Lab Root CA")  # default: RSA 2048, ten years
    lab.create_ca("inter", issuer="root", key_algo=KeyAlgo.EC)
    lab.issue("leaf", issuer="inter", key_algo=KeyAlgo.EC)
    lab.issue(
        "multi",
        issuer="inter",
        cn="cucm-pub.lab.example",
        san=["cucm-pub.lab.example", "cucm-sub1.lab.example"],
        key_algo=KeyAlgo.EC,
        key_size=384,
        eku=[EKU.SERVER],
        ku=[KU.DS],
        days=90,
    )
    return lab


@pytest.fixture(scope="module")
def root(ca: LabCA) -> Issued:
    return ca.get("root")


@pytest.fixture(scope="module")
def inter(ca: LabCA) -> Issued:
    return ca.get("inter")


@pytest.fixture(scope="module")
def leaf(ca: LabCA) -> Issued:
    return ca.get("leaf")


def assert_started_about(cert: x509.Certificate, expected: dt.datetime) -> None:
    assert expected - SLACK <= cert.not_valid_before_utc <= expected + SLACK


# --- CAs -------------------------------------------------------------------------------------


def test_root_ca(root: Issued) -> None:
    """R-OP-UPLOAD-1: a CA root carries CA:TRUE and keyCertSign, so it belongs in a trust store."""
    cert = root.cert
    assert root.is_ca
    assert certs.is_self_signed(cert)
    assert certs.key_type(cert) == ("RSA", 2048)
    assert isinstance(root.key, rsa.RSAPrivateKey)
    assert root.chain == ()
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical is True
    assert (bc.value.ca, bc.value.path_length) == (True, None)
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical is True
    assert (ku.value.key_cert_sign, ku.value.crl_sign, ku.value.digital_signature) == (True, True, True)
    assert ku.value.key_encipherment is False
    ski = ext(cert, x509.SubjectKeyIdentifier).value
    assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)


def test_root_subject_uses_the_lab_ca_fields(root: Issued) -> None:
    subject = root.cert.subject
    assert certs.common_name(subject) == "Lab Root CA"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "certsim lab CA"
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "PKI"


def test_ca_is_backdated_five_minutes(root: Issued) -> None:
    """So that "now" is inside the validity window at once, as real CAs do."""
    assert_started_about(root.cert, ORIGIN - dt.timedelta(minutes=5))
    assert root.cert.not_valid_before_utc.microsecond == 0
    assert certs.validity_problem(root.cert, ORIGIN) is None


def test_intermediate_ca(inter: Issued, root: Issued) -> None:
    cert = inter.cert
    assert inter.is_ca
    assert certs.common_name(cert.subject) == "inter"  # the name is the default CN
    assert cert.issuer == root.cert.subject
    cert.verify_directly_issued_by(root.cert)
    assert certs.is_self_signed(cert) is False
    assert ext(cert, x509.BasicConstraints).value.path_length == 0
    assert inter.chain == (root.cert,)
    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(root.cert, x509.SubjectKeyIdentifier).value.digest
    assert certs.key_type(cert) == ("EC", 256)


# --- leaves ----------------------------------------------------------------------------------


def test_leaf_defaults(leaf: Issued, inter: Issued, root: Issued) -> None:
    cert = leaf.cert
    assert not leaf.is_ca
    assert ext(cert, x509.BasicConstraints).value.ca is False
    cert.verify_directly_issued_by(inter.cert)
    assert leaf.chain == (inter.cert, root.cert)
    eku = ext(cert, x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = ext(cert, x509.KeyUsage).value
    assert (ku.digital_signature, ku.key_encipherment, ku.data_encipherment, ku.key_agreement) == (
        True,
        True,
        True,
        True,
    )
    assert ku.key_cert_sign is False
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["leaf"]  # defaults to the CN
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        leaf.key.public_key()  # type: ignore[arg-type]
    )
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=365)


def test_leaf_options(ca: LabCA) -> None:
    cert = ca.get("multi").cert
    assert certs.common_name(cert.subject) == "cucm-pub.lab.example"
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cucm-pub.lab.example", "cucm-sub1.lab.example"]
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = ext(cert, x509.KeyUsage).value
    assert (ku.digital_signature, ku.key_encipherment, ku.key_agreement) == (True, False, False)
    assert certs.key_type(cert) == ("EC", 384)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90)


def test_issued_key_matches_certificate(leaf: Issued) -> None:
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    assert leaf.key.public_key() == leaf.cert.public_key()


# --- validity windows on the simulated clock -------------------------------------------------


def test_future_and_expired_windows() -> None:
    clock = SimClock(ORIGIN)
    lab = LabCA(clock)
    lab.create_ca("root", key_algo=KeyAlgo.EC)
    future = lab.issue("future", issuer="root", key_algo=KeyAlgo.EC, starts_in_days=10)
    expired = lab.issue("old", issuer="root", key_algo=KeyAlgo.EC, starts_in_days=-400, days=30)
    assert_started_about(future.cert, ORIGIN + dt.timedelta(days=10))  # no back-dating when not "now"
    problem = certs.validity_problem(future.cert, clock.now())
    assert problem is not None
    assert problem.startswith("not yet valid")
    problem = certs.validity_problem(expired.cert, clock.now())
    assert problem is not None
    assert problem.startswith("expired on")


def test_windows_follow_the_lab_clock() -> None:
    clock = SimClock(ORIGIN)
    lab = LabCA(clock)
    clock.advance(dt.timedelta(days=100))
    ca = lab.create_ca("root", key_algo=KeyAlgo.EC)
    assert_started_about(ca.cert, ORIGIN + dt.timedelta(days=100) - dt.timedelta(minutes=5))


# --- registry and refusals -------------------------------------------------------------------


def test_get_unknown_names_the_known_ones(ca: LabCA) -> None:
    with pytest.raises(NotFound, match=r"no certificate named 'ghost' \(known: inter, leaf, multi, root\)"):
        ca.get("ghost")


def test_get_on_an_empty_lab_ca() -> None:
    with pytest.raises(NotFound, match=r"\(known: none yet\)"):
        LabCA(SimClock(ORIGIN)).get("root")


def test_duplicate_name_is_refused(ca: LabCA) -> None:
    with pytest.raises(BadInput, match=r"already has a certificate named 'root'"):
        ca.create_ca("root")
    with pytest.raises(BadInput, match=r"already has a certificate named 'leaf'"):
        ca.issue("leaf", issuer="inter")


def test_a_leaf_cannot_issue(ca: LabCA) -> None:
    with pytest.raises(BadInput, match=r"'leaf' is not a CA and cannot issue certificates"):
        ca.issue("child", issuer="leaf", key_algo=KeyAlgo.EC)
    with pytest.raises(BadInput, match=r"'leaf' is not a CA"):
        ca.create_ca("sub-ca", issuer="leaf", key_algo=KeyAlgo.EC)
    assert "child" not in ca.items
    assert "sub-ca" not in ca.items


def test_issue_from_unknown_issuer(ca: LabCA) -> None:
    with pytest.raises(NotFound, match=r"no certificate named 'nobody'"):
        ca.issue("orphan", issuer="nobody", key_algo=KeyAlgo.EC)


def test_custom_subject_fields() -> None:
    lab = LabCA(SimClock(ORIGIN), certs.SubjectFields(organization="Example", org_unit="Sec", country="DE"))
    cert = lab.create_ca("root", key_algo=KeyAlgo.EC).cert
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example"
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "DE"


# --- encodings -------------------------------------------------------------------------------


def test_pem_der_and_pkcs7_encodings_load_back(leaf: Issued, inter: Issued, root: Issued) -> None:
    """R-OP-DOWNLOAD and R-OP-UPLOAD-2: what the lab CA hands out is what an upload accepts."""
    assert certs.load_certificates(leaf.pem()) == [leaf.cert]
    assert certs.load_certificates(leaf.pem(with_chain=True)) == [leaf.cert, inter.cert, root.cert]
    assert certs.load_certificates(leaf.der()) == [leaf.cert]
    assert leaf.pkcs7().startswith(b"-----BEGIN PKCS7-----")
    assert set(certs.load_certificates(leaf.pkcs7())) == {leaf.cert, inter.cert, root.cert}
    assert set(certs.load_certificates(leaf.pkcs7(der=True))) == {leaf.cert, inter.cert, root.cert}
    assert certs.load_certificates(root.pkcs7(der=True)) == [root.cert]


def test_signed_csr_carries_the_ocsp_responder_in_its_aia(ca: LabCA) -> None:
    """R-OCSP-1: a CSR signed by the lab CA can name the lab's OCSP responder in its AIA."""
    ca.create_ca("AiaRoot")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = certs.build_csr(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cucm1.lab.example")]), key=key, extensions=[]
    )
    url = "http://127.0.0.1:8080/ocsp"
    issued = ca.sign_csr("with-aia", issuer="AiaRoot", csr_pem=certs.csr_pem(csr).encode(), ocsp_url=url)
    aia = ext(issued.cert, x509.AuthorityInformationAccess).value
    assert [d.access_location.value for d in aia] == [url]
    plain = ca.sign_csr("without-aia", issuer="AiaRoot", csr_pem=certs.csr_pem(csr).encode())
    with pytest.raises(x509.ExtensionNotFound):
        plain.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
