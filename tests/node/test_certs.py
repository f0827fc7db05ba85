"""node.certs: parsing uploads (R-OP-UPLOAD-2), naming, describing, and building identity certificates."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import random
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.labca import Issued, LabCA
from node import certs
from node.catalog import EKU_OIDS, IDENTITY_VALIDITY_DAYS, KU, UNITS, KeyAlgo
from node.clock import SimClock
from node.errors import BadInput

ORIGIN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


# --- DER helpers (to craft structures cryptography refuses to build) -------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _oid(dotted: str) -> bytes:
    first, second, *rest = (int(p) for p in dotted.split("."))
    out = bytearray([40 * first + second])
    for part in rest:
        chunk = [part & 0x7F]
        value = part >> 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def empty_pkcs7_der() -> bytes:
    """A PKCS#7 signed-data ContentInfo with no certificates and no signers."""
    signed_data = _tlv(
        0x30,
        _tlv(0x02, b"\x01")  # version
        + _tlv(0x31, b"")  # digestAlgorithms
        + _tlv(0x30, _oid("1.2.840.113549.1.7.1"))  # contentInfo: data, no content
        + _tlv(0x31, b""),  # signerInfos
    )
    return _tlv(0x30, _oid("1.2.840.113549.1.7.2") + _tlv(0xA0, signed_data))


def pem_block(label: str, der: bytes, end_label: str | None = None) -> bytes:
    body = base64.encodebytes(der)
    return f"-----BEGIN {label}-----\n".encode() + body + f"-----END {end_label or label}-----\n".encode()


def name(cn: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certsim tests")]
    if cn is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def self_signed(
    key: certs.PrivateKey,
    subject: x509.Name,
    *,
    start: dt.datetime = ORIGIN,
    days: int = 30,
    serial: int | None = None,
    extensions: list[tuple[x509.ExtensionType, bool]] | None = None,
) -> x509.Certificate:
    return certs.build_certificate(
        subject=subject,
        public_key=key.public_key(),  # type: ignore[arg-type]
        issuer=subject,
        issuer_key=key,
        not_before=start,
        not_after=start + dt.timedelta(days=days),
        extensions=extensions or [],
        serial=serial,
    )


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> LabCA:
    lab = LabCA(SimClock(ORIGIN))
    lab.create_ca("root", cn="Lab Root CA")  # RSA 2048
    lab.create_ca("inter", issuer="root", cn="Lab Issuing CA", key_algo=KeyAlgo.EC)
    lab.issue("leaf", issuer="inter", cn="cucm1.lab.example", key_algo=KeyAlgo.EC)
    return lab


@pytest.fixture(scope="module")
def root(ca: LabCA) -> Issued:
    return ca.get("root")


@pytest.fixture(scope="module")
def leaf(ca: LabCA) -> Issued:
    return ca.get("leaf")


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key(root: Issued) -> certs.PrivateKey:
    return root.key  # reuse the lab root's RSA 2048 key: key generation is the slow part


def _chain(leaf: Issued) -> list[x509.Certificate]:
    return [leaf.cert, *leaf.chain]


# --- load_certificates: good inputs ----------------------------------------------------------


def test_load_single_pem(leaf: Issued) -> None:
    """R-OP-UPLOAD-2: one PEM certificate."""
    assert certs.load_certificates(leaf.pem()) == [leaf.cert]


def test_load_several_pem_with_text_around(leaf: Issued) -> None:
    """R-OP-UPLOAD-2: a PEM chain with explanatory text before, between and after the blocks."""
    a, b, c = (x.public_bytes(serialization.Encoding.PEM) for x in _chain(leaf))
    data = b"Subject: cucm1\nIssuer: Lab Issuing CA\n" + a + b"\nbag attributes\n" + b + b"\n\n" + c + b"trailer\n"
    assert certs.load_certificates(data) == _chain(leaf)


def test_load_pem_with_crlf_and_leading_whitespace(leaf: Issued) -> None:
    data = b"\r\n  " + leaf.pem().replace(b"\n", b"\r\n")
    assert certs.load_certificates(data) == [leaf.cert]


def test_load_removes_duplicates_keeping_order(leaf: Issued, root: Issued) -> None:
    data = leaf.pem() + root.pem() + leaf.pem()
    assert certs.load_certificates(data) == [leaf.cert, root.cert]


@pytest.mark.parametrize("label", ["X509 CERTIFICATE", "TRUSTED CERTIFICATE"])
def test_load_alternative_certificate_labels(leaf: Issued, label: str) -> None:
    assert certs.load_certificates(pem_block(label, leaf.der())) == [leaf.cert]


def test_load_der(leaf: Issued) -> None:
    """R-OP-UPLOAD-2: a DER certificate."""
    assert certs.load_certificates(leaf.der()) == [leaf.cert]


def test_load_pkcs7_pem(leaf: Issued) -> None:
    """R-OP-UPLOAD-2: a PKCS#7 chain in PEM."""
    data = pkcs7.serialize_certificates(_chain(leaf), serialization.Encoding.PEM)
    assert data.startswith(b"-----BEGIN PKCS7-----")
    assert set(certs.load_certificates(data)) == set(_chain(leaf))


def test_load_pkcs7_der(leaf: Issued) -> None:
    """R-OP-UPLOAD-2: the source also mentions DER PKCS#7."""
    data = pkcs7.serialize_certificates(_chain(leaf), serialization.Encoding.DER)
    assert set(certs.load_certificates(data)) == set(_chain(leaf))


@pytest.mark.parametrize("label", ["PKCS #7 SIGNED DATA", "CMS"])
def test_load_pkcs7_alternative_labels(leaf: Issued, label: str) -> None:
    der = pkcs7.serialize_certificates(_chain(leaf), serialization.Encoding.DER)
    assert set(certs.load_certificates(pem_block(label, der))) == set(_chain(leaf))


def test_load_pkcs7_inside_certificate_label(leaf: Issued) -> None:
    """A PKCS#7 bundle mislabelled CERTIFICATE is still read (DER fallback)."""
    der = pkcs7.serialize_certificates(_chain(leaf), serialization.Encoding.DER)
    assert set(certs.load_certificates(pem_block("CERTIFICATE", der))) == set(_chain(leaf))


def test_load_mixed_pem_and_pkcs7_blocks(leaf: Issued, root: Issued) -> None:
    p7 = pkcs7.serialize_certificates([leaf.cert], serialization.Encoding.PEM)
    assert certs.load_certificates(root.pem() + p7) == [root.cert, leaf.cert]


def test_load_exactly_fifty_certificates(ec_key: ec.EllipticCurvePrivateKey) -> None:
    many = [self_signed(ec_key, name(f"c{i}"), serial=i + 1) for i in range(certs.MAX_CERTS_PER_UPLOAD)]
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in many)
    assert certs.load_certificates(data) == many


# --- load_certificates: malformed inputs -----------------------------------------------------


@pytest.fixture(scope="module")
def bad_inputs(leaf: Issued, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, bytes]:
    pem = leaf.pem()
    der = leaf.der()
    rng = random.Random(20260101)
    rsa1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    dsa_key = dsa.generate_private_key(1024)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed448_key = ed448.Ed448PrivateKey.generate()

    def raw_self_signed(key: ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey, cn: str) -> bytes:
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(ORIGIN)
            .not_valid_after(ORIGIN + DAY)
            .sign(key, None)
        )
        return cert.public_bytes(serialization.Encoding.DER)

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("csr"))
        .sign(ec_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    many = b"".join(
        self_signed(ec_key, name(f"n{i}"), serial=1000 + i).public_bytes(serialization.Encoding.PEM)
        for i in range(certs.MAX_CERTS_PER_UPLOAD + 1)
    )
    p7_der = pkcs7.serialize_certificates([leaf.cert], serialization.Encoding.DER)
    return {
        "empty": b"",
        "whitespace": b"  \n\t\r\n  ",
        "garbage-text": b"hello, this is certainly not a certificate\n",
        "binary-not-asn1": b"\x04\x03abc\xff\xfe",
        "bad-base64-in-pem": b"-----BEGIN CERTIFICATE-----\n!!!not*base64@@@\n-----END CERTIFICATE-----\n",
        "begin-without-end": pem.replace(b"-----END CERTIFICATE-----", b""),
        "second-block-without-end": pem + pem.replace(b"-----END CERTIFICATE-----", b""),
        "mismatched-labels": pem_block("CERTIFICATE", der, end_label="PKCS7"),
        "private-key-block": certs.key_pem(ec_key),
        "csr-block": pem_block("CERTIFICATE REQUEST", csr),
        "private-key-after-good-cert": pem + certs.key_pem(ec_key),
        "empty-pem-block": b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "pem-with-garbage-der": pem_block("CERTIFICATE", bytes([0x30]) + rng.randbytes(200)),
        "pkcs7-label-holding-a-certificate": pem_block("PKCS7", der),
        "truncated-der": der[: len(der) // 2],
        "der-with-trailing-bytes": der + b"\x00\x00",
        "random-bytes-starting-0x30": bytes([0x30]) + rng.randbytes(400),
        "truncated-pkcs7-der": p7_der[:-40],
        "empty-pkcs7-der": empty_pkcs7_der(),
        "empty-pkcs7-pem": pem_block("PKCS7", empty_pkcs7_der()),
        "oversize": pem + b"#" * certs.MAX_UPLOAD_BYTES,
        "rsa-1024": self_signed(rsa1024, name("weak")).public_bytes(serialization.Encoding.PEM),
        "dsa": self_signed(dsa_key, name("dsa")).public_bytes(serialization.Encoding.DER),  # type: ignore[arg-type]
        "ed25519": raw_self_signed(ed_key, "ed25519"),
        "ed448-in-pem": pem_block("CERTIFICATE", raw_self_signed(ed448_key, "ed448")),
        "more-than-fifty": many,
    }


BAD_CASES: list[tuple[str, str]] = [
    ("empty", r"^empty input"),
    ("whitespace", r"^empty input"),
    ("garbage-text", r"neither PEM .* nor DER"),
    ("binary-not-asn1", r"neither PEM .* nor DER"),
    ("bad-base64-in-pem", r"^PEM block 1: bad base64 in the CERTIFICATE block"),
    ("begin-without-end", r"BEGIN line has no matching -----END line"),
    ("second-block-without-end", r"BEGIN line has no matching -----END line"),
    ("mismatched-labels", r"BEGIN CERTIFICATE does not match END PKCS7"),
    ("private-key-block", r"is a 'PRIVATE KEY', not a certificate"),
    ("csr-block", r"is a 'CERTIFICATE REQUEST', not a certificate"),
    ("private-key-after-good-cert", r"^PEM block 2 is a 'PRIVATE KEY'"),
    ("empty-pem-block", r"the CERTIFICATE block is empty"),
    ("pem-with-garbage-der", r"^PEM block 1: not a valid DER certificate or PKCS#7 bundle"),
    ("pkcs7-label-holding-a-certificate", r"^PEM block 1: malformed PKCS#7 bundle"),
    ("truncated-der", r"^DER input: not a valid DER certificate .*truncated or malformed"),
    ("der-with-trailing-bytes", r"^DER input: not a valid DER certificate"),
    ("random-bytes-starting-0x30", r"^DER input: not a valid DER certificate"),
    ("truncated-pkcs7-der", r"^DER input: not a valid DER certificate"),
    ("empty-pkcs7-der", r"PKCS#7 bundle contains no certificates"),
    ("empty-pkcs7-pem", r"^PEM block 1: PKCS#7 bundle contains no certificates"),
    ("oversize", r"bytes; the limit is 1,048,576 bytes"),
    ("rsa-1024", r"RSA key of 1024 bits is below the minimum of 2048"),
    ("dsa", r"unsupported public key type DSAPublicKey"),
    ("ed25519", r"unsupported public key type Ed25519PublicKey"),
    ("ed448-in-pem", r"^PEM block 1: unsupported public key type Ed448PublicKey"),
    ("more-than-fifty", r"^51 certificates in one upload; the limit is 50"),
]


@pytest.mark.parametrize(("case", "pattern"), BAD_CASES, ids=[c for c, _ in BAD_CASES])
def test_malformed_input_is_refused_naming_the_problem(bad_inputs: dict[str, bytes], case: str, pattern: str) -> None:
    """R-OP-UPLOAD-2: anything that is not a PEM/DER certificate or PKCS#7 chain is refused, with a reason."""
    with pytest.raises(BadInput) as info:
        certs.load_certificates(bad_inputs[case])
    assert info.value.code == "bad-input"
    assert re.search(pattern, info.value.message), info.value.message
    assert str(info.value) == info.value.message


def test_malformed_cases_have_distinct_inputs(bad_inputs: dict[str, bytes]) -> None:
    assert {c for c, _ in BAD_CASES} == set(bad_inputs)
    assert len(set(bad_inputs.values())) == len(bad_inputs)


def test_openssl_trusted_certificate_with_aux_data(leaf: Issued) -> None:
    aux = _tlv(0x30, _tlv(0x30, _oid(ExtendedKeyUsageOID.SERVER_AUTH.dotted_string)))  # trust: serverAuth
    assert certs.load_certificates(pem_block("TRUSTED CERTIFICATE", leaf.der() + aux)) == [leaf.cert]


# --- names -----------------------------------------------------------------------------------


def _h(cn: str) -> str:
    return hashlib.sha256(cn.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("cn", "expected"),
    [
        ("cucm1.lab.example", "cucm1.lab.example"),
        ("Cisco Root CA 2048", "Cisco_Root_CA_2048"),
        ("Cisco_Root_CA_2048", "Cisco_Root_CA_2048_" + _h("Cisco_Root_CA_2048")),
        ("Lab Root CA / R1", "Lab_Root_CA_R1_" + _h("Lab Root CA / R1")),
        ("ACME Corp. (Issuing) CA", "ACME_Corp._Issuing_CA_" + _h("ACME Corp. (Issuing) CA")),
        ("..hidden..", "hidden_" + _h("..hidden..")),
        ("***", "cn_" + _h("***")),
        ("*.lab.example", "lab.example_" + _h("*.lab.example")),
        ("Zürich-CA_01", "Z_rich-CA_01_" + _h("Zürich-CA_01")),
        ("plain 0123456789abcdef", "plain_0123456789abcdef_" + _h("plain 0123456789abcdef")),
    ],
)
def test_entry_name_is_the_cn_or_a_file_safe_cn_with_its_hash(
    ec_key: ec.EllipticCurvePrivateKey, cn: str, expected: str
) -> None:
    """A plain CN is the file name, as in the product; a CN that had to change carries its hash."""
    assert certs.entry_name(self_signed(ec_key, name(cn))) == expected


def test_entry_name_without_cn_falls_back_to_serial(ec_key: ec.EllipticCurvePrivateKey) -> None:
    cert = self_signed(ec_key, name(None), serial=0xC0FFEE)
    assert certs.common_name(cert.subject) is None
    assert re.fullmatch(r"serial_c0ffee_[0-9a-f]{16}", certs.entry_name(cert))


@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
def test_entry_name_is_capped_at_128_characters(ec_key: ec.EllipticCurvePrivateKey) -> None:
    long_cn = x509.NameAttribute(NameOID.COMMON_NAME, "a" * 200, _validate=False)
    cert = self_signed(ec_key, x509.Name([long_cn]))
    assert certs.entry_name(cert) == "a" * 100 + "_" + _h("a" * 200)


@pytest.mark.parametrize(
    "pair",
    [
        ("*.lab.example", "_.lab.example"),
        ("*.lab.example", "lab.example"),
        ("Lab Root", "Lab_Root"),
        ("Lab Root", "Lab\nRoot"),
        ("x" * 129, "x" * 130),
        ("a_" + "0" * 16, "a\x00"),
        ("A 0123456789abcdef", "A_0123456789abcdef"),
    ],
)
@pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")
def test_distinct_common_names_never_share_an_entry_name(
    ec_key: ec.EllipticCurvePrivateKey, pair: tuple[str, str]
) -> None:
    """R-REPL-8 decides between certificates of one name: distinct subjects must never get one name."""
    a, b = (
        certs.entry_name(self_signed(ec_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)])))
        for cn in pair
    )
    assert a != b


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cn=st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), min_size=1, max_size=21))
def test_entry_name_is_always_file_safe(ec_key: ec.EllipticCurvePrivateKey, cn: str) -> None:
    entry = certs.entry_name(self_signed(ec_key, name(cn), serial=1))
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", entry)
    assert not (entry.startswith((".", "_")) or entry.endswith((".", "_")))
    assert "/" not in entry
    assert entry not in {".", ".."}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cucm1", "cucm1"),
        ("cucm1.pem", "cucm1"),
        ("cucm1.der", "cucm1"),
        ("tomcat-trust/cucm1.pem", "cucm1"),
        ("a/b/Lab_Root_CA.der", "Lab_Root_CA"),
        ("cucm1.lab.example.pem", "cucm1.lab.example"),
        ("cucm1.lab.example", "cucm1.lab.example"),
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert certs.normalize_name(raw) == expected


# --- describe and validity -------------------------------------------------------------------


def test_describe_leaf(leaf: Issued, ca: LabCA) -> None:
    """R-OP-LIST: the listing summary of a CA-signed EC leaf."""
    d = certs.describe(leaf.cert)
    assert d["name"] == "cucm1.lab.example"
    assert d["cn"] == "cucm1.lab.example"
    assert d["subject"].endswith(",CN=cucm1.lab.example")
    assert "CN=Lab Issuing CA" in d["issuer"]
    assert d["issuer_cn"] == "Lab Issuing CA"
    assert d["serial"] == f"{leaf.cert.serial_number:x}"
    assert d["not_before"] == leaf.cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert d["not_after"] == leaf.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (d["key_type"], d["key_bits"]) == ("EC", 256)
    assert d["is_ca"] is False
    assert d["self_signed"] is False
    assert d["sha256"] == leaf.cert.fingerprint(hashes.SHA256()).hex()
    assert len(d["sha256"]) == 64
    assert json.loads(json.dumps(d)) == d


def test_describe_root(root: Issued) -> None:
    d = certs.describe(root.cert)
    assert (d["key_type"], d["key_bits"]) == ("RSA", 2048)
    assert d["is_ca"] is True
    assert d["self_signed"] is True
    assert d["issuer"] == d["subject"]
    assert d["name"] == "Lab_Root_CA"


def test_is_self_signed_needs_a_matching_signature(ec_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = certs.build_certificate(
        subject=name("same"),
        public_key=ec_key.public_key(),
        issuer=name("same"),
        issuer_key=other,
        not_before=ORIGIN,
        not_after=ORIGIN + DAY,
        extensions=[],
    )
    assert forged.subject == forged.issuer
    assert certs.is_self_signed(forged) is False
    assert certs.is_self_signed(self_signed(ec_key, name("same"))) is True


def test_is_ca_false_without_basic_constraints(ec_key: ec.EllipticCurvePrivateKey) -> None:
    assert certs.is_ca(self_signed(ec_key, name("no-bc"))) is False


def test_fingerprint_and_der_helpers(leaf: Issued) -> None:
    der = certs.der_of(leaf.cert)
    assert certs.der_sha256(der) == certs.fingerprint(leaf.cert)
    assert certs.load_certificates(certs.pem_of(leaf.cert).encode()) == [leaf.cert]


def test_validity_problem(ec_key: ec.EllipticCurvePrivateKey) -> None:
    start = ORIGIN + 10 * DAY
    cert = self_signed(ec_key, name("window"), start=start, days=30)
    end = start + 30 * DAY
    assert certs.validity_problem(cert, start) is None
    assert certs.validity_problem(cert, end) is None
    assert certs.validity_problem(cert, start + DAY) is None
    early = certs.validity_problem(cert, start - dt.timedelta(seconds=1))
    assert early is not None
    assert early.startswith("not yet valid: it starts 2026-01-11T00:00:00Z")
    late = certs.validity_problem(cert, end + dt.timedelta(seconds=1))
    assert late is not None
    assert late.startswith("expired on 2026-02-10T00:00:00Z")


def test_iso_converts_to_utc() -> None:
    t = dt.datetime(2026, 1, 1, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    assert certs.iso(t) == "2026-01-01T00:00:00Z"


# --- building identity certificates ----------------------------------------------------------


def _ku_bits(cert: x509.Certificate) -> dict[str, bool]:
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    return {
        "digital_signature": ku.digital_signature,
        "key_encipherment": ku.key_encipherment,
        "data_encipherment": ku.data_encipherment,
        "key_agreement": ku.key_agreement,
        "key_cert_sign": ku.key_cert_sign,
        "crl_sign": ku.crl_sign,
        "content_commitment": ku.content_commitment,
    }


NOW = ORIGIN + dt.timedelta(hours=3, microseconds=123456)
FQDN = "cucm1.lab.example"


@pytest.fixture(scope="module")
def identities(rsa_key: certs.PrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, x509.Certificate]:
    made = {}
    for unit in ("tomcat", "tomcat-ECDSA", "CAPF", "TVS", "CallManager-ECDSA", "ipsec"):
        spec = UNITS[unit]
        key = ec_key if spec.key_algo is KeyAlgo.EC else rsa_key
        made[unit] = certs.self_signed_identity(
            spec, FQDN, key, NOW, certs.SubjectFields(), validity_days=IDENTITY_VALIDITY_DAYS
        )
    return made


@pytest.mark.parametrize("unit", ["tomcat", "tomcat-ECDSA", "CAPF", "TVS", "CallManager-ECDSA", "ipsec"])
def test_self_signed_identity_follows_the_catalog(identities: dict[str, x509.Certificate], unit: str) -> None:
    """DOMAIN.md key usage per unit and R-UNIT-1: KU, EKU, basic constraints and key type per the catalog."""
    spec = UNITS[unit]
    cert = identities[unit]
    assert certs.common_name(cert.subject) == certs.unit_cn(spec, FQDN)
    assert cert.issuer == cert.subject
    assert certs.is_self_signed(cert)
    assert certs.key_type(cert)[0] == spec.key_algo.value
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical is True
    assert bc.value.ca is spec.is_ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical is True
    bits = _ku_bits(cert)
    assert {k for k, on in bits.items() if on} - {"crl_sign"} == {b.value for b in spec.ku}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [EKU_OIDS[e] for e in spec.eku]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [FQDN]
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.not_valid_before_utc == NOW.replace(microsecond=0)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=IDENTITY_VALIDITY_DAYS)


def test_tomcat_identity(identities: dict[str, x509.Certificate]) -> None:
    """DOMAIN.md: tomcat is RSA with DS, KE, DE, KA and server, client, ipsec EKUs; not a CA."""
    cert = identities["tomcat"]
    assert certs.key_type(cert) == ("RSA", 2048)
    assert _ku_bits(cert) == {
        "digital_signature": True,
        "key_encipherment": True,
        "data_encipherment": True,
        "key_agreement": True,
        "key_cert_sign": False,
        "crl_sign": False,
        "content_commitment": False,
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    }
    assert certs.is_ca(cert) is False


def test_tomcat_ecdsa_identity_is_ec(identities: dict[str, x509.Certificate]) -> None:
    """R-UNIT-1: tomcat-ECDSA carries an EC key; its CN gets the -EC suffix."""
    cert = identities["tomcat-ECDSA"]
    assert certs.key_type(cert) == ("EC", 256)
    assert certs.common_name(cert.subject) == "cucm1-EC.lab.example"
    assert certs.describe(cert)["key_type"] == "EC"


def test_capf_identity_is_a_ca_with_key_cert_sign(identities: dict[str, x509.Certificate]) -> None:
    """DOMAIN.md: CAPF has EKU server and KU DS, keyCertSign; it signs phone LSCs, so it is a CA."""
    cert = identities["CAPF"]
    bits = _ku_bits(cert)
    assert bits["key_cert_sign"] is True
    assert bits["digital_signature"] is True
    assert bits["key_encipherment"] is False
    assert bits["key_agreement"] is False
    assert certs.is_ca(cert) is True
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert certs.common_name(cert.subject) == "CAPF-cucm1.lab.example"


def test_tvs_identity_has_no_key_agreement(identities: dict[str, x509.Certificate]) -> None:
    """DOMAIN.md: TVS has KU DS, KE, DE (no key agreement)."""
    bits = _ku_bits(identities["TVS"])
    assert bits["key_agreement"] is False
    assert (bits["digital_signature"], bits["key_encipherment"], bits["data_encipherment"]) == (
        True,
        True,
        True,
    )
    assert certs.common_name(identities["TVS"].subject) == "TVS-cucm1.lab.example"


def test_identity_subject_fields(rsa_key: certs.PrivateKey) -> None:
    fields = certs.SubjectFields(organization="Example", org_unit="", locality="Paris", state="IDF", country="FR")
    cert = certs.self_signed_identity(UNITS["ipsec"], FQDN, rsa_key, NOW, fields, validity_days=10)
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME) == []
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Example"
    assert subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "FR"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=10)


@pytest.mark.parametrize(
    ("unit", "fqdn", "expected"),
    [
        ("tomcat", "cucm1.lab.example", "cucm1.lab.example"),
        ("tomcat-ECDSA", "cucm1.lab.example", "cucm1-EC.lab.example"),
        ("TVS", "cucm1.lab.example", "TVS-cucm1.lab.example"),
        ("ITLRecovery", "cucm1.lab.example", "ITLRECOVERY_cucm1.lab.example"),
        ("cup-xmpp-s2s-ECDSA", "imp1.lab.example", "s2s-imp1-EC.lab.example"),
        ("CallManager", "cucm1", "cucm1"),
    ],
)
def test_unit_cn(unit: str, fqdn: str, expected: str) -> None:
    assert certs.unit_cn(UNITS[unit], fqdn) == expected


def test_unit_extensions_without_san() -> None:
    exts = certs.unit_extensions(UNITS["CallManager"], [])
    assert [type(e) for e, _ in exts] == [x509.BasicConstraints, x509.KeyUsage, x509.ExtendedKeyUsage]
    with_san = certs.unit_extensions(UNITS["CallManager"], ["a.example", "b.example"])
    san = with_san[-1][0]
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["a.example", "b.example"]


def test_key_pem_round_trip(ec_key: ec.EllipticCurvePrivateKey) -> None:
    pem = certs.key_pem(ec_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = certs.load_key(pem)
    assert loaded.public_key() == ec_key.public_key()


def test_load_key_refuses_other_key_types() -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(BadInput, match="unsupported private key type"):
        certs.load_key(pem)


@pytest.mark.parametrize(
    ("size", "curve"), [(256, "secp256r1"), (384, "secp384r1"), (521, "secp521r1"), (7, "secp256r1")]
)
def test_new_ec_key_curves(size: int, curve: str) -> None:
    key = certs.new_private_key(KeyAlgo.EC, size)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == curve


def test_new_rsa_key_size() -> None:
    key = certs.new_private_key(KeyAlgo.RSA, 2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048


def test_key_usage_helper_sets_crl_sign_with_key_cert_sign() -> None:
    ku = certs.key_usage([KU.DS, KU.KCS])
    assert (ku.digital_signature, ku.key_cert_sign, ku.crl_sign, ku.key_encipherment) == (
        True,
        True,
        True,
        False,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.text(st.sampled_from("aZ0._-*/ \n\x1b"), min_size=1, max_size=12),
    b=st.text(st.sampled_from("aZ0._-*/ \n\x1b"), min_size=1, max_size=12),
)
def test_entry_names_are_distinct_for_distinct_common_names(ec_key: ec.EllipticCurvePrivateKey, a: str, b: str) -> None:
    """Names never collide for distinct subjects (the production entry_name, over CNs made of the
    characters that sanitizing merges)."""
    names = [
        certs.entry_name(self_signed(ec_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), serial=1))
        for cn in (a, b)
    ]
    assert (names[0] == names[1]) == (a == b)
