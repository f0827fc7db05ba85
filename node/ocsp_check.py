"""OCSP client core of a node (R-OCSP-1..3): requests, response validation, the CC-mode decision.

Pure functions over ``cryptography`` objects, plus one small I/O adapter (:func:`fetch`, an
HTTP POST with aiohttp, loopback only) and :func:`check`, which chains them for the agent.

- R-OCSP-1: :func:`responder_url` takes the configured URI, else the certificate's AIA
  OCSP entry.
- R-OCSP-2: :func:`evaluate_response` accepts a response signed under the delegated trust
  model first (by the issuing CA itself, or by a responder certificate the issuer signed
  that carries the OCSPSigning EKU and is valid at ``now``), then falls back to a trusted
  responder: a certificate in the node's tomcat-trust (passed as ``trust_store_certs``)
  that matches the response's responder ID and verifies its signature.
- R-OCSP-3: :func:`allowed` — good passes; revoked fails; unknown fails in Common
  Criteria mode and passes otherwise.

Responses that cannot be trusted are refused with :class:`OcspError` (a ``Refused``):
not ``successful``, no single response for the certificate's serial and issuer, a
signature that does not verify or a signer nobody trusts, a ``thisUpdate`` in the future
or a ``nextUpdate`` in the past (or, without ``nextUpdate``, older than ``max_age``), a
nonce that differs from the request's. :func:`check` turns such a refusal, and an
unreachable responder, into status ``unknown`` with the reason, decided by R-OCSP-3 like
any unknown: that is certsim's reading of "unknown" for a response the node cannot use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from node import certs
from node.errors import BadInput, Refused, Unavailable

if TYPE_CHECKING:
    from aiohttp import ClientSession

CLOCK_SKEW = dt.timedelta(minutes=5)  # tolerated for thisUpdate slightly ahead of the node's clock
DEFAULT_MAX_AGE = dt.timedelta(days=7)  # for responses without nextUpdate
MAX_RESPONSE_BYTES = 1 << 20
OCSP_REQUEST_TYPE = "application/ocsp-request"
OCSP_RESPONSE_TYPE = "application/ocsp-response"


class OcspStatus(StrEnum):
    """Certificate status as listings show it (R-OCSP-3)."""

    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


class Signer(StrEnum):
    """Which trust model accepted the response's signature (R-OCSP-2)."""

    ISSUER = "issuer"  # delegated trust model: the issuing CA signed it
    DELEGATED = "delegated"  # delegated trust model: a responder certificate the issuer signed, OCSPSigning EKU
    TRUSTED = "trusted"  # trusted responder: its signing certificate is in tomcat-trust
    NONE = "none"  # no usable response (see OcspResult.reason)


class OcspError(Refused):
    """An OCSP response the node refuses to use, with the reason."""


@dataclass(frozen=True)
class OcspResult:
    """The outcome of one OCSP check: the status, whether the connection may proceed, and why."""

    status: OcspStatus
    allowed: bool
    signer: Signer
    reason: str = ""
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    revocation_time: dt.datetime | None = None
    revocation_reason: str | None = None


def allowed(status: OcspStatus, cc_mode: bool) -> bool:
    """R-OCSP-3: revoked fails; unknown fails only in Common Criteria mode; good passes."""
    if status is OcspStatus.GOOD:
        return True
    if status is OcspStatus.REVOKED:
        return False
    return not cc_mode


def unusable(reason: str, cc_mode: bool) -> OcspResult:
    """The result for a check that produced no usable answer: status unknown (R-OCSP-3)."""
    return OcspResult(OcspStatus.UNKNOWN, allowed(OcspStatus.UNKNOWN, cc_mode), Signer.NONE, reason)


# ---------------------------------------------------------------------------------------------
# Requests (R-OCSP-1)


def aia_ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responder URIs in ``cert``'s Authority Information Access extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [
        str(d.access_location.value)
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]


def responder_url(cert: x509.Certificate, configured: str | None = None) -> str:
    """R-OCSP-1: the configured responder URI if set, else the first AIA OCSP URI of ``cert``."""
    if configured:
        return configured
    urls = aia_ocsp_urls(cert)
    if not urls:
        raise BadInput(
            f"no OCSP responder for serial {cert.serial_number:x}: "
            "none is configured and the certificate has no AIA OCSP URI"
        )
    return urls[0]


def new_nonce() -> bytes:
    """16 random bytes for the request's nonce extension."""
    return os.urandom(16)


def build_request(cert: x509.Certificate, issuer: x509.Certificate, *, nonce: bytes | None = None) -> bytes:
    """DER of an RFC 6960 request for ``cert`` issued by ``issuer`` (SHA-1 CertID, as most responders expect)."""
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303 - CertID hash per RFC 6960, not a signature
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


# ---------------------------------------------------------------------------------------------
# CertID hashes (shared with the responder)


def _der_length(data: bytes, at: int) -> tuple[int, int]:
    first = data[at]
    if first < 0x80:
        return first, at + 1
    count = first & 0x7F
    return int.from_bytes(data[at + 1 : at + 1 + count], "big"), at + 1 + count


def public_key_bits(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> bytes:
    """The subjectPublicKey BIT STRING contents of a key: what a CertID's issuerKeyHash hashes."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    _, pos = _der_length(spki, 1)  # outer SEQUENCE
    alg_len, alg_body = _der_length(spki, pos + 1)  # AlgorithmIdentifier
    pos = alg_body + alg_len
    if spki[pos] != 0x03:
        raise BadInput("malformed SubjectPublicKeyInfo: no BIT STRING")
    bits_len, bits_at = _der_length(spki, pos + 1)
    return spki[bits_at + 1 : bits_at + bits_len]  # skip the unused-bits byte


def _hash(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    return hashlib.new(algorithm.name, data).digest()


def issuer_hashes(issuer: x509.Certificate, algorithm: hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of ``issuer`` under ``algorithm``, as in a CertID."""
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"unsupported issuer key type {type(key).__name__}")
    return _hash(algorithm, issuer.subject.public_bytes()), _hash(algorithm, public_key_bits(key))


# ---------------------------------------------------------------------------------------------
# Responses (R-OCSP-2, R-OCSP-3)


def _verify(signer: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    algorithm = response.signature_hash_algorithm
    if algorithm is None:
        return False
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _is_responder_id(cert: x509.Certificate, response: ocsp.OCSPResponse) -> bool:
    if response.responder_name is not None:
        return cert.subject == response.responder_name
    key = cert.public_key()
    if response.responder_key_hash is None or not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return hashlib.sha1(public_key_bits(key)).digest() == response.responder_key_hash  # noqa: S324 - RFC 6960 KeyHash


def _has_ocsp_signing(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku


def _valid_at(cert: x509.Certificate, now: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def accept_signature(
    response: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    trust_store_certs: Iterable[x509.Certificate],
    now: dt.datetime,
) -> Signer:
    """R-OCSP-2: which trust model accepts ``response``'s signature; :class:`OcspError` if none does.

    Order: the issuer itself; a responder certificate included in the response, issued by
    the issuer, with the OCSPSigning EKU and valid at ``now``; then a certificate from
    tomcat-trust (``trust_store_certs``) valid at ``now``.
    """
    bad_signature: list[str] = []
    untrusted: list[str] = []
    if _is_responder_id(issuer, response):
        if _verify(issuer, response):
            return Signer.ISSUER
        bad_signature.append("the issuing CA's key does not verify it")
    for included in response.certificates:
        if not _is_responder_id(included, response):
            continue
        what = f"included responder certificate '{certs.dn_text(included.subject)}'"
        if not _issued_by(included, issuer):
            untrusted.append(f"{what} is not issued by the CA")
        elif not _has_ocsp_signing(included):
            untrusted.append(f"{what} lacks the OCSPSigning EKU")
        elif not _valid_at(included, now):
            untrusted.append(f"{what} is not valid now")
        elif _verify(included, response):
            return Signer.DELEGATED
        else:
            bad_signature.append(f"{what} does not verify it")
    for trusted in trust_store_certs:
        if not _is_responder_id(trusted, response):
            continue
        what = f"trusted responder '{certs.dn_text(trusted.subject)}'"
        if not _valid_at(trusted, now):
            untrusted.append(f"{what} is not valid now")
        elif _verify(trusted, response):
            return Signer.TRUSTED
        else:
            bad_signature.append(f"{what} does not verify it")
    if bad_signature:
        raise OcspError("OCSP response has a bad signature: " + "; ".join(bad_signature + untrusted))
    detail = "; ".join(untrusted) or "no candidate matches its responder ID"
    raise OcspError(
        "OCSP response is signed by an untrusted responder (neither the issuing CA, nor a delegated responder "
        f"it issued, nor a certificate in tomcat-trust): {detail}"
    )


def _nonce_of(extensions: x509.Extensions) -> bytes | None:
    try:
        return extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _single_for(
    response: ocsp.OCSPResponse, cert: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    seen: list[str] = []
    for single in response.responses:
        name_hash, key_hash = issuer_hashes(issuer, single.hash_algorithm)
        if (
            single.serial_number == cert.serial_number
            and single.issuer_name_hash == name_hash
            and single.issuer_key_hash == key_hash
        ):
            return single
        seen.append(f"{single.serial_number:x}")
    raise OcspError(
        f"OCSP response does not answer for serial {cert.serial_number:x} of this issuer "
        f"(it answers for {', '.join(seen) or 'nothing'})"
    )


def evaluate_response(
    der: bytes,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    trust_store_certs: Iterable[x509.Certificate],
    now: dt.datetime,
    cc_mode: bool,
    *,
    nonce: bytes | None = None,
    max_age: dt.timedelta = DEFAULT_MAX_AGE,
) -> OcspResult:
    """Validate an OCSP response for ``cert`` (issued by ``issuer``) at simulated ``now`` (R-OCSP-2/3).

    ``trust_store_certs`` are the node's tomcat-trust certificates (trusted responders).
    Returns the status and whether the connection is allowed under ``cc_mode``; raises
    :class:`OcspError` for a response that cannot be trusted (see the module docstring).
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError as exc:
        raise OcspError(f"malformed OCSP response: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OcspError(f"OCSP responder answered {response.response_status.name.lower()}")
    single = _single_for(response, cert, issuer)
    signer = accept_signature(response, issuer, trust_store_certs, now)
    if nonce is not None:
        answered = _nonce_of(response.extensions)
        if answered is not None and answered != nonce:
            raise OcspError("OCSP response nonce does not match the request's (a replayed response?)")
    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > now + CLOCK_SKEW:
        raise OcspError(f"OCSP response thisUpdate {this_update.isoformat()} is in the future (now {now.isoformat()})")
    if next_update is not None and now > next_update:
        raise OcspError(f"OCSP response is stale: nextUpdate {next_update.isoformat()} passed (now {now.isoformat()})")
    if next_update is None and now - this_update > max_age:
        raise OcspError(f"OCSP response is stale: thisUpdate {this_update.isoformat()} is older than {max_age}")
    status = {
        ocsp.OCSPCertStatus.GOOD: OcspStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED: OcspStatus.REVOKED,
        ocsp.OCSPCertStatus.UNKNOWN: OcspStatus.UNKNOWN,
    }[single.certificate_status]
    reason = single.revocation_reason
    return OcspResult(
        status=status,
        allowed=allowed(status, cc_mode),
        signer=signer,
        reason=f"OCSP status {status} (signed by the {signer} model)",
        this_update=this_update,
        next_update=next_update,
        revocation_time=single.revocation_time_utc,
        revocation_reason=reason.name if reason is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# I/O adapter


def require_loopback(url: str) -> None:
    """Refuse (:class:`BadInput`) a responder URI that is not ``http://`` on a loopback host."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise BadInput(f"OCSP responder URI must be http://host[:port]/..., not '{url}'")
    host = parts.hostname
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BadInput(f"certsim only asks OCSP responders on loopback; '{host}' is not a loopback address")


async def _post(session: ClientSession, url: str, request_der: bytes, timeout: float) -> bytes:
    import aiohttp  # noqa: PLC0415 - only nodes with OCSP enabled pay for importing aiohttp

    async with session.post(
        url,
        data=request_der,
        headers={"Content-Type": OCSP_REQUEST_TYPE},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as reply:
        body = await reply.content.read(MAX_RESPONSE_BYTES + 1)
        if reply.status != 200:
            raise Unavailable(f"OCSP responder {url} answered HTTP {reply.status}")
        if reply.content_type != OCSP_RESPONSE_TYPE:
            raise Unavailable(f"OCSP responder {url} answered {reply.content_type}, not {OCSP_RESPONSE_TYPE}")
    return body


async def fetch(url: str, request_der: bytes, *, timeout: float = 5.0, session: ClientSession | None = None) -> bytes:
    """POST ``request_der`` to the responder at ``url`` (loopback only) and return the response DER.

    ``session`` (optional) is an aiohttp client session to reuse, so a node checking many
    certificates keeps one connection pool; without it each call opens and closes its own.
    Raises :class:`BadInput` for a non-loopback URI and :class:`Unavailable` when the
    responder cannot be reached or answers other than 200 with an OCSP response.
    """
    import aiohttp  # noqa: PLC0415 - only nodes with OCSP enabled pay for importing aiohttp

    require_loopback(url)
    try:
        if session is None:
            async with aiohttp.ClientSession() as own:
                body = await _post(own, url, request_der, timeout)
        else:
            body = await _post(session, url, request_der, timeout)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unavailable(f"OCSP responder {url} cannot be reached: {exc or type(exc).__name__}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise Unavailable(f"OCSP responder {url} sent more than {MAX_RESPONSE_BYTES} bytes")
    return body


async def check(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    trust_store_certs: Iterable[x509.Certificate],
    now: dt.datetime,
    cc_mode: bool,
    *,
    configured_url: str | None = None,
    timeout: float = 5.0,
    session: ClientSession | None = None,
) -> OcspResult:
    """One complete check (R-OCSP-1..3): URI, request with a nonce, fetch, validate.

    Never raises for responder trouble: an unreachable responder or a refused response
    gives status unknown with the reason, allowed only outside Common Criteria mode.
    """
    try:
        url = responder_url(cert, configured_url)
        nonce = new_nonce()
        der = await fetch(url, build_request(cert, issuer, nonce=nonce), timeout=timeout, session=session)
        return evaluate_response(der, cert, issuer, list(trust_store_certs), now, cc_mode, nonce=nonce)
    except (OcspError, BadInput, Unavailable) as exc:
        return unusable(exc.message, cc_mode)
