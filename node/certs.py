"""Certificate handling, pure: parse what users upload, name entries, describe, and build certificates.

Every certificate, key and chain is a real ``cryptography`` object. Parsing is strict and
each refusal names the problem, because an upload that fails must change nothing and
tell the administrator why (DOMAIN.md R-OP-UPLOAD-2).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from node.catalog import EKU_OIDS, KU, KeyAlgo, UnitSpec
from node.errors import BadInput
from node.safetext import safe_text

MAX_UPLOAD_BYTES = 1 << 20  # a chain of ten certificates is ~20 KB; anything near 1 MiB is not a certificate
MAX_CERTS_PER_UPLOAD = 50
MAX_SAN_ENTRIES = 256  # a multi-server certificate names 21 nodes and a few domains; tens of thousands is an attack
MAX_CHAIN_DEPTH = 8  # issuer links followed inside one upload (also certops.MAX_CHAIN_DEPTH for identity chains)
NAME_HASH_HEX = 16  # hex digits of SHA-256 appended to a CN that had to be changed to become a file name
MIN_RSA_BITS = 2048
EC_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END ([A-Z0-9 #]+)-----", re.DOTALL)
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_PKCS7_LABELS = {b"PKCS7", b"PKCS #7 SIGNED DATA", b"CMS"}
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@functools.lru_cache(maxsize=1024)
def parsed_validity_start_ms(der: bytes) -> int | None:
    """A DER certificate's validity start in ms (R-REPL-8 orders same-name entries by it), None if
    it does not parse. Cached per process: every node of a process receives the same certificate."""
    try:
        return int(x509.load_der_x509_certificate(der).not_valid_before_utc.timestamp() * 1000)
    except ValueError:
        return None


def validity_start_ms(der: bytes) -> int:
    """``parsed_validity_start_ms``, 0 if unreadable (a row written by an older release)."""
    start = parsed_validity_start_ms(der)
    return 0 if start is None else start


def _check_parsed(cert: x509.Certificate, where: str) -> x509.Certificate:
    """Touch the lazily parsed parts so a malformed certificate fails here, not later in a node."""
    try:
        _ = cert.subject, cert.issuer, cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc
        key = cert.public_key()
    except (ValueError, TypeError) as exc:
        raise BadInput(f"{where}: malformed certificate ({exc})") from None
    except Exception as exc:  # cryptography raises various errors for unsupported structures
        raise BadInput(f"{where}: malformed certificate ({type(exc).__name__}: {exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"{where}: unsupported public key type {type(key).__name__}; only RSA and EC are accepted")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise BadInput(f"{where}: RSA key of {key.key_size} bits is below the minimum of {MIN_RSA_BITS}")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None and len(san) > MAX_SAN_ENTRIES:
        raise BadInput(f"{where}: {len(san):,} subject alternative names; the limit is {MAX_SAN_ENTRIES}")
    return cert


def _der_certificates(data: bytes, where: str) -> list[x509.Certificate]:
    try:
        return [_check_parsed(x509.load_der_x509_certificate(data), where)]
    except BadInput:
        raise
    except ValueError as cert_exc:
        try:
            certs = pkcs7.load_der_pkcs7_certificates(data)
        except ValueError as p7_exc:
            if "no certificate" in str(p7_exc).lower():
                raise BadInput(f"{where}: PKCS#7 bundle contains no certificates") from None
            raise BadInput(
                f"{where}: not a valid DER certificate or PKCS#7 bundle (truncated or malformed: {cert_exc})"
            ) from None
        except Exception as exc:
            raise BadInput(f"{where}: malformed DER PKCS#7 bundle ({exc})") from None
        if not certs:
            raise BadInput(f"{where}: PKCS#7 bundle contains no certificates") from None
        return [_check_parsed(c, f"{where}, certificate {i + 1}") for i, c in enumerate(certs)]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Parse PEM (certificates or PKCS#7), DER certificate or DER PKCS#7 into certificates.

    Raises ``BadInput`` naming the problem; returns at least one certificate, duplicates removed.
    """
    if not data or not data.strip():
        raise BadInput("empty input: no certificate given")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(f"input is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes")
    certs: list[x509.Certificate] = []
    if b"-----BEGIN" in data:
        blocks = list(_PEM_BLOCK.finditer(data))
        if not blocks:
            raise BadInput("truncated PEM: a -----BEGIN line has no matching -----END line")
        if data.count(b"-----BEGIN") != len(blocks):
            raise BadInput("truncated PEM: a -----BEGIN line has no matching -----END line")
        for i, block in enumerate(blocks, start=1):
            label, body, end_label = block.group(1), block.group(2), block.group(3)
            where = f"PEM block {i}"
            if label != end_label:
                raise BadInput(f"{where}: BEGIN {label.decode()} does not match END {end_label.decode()}")
            if label not in _CERT_LABELS | _PKCS7_LABELS:
                raise BadInput(f"{where} is a '{label.decode()}', not a certificate or PKCS#7 chain")
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except (binascii.Error, ValueError):
                raise BadInput(f"{where}: bad base64 in the {label.decode()} block") from None
            if not der:
                raise BadInput(f"{where}: the {label.decode()} block is empty")
            if label == b"TRUSTED CERTIFICATE":
                der = _first_der_element(der, where)  # OpenSSL appends trust settings after the certificate
            if label in _PKCS7_LABELS:
                certs.extend(_der_pkcs7(der, where))
            else:
                certs.extend(_der_certificates(der, where))
    else:
        if data.lstrip()[:1] != b"\x30":
            raise BadInput("not a certificate: neither PEM (no -----BEGIN line) nor DER (no ASN.1 SEQUENCE)")
        certs = _der_certificates(data, "DER input")
    if len(certs) > MAX_CERTS_PER_UPLOAD:
        raise BadInput(f"{len(certs)} certificates in one upload; the limit is {MAX_CERTS_PER_UPLOAD}")
    unique: dict[bytes, x509.Certificate] = {}
    for cert in certs:
        unique.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    check_signatures(list(unique.values()))
    return list(unique.values())


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` names and signs ``cert`` (its signature verifies with the issuer's key)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _label(index: int, cert: x509.Certificate) -> str:
    return f"certificate {index} ({common_name(cert.subject) or 'no CN'})"


def check_signatures(uploaded: Sequence[x509.Certificate]) -> None:
    """The signatures an upload can prove, checked (upload policy, issue 14): a self-signed certificate
    must verify with its own key; a certificate whose issuer is also in the upload must verify against
    it (each link of a chain); issuer links inside the upload must not loop nor exceed
    :data:`MAX_CHAIN_DEPTH`. A certificate whose issuer is not in the upload is left to the trust stores."""
    parents: dict[int, int] = {}
    for i, cert in enumerate(uploaded):
        if cert.subject == cert.issuer:
            if not signed_by(cert, cert) and not any(
                signed_by(cert, other) for other in uploaded if other is not cert and other.subject == cert.issuer
            ):
                raise BadInput(f"{_label(i + 1, cert)}: its self-signature does not verify (altered or forged)")
            continue
        issuers = [j for j, other in enumerate(uploaded) if j != i and other.subject == cert.issuer]
        if not issuers:
            continue
        signer = next((j for j in issuers if signed_by(cert, uploaded[j])), None)
        if signer is None:
            names = ", ".join(_label(j + 1, uploaded[j]) for j in issuers)
            raise BadInput(f"{_label(i + 1, cert)}: its signature does not verify against its issuer {names}")
        parents[i] = signer
    for start in parents:
        seen = [start]
        node = start
        while node in parents:
            node = parents[node]
            if node in seen:
                loop = " -> ".join(common_name(uploaded[k].subject) or "no CN" for k in [*seen, node])
                raise BadInput(f"the chain's issuers loop ({loop}); a chain ends at a root")
            seen.append(node)
            if len(seen) > MAX_CHAIN_DEPTH:
                raise BadInput(f"a chain of more than {MAX_CHAIN_DEPTH} certificates; the limit is {MAX_CHAIN_DEPTH}")


def _first_der_element(der: bytes, where: str) -> bytes:
    """The first complete DER TLV of ``der`` (a SEQUENCE with a short or long length form)."""
    if len(der) < 2 or der[0] != 0x30:
        raise BadInput(f"{where}: not a DER certificate")
    first = der[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            raise BadInput(f"{where}: malformed DER length")
        header, length = 2 + count, int.from_bytes(der[2 : 2 + count], "big")
    if header + length > len(der):
        raise BadInput(f"{where}: truncated DER certificate")
    return der[: header + length]


def _der_pkcs7(der: bytes, where: str) -> list[x509.Certificate]:
    try:
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError as exc:
        if "no certificate" in str(exc).lower():
            raise BadInput(f"{where}: PKCS#7 bundle contains no certificates") from None
        raise BadInput(f"{where}: malformed PKCS#7 bundle ({exc})") from None
    except Exception as exc:
        raise BadInput(f"{where}: malformed PKCS#7 bundle ({exc})") from None
    if not certs:
        raise BadInput(f"{where}: PKCS#7 bundle contains no certificates")
    return [_check_parsed(c, f"{where}, certificate {i + 1}") for i, c in enumerate(certs)]


def raw_common_name(name: x509.Name) -> str | None:
    """The first CN of a name exactly as the certificate carries it (untrusted: never print it raw)."""
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def common_name(name: x509.Name) -> str | None:
    """The first CN of a name, safe to print (:func:`node.safetext.safe_text`), or None."""
    raw = raw_common_name(name)
    return None if raw is None else safe_text(raw)


def dn_text(name: x509.Name) -> str:
    """A distinguished name (RFC 4514), safe to print."""
    try:
        return safe_text(name.rfc4514_string())
    except ValueError:  # an attribute cryptography cannot render
        return safe_text(repr(name))


_PLAIN_NAME = re.compile(r"[A-Za-z0-9-](?:[A-Za-z0-9. -]{0,126}[A-Za-z0-9-])?")
_HASHED_SUFFIX = re.compile(rf".*_[0-9a-f]{{{NAME_HASH_HEX}}}")


def entry_name(cert: x509.Certificate) -> str:
    """The file name (without .pem) of a certificate in a store; distinct subjects never share one.

    The product files a certificate under its CN with spaces as underscores (``Cisco Root CA 2048``
    is ``Cisco_Root_CA_2048.pem``, ``cucm1.lab.example`` is ``cucm1.lab.example.pem``). A CN made of
    letters, digits, '.', '-' and spaces (not at either end, at most 128 characters) gets exactly
    that name; as such a CN has no '_', the name reads back to the CN, so two of them never share a
    name. Any other CN ('_', '*', '/', accents, control characters, too long) is made file-safe and
    gets ``_`` plus 16 hex digits of the SHA-256 of the CN as the certificate carries it
    (``*.lab.example`` is ``lab.example_<hash>``), so it collides neither with another CN nor with a
    plain name, which never ends with ``_`` and 16 hex digits (a CN that would is hashed too).
    Without a CN: ``serial_<serial>_<hash of issuer and subject>``.
    """
    cn = raw_common_name(cert.subject)
    if cn is None:
        digest = hashlib.sha256(cert.issuer.public_bytes() + cert.subject.public_bytes()).hexdigest()
        return f"serial_{cert.serial_number:x}"[:100] + f"_{digest[:NAME_HASH_HEX]}"
    if _PLAIN_NAME.fullmatch(cn):
        name = cn.replace(" ", "_")
        if not _HASHED_SUFFIX.fullmatch(name):
            return name
    core = _NAME_UNSAFE.sub("_", cn).strip("._")[:100] or "cn"
    return f"{core}_{hashlib.sha256(cn.encode('utf-8', 'surrogatepass')).hexdigest()[:NAME_HASH_HEX]}"


def normalize_name(name: str) -> str:
    """Accept ``name``, ``name.pem``, ``name.der`` or ``store/name.pem`` for an entry name."""
    base = name.rsplit("/", 1)[-1]
    for ext in (".pem", ".der"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def der_of(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def der_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def key_type(cert: x509.Certificate) -> tuple[str, int]:
    """("RSA", bits) or ("EC", curve bits)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    return type(key).__name__, 0


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):
        return False
    return True


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ms: int) -> str:
    """``iso`` of a time in ms since the epoch (node events stamp every message with it)."""
    return _iso_second(ms // 1000)


@functools.lru_cache(maxsize=8)
def _iso_second(second: int) -> str:
    return iso(dt.datetime.fromtimestamp(second, dt.UTC))


def describe(cert: x509.Certificate) -> dict[str, Any]:
    """A JSON-safe summary used by listings, downloads and scenario expectations."""
    kt, bits = key_type(cert)
    return {
        "name": entry_name(cert),
        "cn": common_name(cert.subject),
        "subject": dn_text(cert.subject),
        "issuer": dn_text(cert.issuer),
        "issuer_cn": common_name(cert.issuer),
        "serial": f"{cert.serial_number:x}",
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "key_type": kt,
        "key_bits": bits,
        "is_ca": is_ca(cert),
        "self_signed": is_self_signed(cert),
        "sha256": fingerprint(cert),
        **product_fields(cert),
    }


def validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    """Why ``cert`` is not valid at ``now`` (the lab's simulated time), or None."""
    if now < cert.not_valid_before_utc:
        return f"not yet valid: it starts {iso(cert.not_valid_before_utc)}, the lab clock is at {iso(now)}"
    if now > cert.not_valid_after_utc:
        return f"expired on {iso(cert.not_valid_after_utc)} (the lab clock is at {iso(now)})"
    return None


# ---------------------------------------------------------------------------------------------
# Building certificates (node identities and the lab CA share these)


class KeySource(Protocol):
    """Keys made ahead of time (``node.keypool.KeyPool``); ``take`` hands each key out once, or None."""

    def take(self, algo: KeyAlgo, size: int) -> PrivateKey | None: ...


_KEY_SOURCE: list[KeySource] = []  # at most one: where new RSA keys come from first


def use_key_source(source: KeySource | None) -> KeySource | None:
    """Take new RSA keys from ``source`` first (None: generate every one); returns the previous source."""
    previous = _KEY_SOURCE[0] if _KEY_SOURCE else None
    _KEY_SOURCE[:] = [] if source is None else [source]
    return previous


def new_private_key(algo: KeyAlgo, size: int) -> PrivateKey:
    """A fresh key (from the key source when one is set and has one). RSA generation takes tens of
    milliseconds: call it through ``asyncio.to_thread``."""
    if algo is KeyAlgo.RSA and _KEY_SOURCE and (pooled := _KEY_SOURCE[0].take(algo, size)) is not None:
        return pooled
    if algo is KeyAlgo.EC:
        return ec.generate_private_key(EC_CURVES.get(size, ec.SECP256R1()))
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise BadInput(f"unsupported private key type {type(key).__name__}")
    return key


@dataclass(frozen=True)
class SubjectFields:
    """The organisation part of the subjects a lab issues."""

    organization: str = "certsim lab"
    org_unit: str = "UC"
    locality: str = "San Jose"
    state: str = "CA"
    country: str = "US"

    def name(self, cn: str, *, with_ou: bool = True) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if with_ou and self.org_unit:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, self.org_unit))
        attrs += [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
            x509.NameAttribute(NameOID.LOCALITY_NAME, self.locality),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, self.state),
            x509.NameAttribute(NameOID.COUNTRY_NAME, self.country),
        ]
        return x509.Name(attrs)


def key_usage(bits: Iterable[KU]) -> x509.KeyUsage:
    on = set(bits)
    return x509.KeyUsage(
        digital_signature=KU.DS in on,
        content_commitment=False,
        key_encipherment=KU.KE in on,
        data_encipherment=KU.DE in on,
        key_agreement=KU.KA in on,
        key_cert_sign=KU.KCS in on,
        crl_sign=KU.KCS in on,
        encipher_only=False,
        decipher_only=False,
    )


def unit_cn(unit: UnitSpec, fqdn: str) -> str:
    """The CN the product gives a node's certificate of ``unit`` (e.g. ``cucm1-EC.example.com``)."""
    host, _, domain = fqdn.partition(".")
    cn = f"{unit.cn_prefix}{host}{unit.cn_suffix}"
    return f"{cn}.{domain}" if domain else cn


def unit_extensions(unit: UnitSpec, san: Sequence[str]) -> list[tuple[x509.ExtensionType, bool]]:
    """The extensions (value, critical) a unit's certificate or CSR carries (DOMAIN.md key usage table)."""
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=unit.is_ca, path_length=0 if unit.is_ca else None), True),  # CAPF: pathlen:0 (14SU2)
        (key_usage(unit.ku), True),
        (x509.ExtendedKeyUsage([EKU_OIDS[e] for e in unit.eku]), False),
    ]
    if san:
        exts.append((x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), False))
    return exts


def build_certificate(
    *,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    issuer_public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    """Sign a certificate with SKI and AKI, SHA-256, from the given extensions."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key or issuer_key.public_key()),
            critical=False,
        )
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def self_signed_identity(
    unit: UnitSpec,
    fqdn: str,
    key: PrivateKey,
    now: dt.datetime,
    subject_fields: SubjectFields,
    *,
    validity_days: int,
) -> x509.Certificate:
    """A node's system-generated self-signed certificate for ``unit``, valid from the lab's ``now``."""
    name = subject_fields.name(unit_cn(unit, fqdn))
    start = now.replace(microsecond=0)
    return build_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer=name,
        issuer_key=key,
        not_before=start,
        not_after=start + dt.timedelta(days=validity_days),
        extensions=unit_extensions(unit, [fqdn]),
    )


# ---------------------------------------------------------------------------------------------
# Listing fields as the product names them (R-OP-LIST, 14SU2) and CSRs (R-OP-CSR-1)

_KU_FIELDS = (
    ("digital_signature", KU.DS),
    ("key_encipherment", KU.KE),
    ("data_encipherment", KU.DE),
    ("key_agreement", KU.KA),
    ("key_cert_sign", KU.KCS),
)


def key_usage_bits(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """The key-usage bits a certificate or CSR asserts, named as ``KU`` values (empty without the extension)."""
    try:
        ku = cert_or_csr.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [bit.value for attr, bit in _KU_FIELDS if getattr(ku, attr)]


def _extension_text(ext: x509.Extension[x509.ExtensionType]) -> str:
    value = ext.value
    if isinstance(value, x509.KeyUsage):
        return ", ".join(key_usage_bits_of(value))
    if isinstance(value, x509.ExtendedKeyUsage):
        return ", ".join(o.dotted_string for o in value)
    if isinstance(value, x509.SubjectAlternativeName):
        return safe_text(", ".join(str(n.value) for n in value))
    if isinstance(value, x509.BasicConstraints):
        return f"CA:{str(value.ca).upper()}" + ("" if value.path_length is None else f", pathlen:{value.path_length}")
    if isinstance(value, x509.SubjectKeyIdentifier):
        return value.digest.hex()
    if isinstance(value, x509.AuthorityKeyIdentifier):
        return (value.key_identifier or b"").hex()
    if isinstance(value, x509.UnrecognizedExtension):
        return value.value.hex()
    return type(value).__name__


def key_usage_bits_of(ku: x509.KeyUsage) -> list[str]:
    return [bit.value for attr, bit in _KU_FIELDS if getattr(ku, attr)]


def public_key_bytes(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo DER: compares keys of certificates, CSRs and private keys."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def product_fields(cert: x509.Certificate) -> dict[str, Any]:
    """The 14SU2 display fields (IssuerDN, Start Date, End Date, SubjectDN, Public Key, Modulus) and
    the X.509 extensions by OID (R-OP-LIST)."""
    key = cert.public_key()
    modulus = ""
    if isinstance(key, rsa.RSAPublicKey):
        public = f"RSA ({key.key_size} bits)"
        modulus = f"{key.public_numbers().n:x}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        public = f"EC ({key.curve.name}, {key.curve.key_size} bits)"
    else:
        public = type(key).__name__
    try:
        extensions = {
            e.oid.dotted_string: {"critical": e.critical, "value": _extension_text(e)} for e in cert.extensions
        }
    except ValueError:
        extensions = {}
    return {
        "IssuerDN": dn_text(cert.issuer),
        "Start Date": iso(cert.not_valid_before_utc),
        "End Date": iso(cert.not_valid_after_utc),
        "SubjectDN": dn_text(cert.subject),
        "Public Key": public,
        "Modulus": modulus,
        "extensions": extensions,
        "key_usage": key_usage_bits(cert),
    }


CSR_HASHES: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
    "SHA256": hashes.SHA256(),
    "SHA384": hashes.SHA384(),
    "SHA512": hashes.SHA512(),
}


def build_csr(
    *,
    subject: x509.Name,
    key: PrivateKey,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    hash_name: str = "SHA256",
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request (SHA-256 unless the caller chose SHA-384/512, which the product offers for EC
    keys), carrying ``extensions`` in its extension request (R-OP-CSR-1)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(key, CSR_HASHES[hash_name])


def csr_pem(csr: x509.CertificateSigningRequest) -> str:
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Parse a PEM or DER CSR and check its self-signature; ``BadInput`` names the problem."""
    if not data or not data.strip():
        raise BadInput("empty input: no CSR given")
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadInput(f"input is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes")
    try:
        csr = x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data)
        _ = csr.subject, csr.extensions
        key = csr.public_key()
    except (ValueError, TypeError) as exc:
        raise BadInput(f"not a valid certificate signing request ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"unsupported CSR key type {type(key).__name__}; only RSA and EC are accepted")
    if not csr.is_signature_valid:
        raise BadInput("the CSR's signature does not verify: it was altered or is not self-signed by its key")
    return csr


def csr_san(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [safe_text(str(n)) for n in san.get_values_for_type(x509.DNSName)]


def cert_san(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [safe_text(str(n)) for n in san.get_values_for_type(x509.DNSName)]


def describe_csr(csr: x509.CertificateSigningRequest) -> dict[str, Any]:
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        kt, bits = "RSA", key.key_size
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kt, bits = "EC", key.curve.key_size
    else:
        kt, bits = type(key).__name__, 0
    return {
        "subject": dn_text(csr.subject),
        "cn": common_name(csr.subject),
        "san": csr_san(csr),
        "key_type": kt,
        "key_bits": bits,
        "signature_hash": csr.signature_hash_algorithm.name if csr.signature_hash_algorithm else None,
        "key_usage": key_usage_bits(csr),
        "extensions": {
            e.oid.dotted_string: {"critical": e.critical, "value": _extension_text(e)} for e in csr.extensions
        },
    }
