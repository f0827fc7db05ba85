"""The certmgr REST API of one node (release 14+), over HTTPS with HTTP Basic authentication.

Endpoints, under ``/platformcom/api/v1/certmgr/config/`` (DOMAIN.md "Real-product interfaces"):

========  =========================  ==========================================================
POST      ``csr``                    ``{"service", "distribution", "commonName", "keyType",
                                     "keyLength", "hashAlgorithm", "altNames"}`` -> ``{"csr"}``
                                     (op ``csr_gen``, R-OP-CSR-1)
POST      ``identity/certificates``  ``{"service", "certificates": [...], "description"}`` (op
                                     ``identity_upload``; 400 while the issuer is not trusted or
                                     the key matches no CSR, R-OP-UPLOAD-3)
POST      ``trust/certificates``     ``{"service": [...], "certificates": [...], "description"}``
                                     (op ``upload`` into each service's trust store; the
                                     description by ``cert_describe``, as every door)
GET       ``trust/certificate``      ``?service=`` (a unit such as ``tomcat`` or a store such as
                                     ``tomcat-trust``; none: every trust store)
GET       ``identity/certificate``   ``?service=`` (none: every identity unit)
GET       ``snapshot/server``        every identity (with its pending CSR) and trust certificate
========  =========================  ==========================================================

Every request becomes node operations sent through the lab's control client (``RequestFn``),
the same path as the ``certsim`` CLI: the door holds no certificate state of its own. Errors
are JSON ``{"status", "error", "message"}``: a node's ``bad-input`` and ``refused`` are 400,
``not-found`` 404, ``unavailable`` 503. Wrong credentials are 401 and slow the peer down
(``doors.auth.Throttle``); bodies above 1 MiB are 413.

The listener presents the certificate Cisco Tomcat loaded when it last started, not the
node's current tomcat identity (R-OP-UPLOAD-4): ``TlsIdentity`` holds it and swaps it for new
handshakes when ``cluster.doors.frontdoors`` sees Tomcat restart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import socket
import ssl
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from cluster.doors.auth import Credentials, RequestFn, Throttle
from cluster.doors.descriptions import describe_upload
from cluster.labfile import LabSpec, NodeSpec
from node import certops, certs
from node.catalog import STORES, UNITS, KeyAlgo, stores_for
from node.errors import BadInput, CertsimError, NotFound
from node.safetext import safe_text

API_ROOT = "/platformcom/api/v1/certmgr/config/"
PAGES_ROOT = "/cmplatform"  # the OS Administration pages on the same listener (cluster.doors.web)
MAX_REQUEST_BYTES = 1 << 20  # 1 MiB, the bus's limit for a certificate upload too
REALM = "certmgr"

_STATUS = {"bad-input": 400, "refused": 400, "not-found": 404, "unavailable": 503}
_MULTI_SERVER = {"multi-server", "multi-server(san)", "multi-server (san)", "multiserver"}


# ---------------------------------------------------------------------------------------------
# the certificate the listener presents


@dataclass(frozen=True)
class TlsMaterial:
    """A certificate and its private key (PEM), as a service loaded them."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)  # never in a log line or a traceback

    @property
    def sha256(self) -> str:
        return certs.fingerprint(certs.load_certificates(self.cert_pem)[0])


def _server_context(material: TlsMaterial) -> ssl.SSLContext:
    """A TLS server context for ``material``. ``ssl`` loads keys only from files: they are written
    to a private temporary directory (0700, files 0600) and removed at once."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="certsim-tls-") as tmp:
        paths = {name: Path(tmp) / name for name in ("cert.pem", "key.pem")}
        for name, data in (("cert.pem", material.cert_pem), ("key.pem", material.key_pem)):
            fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(paths["cert.pem"], paths["key.pem"])  # raises if the key does not match
    return ctx


class TlsIdentity:
    """What the HTTPS listener presents, swappable without closing the listener.

    The listening context has no certificate of its own: its SNI callback (which OpenSSL calls
    for every handshake, with or without a server name) hands the handshake to the context of
    the current material. ``swap`` builds the new context first, so a bad key leaves the
    previous one in place; connections already open keep what they negotiated.
    """

    def __init__(self, material: TlsMaterial) -> None:
        self._current = _server_context(material)
        self.material = material
        self.listening = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.listening.minimum_version = ssl.TLSVersion.TLSv1_2
        self.listening.sni_callback = self._select

    def _select(self, conn: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        conn.context = self._current

    def swap(self, material: TlsMaterial) -> None:
        self._current = _server_context(material)
        self.material = material


# ---------------------------------------------------------------------------------------------
# errors and request parsing


def _error(status: int, message: str, code: str = "error", **extra: Any) -> web.Response:
    body = {"status": status, "error": code, "message": message, **extra}
    return web.json_response(body, status=status)


def _node_error(exc: CertsimError, **extra: Any) -> web.Response:
    return _error(_STATUS.get(exc.code, 500), exc.message, exc.code, **extra)


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # HTTPRequestEntityTooLarge above client_max_size
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"the request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadInput("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadInput("the request body must be a JSON object")
    return body


def _text(body: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"'{key}' must be a non-empty string")
    return value.strip()


def _pem_list(body: Mapping[str, Any], key: str = "certificates") -> list[str]:
    value = body.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadInput(f"'{key}' must be a non-empty array of PEM certificates")
    return [v.strip() for v in value]


def _pem_data(pems: list[str]) -> str:
    """The certificates as one base64 upload (an element may hold several PEM blocks); parsed here
    first so garbage is refused before anything reaches the node."""
    data = ("\n".join(pems) + "\n").encode()
    certs.load_certificates(data)  # BadInput naming the problem (R-OP-UPLOAD-2)
    return base64.b64encode(data).decode()


def _pem_of(download: Mapping[str, Any]) -> str:
    try:
        return base64.b64decode(str(download["data"]), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, KeyError):
        raise CertsimError("the node returned a malformed download") from None


# ---------------------------------------------------------------------------------------------
# the API


class CertmgrApi:
    """Request handlers for one node; every action is a node operation through ``request``."""

    def __init__(self, lab: LabSpec, node: NodeSpec, request: RequestFn) -> None:
        self.lab = lab
        self.node = node
        self._request = request

    async def call(self, op: str, args: dict[str, Any] | None = None) -> Any:
        return await self._request(op, args or {})

    # --- helpers -------------------------------------------------------------------------

    def _trust_store(self, service: str) -> str:
        """A trust store of this node from a service name (``tomcat``) or a store name (``tomcat-trust``)."""
        if service in STORES:
            store = service
        elif service in UNITS and UNITS[service].trust_store is not None:
            store = str(UNITS[service].trust_store)
        else:
            raise NotFound(
                f"unknown service '{service}'; give an identity unit (tomcat, CallManager, ...) or a trust store"
                f" ({', '.join(s.name for s in stores_for(self.node.role))})"
            )
        if store not in {s.name for s in stores_for(self.node.role)}:
            raise NotFound(f"a {self.node.role.value} node has no '{store}' store (service '{service}')")
        return store

    async def _trust_entries(self, store: str | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call("list", {"usage": "trust", **({"store": store} if store else {})})
        downloads = await asyncio.gather(
            *(self.call("download", {"store": r["store"], "name": r["name"], "format": "pem"}) for r in rows)
        )
        described: dict[str, str] = await self.call("cert_descriptions")
        return [
            {
                "service": r["store"],
                "filename": f"{r['name']}.pem",
                "certificate": _pem_of(d),
                "subject": r["subject"],
                "issuer": r["issuer"],
                "serialNumber": r["serial"],
                "notBefore": r["not_before"],
                "notAfter": r["not_after"],
                "keyType": r["key_type"],
                "sha256": r["sha256"],
                "description": described.get(f"{r['store']}/{r['name']}", ""),
            }
            for r, d in zip(rows, downloads, strict=True)
        ]

    async def _identities(self, service: str | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self.call("identity_list")
        if service is not None:
            rows = [r for r in rows if r["unit"] == service]
            if not rows:
                raise NotFound(f"this node has no '{service}' identity certificate")
        downloads = await asyncio.gather(*(self.call("download", {"store": r["unit"], "format": "pem"}) for r in rows))
        return [
            {
                "service": r["unit"],
                "filename": f"{r['unit']}.pem",
                "certificate": _pem_of(d),
                "source": r["source"],
                "commonName": r["cn"],
                "keyType": r["key_type"],
                "keyLength": r["key_bits"],
                "notAfter": r["not_after"],
                "sha256": r["sha256"],
                "csrPending": r["csr_pending"],
            }
            for r, d in zip(rows, downloads, strict=True)
        ]

    def _check_csr_request(self, body: Mapping[str, Any], service: str, multi: bool) -> int | None:
        """Refuse what the product would not put in this CSR (R-OP-CSR-1); return the key length asked for."""
        unit = UNITS.get(service)
        key_type = body.get("keyType")
        if unit is not None and key_type is not None:
            wanted = str(key_type).upper()
            algo = KeyAlgo.EC if wanted in ("EC", "ECDSA") else KeyAlgo.RSA if wanted == "RSA" else None
            if algo is None:
                raise BadInput(f"keyType must be RSA or EC, not '{key_type}'")
            if algo is not unit.key_algo:
                raise BadInput(
                    f"{service} carries an {unit.key_algo.value} key (R-UNIT-1); keyType {key_type} is wrong"
                )
        if unit is not None:
            certops.check_csr_hash(unit, body.get("hashAlgorithm"))  # SHA256; SHA384/512 for EC units
        length = body.get("keyLength")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int | str)):
            raise BadInput("keyLength must be a number such as 2048")
        try:
            size = None if length is None else int(length)
        except ValueError:
            raise BadInput(f"keyLength must be a number such as 2048, not '{length}'") from None
        if unit is not None:
            cn = body.get("commonName")
            expected = certops.csr_cn(unit, self.node.fqdn, multi_server=multi)
            if cn is not None and cn != expected:
                raise BadInput(f"the commonName of a {service} CSR on this node is '{expected}', not '{cn}'")
        certops.check_alt_names(body.get("altNames"))  # extra SANs ("Other Domains") go into the CSR
        return size

    # --- handlers ------------------------------------------------------------------------

    async def post_csr(self, request: web.Request) -> web.Response:
        """R-OP-CSR-1: a new CSR for a unit (replacing any pending one); 200 ``{"csr": PEM}``."""
        body = await _json_object(request)
        service = _text(body, "service")
        distribution = str(body.get("distribution") or "this-server").strip()
        if distribution.lower() in ("this-server", self.node.fqdn.lower(), self.node.name):
            multi = False
        elif distribution.lower() in _MULTI_SERVER:
            multi = True
        else:
            raise BadInput(f"distribution must be 'this-server' or 'Multi-server(SAN)', not '{distribution}'")
        size = self._check_csr_request(body, service, multi)
        args: dict[str, Any] = {"unit": service, "multi_server": multi, **({"key_size": size} if size else {})}
        if body.get("altNames"):
            args["alt_names"] = list(body["altNames"])
        if body.get("hashAlgorithm") is not None:
            args["hash"] = str(body["hashAlgorithm"])
        result = await self.call("csr_gen", args)
        return web.json_response({"csr": result["csr"]})

    async def post_identity(self, request: web.Request) -> web.Response:
        """R-OP-UPLOAD-3: a CA-signed identity (leaf first, then its chain). 400 while the issuer is not
        in the unit's trust store or the key matches no pending CSR; R-OP-UPLOAD-4: restart to use it."""
        body = await _json_object(request)
        service = _text(body, "service")
        description = certops.check_description(body.get("description", ""))
        data = _pem_data(_pem_list(body))
        result = await self.call("identity_upload", {"unit": service, "data": data})
        await describe_upload(self.call, service, result, description)
        return web.json_response(
            {
                "service": result["unit"],
                "message": result["message"],
                "hint": result.get("hint", ""),
                "commonName": result["cn"],
                "issuer": result["issuer"],
                "sha256": result["sha256"],
                "flags": result["flags"],
                "restart": result["restart"],
                "sharedWith": result["shared_with"],
                "notes": list(result.get("notes", [])),
            }
        )

    async def post_trust(self, request: web.Request) -> web.Response:
        """Trust certificates into each named service's trust store (replication by R-REPL-1..4).
        Everything is checked before the first upload; a store that refuses stops the rest (400, with
        what was already done)."""
        body = await _json_object(request)
        raw_services = body.get("service")
        services = [raw_services] if isinstance(raw_services, str) else raw_services
        if not isinstance(services, list) or not services or not all(isinstance(s, str) for s in services):
            raise BadInput("'service' must be an array of services such as [\"tomcat\"]")
        description = certops.check_description(body.get("description", ""))
        stores = list(dict.fromkeys(self._trust_store(s) for s in services))
        data = _pem_data(_pem_list(body))
        done: list[dict[str, Any]] = []
        for store in stores:
            try:
                result = await self.call("upload", {"store": store, "data": data})
                await describe_upload(self.call, store, result, description)
            except CertsimError as exc:
                if not done:
                    raise
                return _node_error(exc, completed=done)
            done.append({k: result[k] for k in ("store", "added", "replaced", "unchanged", "notes", "replicated")})
        return web.json_response(
            {"message": "Trust certificates uploaded", "description": safe_text(description), "results": done}
        )

    async def get_trust(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        store = self._trust_store(service) if service else None
        return web.json_response(await self._trust_entries(store))

    async def get_identity(self, request: web.Request) -> web.Response:
        return web.json_response(await self._identities(request.query.get("service") or None))

    async def get_snapshot(self, _request: web.Request) -> web.Response:
        """Every identity (with its pending CSR) and every trust certificate of this server."""
        identities, trusts, csrs = await asyncio.gather(
            self._identities(None), self._trust_entries(None), self.call("csr_list")
        )
        pending = {str(r["unit"]) for r in csrs}
        csr_pems = dict(
            zip(
                sorted(pending),
                await asyncio.gather(*(self.call("csr_get", {"unit": u}) for u in sorted(pending))),
                strict=True,
            )
        )
        by_store: dict[str, list[dict[str, str]]] = {}
        for t in trusts:
            by_store.setdefault(t["service"], []).append({"filename": t["filename"], "certificate": t["certificate"]})
        return web.json_response(
            {
                "server": self.node.fqdn,
                "trackingId": uuid.uuid4().hex,
                "identities": [
                    {
                        "service": i["service"],
                        "certificate": i["certificate"],
                        "csr": str(csr_pems[i["service"]]["csr"]) if i["service"] in csr_pems else "",
                    }
                    for i in identities
                ],
                "trusts": [{"service": s, "certificate_data": entries} for s, entries in sorted(by_store.items())],
                "revokedCertificates": [],
            }
        )


# ---------------------------------------------------------------------------------------------
# middlewares: JSON errors, authentication


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _errors_middleware(log: Any) -> Any:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_page(request):  # the web pages answer in HTML (cluster.doors.web)
            return await handler(request)
        try:
            return await handler(request)
        except CertsimError as exc:
            return _node_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            response = _error(exc.status, message or exc.reason, exc.reason.lower().replace(" ", "-"))
            for header in ("Allow", "WWW-Authenticate"):
                if header in exc.headers:
                    response.headers[header] = exc.headers[header]
            return response
        except Exception as exc:  # a bug, not a user error: say so without details of the server
            log.exception("rest-internal-error", path=request.path, error=f"{type(exc).__name__}: {exc}")
            return _error(500, "internal error; see the node log", "internal")

    return errors


def _auth_middleware(credentials: Credentials, throttle: Throttle, log: Any) -> Any:
    """HTTP Basic with the lab's OS administrator; every answer to a peer over its free failures waits."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _is_page(request):  # the web pages log in with a form and a session (cluster.doors.sessions)
            return await handler(request)
        peer = request.remote or "unknown"
        async with throttle.attempt(peer) as attempt:  # counted as a failure until it succeeds
            user = _authenticated(request, credentials)  # in its own frame: no password among these locals
            if not isinstance(user, str):
                attempt.failed()
                shown = _basic(request.headers.get("Authorization", ""))[0] if user is False else None
                log.warning("rest-auth-failed", peer=peer, user=(shown or "")[:64], failures=throttle.failures(peer))
                response = _error(401, "authentication required: HTTP Basic with the OS administrator", "unauthorized")
                response.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
                return response
            attempt.succeeded()
        return await handler(request)

    return auth


def _is_page(request: web.Request) -> bool:
    return request.path == PAGES_ROOT or request.path.startswith(PAGES_ROOT + "/")


def _authenticated(request: web.Request, credentials: Credentials) -> str | bool | None:
    """The user when the Basic credentials are right; False when wrong; None when absent."""
    user, password = _basic(request.headers.get("Authorization", ""))
    if user is None or password is None:
        return None
    return user if credentials.check(user, password) else False


def basic_auth_header(user: str, password: str) -> str:
    """The ``Authorization`` value of HTTP Basic (RFC 7617, UTF-8), for clients of this API."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _basic(header: str) -> tuple[str | None, str | None]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, None)


# ---------------------------------------------------------------------------------------------
# the server


class RestDoor:
    """A running HTTPS listener of one node."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, tls: TlsIdentity) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        self.tls = tls

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{API_ROOT}"

    async def close(self) -> None:
        await self._runner.cleanup()


def build_app(
    api: CertmgrApi, credentials: Credentials, throttle: Throttle, log: Any, *, max_request_bytes: int
) -> web.Application:
    app = web.Application(
        client_max_size=max_request_bytes,
        middlewares=[_errors_middleware(log), _auth_middleware(credentials, throttle, log)],
    )
    app.router.add_post(API_ROOT + "csr", api.post_csr)
    app.router.add_post(API_ROOT + "identity/certificates", api.post_identity)
    app.router.add_post(API_ROOT + "trust/certificates", api.post_trust)
    app.router.add_get(API_ROOT + "trust/certificate", api.get_trust)
    app.router.add_get(API_ROOT + "identity/certificate", api.get_identity)
    app.router.add_get(API_ROOT + "snapshot/server", api.get_snapshot)
    return app


async def start_rest_server(
    *,
    sock: socket.socket,
    lab: LabSpec,
    node: NodeSpec,
    request: RequestFn,
    credentials: Credentials,
    throttle: Throttle,
    tls: TlsIdentity,
    log: Any,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    remote: Callable[[str], RequestFn] | None = None,
) -> RestDoor:
    """Serve the certmgr API on ``sock`` (a bound listening socket: ``cluster.doors.frontdoors`` picks the
    port, falling back to a free one) until ``RestDoor.close``."""
    app = build_app(CertmgrApi(lab, node, request), credentials, throttle, log, max_request_bytes=max_request_bytes)
    from cluster.doors.web import add_pages  # noqa: PLC0415 - jinja2 only where a door serves pages

    add_pages(
        app, lab=lab, node=node, request=request, credentials=credentials, throttle=throttle, log=log, remote=remote
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock, ssl_context=tls.listening)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = sock.getsockname()[:2]
    return RestDoor(runner, str(host), int(port), tls)
