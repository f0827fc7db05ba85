"""The lab CA's OCSP responder: RFC 6960 over real HTTP on loopback (R-OCSP-1..3).

:class:`OcspResponder` answers for every CA in a :class:`cluster.labca.LabCA` (read live,
so certificates issued after ``start()`` are known): POST of a DER request to
:attr:`OcspResponder.url`, or GET with the base64 request appended to it (RFC 6960
appendix A). Responses are built with ``cryptography``'s ``OCSPResponseBuilder``:

- status ``good`` for a serial the CA issued, ``revoked`` (time and reason) after
  :meth:`OcspResponder.revoke`, ``unknown`` for a serial the CA never issued;
- a request naming an issuer the lab CA does not hold gets ``unauthorized``, a request
  that does not parse ``malformedRequest``;
- ``thisUpdate`` is the lab's simulated clock, ``nextUpdate`` ``validity`` later; a
  request nonce is echoed.

Who signs is chosen per CA (:class:`SignerMode`, :meth:`OcspResponder.set_signer`): the
CA itself (default); a delegated responder certificate the CA issues with the
OCSPSigning EKU (included in the response); or a self-signed "trusted responder"
certificate with that EKU that nodes accept only if it is in their tomcat-trust
(:meth:`OcspResponder.signer_certificate` hands it out for upload) — R-OCSP-2.

Two ways to run it:

- in a scenario, :class:`cluster.scenario.Runner` starts one for its in-memory lab CA on
  first use (an ``ocsp`` step, a ``ca`` step with ``ocsp: true``, ``revoke``...) and stops it
  at the end of the run;
- for a lab started with ``certsim lab up``, the ``lab serve`` process runs one
  (:func:`start_lab_responder`) over the lab's CA directory ``<lab dir>/ca``
  (:class:`DirectoryCA`, re-read when its files change, so ``certsim ca create/sign`` work
  while the lab runs). Revocations are kept in ``<lab dir>/ca/revoked.json``
  (:data:`REVOKED_FILE`): ``certsim ca revoke`` writes it, the responder re-reads it when it
  changes. The URI is written to ``<lab dir>/ocsp.json`` (:data:`LAB_OCSP_FILE`), and the
  port is kept from one ``lab up`` to the next when it is free, so AIA URIs stay valid.

:meth:`OcspResponder.forget` makes the responder lose a certificate from its database (as
for one issued outside it): it then answers ``unknown`` for it (R-OCSP-3).

The HTTP side is aiohttp's server: small, well maintained, and its client serves the
nodes' :func:`node.ocsp_check.fetch`, so one dependency covers both ends of the real
HTTP exchange. Like :mod:`cluster.broker`, it binds loopback on a free port chosen at
construction, so the URL is known before ``start()`` (to put in certificates' AIA).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from cluster.broker import LOOPBACK, free_port, listen_on
from cluster.labca import Issued
from node import certs
from node.catalog import KU, KeyAlgo
from node.clock import Clock
from node.errors import BadInput, NotFound, Unavailable
from node.ocsp_check import OCSP_REQUEST_TYPE, OCSP_RESPONSE_TYPE, issuer_hashes

PATH = "/ocsp"
DEFAULT_VALIDITY = dt.timedelta(hours=24)
REVOKED_FILE = "revoked.json"  # in a CA directory: the revocations the responder reads
LAB_OCSP_FILE = "ocsp.json"  # in a lab directory: the URI (and port) of the lab's responder


class SignerMode(StrEnum):
    """Who signs a CA's OCSP responses (R-OCSP-2)."""

    CA = "ca"  # the issuing CA's own key (delegated trust model, direct)
    DELEGATED = "delegated"  # a responder certificate issued by the CA, OCSPSigning EKU
    TRUSTED = "trusted"  # an independent responder certificate, trusted only via tomcat-trust


class CertificateRegistry(Protocol):
    """What the responder reads from the lab CA: its named certificates (``LabCA.items``)."""

    @property
    def items(self) -> Mapping[str, Issued]: ...


@dataclass(frozen=True)
class Revocation:
    """A revoked certificate: when (simulated time) and why."""

    serial: int
    ca_name: str
    at: dt.datetime
    reason: x509.ReasonFlags


@dataclass(frozen=True)
class _Signer:
    cert: x509.Certificate
    key: certs.PrivateKey
    include: bool


def _reason(value: str | x509.ReasonFlags) -> x509.ReasonFlags:
    if isinstance(value, x509.ReasonFlags):
        return value
    wanted = value.replace("-", "").replace("_", "").lower()
    for flag in x509.ReasonFlags:
        if flag.value.lower() == wanted or flag.name.replace("_", "").lower() == wanted:
            return flag
    known = ", ".join(f.value for f in x509.ReasonFlags)
    raise BadInput(f"unknown revocation reason '{value}' (known: {known})")


class OcspResponder:
    """An OCSP responder over HTTP on loopback for every CA of ``ca`` (a LabCA).

    ``validity`` is the span from thisUpdate to nextUpdate. Use ``await start()`` /
    ``await stop()``; :meth:`revoke` and :meth:`set_signer` work before and after start.
    """

    def __init__(
        self,
        ca: CertificateRegistry,
        clock: Clock,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        validity: dt.timedelta = DEFAULT_VALIDITY,
        revocations_file: Path | None = None,
    ) -> None:
        self.ca = ca
        self.clock = clock
        self.host = host
        self._picked = port is None  # (not asked for: another one will do if it is taken, ``listen_on``)
        self.port = port or free_port(host)
        self.validity = validity
        self.revocations_file = revocations_file
        self.revoked: dict[int, Revocation] = {}
        self.forgotten: set[int] = set()  # serials the responder's database lost: answered unknown
        self.modes: dict[str, SignerMode] = {}
        self.requests = 0  # answered requests, for tests and benchmarks
        self._signers: dict[tuple[str, SignerMode], _Signer] = {}
        self._runner: web.AppRunner | None = None
        self._revocations_stamp: int | None = None
        self._sync_revocations()

    @property
    def url(self) -> str:
        """The responder URI to configure on nodes or put in certificates' AIA (R-OCSP-1)."""
        return f"http://{self.host}:{self.port}{PATH}"

    # --- administration -------------------------------------------------------------------

    def _ca(self, name: str) -> Issued:
        issued = self.ca.items.get(name)
        if issued is None or not issued.is_ca:
            known = ", ".join(sorted(n for n, i in self.ca.items.items() if i.is_ca)) or "none"
            raise NotFound(f"the lab CA has no CA named '{name}' (CAs: {known})")
        if issued.key is None:
            raise BadInput(f"the lab CA does not hold the private key of '{name}'")
        return issued

    def set_signer(self, ca_name: str, mode: SignerMode | str) -> None:
        """Choose who signs ``ca_name``'s responses (R-OCSP-2); creates the responder certificate if needed."""
        chosen = SignerMode(mode)
        self._ca(ca_name)
        self.modes[ca_name] = chosen
        self._signer(ca_name, chosen)

    def signer_certificate(self, ca_name: str) -> x509.Certificate:
        """The certificate that signs ``ca_name``'s responses now (upload it to tomcat-trust for TRUSTED)."""
        return self._signer(ca_name, self.modes.get(ca_name, SignerMode.CA)).cert

    def _signer(self, ca_name: str, mode: SignerMode) -> _Signer:
        found = self._signers.get((ca_name, mode))
        if found is not None:
            return found
        ca = self._ca(ca_name)
        assert ca.key is not None  # _ca checked it
        if mode is SignerMode.CA:
            signer = _Signer(ca.cert, ca.key, include=False)
        else:
            key = certs.new_private_key(KeyAlgo.EC, 256)
            role = "OCSP responder" if mode is SignerMode.DELEGATED else "trusted OCSP responder"
            subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{ca_name} {role}")])
            start = ca.cert.not_valid_before_utc
            cert = certs.build_certificate(
                subject=subject,
                public_key=key.public_key(),
                issuer=ca.cert.subject if mode is SignerMode.DELEGATED else subject,
                issuer_key=ca.key if mode is SignerMode.DELEGATED else key,
                not_before=start,
                not_after=ca.cert.not_valid_after_utc,
                extensions=[
                    (x509.BasicConstraints(ca=False, path_length=None), True),
                    (certs.key_usage([KU.DS]), True),
                    (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), False),
                    (x509.OCSPNoCheck(), False),
                ],
            )
            signer = _Signer(cert, key, include=True)
        self._signers[(ca_name, mode)] = signer
        return signer

    def _find(self, serial: int) -> tuple[str, Issued] | None:
        for issued in self.ca.items.values():
            if issued.cert.serial_number == serial and issued.chain:
                for ca_name, candidate in self.ca.items.items():
                    if candidate.cert == issued.chain[0]:
                        return ca_name, issued
        return None

    def _serial_of(self, cert_or_serial: x509.Certificate | Issued | int | str) -> int:
        if isinstance(cert_or_serial, Issued):
            return cert_or_serial.cert.serial_number
        if isinstance(cert_or_serial, x509.Certificate):
            return cert_or_serial.serial_number
        if isinstance(cert_or_serial, int):
            return cert_or_serial
        if cert_or_serial in self.ca.items:
            return self.ca.items[cert_or_serial].cert.serial_number
        try:
            return int(cert_or_serial.removeprefix("0x").replace(":", ""), 16)
        except ValueError:
            raise NotFound(f"'{cert_or_serial}' is neither a lab CA certificate name nor a hex serial") from None

    def revoke(
        self,
        cert_or_serial: x509.Certificate | Issued | int | str,
        reason: str | x509.ReasonFlags = x509.ReasonFlags.unspecified,
        at: dt.datetime | None = None,
    ) -> Revocation:
        """Revoke a certificate the lab CA issued (by object, lab name, or serial as int or hex).

        ``at`` defaults to the lab clock's now. Raises :class:`NotFound` for a certificate
        the lab CA did not issue, :class:`BadInput` for an unknown reason. With a
        ``revocations_file`` the revocation is also written there (for other processes).
        """
        serial = self._serial_of(cert_or_serial)
        found = self._find(serial)
        if found is None:
            raise NotFound(f"the lab CA issued no certificate with serial {serial:x}")
        when = (at or self.clock.now()).replace(microsecond=0)
        revocation = Revocation(serial, found[0], when, _reason(reason))
        self._sync_revocations()
        self.revoked[serial] = revocation
        if self.revocations_file is not None:
            _write_revocations(self.revocations_file, self.revoked.values())
            self._revocations_stamp = self.revocations_file.stat().st_mtime_ns
        return revocation

    def forget(self, cert_or_serial: x509.Certificate | Issued | int | str) -> int:
        """Make the responder's database lose a certificate: it answers ``unknown`` for it from now on (R-OCSP-3)."""
        serial = self._serial_of(cert_or_serial)
        if self._find(serial) is None:
            raise NotFound(f"the lab CA issued no certificate with serial {serial:x}")
        self.forgotten.add(serial)
        return serial

    def _sync_revocations(self) -> None:
        """Re-read the revocations file when another process (``certsim ca revoke``) changed it."""
        if self.revocations_file is None:
            return
        try:
            stamp = self.revocations_file.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._revocations_stamp:
            return
        self.revoked.update(_read_revocations(self.revocations_file))
        self._revocations_stamp = stamp

    # --- answering ------------------------------------------------------------------------

    def _issuer_for(self, request: ocsp.OCSPRequest) -> str | None:
        for name, issued in self.ca.items.items():
            if not issued.is_ca:
                continue
            if issuer_hashes(issued.cert, request.hash_algorithm) == (
                request.issuer_name_hash,
                request.issuer_key_hash,
            ):
                return name
        return None

    def _issued_by(self, ca_name: str, serial: int) -> bool:
        ca = self.ca.items[ca_name].cert
        if any(i.cert.serial_number == serial and i.chain and i.chain[0] == ca for i in self.ca.items.values()):
            return True
        return any(s.cert.serial_number == serial and s.cert.issuer == ca.subject for s in self._signers.values())

    def respond(self, request_der: bytes) -> bytes:
        """The DER response to a DER request (pure apart from reading the lab clock)."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            _ = request.serial_number  # multi-certificate requests raise here
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                serialization.Encoding.DER
            )
        ca_name = self._issuer_for(request)
        if ca_name is None:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(
                serialization.Encoding.DER
            )
        self._sync_revocations()
        now = self.clock.now().replace(microsecond=0)
        serial = request.serial_number
        revocation = self.revoked.get(serial)
        if revocation is not None and revocation.ca_name == ca_name:
            status, rev_time, rev_reason = ocsp.OCSPCertStatus.REVOKED, revocation.at, revocation.reason
        elif serial not in self.forgotten and self._issued_by(ca_name, serial):
            status, rev_time, rev_reason = ocsp.OCSPCertStatus.GOOD, None, None
        else:
            status, rev_time, rev_reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
        signer = self._signer(ca_name, self.modes.get(ca_name, SignerMode.CA))
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=request.issuer_name_hash,
                issuer_key_hash=request.issuer_key_hash,
                serial_number=serial,
                algorithm=request.hash_algorithm,
                cert_status=status,
                this_update=now,
                next_update=now + self.validity,
                revocation_time=rev_time,
                revocation_reason=rev_reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, signer.cert)
        )
        if signer.include:
            builder = builder.certificates([signer.cert])
        with contextlib.suppress(x509.ExtensionNotFound):
            nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value
            builder = builder.add_extension(nonce, critical=False)
        self.requests += 1
        return builder.sign(signer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    async def _post(self, request: web.Request) -> web.Response:
        if request.content_type != OCSP_REQUEST_TYPE:
            return web.Response(status=415, text=f"expected Content-Type {OCSP_REQUEST_TYPE}")
        body = await request.read()
        return web.Response(body=self.respond(body), content_type=OCSP_RESPONSE_TYPE)

    async def _get(self, request: web.Request) -> web.Response:
        encoded = request.raw_path.split("?", 1)[0][len(PATH) + 1 :]
        try:
            der = base64.b64decode(unquote(encoded), validate=True)
        except (binascii.Error, ValueError):
            der = b""
        return web.Response(body=self.respond(der), content_type=OCSP_RESPONSE_TYPE)

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on ``host:port``; raises :class:`Unavailable` if the port cannot be bound."""
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post(PATH, self._post)
        app.router.add_get(PATH + "/{request:.+}", self._get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()

        async def listen(port: int) -> int:
            await web.TCPSite(runner, self.host, port).start()
            return int(runner.addresses[0][1])

        try:
            self.port = await listen_on(self.port, listen, picked=self._picked)
        except OSError as exc:
            await runner.cleanup()
            raise Unavailable(f"the OCSP responder cannot listen on {self.host}:{self.port}: {exc}") from None
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ---------------------------------------------------------------------------------------------
# revocations kept in a file, a CA kept in a directory, the responder of a running lab


def _read_revocations(path: Path) -> dict[int, Revocation]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {
            int(item["serial"], 16): Revocation(
                int(item["serial"], 16),
                str(item["ca"]),
                dt.datetime.fromisoformat(str(item["at"])),
                _reason(str(item["reason"])),
            )
            for item in raw["revoked"]
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path} is not a revocation list certsim wrote: {exc}") from None


def _write_revocations(path: Path, revocations: Any) -> None:
    items = sorted(revocations, key=lambda r: (r.ca_name, r.serial))
    body = {
        "revoked": [
            {"serial": f"{r.serial:x}", "ca": r.ca_name, "at": r.at.isoformat(), "reason": r.reason.value}
            for r in items
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2), encoding="utf-8")
    os.replace(tmp, path)  # readers never see half a file


class DirectoryCA:
    """A lab CA kept in a directory, as ``certsim ca create/sign`` write it: ``NAME.pem`` (the
    certificate, then its chain) and ``NAME.key`` when the CA holds the key.

    :attr:`items` re-reads the directory whenever its files change, so a responder started
    before ``ca create`` answers for the new CA. A file that does not parse (being written)
    is skipped until the next read.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._items: dict[str, Issued] = {}

    def _scan(self) -> tuple[tuple[str, int], ...]:
        if not self.directory.is_dir():
            return ()
        found = []
        for path in self.directory.iterdir():
            if path.suffix in (".pem", ".key"):
                with contextlib.suppress(FileNotFoundError):
                    found.append((path.name, path.stat().st_mtime_ns))
        return tuple(sorted(found))

    @property
    def items(self) -> Mapping[str, Issued]:
        stamp = self._scan()
        if stamp != self._stamp:
            self._items = self._load()
            self._stamp = stamp
        return self._items

    def _load(self) -> dict[str, Issued]:
        items: dict[str, Issued] = {}
        for pem in sorted(self.directory.glob("*.pem")):
            try:
                chain = x509.load_pem_x509_certificates(pem.read_bytes())
                key_file = pem.with_suffix(".key")
                key = certs.load_key(key_file.read_bytes()) if key_file.exists() else None
            except (OSError, ValueError, BadInput):
                continue
            items[pem.stem] = Issued(pem.stem, chain[0], key, tuple(chain[1:]))
        return items


def lab_responder_url(lab_dir: Path) -> str | None:
    """The URI of the responder a running lab serves (``<lab dir>/ocsp.json``), if any."""
    try:
        raw = json.loads((lab_dir / LAB_OCSP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = raw.get("url") if isinstance(raw, dict) else None
    return url if isinstance(url, str) else None


async def start_lab_responder(lab_dir: Path, clock: Clock) -> OcspResponder:
    """Start the responder of a lab run by ``certsim lab serve``: over ``<lab dir>/ca``, with
    revocations in ``<lab dir>/ca/revoked.json``, on the port of the previous run when it is free
    (certificates may carry its URI in their AIA); writes ``<lab dir>/ocsp.json``."""
    ca_dir = lab_dir / "ca"
    info = lab_dir / LAB_OCSP_FILE
    previous: int | None = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        previous = int(json.loads(info.read_text(encoding="utf-8"))["port"])
    responder: OcspResponder | None = None
    if previous:
        candidate = OcspResponder(DirectoryCA(ca_dir), clock, port=previous, revocations_file=ca_dir / REVOKED_FILE)
        try:
            await candidate.start()
            responder = candidate
        except Unavailable:
            responder = None
    if responder is None:
        responder = OcspResponder(DirectoryCA(ca_dir), clock, revocations_file=ca_dir / REVOKED_FILE)
        await responder.start()
    info.write_text(json.dumps({"url": responder.url, "port": responder.port}, indent=2), encoding="utf-8")
    return responder
