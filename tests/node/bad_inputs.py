"""A corpus of malformed and hostile inputs to the upload and certificate-operation paths.

``build_corpus`` makes every item from a lab CA and the node's pending CSRs (real X.509, no
files to go stale). Each item names the request, the node it goes to, and a piece of the
message the refusal must carry; the test checks that nothing changed on any node.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cluster.labca import LabCA
from node import certs
from node.catalog import KeyAlgo


@dataclass(frozen=True)
class BadInput:
    id: str
    node: str
    op: str
    args: dict[str, Any]
    expect: str  # a piece of the error message (case-insensitive)
    direct: bool = False  # bigger than a bus envelope may be: handed to the node's handler in-process


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _leaf(
    ca: LabCA,
    issuer: str,
    cn: str,
    key: certs.PrivateKey | ed25519.Ed25519PrivateKey,
    *,
    start: dt.datetime,
    days: int = 30,
    san: list[str] | None = None,
) -> x509.Certificate:
    parent = ca.get(issuer)
    assert parent.key is not None
    builder = (
        x509.CertificateBuilder()
        .subject_name(ca.subject.name(cn))
        .issuer_name(parent.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in (san or [cn])]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False)  # type: ignore[arg-type]
    )
    return builder.sign(parent.key, hashes.SHA256())


def build_corpus(ca: LabCA, now: dt.datetime, csrs: Mapping[str, str], pub: str, sub: str, imp: str) -> list[BadInput]:
    """``csrs`` maps unit -> pending CSR PEM on ``pub`` (tomcat and CallManager); the lab's
    tomcat-trust on ``pub`` holds ``Root`` but not ``Issuing``."""
    root = ca.get("Root")
    issuing = ca.get("Issuing")
    ca.create_ca("StrangerRoot", cn="Stranger Root")
    good = ca.issue("good-leaf", issuer="Root", cn="good.lab.example", key_algo=KeyAlgo.EC, key_size=256)
    good_der = good.der()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    small_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    start = now - dt.timedelta(minutes=5)

    signed_tomcat = ca.sign_csr("s-tomcat", issuer="Root", csr_pem=csrs["tomcat"].encode())
    signed_cm = ca.sign_csr("s-cm", issuer="Root", csr_pem=csrs["CallManager"].encode())
    via_issuing = ca.sign_csr("s-tomcat-issuing", issuer="Issuing", csr_pem=csrs["tomcat"].encode())
    stranger = ca.sign_csr("s-tomcat-stranger", issuer="StrangerRoot", csr_pem=csrs["tomcat"].encode())
    expired = ca.sign_csr("s-expired", issuer="Root", csr_pem=csrs["tomcat"].encode(), days=30, starts_in_days=-400)
    future = ca.sign_csr("s-future", issuer="Root", csr_pem=csrs["tomcat"].encode(), starts_in_days=10)
    wildcard = _leaf(ca, "Root", "*.lab.example", ec_key, start=start)
    ed_leaf = _leaf(ca, "Root", "ed25519.lab.example", ed25519.Ed25519PrivateKey.generate(), start=start)
    weak = _leaf(ca, "Root", "weak.lab.example", small_rsa, start=start)
    old_same_name = _leaf(ca, "Root", "good.lab.example", ec_key, start=start - dt.timedelta(days=3))
    twin_a = _leaf(ca, "Root", "twin.lab.example", ec.generate_private_key(ec.SECP256R1()), start=start)
    twin_b = _leaf(ca, "Root", "twin.lab.example", ec.generate_private_key(ec.SECP256R1()), start=start)
    root_der = bytearray(ca.get("Root").der())
    root_der[-3] ^= 0x01  # the signature no longer verifies; the certificate still parses
    forged_root = x509.load_der_x509_certificate(bytes(root_der))
    many_sans = _leaf(ca, "Root", "many.lab.example", ec_key, start=now, san=[f"h{i}.lab.example" for i in range(300)])
    many = b"".join(_pem(_leaf(ca, "Root", f"m{i}.lab.example", ec_key, start=start)) for i in range(51))
    empty_p7 = _empty_pkcs7()
    loop_a, loop_b = _loop(ca, now)
    key_pem = certs.key_pem(ec_key)
    huge = b"0" * (20 * 1024 * 1024)

    def trust(id_: str, data: bytes | str, expect: str, *, store: str = "tomcat-trust", node: str = pub) -> BadInput:
        raw = data if isinstance(data, str) else b64(data)
        return BadInput(id_, node, "upload", {"store": store, "data": raw}, expect)

    def ident(id_: str, data: bytes | str, expect: str, *, unit: str = "tomcat", node: str = pub) -> BadInput:
        raw = data if isinstance(data, str) else b64(data)
        return BadInput(id_, node, "identity_upload", {"unit": unit, "data": raw}, expect)

    items: list[BadInput] = [
        # --- the trust-upload path -----------------------------------------------------------
        trust("bad-base64", "!!!not base64!!!", "not valid base64"),
        trust("empty", "", "no data given"),
        trust("whitespace-only", b"   \n\t  ", "empty input"),
        trust("pem-bad-base64", b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n", "bad base64"),
        trust("pem-truncated", _pem(good.cert)[:200], "truncated PEM"),
        trust("pem-label-mismatch", _pem(good.cert).replace(b"END CERTIFICATE", b"END PKCS7"), "does not match"),
        trust("pem-private-key", key_pem, "not a certificate"),
        trust("der-truncated", good_der[: len(good_der) // 2], "truncated or malformed"),
        trust("garbage-bytes", b"\x00\x01\x02 hello world", "not a certificate"),
        trust("asn1-junk", b"\x30\x03\x02\x01\x05", "not a valid der certificate"),
        trust("pkcs7-no-certs", empty_p7, "no certificates"),
        BadInput("20-mb-file", pub, "upload", {"store": "tomcat-trust", "data": b64(huge)}, "the limit is", True),
        trust("rsa-1024", _pem(weak), "below the minimum"),
        trust("ed25519-key", _pem(ed_leaf), "unsupported public key type"),
        trust("forged-self-signed", _pem(forged_root), "self-signature does not verify"),
        trust("300-sans", _pem(many_sans), "the limit is 256"),
        trust("same-name-older", _pem(old_same_name), "R-REPL-8"),
        trust("same-name-twins", _pem(twin_a) + _pem(twin_b), "two different certificates"),
        trust("51-certificates", many, "the limit is 50"),
        trust("unknown-store", _pem(good.cert), "unknown trust store", store="Bogus-trust"),
        trust(
            "store-of-other-role", _pem(good.cert), "has no 'CallManager-trust'", store="CallManager-trust", node=imp
        ),
        trust("identity-unit-as-store", _pem(good.cert), "is an identity unit", store="tomcat"),
        # --- the identity-upload path -----------------------------------------------------------
        ident("identity-bad-base64", "%%%", "not valid base64"),
        BadInput("identity-20-mb", pub, "identity_upload", {"unit": "tomcat", "data": b64(huge)}, "the limit is", True),
        ident("identity-truncated-der", signed_tomcat.der()[:300], "truncated or malformed"),
        ident("ca-only-chain", root.pem() + issuing.pem(), "R-OP-UPLOAD-1"),
        ident("wildcard-cn", _pem(wildcard), "wildcard"),
        ident("wrong-key-type", _pem(good.cert), "carries an RSA key"),
        ident("ec-cert-for-rsa-csr-unit", _pem(signed_tomcat.cert), "carries an EC key", unit="tomcat-ECDSA"),
        ident("csr-of-another-unit", _pem(signed_cm.cert), "issued for the CSR of 'CallManager'"),
        ident(
            "key-matches-no-csr",
            _pem(_leaf(ca, "Root", "x.lab.example", small_rsa_2048(), start=start)),
            "does not match",
        ),
        ident("issuer-not-trusted", _pem(stranger.cert), "is not trusted"),
        ident("intermediate-not-in-trust", via_issuing.pem(with_chain=True), "is not in tomcat-trust"),
        ident("expired-signed", _pem(expired.cert), "expired"),
        ident("not-yet-valid-signed", _pem(future.cert), "not yet valid"),
        ident("chain-with-a-loop", _pem(loop_a) + _pem(loop_b), "loop"),
        ident("two-unrelated-leaves", _pem(signed_tomcat.cert) + _pem(good.cert), "unrelated end certificates"),
        ident("unknown-unit", _pem(signed_tomcat.cert), "unknown identity unit", unit="tomcatt"),
        ident("unit-of-other-role", _pem(signed_cm.cert), "has no 'CallManager'", unit="CallManager", node=imp),
        ident("capf-on-subscriber", _pem(signed_tomcat.cert), "publisher", unit="CAPF", node=sub),
        ident("no-pending-csr", _pem(signed_tomcat.cert), "no pending CSR", node=sub),
        ident("cluster-issued-unit", _pem(signed_tomcat.cert), "issued by the cluster", unit="ITLRecovery"),
        # --- other certificate operations ------------------------------------------------------
        BadInput("csr-key-1024", pub, "csr_gen", {"unit": "tomcat", "key_size": 1024}, "not allowed"),
        BadInput("csr-multi-on-subscriber", sub, "csr_gen", {"unit": "tomcat", "multi_server": True}, "publisher"),
        BadInput("csr-no-unit", pub, "csr_gen", {}, "no unit given"),
        BadInput("regen-trust-store", pub, "regen", {"unit": "tomcat-trust"}, "is a trust store"),
        BadInput("regen-smaller-key", pub, "regen", {"unit": "tomcat", "key_size": 1024}, "not allowed"),
        BadInput("restart-unknown-service", pub, "service_restart", {"name": "Cisco Nonsense"}, "runs no service"),
        BadInput("param-bad-value", pub, "param_set", {"name": "HTTPS Ciphers", "value": "ROT13"}, "use one of"),
        BadInput("token-garbage", sub, "token_verify", {"token": "a.b.c"}, "not a certsim token"),
        BadInput("authz-on-subscriber", sub, "authz_regen", {"kind": "signing"}, "publisher"),
        BadInput("authz-bad-kind", pub, "authz_regen", {"kind": "both"}, "encryption or signing"),
        BadInput("check-remote-self", pub, "check_remote", {"peer": pub}, "not itself"),
    ]
    return items


def small_rsa_2048() -> rsa.RSAPrivateKey:
    return _RSA_CACHE[0]


_RSA_CACHE: list[rsa.RSAPrivateKey] = []


def prepare_rsa() -> None:
    if not _RSA_CACHE:
        _RSA_CACHE.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def _empty_pkcs7() -> bytes:
    """A DER PKCS#7 SignedData with no certificates (degenerate, as openssl crl2pkcs7 -nocrl makes)."""
    return bytes.fromhex(
        "3023" + "06092a864886f70d010702" + "a016" + "3014" + "020101" + "3100" + "300b06092a864886f70d010701" + "3100"
    )


def _loop(ca: LabCA, now: dt.datetime) -> tuple[x509.Certificate, x509.Certificate]:
    """Two CA certificates that issue each other (no root, no end)."""
    ka, kb = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    na, nb = ca.subject.name("Loop CA A"), ca.subject.name("Loop CA B")

    def make(
        subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey
    ) -> x509.Certificate:
        return certs.build_certificate(
            subject=subject,
            public_key=key.public_key(),
            issuer=issuer,
            issuer_key=issuer_key,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=30),
            extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)],
        )

    return make(na, ka, nb, kb), make(nb, kb, na, ka)
