"""``certsim lab ui``: a dashboard of a running lab on loopback, for an instructor to see it at a glance.

Every node (up, converged, alarms, the tomcat certificate its HTTPS door serves, a link to its OS
Administration pages), the trust matrix of the replicated stores (``cluster.report.trust_matrix``,
differences highlighted), a live feed of the lab's history (server-sent events tailing
``<lab dir>/history.jsonl``: uploads, deletes, replication applies, digests, faults, alarms), the lab
clock (show, advance) and fault buttons (stop/start/crash a node, partition/heal, broker restart).

Like the nodes' pages it is a thin adapter: it reads through node operations and ``@lab`` requests
of the control client (the ``certsim`` CLI's path) and acts only through them. It logs in the lab's
OS administrator with the same session, CSRF and throttle rules as the nodes' pages
(``cluster.doors.sessions``), and listens on 127.0.0.1 over HTTPS with a certificate made at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cluster.control import LAB_TARGET, ControlClient
from cluster.doors.auth import Credentials, Throttle
from cluster.doors.rest import TlsIdentity, TlsMaterial
from cluster.doors.sessions import Handler, PageAuth, has_session
from cluster.doors.web import SECURITY_HEADERS, static_file, templates
from cluster.labdir import HISTORY_FILE
from cluster.labfile import LabSpec
from cluster.report import READ_ONLY_OPS, trust_matrix
from cluster.running import front_doors
from node import certs
from node.errors import BadInput, CertsimError, Unavailable

ROOT = "/lab"
POLL_S = 0.5  # how often the event stream looks for new history lines
STATUS_EVERY_S = 2.0  # how often it asks the nodes whether one came or went
FEED_BACKLOG = 50  # history lines a new page is shown first
MAX_EVENT_LINE = 64 * 1024  # bytes of one history line the event stream holds; a longer one is skipped
MAX_STREAMS = 32  # event streams open at once (browser tabs); more are refused (503) until one closes
FAULTS = {"stop", "start", "crash", "partition", "heal", "broker_restart"}
_CHANGES = {"apply", "state-in", "state-adopted", "crash", "rejoin", "install", "service-started", "monitor-alarms"}


def self_signed_loopback() -> TlsMaterial:
    """A certificate for 127.0.0.1 made at start (the dashboard is not a node: no node identity to serve)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "certsim lab ui")])
    now = dt.datetime.now(dt.UTC)  # a TLS certificate for a real browser: real time, not the lab clock
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return TlsMaterial(certs.pem_of(cert).encode(), certs.key_pem(key))


def feed_line(event: Mapping[str, Any]) -> str:
    """One history event as a line of the feed (text: the browser shows it as text, never as HTML)."""
    skip = {"wall", "event", "node", "sim"}
    rest = " ".join(
        f"{k}={json.dumps(v, default=str) if isinstance(v, dict | list) else v}"
        for k, v in event.items()
        if k not in skip and v not in (None, "", [], {})
    )
    line = f"{event.get('sim', '')} {event.get('node', '')} {event.get('event', '')} {rest}"
    return " ".join(line.split())[:400]  # one line: an SSE data field ends at a newline


def split_lines(pending: bytes, chunk: bytes, limit: int = MAX_EVENT_LINE) -> tuple[list[bytes], bytes]:
    """The whole lines of ``pending + chunk`` and what is left of an unfinished one. What is held never
    exceeds ``limit`` bytes: a line longer than that is dropped (its rest up to its newline too)."""
    *lines, rest = (pending + chunk).split(b"\n")
    kept = [line for line in lines if len(line) <= limit and not line.startswith(_SKIPPED)]
    if len(rest) > limit:
        rest = _SKIPPED  # remember to drop the rest of this line when its newline comes
    return kept, rest


_SKIPPED = b"\x00skip"  # a marker no JSON line starts with


def is_shown(event: Mapping[str, Any]) -> bool:
    """Whether the feed shows a history event: not the reads (the dashboard's own among them)."""
    return not (event.get("event") == "op" and str(event.get("op")) in READ_ONLY_OPS)


def is_change(event: Mapping[str, Any]) -> bool:
    """Whether a history event may change what the dashboard shows (so the page refreshes)."""
    kind = event.get("event")
    if kind == "op":
        return str(event.get("op")) not in READ_ONLY_OPS
    return kind in _CHANGES or str(kind).startswith("lab-")


@dataclass
class NodeView:
    name: str
    fqdn: str
    role: str
    up: bool
    connected: bool
    converged: bool
    alarms: int
    last_alarm: str
    served: str
    served_detail: str
    link: str


class Dashboard:
    """The dashboard of one running lab, reached through ``client`` (a started control client)."""

    def __init__(
        self,
        spec: LabSpec,
        lab_dir: Path,
        client: ControlClient,
        throttle: Throttle | None = None,
        *,
        auth: PageAuth | None = None,
        base: str = ROOT,
    ) -> None:
        self.spec = spec
        self.lab_dir = lab_dir
        self.client = client
        self.auth = auth or PageAuth(ROOT, spec.os_admin, throttle or Throttle(), _Log())
        self.base = base  # where this cluster's pages live: /lab, or /lab/c/<cluster> in a class
        self.streams = [0]  # live feeds open now (MAX_STREAMS); a list: the boards of a class share one
        self.env = templates()

    # -- what the page shows --------------------------------------------------------------------

    async def _node(self, name: str, status: Mapping[str, Any] | None, agree: Mapping[str, str]) -> NodeView:
        spec = self.spec.node(name)
        doors = _door_files(self.lab_dir).get(name) or {}
        https = doors.get("https") or {}
        link = f"https://{https['address']}/cmplatform" if https.get("address") else ""
        served, detail, alarms, last_alarm = "-", "", 0, ""
        if status is not None:
            with contextlib.suppress(CertsimError):
                cert = await self.client.request(
                    name, "service_cert", {"name": "Cisco Tomcat", "unit": "tomcat"}, timeout=5
                )
                served = f"{cert['cn']} ({cert['serial'][:12]})"
                detail = f"issued by {cert['issuer_cn']}, expires {cert['not_after']}, sha256 {cert['sha256'][:16]}"
            with contextlib.suppress(CertsimError):
                log = await self.client.request(name, "syslog", {"limit": 50}, timeout=5)
                alarms = len(log)
                last_alarm = str(log[-1]["text"])[:200] if log else ""
        digests = (status or {}).get("digests") or {}
        converged = status is not None and all(agree.get(s) == d for s, d in digests.items() if s in agree)
        return NodeView(
            name,
            spec.fqdn,
            spec.role.value,
            status is not None,
            bool((status or {}).get("connected")),
            converged,
            alarms,
            last_alarm,
            served,
            detail,
            link,
        )

    async def snapshot(self) -> dict[str, Any]:
        """Everything the live part of the page shows, asked of the lab now."""
        names = list(self.spec.node_names)

        async def status(n: str) -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = await self.client.request(n, "status", timeout=3)
            except Unavailable:
                return None
            return result

        statuses = dict(zip(names, await asyncio.gather(*(status(n) for n in names)), strict=True))
        agree = _majority_digests([s for s in statuses.values() if s is not None])
        nodes = await asyncio.gather(*(self._node(n, statuses[n], agree) for n in names))

        async def holdings(n: str) -> list[dict[str, Any]] | None:
            try:
                rows: list[dict[str, Any]] = await self.client.request(n, "list", {"usage": "trust"}, timeout=5)
            except CertsimError:
                return None
            return rows

        up = [n for n in names if statuses[n] is not None]
        matrix = trust_matrix(dict(zip(up, await asyncio.gather(*(holdings(n) for n in up)), strict=True)))
        lab: dict[str, Any] = {}
        with contextlib.suppress(CertsimError):
            lab = await self.client.request(LAB_TARGET, "status", timeout=3)
        clock: dict[str, Any] = {}
        with contextlib.suppress(CertsimError):
            clock = await self.client.request(LAB_TARGET, "clock", timeout=3)
        return {"nodes": nodes, "matrix": matrix, "labinfo": lab, "clock": clock}

    async def summary(self) -> str:
        """What, when it changes, makes open pages refresh: which nodes answer, their bus connection and
        digests, the partitions. Cheap (one ``status`` per node): the rest changes with history events."""

        async def one(n: str) -> Any:
            try:
                st = await self.client.request(n, "status", timeout=3)
            except Unavailable:
                return None
            return [st.get("connected"), st.get("digests")]

        names = list(self.spec.node_names)
        nodes = await asyncio.gather(*(one(n) for n in names))
        lab: dict[str, Any] = {}
        with contextlib.suppress(CertsimError):
            lab = await self.client.request(LAB_TARGET, "status", timeout=3)
        return json.dumps([names, nodes, lab.get("partitioned"), lab.get("running")], default=str)

    # -- handlers -------------------------------------------------------------------------------

    async def render(self, request: web.Request, template: str, http_status: int = 200, **ctx: Any) -> web.Response:
        session = self.auth.session(request) if has_session(request) else None
        flash = list(session.flash) if session else []
        if session:
            session.flash.clear()
        body = self.env.get_template(template).render(
            root=ROOT,
            base=self.base,
            lab=self.spec,
            user=session.user if session else None,
            csrf=session.csrf if session else "",
            flash=flash,
            **ctx,
        )
        response = web.Response(text=body, status=http_status, content_type="text/html", charset="utf-8")
        response.headers.update(SECURITY_HEADERS)
        return response

    async def login_form(self, request: web.Request, error: str = "") -> web.Response:
        async def page(token: str) -> web.Response:
            return await self.render(
                request,
                "lab_login.html",
                http_status=401 if error else 200,
                title=f"certsim lab {self.spec.name}",
                error=error,
                login_token=token,
            )

        return await self.auth.login_page(page)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        signed_in, error = await self.auth.sign_in(request, ROOT)  # one login for every cluster of the lab
        if signed_in is None:
            return await self.login_form(request, error)
        raise signed_in

    async def logout(self, request: web.Request) -> web.StreamResponse:
        raise self.auth.logout(request)

    async def page(self, request: web.Request) -> web.Response:
        snap = await self.snapshot()
        return await self.render(
            request, "lab_dashboard.html", title=f"certsim lab {self.spec.name}", feed=self._backlog(), **snap
        )

    async def fragment(self, request: web.Request) -> web.Response:
        snap = await self.snapshot()
        return await self.render(request, "lab_live.html", title="", **snap)

    async def fault(self, request: web.Request) -> web.StreamResponse:
        """A fault button: the ``@lab`` request ``certsim fault ...`` sends."""
        form = await request.post()
        action = str(form.get("action", ""))
        session = self.auth.session(request)
        try:
            if action not in FAULTS:
                raise BadInput(f"unknown fault '{action}'; known: {', '.join(sorted(FAULTS))}")
            args: dict[str, Any] = {}
            if action in ("stop", "start", "crash"):
                args["node"] = str(form.get("node", ""))
            elif action == "partition":
                args["nodes"] = [str(n) for n in form.getall("nodes", [])]
            elif action == "broker_restart":
                args["down_s"] = 1.0
            result = await self.client.request(LAB_TARGET, action, args, timeout=60)
        except CertsimError as exc:
            session.flash.append(("error", exc.message))
        else:
            session.flash.append(("ok", f"{action}: {json.dumps(result, default=str)}"))
        raise web.HTTPSeeOther(self.base)

    async def advance(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        session = self.auth.session(request)
        by = str(form.get("by", "")).strip()
        try:
            result = await self.client.request(LAB_TARGET, "advance", {"by": by}, timeout=600)
        except CertsimError as exc:
            session.flash.append(("error", exc.message))
        else:
            session.flash.append(("ok", f"lab clock advanced from {result['from']} to {result['sim_time']}"))
        raise web.HTTPSeeOther(self.base)

    def _backlog(self) -> list[str]:
        path = self.lab_dir / HISTORY_FILE
        if not path.exists():
            return []
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 64 * 1024))
            lines = f.read().decode("utf-8", errors="replace").splitlines()[1:]
        out = []
        for line in lines[-FEED_BACKLOG:]:
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and is_shown(event):
                    out.append(feed_line(event))
        return list(reversed(out))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: ``history`` per new line of the lab's history, ``changed`` when the page
        should refresh its live part (a change in the history, a node that came or went). Bounded: at
        most ``MAX_STREAMS`` streams, each holding at most one history line of ``MAX_EVENT_LINE`` bytes
        (a line is sent as soon as it is read; nothing queues for a slow browser but the socket's buffer)."""
        if self.streams[0] >= MAX_STREAMS:
            raise web.HTTPServiceUnavailable(text=f"{MAX_STREAMS} live feeds are open; close one and reload")
        self.streams[0] += 1
        try:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
            await response.prepare(request)
            async for kind, data in self._stream():
                try:
                    await response.write(f"event: {kind}\ndata: {data}\n\n".encode())
                except (ConnectionResetError, RuntimeError):
                    break
            return response
        finally:
            self.streams[0] -= 1

    async def _stream(self) -> AsyncIterator[tuple[str, str]]:
        path = self.lab_dir / HISTORY_FILE
        offset = path.stat().st_size if path.exists() else 0
        last_summary = ""
        next_status = 0.0
        loop = asyncio.get_running_loop()
        buffer = b""
        while True:
            changed = False
            size = path.stat().st_size if path.exists() else 0
            if size < offset:  # the lab moved a full history aside (cluster.lab.History): read the new one
                offset, buffer = 0, b""
            if size > offset:
                with path.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read(1 << 20)
                offset += len(chunk)
                lines, buffer = split_lines(buffer, chunk)
                for raw in lines:
                    with contextlib.suppress(ValueError):
                        event = json.loads(raw)
                        if isinstance(event, dict) and is_shown(event):
                            yield "history", feed_line(event)
                            changed = changed or is_change(event)
            if loop.time() >= next_status:
                next_status = loop.time() + STATUS_EVERY_S
                with contextlib.suppress(CertsimError):
                    summary = await self.summary()
                    if summary != last_summary:
                        changed = changed or bool(last_summary)
                        last_summary = summary
            if changed:
                yield "changed", "1"
            else:
                yield "ping", ""  # keeps the stream open; a closed browser ends the loop here
            await asyncio.sleep(POLL_S)

    async def static(self, request: web.Request) -> web.Response:
        data, content_type = static_file(request.match_info["name"])
        return web.Response(body=data, content_type=content_type, headers={"Cache-Control": "max-age=3600"})

    def add_login(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", _to_root)
        r.add_get(self.auth.login_path, self.login_form)
        r.add_post(self.auth.login_path, self.login_post)
        r.add_post(self.auth.logout_path, self.logout)
        r.add_get(ROOT + "/static/{name}", self.static)

    def add_pages(self, app: web.Application) -> None:
        r = app.router
        r.add_get(self.base, self.page)
        r.add_get(self.base + "/fragment", self.fragment)
        r.add_get(self.base + "/events", self.events)
        r.add_post(self.base + "/fault", self.fault)
        r.add_post(self.base + "/advance", self.advance)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self.auth.middleware()])
        self.add_login(app)
        self.add_pages(app)
        return app


@dataclass(frozen=True, repr=False)  # the inherited repr, which never shows a password
class ClassCredentials(Credentials):
    """The OS administrators of every cluster of a class: a login is any cluster's, and sees the clusters
    whose administrator it is (one shared account, as ``certsim class up`` makes them: the whole class)."""

    clusters: tuple[tuple[str, Credentials], ...] = ()

    @classmethod
    def of(cls, clusters: list[tuple[str, Credentials]]) -> ClassCredentials:
        return cls(clusters[0][1].user, clusters[0][1].password, tuple(clusters))

    def scope(self, user: str, password: str) -> frozenset[str]:
        return frozenset(name for name, c in self.clusters if c.check(user, password))

    def check(self, user: str, password: str) -> bool:
        return bool(self.scope(user, password))  # every cluster compared: the time tells nothing


class ClassAuth(PageAuth):
    """``PageAuth`` whose sessions remember which clusters their login may see."""

    credentials: ClassCredentials

    async def login(self, request: web.Request, username: str, password: str, token: str) -> tuple[str | None, str]:
        key, error = await super().login(request, username, password, token)
        session = self.sessions.get(key)
        if session is not None:
            session.scope = self.credentials.scope(username, password)
        return key, error


class ClassDashboard:
    """Several clusters of one lab (a classroom, ``clusters:``): an overview of every cluster and every
    node at /lab and each cluster's own dashboard at /lab/c/<cluster>. A login with a cluster's OS
    administrator sees that cluster; a login that is the administrator of several sees them all."""

    def __init__(self, clusters: list[tuple[LabSpec, Path, ControlClient]]) -> None:
        if not clusters:
            raise BadInput("no running cluster to show")
        credentials = ClassCredentials.of([(spec.name, spec.os_admin) for spec, _, _ in clusters])
        self.auth = ClassAuth(ROOT, credentials, Throttle(), _Log())
        self.boards = [
            Dashboard(spec, lab_dir, client, auth=self.auth, base=f"{ROOT}/c/{spec.name}")
            for spec, lab_dir, client in clusters
        ]
        for board in self.boards:
            board.streams = self.boards[0].streams  # MAX_STREAMS for the whole class

    def visible(self, request: web.Request) -> list[Dashboard]:
        scope = self.auth.session(request).scope
        return [b for b in self.boards if scope is None or b.spec.name in scope]

    async def overview(self, request: web.Request) -> web.Response:
        boards = self.visible(request)
        snaps = await asyncio.gather(*(b.snapshot() for b in boards))
        rows = []
        for board, snap in zip(boards, snaps, strict=True):
            nodes = snap["nodes"]
            rows.append(
                {
                    "name": board.spec.name,
                    "link": board.base,
                    "up": sum(1 for n in nodes if n.up),
                    "total": len(nodes),
                    "converged": all(n.converged for n in nodes if n.up),
                    "alarms": sum(n.alarms for n in nodes),
                    "differences": snap["matrix"].differences,
                    "down": [n.name for n in nodes if not n.up],
                    "nodes": nodes,
                    "labinfo": snap["labinfo"],
                }
            )
        first = self.boards[0]
        hidden = len(self.boards) - len(boards)
        return await first.render(
            request, "lab_class.html", title=f"certsim class of {len(rows)} clusters", rows=rows, hidden=hidden
        )

    def _scope_check(self) -> Any:
        """A cluster's pages only for a login that may see that cluster (404 otherwise: nothing said of it)."""

        @web.middleware
        async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
            prefix = f"{ROOT}/c/"
            if request.path.startswith(prefix) and has_session(request):
                name = request.path[len(prefix) :].split("/", 1)[0]
                scope = self.auth.session(request).scope
                if scope is not None and name not in scope:
                    raise web.HTTPNotFound(text="no such cluster")
            return await handler(request)

        return check

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024, middlewares=[self.auth.middleware(), self._scope_check()])
        self.boards[0].add_login(app)
        app.router.add_get(ROOT, self.overview)
        for board in self.boards:
            board.add_pages(app)
        return app


async def _to_root(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(ROOT)


def _majority_digests(statuses: list[Mapping[str, Any]]) -> dict[str, str]:
    """Per replicated store, the digest most running nodes hold: a node with another one has not converged."""
    counts: dict[str, dict[str, int]] = {}
    for s in statuses:
        for store, digest in (s.get("digests") or {}).items():
            counts.setdefault(store, {}).setdefault(digest, 0)
            counts[store][digest] += 1
    return {store: max(c.items(), key=lambda kv: kv[1])[0] for store, c in counts.items()}


def _door_files(lab_dir: Path) -> dict[str, dict[str, Any]]:
    return front_doors(lab_dir)


class _Log:
    """What ``PageAuth`` logs (logins, refusals), with structlog's call shape, to the standard logger."""

    def _say(self, level: str, event: str, **fields: Any) -> None:
        logging.getLogger("certsim.lab-ui").log(
            logging.WARNING if level == "warning" else logging.INFO, "%s %s", event, json.dumps(fields, default=str)
        )

    def info(self, event: str, **fields: Any) -> None:
        self._say("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._say("warning", event, **fields)


@dataclass
class RunningUi:
    runner: web.AppRunner
    url: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_dashboard(dashboard: Dashboard | ClassDashboard, port: int = 0, host: str = "127.0.0.1") -> RunningUi:
    """Serve ``dashboard`` on loopback (``port`` 0: any free port) until ``RunningUi.close``."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise BadInput("the lab dashboard listens on loopback only")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    sock.setblocking(False)
    tls = TlsIdentity(self_signed_loopback())
    runner = web.AppRunner(dashboard.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.SockSite(runner, sock, ssl_context=tls.listening)
    await site.start()
    bound = int(sock.getsockname()[1])
    return RunningUi(runner, f"https://127.0.0.1:{bound}{ROOT}", bound)
