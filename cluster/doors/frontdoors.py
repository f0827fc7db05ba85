"""A node's front doors: SSH (the platform CLI at ``admin:``) and HTTPS (the certmgr REST API).

``FrontDoors.start`` opens both listeners for one node on its loopback address (lab file
``address``, ``ssh_port``, ``https_port``); ``close`` shuts them. They live in the process that
hosts the node agent (``Lab.start_node`` when the lab has ``front_doors`` on, ``certsim node
run``) because the HTTPS listener follows the agent's in-process events; but every request
they accept is a node operation sent through the lab's control client, like the ``certsim`` CLI.

Ports: the lab file's port when it can be bound; if it is in use or not permitted (below 1024
without privilege), a free port instead, reported in the node log, ``describe()`` and
``certsim lab status``. Port 0 is any free port (tests use it so runs never collide). Each
node writes ``<lab dir>/doors/<node>.json`` (its pid and where it listens) while its doors are
open, so ``certsim lab status`` can show nodes hosted by any process.

TLS (R-OP-UPLOAD-4: a service uses the certificate it loaded when it last started): the HTTPS
listener presents the tomcat certificate Cisco Tomcat loaded at its last start, not the node's
current tomcat identity. On the node's ``service-started`` event for Cisco Tomcat the doors
look up the certificate it loaded (``loaded["tomcat"]``, a SHA-256) and its private key, and
swap the listener's context for new handshakes (``doors.rest.TlsIdentity``). The key comes from
the in-process agent's database (``agent.store.identities()``): a read of the node's own
store, accepted for this one purpose because the control path never hands out private keys.
Keys seen before are kept in memory, so a certificate whose key has already been replaced
(a regenerate racing the restart) is still served; a certificate whose key was never seen
keeps the previous context, and the node log says so. After a swap the doors rewrite
``doors/<node>.json``, so ``certsim lab status`` shows the certificate served now.

SSH host key: ``<state dir>/doors/<node>.ssh_host_key``; without a state directory, a key made
for this run and kept in memory (nothing is written, certainly not in the working directory).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import json
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from cluster.doors.auth import LAB_OP_PREFIX, PEER_OP_PREFIX, PEER_OPS, Credentials, RequestFn, Throttle
from cluster.doors.rest import RestDoor, TlsIdentity, TlsMaterial, start_rest_server
from cluster.doors.ssh import SshDoor, start_ssh_server
from cluster.labdir import DOORS_DIR
from cluster.labfile import LabSpec, NodeSpec
from node import certops, certs
from node.agent import NodeAgent
from node.clock import Clock
from node.errors import BadInput, CertsimError, Unavailable

if TYPE_CHECKING:
    from cluster.lab import Lab

TOMCAT = "Cisco Tomcat"
TLS_UNIT = "tomcat"
TLS_TRUST = "tomcat-trust"  # where the served chain's intermediates come from
KEYS_KEPT = 8  # tomcat key pairs remembered per node (current and recent ones)
OP_TIMEOUTS = {"csr_gen": 30.0, "regen": 30.0, "identity_upload": 30.0, "service_restart": 120.0}
DEFAULT_TIMEOUT = 15.0
PEER_TIMEOUT = 3.0  # a peer that does not answer this fast is shown as not connected
_IDENTITY_OPS = {"identity_upload", "regen", "csr_gen"}


@dataclass(frozen=True)
class Listener:
    """Where one front door listens, and why not where the lab file asked, if so."""

    kind: str  # "ssh" or "https"
    host: str
    port: int
    requested: int
    note: str = ""

    def describe(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "address": f"{self.host}:{self.port}",
            "requested": self.requested,
            "note": self.note,
        }


def _fallback_note(kind: str, port: int, exc: OSError) -> str:
    reason = {
        errno.EADDRINUSE: "is in use",
        errno.EACCES: "is not permitted (ports below 1024 need privilege)",
        errno.EPERM: "is not permitted",
    }.get(exc.errno or 0, f"cannot be bound ({exc.strerror})")
    return f"{kind} port {port} {reason}; a free port was taken instead"


def _address_problem(host: str, exc: OSError) -> Unavailable:
    return Unavailable(
        f"cannot listen on {host}: {exc.strerror}. Linux routes all of 127.0.0.0/8 to the loopback"
        f" interface; elsewhere add the address first (macOS: sudo ifconfig lo0 alias {host})"
    )


def bind_tcp(host: str, port: int, kind: str = "https") -> tuple[socket.socket, str]:
    """A listening socket on ``host:port``, else on a free port of ``host`` (with a note saying why)."""

    def bind(p: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, p))
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    try:
        return bind(port), ""
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise _address_problem(host, exc) from None
        if port == 0:
            raise
        return bind(0), _fallback_note(kind, port, exc)


def node_request(
    send: Callable[..., Awaitable[Any]],
    node: str,
    lab_ops: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None,
) -> RequestFn:
    """A ``RequestFn`` for ``node`` over ``send(node, op, args, timeout=...)`` (``ControlClient.request``);
    ``@lab:<op>`` goes to ``lab_ops`` (what the lab answers: phones, CTL, backups)."""

    async def request(op: str, args: dict[str, Any]) -> Any:
        if op.startswith(PEER_OP_PREFIX):  # a peer's read-only state (runtimestate, show network cluster)
            peer, _, peer_op = op.removeprefix(PEER_OP_PREFIX).partition(":")
            if peer_op not in PEER_OPS:
                raise BadInput(f"'{peer_op}' is not an operation one node asks another")
            return await send(peer, peer_op, args, timeout=PEER_TIMEOUT)
        if op.startswith(LAB_OP_PREFIX):
            if lab_ops is None:
                raise Unavailable("this command needs the lab (phones, CTL, backups), which is not reachable here")
            return await lab_ops(op.removeprefix(LAB_OP_PREFIX), args)
        return await send(node, op, args, timeout=OP_TIMEOUTS.get(op, DEFAULT_TIMEOUT))

    return request


class TomcatTls:
    """Which tomcat certificate the HTTPS listener presents: what Cisco Tomcat loaded at its last start."""

    def __init__(self, agent: NodeAgent, request: RequestFn) -> None:
        self.agent = agent
        self._request = request
        self._keys: collections.OrderedDict[str, TlsMaterial] = collections.OrderedDict()
        self.identity: TlsIdentity | None = None
        self.kept_previous = 0  # reloads that found no key for the loaded certificate
        self.on_swap: Callable[[], None] | None = None  # called after each swap of the served certificate
        self._tasks: set[asyncio.Task[None]] = set()

    async def _remember_current(self) -> None:
        """Keep the node's current tomcat key pair (its certificate may be loaded later)."""
        if not self.agent.running:
            return
        ident = (await self.agent.store.identities()).get(TLS_UNIT)
        if ident is None:
            return
        cert = certs.load_certificates(ident.cert_der)[0]
        sha = certs.fingerprint(cert)
        trust = [x509.load_der_x509_certificate(r.der) for r in await self.agent.store.entries(TLS_TRUST) if r.der]
        chain = certops.served_chain(cert, trust)  # leaf + intermediates, as Tomcat serves an uploaded chain
        pem = "".join(certs.pem_of(c) for c in [cert, *chain]).encode()
        self._keys[sha] = TlsMaterial(pem, ident.key_pem)
        self._keys.move_to_end(sha)
        while len(self._keys) > KEYS_KEPT:
            self._keys.popitem(last=False)

    async def _material(self, sha: str) -> TlsMaterial | None:
        if sha not in self._keys:
            await self._remember_current()
        return self._keys.get(sha)

    async def _loaded_sha(self) -> str:
        rows = await self._request("service_list", {})
        for row in rows:
            if row["name"] == TOMCAT:
                return str(row["loaded"].get(TLS_UNIT, ""))
        raise Unavailable(f"{TOMCAT} does not run on this node")

    async def start(self) -> TlsIdentity:
        """The identity to serve first: what Cisco Tomcat runs with now (asking the node also makes
        it record its services' start if it had not yet)."""
        await self._remember_current()
        sha = await self._loaded_sha()
        material = await self._material(sha)
        if material is None:  # e.g. front doors opened on a lab whose tomcat changed without a restart
            if not self._keys:
                raise Unavailable(f"this node has no {TLS_UNIT} certificate to serve HTTPS with")
            self.agent.log.warning("https-tls-loaded-key-unknown", loaded=sha, serving="current tomcat")
            material = next(reversed(self._keys.values()))
        self.identity = TlsIdentity(material)
        self.agent.listeners.append(self.on_event)
        return self.identity

    def on_event(self, event: dict[str, Any]) -> None:
        """Node events (called synchronously by the agent): reload on Tomcat's start, remember keys."""
        kind = event.get("event")
        if kind == "service-started" and event.get("service") == TOMCAT:
            self._spawn(self.reload(str((event.get("loaded") or {}).get(TLS_UNIT, ""))))
        elif kind == "op" and event.get("op") in _IDENTITY_OPS and event.get("ok"):
            self._spawn(self._remember_current())

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except (CertsimError, OSError, ValueError) as exc:  # a node stopping under us, a bad key
                self.agent.log.warning("https-tls-reload-failed", error=f"{type(exc).__name__}: {exc}")

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self, sha: str) -> None:
        """R-OP-UPLOAD-4: after Tomcat restarted, new handshakes get the certificate it loaded."""
        if self.identity is None or not sha or sha == self.identity.material.sha256:
            return
        material = await self._material(sha)
        if material is None:
            self.kept_previous += 1
            self.agent.log.warning("https-tls-kept", loaded=sha, reason="its private key is no longer known")
            return
        self.identity.swap(material)
        self.agent.log.info("https-tls-reloaded", sha256=sha)
        if self.on_swap is not None:
            self.on_swap()

    async def wait_idle(self) -> None:
        """Wait for reloads in flight (tests and scenario steps)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.agent.listeners.remove(self.on_event)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)


class FrontDoors:
    """The SSH and HTTPS front doors of one node (``start`` opens them, ``close`` shuts them)."""

    def __init__(
        self,
        node: NodeSpec,
        credentials: Credentials,
        tls: TomcatTls,
        rest: RestDoor,
        ssh: SshDoor | None,
        listeners: dict[str, Listener | None],
        info_path: Path | None,
        ssh_note: str,
        throttle: Throttle,
    ) -> None:
        self.node = node
        self.credentials = credentials
        self.throttle = throttle  # shared by both doors: wrong passwords count across SSH and HTTPS
        self.tls = tls
        self.rest = rest
        self.ssh = ssh
        self.listeners = listeners
        self._info_path = info_path
        self._ssh_note = ssh_note
        self._closed = False

    @property
    def https(self) -> Listener:
        listener = self.listeners["https"]
        assert listener is not None
        return listener

    @property
    def ssh_listener(self) -> Listener | None:
        return self.listeners["ssh"]

    @classmethod
    async def start(
        cls,
        *,
        lab: LabSpec,
        node: str,
        agent: NodeAgent,
        request: RequestFn,
        clock: Clock,
        state_dir: Path | None,
        throttle: Throttle | None = None,
        remote: Callable[[str], RequestFn] | None = None,
    ) -> FrontDoors:
        """Open ``node``'s doors on its lab-file address (``state_dir``: where the SSH host key and
        the ``doors/<node>.json`` note live; None keeps nothing on disk and generates no host key file)."""
        spec = lab.node(node)
        host = spec.address or "127.0.0.1"
        throttle = throttle or Throttle()  # one per node: both doors count the same wrong passwords
        tls = TomcatTls(agent, request)
        identity = await tls.start()
        rest: RestDoor | None = None
        ssh: SshDoor | None = None
        try:
            sock, note = bind_tcp(host, spec.https_port, "https")
            rest = await start_rest_server(
                sock=sock,
                lab=lab,
                node=spec,
                request=request,
                credentials=lab.os_admin,
                throttle=throttle,
                tls=identity,
                log=agent.log,
                remote=remote,
            )
            listeners: dict[str, Listener | None] = {
                "https": Listener("https", host, rest.port, spec.https_port, note),
                "ssh": None,
            }
            ssh, listeners["ssh"], ssh_note = await _start_ssh(
                spec, host, request, lab.os_admin, throttle, clock, state_dir, agent.log
            )
        except BaseException:
            if rest is not None:
                await rest.close()
            await tls.close()
            raise
        info_path = state_dir / DOORS_DIR / f"{node}.json" if state_dir is not None else None
        doors = cls(spec, lab.os_admin, tls, rest, ssh, listeners, info_path, ssh_note, throttle)
        for listener in listeners.values():
            if listener is not None and listener.note:
                agent.log.warning("front-door-port-fallback", door=listener.kind, note=listener.note)
        agent.log.info(
            "front-doors-open",
            https=doors.https.describe()["address"],
            ssh=listeners["ssh"].describe()["address"] if listeners["ssh"] else None,
            user=lab.os_admin.user,
        )
        doors._write_info()
        tls.on_swap = doors._write_info  # the note says which certificate HTTPS serves now
        return doors

    def describe(self) -> dict[str, Any]:
        """Where this node listens (never the password)."""
        ssh = self.ssh_listener
        return {
            "node": self.node.name,
            "fqdn": self.node.fqdn,
            "address": self.node.address,
            "user": self.credentials.user,
            "https": self.https.describe(),
            "ssh": ssh.describe() if ssh is not None else None,
            "ssh_note": self._ssh_note,
            "tls_sha256": self.tls.identity.material.sha256 if self.tls.identity else None,
        }

    def _write_info(self) -> None:
        if self._info_path is None or self._closed:
            return
        self._info_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), **self.describe()}, indent=2), encoding="utf-8")
        tmp.replace(self._info_path)

    async def close(self) -> None:
        self._closed = True  # a reload finishing now must not write the note again
        if self._info_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._info_path.unlink()
        await self.tls.close()
        if self.ssh is not None:
            await self.ssh.close()
        await self.rest.close()


async def _start_ssh(
    spec: NodeSpec,
    host: str,
    request: RequestFn,
    credentials: Credentials,
    throttle: Throttle,
    clock: Clock,
    state_dir: Path | None,
    log: Any,
) -> tuple[SshDoor | None, Listener | None, str]:
    host_key: Path | None = None  # no state directory: an ephemeral in-memory host key
    if state_dir is not None:
        (state_dir / DOORS_DIR).mkdir(parents=True, exist_ok=True)
        host_key = state_dir / DOORS_DIR / f"{spec.name}.ssh_host_key"

    async def start(port: int) -> SshDoor:
        return await start_ssh_server(
            host=host,
            port=port,
            node=spec.name,
            request=request,
            credentials=credentials,
            throttle=throttle,
            host_key_path=host_key,
            clock=clock,
            log=log,
        )

    note = ""
    try:
        door = await start(spec.ssh_port)
    except OSError as exc:
        if exc.errno == errno.EADDRNOTAVAIL:
            raise _address_problem(host, exc) from None
        if spec.ssh_port == 0:
            raise
        note = _fallback_note("ssh", spec.ssh_port, exc)
        door = await start(0)
    return door, Listener("ssh", host, door.port, spec.ssh_port, note), ""


async def lab_request(lab: Lab, op: str, args: dict[str, Any]) -> Any:
    """What the lab answers for a platform command (utils itl reset, utils ctl, utils disaster_recovery)."""
    from cluster import labops_phones  # noqa: PLC0415 - phones and backups load only when a command asks

    return await labops_phones.run(lab, op, args)


async def open_front_doors(lab: Lab, name: str) -> FrontDoors:
    """Open the doors of ``lab``'s node ``name`` (its agent must be running in this process)."""
    agent = lab.agents.get(name)
    if agent is None or not agent.running:
        raise Unavailable(f"node '{name}' is not running in this process; its front doors live with its agent")
    return await FrontDoors.start(
        lab=lab.spec,
        node=name,
        agent=agent,
        request=node_request(lab.client.request, name, lambda op, args: lab_request(lab, op, args)),
        clock=lab.clock,
        state_dir=lab.lab_dir,
        remote=lambda peer: node_request(lab.client.request, peer),  # Control Center of a remote server
    )


async def enable_front_doors(lab: Lab) -> dict[str, FrontDoors]:
    """Turn front doors on for a running lab: every running node gets them now, every node started
    later gets them with its agent (scenario steps ``ssh:``/``rest:`` call this on first use)."""
    lab.front_doors = True
    for name in lab.running_nodes():
        if name not in lab.doors:
            lab.doors[name] = await open_front_doors(lab, name)
    return lab.doors


async def served_certificate(host: str, port: int, timeout: float = 10.0) -> x509.Certificate:
    """The certificate an HTTPS listener presents to a new connection (a real TLS handshake)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we want to see the certificate, whoever issued it
    _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der)
