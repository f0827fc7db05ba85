"""ITL and CTL files and signed TFTP files, pure: built, signed and verified with ``cryptography``.

The product's ITLFile.tlv and CTLFile.tlv are tag-length-value files: a header naming the
signer, records (a role and a certificate each), and a signature over everything before it.
This module keeps that shape (one tag byte, a four-byte big-endian length, the value), so a
file is real bytes a phone parses and checks, not a Python object passed around. Signed
configuration files (``SEP<MAC>.cnf.xml.sgn``) and the bulk ITL reset file use the same
envelope with another kind. Rule IDs refer to DOMAIN.md (R-PHONE-1, R-PHONE-5).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from node import certs
from node.catalog import ReleaseProfile
from node.errors import BadInput

FORMAT_VERSION = 1
MAX_FILE_BYTES = 1 << 20  # an ITL of a 21-node cluster is ~40 KB
MAX_RECORDS = 256

# tags of the TLV file
T_VERSION = 0x01
T_KIND = 0x02
T_SIGNER_ROLE = 0x03
T_SIGNER_CERT = 0x04
T_SERIAL = 0x05
T_RECORD = 0x10
T_ROLE = 0x11
T_HOST = 0x12
T_CERT = 0x13
T_BODY = 0x20
T_SIGNATURE = 0x7F


class FileKind(StrEnum):
    ITL = "ITL"  # Initial (Identity) Trust List, every TFTP node (R-PHONE-1)
    CTL = "CTL"  # Certificate Trust List, mixed mode only (R-PHONE-5)
    CONFIG = "SGN"  # a signed configuration file
    ITL_RESET = "ITL-RESET"  # `utils itl reset`: signed with the ITLRecovery key (R-PHONE-3)


class Role(StrEnum):
    """Roles a record carries (the product's ``show itl`` / ``show ctl`` function names)."""

    TFTP = "CCM+TFTP"  # a node's CallManager certificate, which also signs its TFTP files
    TVS = "TVS"
    CAPF = "CAPF"
    ITL_RECOVERY = "ITLRecovery"


@dataclass(frozen=True)
class TrustRecord:
    role: Role
    host: str
    cert_der: bytes

    @property
    def sha256(self) -> str:
        return certs.der_sha256(self.cert_der)

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert_der)


@dataclass(frozen=True)
class SignedFile:
    """A parsed, signature-checked file. ``signed_by`` is the sha256 of the signer certificate;
    whether the *reader* trusts that signer is the phone's decision (node.phone)."""

    kind: FileKind
    signer_role: Role
    signer_der: bytes
    serial: int
    records: tuple[TrustRecord, ...] = ()
    body: bytes = b""
    raw: bytes = b""

    @property
    def signed_by(self) -> str:
        return certs.der_sha256(self.signer_der)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    def holds(self, sha: str, roles: Iterable[Role] | None = None) -> bool:
        wanted = set(roles) if roles is not None else None
        return any(r.sha256 == sha and (wanted is None or r.role in wanted) for r in self.records)

    def certs_of(self, role: Role) -> list[TrustRecord]:
        return [r for r in self.records if r.role is role]


def _tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">BI", tag, len(value)) + value


def _read_tlvs(data: bytes, where: str) -> list[tuple[int, bytes, int]]:
    """(tag, value, end offset) of each element; a truncated or oversized element is refused."""
    out: list[tuple[int, bytes, int]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise BadInput(f"{where}: truncated element header at byte {pos}")
        tag, length = struct.unpack_from(">BI", data, pos)
        pos += 5
        if length > len(data) - pos:
            raise BadInput(f"{where}: element 0x{tag:02x} claims {length} bytes, only {len(data) - pos} left")
        out.append((tag, data[pos : pos + length], pos + length))
        pos += length
    return out


def _sign(key: certs.PrivateKey, data: bytes) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _verify(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    try:
        key = cert.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):  # a malformed key or signature is no signature
        return False
    return True


def build(
    kind: FileKind,
    signer_role: Role,
    signer_cert: x509.Certificate,
    signer_key: certs.PrivateKey,
    *,
    records: Sequence[TrustRecord] = (),
    body: bytes = b"",
    serial: int = 1,
) -> bytes:
    """A signed file: header, records (or a body), then the signature over all of it."""
    if len(records) > MAX_RECORDS:
        raise BadInput(f"a trust list holds at most {MAX_RECORDS} records")
    signer_der = certs.der_of(signer_cert)
    parts = [
        _tlv(T_VERSION, bytes([FORMAT_VERSION])),
        _tlv(T_KIND, kind.value.encode()),
        _tlv(T_SIGNER_ROLE, signer_role.value.encode()),
        _tlv(T_SIGNER_CERT, signer_der),
        _tlv(T_SERIAL, struct.pack(">Q", serial)),
    ]
    for rec in records:
        inner = _tlv(T_ROLE, rec.role.value.encode()) + _tlv(T_HOST, rec.host.encode()) + _tlv(T_CERT, rec.cert_der)
        parts.append(_tlv(T_RECORD, inner))
    if body:
        parts.append(_tlv(T_BODY, body))
    signed = b"".join(parts)
    return signed + _tlv(T_SIGNATURE, _sign(signer_key, signed))


def parse(data: bytes, *, expect: FileKind | None = None) -> SignedFile:
    """Parse and check the signature against the signer certificate the file names.

    A file whose signature does not match its own signer is refused here (tampered or
    truncated); trusting the signer is left to the reader (R-PHONE-2).
    """
    where = f"{expect.value if expect else 'signed'} file"
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{where}: {len(data)} bytes is larger than any trust list ({MAX_FILE_BYTES})")
    elements = _read_tlvs(data, where)
    if not elements or elements[-1][0] != T_SIGNATURE:
        raise BadInput(f"{where}: no signature at the end")
    signature = elements[-1][1]
    signed_part = data[: elements[-2][2]] if len(elements) > 1 else b""
    fields: dict[int, bytes] = {}
    records: list[TrustRecord] = []
    for tag, value, _end in elements[:-1]:
        if tag == T_RECORD:
            records.append(_record(value, where))
        elif tag in (T_VERSION, T_KIND, T_SIGNER_ROLE, T_SIGNER_CERT, T_SERIAL, T_BODY):
            if tag in fields:
                raise BadInput(f"{where}: element 0x{tag:02x} appears twice")
            fields[tag] = value
        else:
            raise BadInput(f"{where}: unknown element 0x{tag:02x}")
    missing = [
        name
        for tag, name in ((T_KIND, "kind"), (T_SIGNER_ROLE, "signer"), (T_SIGNER_CERT, "signer cert"))
        if tag not in fields
    ]
    if missing:
        raise BadInput(f"{where}: missing {', '.join(missing)}")
    if fields.get(T_VERSION) != bytes([FORMAT_VERSION]):
        raise BadInput(f"{where}: unsupported format version")
    try:
        kind = FileKind(fields[T_KIND].decode())
        signer_role = Role(fields[T_SIGNER_ROLE].decode())
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"{where}: unknown kind or signer role") from None
    if expect is not None and kind is not expect:
        raise BadInput(f"{where}: this is a {kind.value} file")
    if len(records) > MAX_RECORDS:
        raise BadInput(f"{where}: more than {MAX_RECORDS} records")
    signer = _load_cert(fields[T_SIGNER_CERT], f"{where} signer")
    if not _verify(signer, signature, signed_part):
        raise BadInput(f"{where}: the signature does not match its signer {certs.common_name(signer.subject)!r}")
    serial_raw = fields.get(T_SERIAL, b"\0" * 8)
    if len(serial_raw) != 8:
        raise BadInput(f"{where}: malformed serial")
    return SignedFile(
        kind,
        signer_role,
        fields[T_SIGNER_CERT],
        struct.unpack(">Q", serial_raw)[0],
        tuple(records),
        fields.get(T_BODY, b""),
        data,
    )


def _load_cert(der: bytes, where: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = cert.subject, cert.issuer, cert.public_key(), cert.not_valid_after_utc  # parsed lazily: fail here
    except Exception as exc:  # cryptography raises ValueError and InvalidVersion, among others
        raise BadInput(f"{where}: not a DER certificate ({type(exc).__name__})") from None
    return cert


def _record(value: bytes, where: str) -> TrustRecord:
    inner = {tag: v for tag, v, _ in _read_tlvs(value, f"{where} record")}
    if set(inner) != {T_ROLE, T_HOST, T_CERT}:
        raise BadInput(f"{where}: a record needs a role, a host and a certificate")
    try:
        role = Role(inner[T_ROLE].decode())
    except (ValueError, UnicodeDecodeError):
        raise BadInput(f"{where}: unknown record role") from None
    _load_cert(inner[T_CERT], f"{where} record")  # a record must hold a real certificate
    return TrustRecord(role, inner[T_HOST].decode("utf-8", "replace"), inner[T_CERT])


# ---------------------------------------------------------------------------------------------
# what goes into each list


@dataclass(frozen=True)
class ClusterCerts:
    """The phone-facing identities of a cluster: per node its CallManager and TVS certificates,
    and the publisher's CAPF and ITLRecovery (DER)."""

    callmanager: dict[str, bytes]
    tvs: dict[str, bytes]
    capf: tuple[str, bytes] | None
    itl_recovery: tuple[str, bytes] | None

    def all_shas(self) -> frozenset[str]:
        """Everything a TVS of this cluster vouches for (R-PHONE-2)."""
        ders = [*self.callmanager.values(), *self.tvs.values()]
        ders += [pair[1] for pair in (self.capf, self.itl_recovery) if pair is not None]
        return frozenset(certs.der_sha256(d) for d in ders)


SIGNER_ROLES = {"CallManager": Role.TFTP, "ITLRecovery": Role.ITL_RECOVERY}  # identity unit -> signer role


def signer_unit(kind: FileKind, release: ReleaseProfile) -> str:
    """The identity whose key signs ``kind`` under ``release`` (R-PHONE-1, R-PHONE-3, R-PHONE-5):
    configuration files the TFTP node's CallManager; the ITL what ``ReleaseProfile.itl_signer`` says
    (CallManager before 12.0, ITLRecovery from 12.0: Cisco TAC 214231, Security Guide 15); the CTL
    and the bulk ITL reset file ITLRecovery."""
    if kind is FileKind.CONFIG:
        return "CallManager"
    if kind is FileKind.ITL:
        return release.itl_signer
    return "ITLRecovery"


def itl_records(tftp_host: str, cluster: ClusterCerts) -> list[TrustRecord]:
    """R-PHONE-1: the TFTP node's CallManager (its signer), every TVS, CAPF and ITLRecovery."""
    recs = [TrustRecord(Role.TFTP, tftp_host, cluster.callmanager[tftp_host])]
    recs += [TrustRecord(Role.TVS, host, der) for host, der in sorted(cluster.tvs.items())]
    if cluster.capf is not None:
        recs.append(TrustRecord(Role.CAPF, *cluster.capf))
    if cluster.itl_recovery is not None:
        recs.append(TrustRecord(Role.ITL_RECOVERY, *cluster.itl_recovery))
    return recs


def ctl_records(cluster: ClusterCerts) -> list[TrustRecord]:
    """R-PHONE-5: every node's CallManager (CCM+TFTP), CAPF and ITLRecovery; TVS is not in a CTL."""
    recs = [TrustRecord(Role.TFTP, host, der) for host, der in sorted(cluster.callmanager.items())]
    if cluster.capf is not None:
        recs.append(TrustRecord(Role.CAPF, *cluster.capf))
    if cluster.itl_recovery is not None:
        recs.append(TrustRecord(Role.ITL_RECOVERY, *cluster.itl_recovery))
    return recs


def describe(f: SignedFile) -> dict[str, object]:
    """What ``show itl`` / ``show ctl`` print: the signer and each record (certificate text is data)."""
    signer = x509.load_der_x509_certificate(f.signer_der)
    return {
        "kind": f.kind.value,
        "serial": f.serial,
        "sha256": f.sha256,
        "signer": {"role": f.signer_role.value, "cn": certs.common_name(signer.subject), "sha256": f.signed_by},
        "records": [
            {"role": r.role.value, "host": r.host, "cn": certs.common_name(r.cert.subject), "sha256": r.sha256}
            for r in f.records
        ],
    }
