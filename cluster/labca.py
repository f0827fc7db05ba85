"""The lab CA: roots, intermediates and leaf certificates made on the spot, so no scenario needs files.

Certificates are real X.509 (``cryptography``), dated by the lab's simulated clock, with
the extensions a CA gives them (CA:TRUE and keyCertSign for CAs, SKI/AKI everywhere).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AuthorityInformationAccessOID

from node import certs
from node.catalog import EKU, EKU_OIDS, KU, KeyAlgo
from node.clock import Clock
from node.errors import BadInput, NotFound


@dataclass(frozen=True)
class Issued:
    """A certificate the lab CA made, with its key and the chain above it (issuer first)."""

    name: str
    cert: x509.Certificate
    key: certs.PrivateKey | None  # None for a certificate signed from a CSR: the requester keeps its key
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def is_ca(self) -> bool:
        return certs.is_ca(self.cert)

    def pem(self, *, with_chain: bool = False) -> bytes:
        items = [self.cert, *self.chain] if with_chain else [self.cert]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in items)

    def der(self) -> bytes:
        return certs.der_of(self.cert)

    def pkcs7(self, *, der: bool = False) -> bytes:
        encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
        return pkcs7.serialize_certificates([self.cert, *self.chain], encoding)


def _signing_key(parent: Issued) -> certs.PrivateKey:
    if parent.key is None:
        raise BadInput(f"'{parent.name}' was signed from a CSR; the lab CA does not hold its private key")
    return parent.key


def _aia(ocsp_url: str | None) -> list[tuple[x509.ExtensionType, bool]]:
    """An AIA extension naming the OCSP responder at ``ocsp_url``, or nothing."""
    if not ocsp_url:
        return []
    access = x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url))
    return [(x509.AuthorityInformationAccess([access]), False)]


class LabCA:
    """A registry of named CAs and certificates for one lab run."""

    def __init__(self, clock: Clock, subject: certs.SubjectFields | None = None) -> None:
        self.clock = clock
        self.subject = subject or certs.SubjectFields(organization="certsim lab CA", org_unit="PKI")
        self.items: dict[str, Issued] = {}

    def get(self, name: str) -> Issued:
        try:
            return self.items[name]
        except KeyError:
            known = ", ".join(sorted(self.items)) or "none yet"
            raise NotFound(f"the lab CA has no certificate named '{name}' (known: {known})") from None

    def _window(self, days: int, starts_in_days: float) -> tuple[dt.datetime, dt.datetime]:
        start = (self.clock.now() + dt.timedelta(days=starts_in_days)).replace(microsecond=0)
        if starts_in_days == 0:
            start -= dt.timedelta(minutes=5)  # small back-dating, as real CAs do, so "now" is inside
        return start, start + dt.timedelta(days=days)

    def _check_new(self, name: str) -> None:
        if name in self.items:
            raise BadInput(f"the lab CA already has a certificate named '{name}'")

    def create_ca(
        self,
        name: str,
        *,
        issuer: str | None = None,
        cn: str | None = None,
        key_algo: KeyAlgo = KeyAlgo.RSA,
        key_size: int = 2048,
        days: int = 3650,
        starts_in_days: float = 0,
        ocsp_url: str | None = None,
    ) -> Issued:
        """A root CA (no issuer) or an intermediate signed by ``issuer``.

        ``ocsp_url`` (optional) puts an Authority Information Access OCSP entry in the
        certificate, where clients find the responder (R-OCSP-1); none is added by default.
        """
        self._check_new(name)
        key = certs.new_private_key(key_algo, key_size)
        subject = self.subject.name(cn or name)
        not_before, not_after = self._window(days, starts_in_days)
        parent = self.get(issuer) if issuer else None
        if parent is not None and not parent.is_ca:
            raise BadInput(f"'{issuer}' is not a CA and cannot issue certificates")
        cert = certs.build_certificate(
            subject=subject,
            public_key=key.public_key(),
            issuer=parent.cert.subject if parent else subject,
            issuer_key=_signing_key(parent) if parent else key,
            not_before=not_before,
            not_after=not_after,
            extensions=[
                (x509.BasicConstraints(ca=True, path_length=None if parent is None else 0), True),
                (certs.key_usage([KU.DS, KU.KCS]), True),
                *_aia(ocsp_url),
            ],
        )
        issued = Issued(name, cert, key, (parent.cert, *parent.chain) if parent else ())
        self.items[name] = issued
        return issued

    def issue(
        self,
        name: str,
        *,
        issuer: str,
        cn: str | None = None,
        san: Sequence[str] = (),
        key_algo: KeyAlgo = KeyAlgo.RSA,
        key_size: int = 2048,
        days: int = 365,
        starts_in_days: float = 0,
        eku: Sequence[EKU] = (EKU.SERVER, EKU.CLIENT),
        ku: Sequence[KU] = (KU.DS, KU.KE, KU.DE, KU.KA),
        ocsp_url: str | None = None,
    ) -> Issued:
        """A leaf (end-entity) certificate signed by the CA ``issuer``.

        ``ocsp_url`` (optional) puts an Authority Information Access OCSP entry in the
        certificate, where clients find the responder (R-OCSP-1); none is added by default.
        """
        self._check_new(name)
        parent = self.get(issuer)
        if not parent.is_ca:
            raise BadInput(f"'{issuer}' is not a CA and cannot issue certificates")
        key = certs.new_private_key(key_algo, key_size)
        not_before, not_after = self._window(days, starts_in_days)
        common = cn or name
        exts: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (certs.key_usage(ku), True),
            (x509.ExtendedKeyUsage([EKU_OIDS[e] for e in eku]), False),
            (x509.SubjectAlternativeName([x509.DNSName(n) for n in (san or [common])]), False),
            *_aia(ocsp_url),
        ]
        cert = certs.build_certificate(
            subject=self.subject.name(common),
            public_key=key.public_key(),
            issuer=parent.cert.subject,
            issuer_key=_signing_key(parent),
            not_before=not_before,
            not_after=not_after,
            extensions=exts,
        )
        issued = Issued(name, cert, key, (parent.cert, *parent.chain))
        self.items[name] = issued
        return issued

    def sign_csr(
        self,
        name: str,
        *,
        issuer: str,
        csr_pem: bytes,
        days: int = 365,
        starts_in_days: float = 0,
        drop_data_encipherment: bool = False,
        ocsp_url: str | None = None,
    ) -> Issued:
        """Sign a node's CSR as a third-party CA does: its subject, key and requested extensions
        (key usage, EKU, SAN, basic constraints) are copied; ``drop_data_encipherment`` imitates a CA
        that loses the data-encipherment bit (R-KU-1); ``ocsp_url`` goes into the AIA (R-OCSP-1)."""
        self._check_new(name)
        parent = self.get(issuer)
        if not parent.is_ca:
            raise BadInput(f"'{issuer}' is not a CA and cannot issue certificates")
        csr = certs.load_csr(csr_pem)
        public_key = csr.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)  # load_csr checked it
        exts: list[tuple[x509.ExtensionType, bool]] = []
        for ext in csr.extensions:
            value = ext.value
            if isinstance(value, x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier):
                continue  # build_certificate adds its own
            if isinstance(value, x509.KeyUsage) and drop_data_encipherment:
                value = x509.KeyUsage(
                    digital_signature=value.digital_signature,
                    content_commitment=value.content_commitment,
                    key_encipherment=value.key_encipherment,
                    data_encipherment=False,
                    key_agreement=value.key_agreement,
                    key_cert_sign=value.key_cert_sign,
                    crl_sign=value.crl_sign,
                    encipher_only=value.encipher_only if value.key_agreement else False,
                    decipher_only=value.decipher_only if value.key_agreement else False,
                )
            exts.append((value, ext.critical))
        exts += _aia(ocsp_url)
        not_before, not_after = self._window(days, starts_in_days)
        cert = certs.build_certificate(
            subject=csr.subject,
            public_key=public_key,
            issuer=parent.cert.subject,
            issuer_key=_signing_key(parent),
            not_before=not_before,
            not_after=not_after,
            extensions=exts,
        )
        issued = Issued(name, cert, None, (parent.cert, *parent.chain))
        self.items[name] = issued
        return issued


def load_ca_dir(directory: Path, clock: Clock) -> LabCA:
    """A lab CA kept in files (``<name>.pem`` with its chain, ``<name>.key``), as ``certsim ca`` writes it.

    The folder is a user file like any other (cluster.userfiles): bounded in files and bytes, and a
    file that is not a certificate chain or a key is refused naming the file (UserFileError, exit 2)."""
    from cluster import userfiles  # noqa: PLC0415 - the loader only when a CA folder is read

    ca = LabCA(clock)
    if not directory.is_dir():
        return ca
    for pem in userfiles.ca_folder_files(directory):
        key_file = pem.with_suffix(".key")
        try:
            chain = x509.load_pem_x509_certificates(userfiles.read_bytes(pem, "ca"))
            key = certs.load_key(userfiles.read_bytes(key_file, "ca")) if key_file.exists() else None
        except (ValueError, BadInput) as exc:
            detail = getattr(exc, "message", None) or str(exc)
            raise userfiles.UserFileError(
                f"{pem}: not a certificate chain and key of the CA folder ({detail})"
            ) from None
        ca.items[pem.stem] = Issued(pem.stem, chain[0], key, tuple(chain[1:]))
    return ca
