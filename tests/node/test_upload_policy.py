"""Upload policy (issue 14): signatures an upload can prove are checked, chains neither loop nor run
deep, SAN lists are bounded, and certificate text is safe to print everywhere it is described."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node import certs
from node.errors import BadInput
from node.safetext import is_safe, safe_lines, safe_text

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(12)]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = True,
    san: list[str] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(*items: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)


def _tampered(cert: x509.Certificate) -> x509.Certificate:
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature value: the certificate still parses
    return x509.load_der_x509_certificate(bytes(der))


def test_good_chain_is_accepted() -> None:
    root = _cert("Root", KEYS[0], "Root", KEYS[0])
    mid = _cert("Mid", KEYS[1], "Root", KEYS[0])
    leaf = _cert("host.lab.example", KEYS[2], "Mid", KEYS[1], ca=False, san=["host.lab.example"])
    assert certs.load_certificates(_pem(leaf, mid, root)) == [leaf, mid, root]


def test_self_signed_certificate_whose_signature_does_not_verify_is_refused() -> None:
    """A self-signed certificate must verify with its own key (was: accepted without a word)."""
    forged = _tampered(_cert("Root", KEYS[0], "Root", KEYS[0]))
    with pytest.raises(BadInput, match=r"certificate 1 \(Root\): its self-signature does not verify"):
        certs.load_certificates(_pem(forged))


def test_self_signed_subject_signed_by_another_key_is_refused() -> None:
    impostor = _cert("Root", KEYS[0], "Root", KEYS[3])  # says it issued itself; another key signed it
    with pytest.raises(BadInput, match="self-signature does not verify"):
        certs.load_certificates(_pem(impostor))


def test_chain_link_that_does_not_verify_is_refused() -> None:
    """Each link of an uploaded chain is checked against the issuer the upload carries."""
    root = _cert("Root", KEYS[0], "Root", KEYS[0])
    mid = _cert("Mid", KEYS[1], "Root", KEYS[4])  # names Root as issuer, signed by someone else
    with pytest.raises(BadInput, match=r"certificate 1 \(Mid\): its signature does not verify against its issuer"):
        certs.load_certificates(_pem(mid, root))


def test_chain_whose_issuers_loop_is_refused() -> None:
    a = _cert("Alpha", KEYS[5], "Beta", KEYS[6])
    b = _cert("Beta", KEYS[6], "Alpha", KEYS[5])
    with pytest.raises(BadInput, match=r"the chain's issuers loop \((Alpha -> Beta -> Alpha|Beta -> Alpha -> Beta)\)"):
        certs.load_certificates(_pem(a, b))


def test_chain_deeper_than_the_limit_is_refused() -> None:
    chain = [_cert("C0", KEYS[0], "C0", KEYS[0])]
    for i in range(1, certs.MAX_CHAIN_DEPTH + 2):
        chain.append(_cert(f"C{i}", KEYS[i], f"C{i - 1}", KEYS[i - 1]))
    with pytest.raises(BadInput, match=f"a chain of more than {certs.MAX_CHAIN_DEPTH} certificates"):
        certs.load_certificates(_pem(*reversed(chain)))
    certs.load_certificates(_pem(*reversed(chain[: certs.MAX_CHAIN_DEPTH])))  # at the limit: fine


def test_san_list_is_bounded() -> None:
    """A certificate with tens of thousands of SANs is refused (was: accepted)."""
    many = _cert("big", KEYS[7], "big", KEYS[7], ca=False, san=[f"h{i}.lab.example" for i in range(20_000)])
    with pytest.raises(BadInput, match=r"20,000 subject alternative names; the limit is 256"):
        certs.load_certificates(_pem(many))
    ok = _cert("ok", KEYS[7], "ok", KEYS[7], ca=False, san=[f"h{i}.lab.example" for i in range(certs.MAX_SAN_ENTRIES)])
    assert certs.load_certificates(_pem(ok)) == [ok]


HOSTILE = "evil\n[bold]x\x1b[2J\x1b]0;pwned\x07\u202eRTL\u200b\\end"


def test_safe_text_escapes_controls_and_keeps_text() -> None:
    shown = safe_text(HOSTILE)
    assert shown == "evil\\n[bold]x\\x1b[2J\\x1b]0;pwned\\x07\\u202eRTL\\u200b\\end"
    assert is_safe(shown)
    assert safe_text(shown) == shown  # idempotent: a door showing node text again escapes nothing twice
    assert safe_text("Zürich 東京 CA") == "Zürich 東京 CA"
    assert safe_text(None) == ""


def test_describe_shows_hostile_certificate_text_escaped() -> None:
    """Subject, issuer, CN and SAN of a hostile certificate come out of describe() safe to print."""
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, HOSTILE, _validate=False)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(x509.Name(attrs))
        .public_key(KEYS[8].public_key())
        .serial_number(1)
        .not_valid_before(START)
        .not_valid_after(START + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a\nb.example")]), critical=False)
        .sign(KEYS[8], hashes.SHA256())
    )
    d = certs.describe(cert)
    for key in ("cn", "subject", "issuer", "issuer_cn", "SubjectDN", "IssuerDN"):
        assert is_safe(d[key]), (key, d[key])
        assert "\x1b" not in d[key] and "\n" not in d[key]
    assert all(is_safe(v["value"]) for v in d["extensions"].values())
    assert certs.cert_san(cert) == ["a\\nb.example"]
    assert "\n" not in certs.entry_name(cert)


def test_served_chain_is_the_intermediates_up_to_the_root() -> None:
    """What the HTTPS door serves after the leaf: each verified issuer from the trust store, no root."""
    from node.certops import served_chain

    root = _cert("Root", KEYS[0], "Root", KEYS[0])
    mid1 = _cert("Mid1", KEYS[1], "Root", KEYS[0])
    mid2 = _cert("Mid2", KEYS[2], "Mid1", KEYS[1])
    leaf = _cert("host", KEYS[3], "Mid2", KEYS[2], ca=False)
    impostor = _cert("Mid2", KEYS[4], "Root", KEYS[0])  # same name, another key: does not sign the leaf
    assert served_chain(leaf, [leaf, impostor, root, mid1, mid2]) == [mid2, mid1]
    assert served_chain(root, [root]) == []
    assert served_chain(leaf, [root]) == []


def test_node_errors_show_quoted_input_escaped_and_keep_their_lines() -> None:
    """An error that quotes what it was given (an unknown store named with an escape sequence) is shown
    escaped at every door; a help text's own line breaks stay (node.errors through safe_lines)."""
    error = BadInput("unknown trust store '\x1b[2J\x07'")
    assert error.message == "unknown trust store '\\x1b[2J\\x07'" == str(error)
    assert BadInput("Syntax:\n  show cert list own|trust").message == "Syntax:\n  show cert list own|trust"
    assert safe_lines("a\x1b\nb\r") == "a\\x1b\nb\\r"
