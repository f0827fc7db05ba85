"""Real TLS links between the parties of a lab (R-LINK-1..5): no verdict without a handshake.

Each check opens a TLS server and a client on loopback with Python's ``ssl`` (OpenSSL): each
side presents its current identity certificate and key and verifies the other with its current
trust store, exactly as read from the node's database. OpenSSL decides the chain; the validity
dates are checked against the lab's simulated clock instead of the wall clock (OpenSSL is told
not to check time, then the peer certificate is checked at simulated time), so a lab whose
clock runs years ahead still judges expiry by its own time. A failed handshake names the
certificate that was missing, as an engineer would need it ("tomcat-trust on cucm2 lacks ...").

Link kinds:
- ``tomcat``: node to node Tomcat (R-LINK-1, R-TS-1): the client verifies the server's tomcat
  certificate with its tomcat-trust.
- ``sip``: SIP trunk over TLS, mutual (R-LINK-2): a node and a peer node, a node of another
  cluster of the lab (``to: <cluster>/<node>``, both clusters served by this process), or a
  gateway whose certificate the lab CA issued; each verifies the other with its
  CallManager-trust (the gateway with the certificates it was given).
- ``ldap``: secure LDAP (R-LINK-3, R-UNIT-2): a directory server run by the lab, certificate from
  the lab CA; the node verifies it with tomcat-trust.
- ``imp``: IM and Presence to Unified CM (R-LINK-5), mutual over Tomcat: each side's tomcat-trust
  holds the other's tomcat certificate (or its issuer).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cluster.lab import IN_PROCESS, Lab
from cluster.labca import Issued, LabCA
from node import certs
from node.errors import BadInput, NotFound, Unavailable

NO_CHECK_TIME = 0x200000  # OpenSSL X509_V_FLAG_NO_CHECK_TIME: dates are judged at simulated time instead
HANDSHAKE_TIMEOUT_S = 5.0
LINK_KINDS = ("tomcat", "sip", "ldap", "imp")


@dataclass(frozen=True)
class Party:
    """One end of a link: what it presents and what it trusts."""

    label: str  # "cucm1 (Cisco Tomcat)", "LDAP server ldap.lab.example"
    chain: tuple[x509.Certificate, ...]  # leaf first
    key: certs.PrivateKey
    trust: tuple[x509.Certificate, ...]
    trust_label: str  # "tomcat-trust on cucm1"


@dataclass
class LinkResult:
    ok: bool
    kind: str
    client: str
    server: str
    detail: str
    missing: str | None = None  # the certificate (or issuer) a trust store lacks
    tls: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "kind": self.kind,
            "client": self.client,
            "server": self.server,
            "detail": self.detail,
            "missing": self.missing,
            "tls": self.tls,
        }


def _pem(cs: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in cs)


def _context(side: int, me: Party, verify: bool, tmp: Path, tag: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(side)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if side == ssl.PROTOCOL_TLS_CLIENT:
        ctx.check_hostname = False  # the product checks names per feature; here the question is trust
    chain = tmp / f"{tag}-chain.pem"
    key = tmp / f"{tag}-key.pem"
    chain.write_text(_pem(me.chain), encoding="utf-8")
    key.write_bytes(certs.key_pem(me.key))
    ctx.load_cert_chain(chain, key)
    if verify:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.verify_flags = ctx.verify_flags | ssl.VERIFY_X509_PARTIAL_CHAIN | NO_CHECK_TIME
        if me.trust:
            ctx.load_verify_locations(cadata=_pem(me.trust))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _who(cert: x509.Certificate) -> str:
    cn = certs.common_name(cert.subject) or certs.dn_text(cert.subject)
    issuer = certs.common_name(cert.issuer) or certs.dn_text(cert.issuer)
    return repr(cn) if cert.subject == cert.issuer else f"{cn!r} (or its issuer {issuer!r})"


def _date_problem(chain: Sequence[x509.Certificate], now: dt.datetime) -> str | None:
    for c in chain:
        problem = certs.validity_problem(c, now)
        if problem:
            return f"{certs.common_name(c.subject)!r} is {problem}"
    return None


async def handshake(kind: str, client: Party, server: Party, *, mutual: bool, now: dt.datetime) -> LinkResult:
    """Open a real TLS connection on loopback between ``client`` and ``server`` and report it."""
    server_error: list[BaseException] = []
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"ok\n")
            await writer.drain()
            await reader.read(16)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            server_error.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            done.set()

    with tempfile.TemporaryDirectory(prefix="certsim-link-") as raw_tmp:
        tmp = Path(raw_tmp)
        server_ctx = _context(ssl.PROTOCOL_TLS_SERVER, server, mutual, tmp, "server")
        client_ctx = _context(ssl.PROTOCOL_TLS_CLIENT, client, True, tmp, "client")

        def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            if isinstance(exc, ssl.SSLError | ConnectionError | OSError):
                server_error.append(exc)
                done.set()
            else:
                loop.default_exception_handler(context)

        loop = asyncio.get_running_loop()
        previous = loop.get_exception_handler()
        loop.set_exception_handler(on_error)
        srv = await asyncio.start_server(
            serve, "127.0.0.1", 0, ssl=server_ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
        )
        port = srv.sockets[0].getsockname()[1]
        try:
            return await _connect(kind, client, server, client_ctx, port, now, server_error, done, mutual=mutual)
        finally:
            srv.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 2)
            loop.set_exception_handler(previous)


async def _connect(
    kind: str,
    client: Party,
    server: Party,
    ctx: ssl.SSLContext,
    port: int,
    now: dt.datetime,
    server_error: list[BaseException],
    done: asyncio.Event,
    *,
    mutual: bool,
) -> LinkResult:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="link.certsim"), HANDSHAKE_TIMEOUT_S
        )
    except ssl.SSLCertVerificationError as exc:
        return LinkResult(
            False,
            kind,
            client.label,
            server.label,
            detail=f"{client.label} refused the certificate of {server.label}: {exc.verify_message}",
            missing=f"{client.trust_label} lacks {_who(server.chain[0])}",
        )
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
        return LinkResult(False, kind, client.label, server.label, detail=f"handshake failed: {exc}")
    try:
        line = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT_S)
    except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
        line = b""
        server_error.append(exc)
    sslobj = writer.get_extra_info("ssl_object")
    tls = {"version": sslobj.version() if sslobj else None, "cipher": (sslobj.cipher() or ("",))[0] if sslobj else None}
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 1.0)
    if mutual and (server_error or line != b"ok\n"):
        return LinkResult(
            False,
            kind,
            client.label,
            server.label,
            detail=f"{server.label} refused the certificate of {client.label}",
            missing=f"{server.trust_label} lacks {_who(client.chain[0])}",
            tls=tls,
        )
    if line != b"ok\n":
        return LinkResult(
            False, kind, client.label, server.label, detail="the connection closed during the exchange", tls=tls
        )
    # OpenSSL left the dates to us: judge them at the lab's simulated time
    for who, chain in ((server.label, server.chain), (client.label, client.chain) if mutual else (None, ())):
        problem = _date_problem(chain, now)
        if who and problem:
            return LinkResult(
                False, kind, client.label, server.label, detail=f"certificate of {who}: {problem}", tls=tls
            )
    return LinkResult(
        True, kind, client.label, server.label, detail="handshake completed" + (" (mutual)" if mutual else ""), tls=tls
    )


# ---------------------------------------------------------------------------------------------
# the parties of a running lab


@dataclass(frozen=True)
class LinkSpec:
    """``{kind, from, to, trusts}``: ``from`` a node; ``to`` a node, or for ``ldap`` and a ``sip``
    gateway the lab CA certificate the lab's server presents; ``trusts``: what a gateway trusts
    (lab CA names or ``CallManager@<node>``, default the calling node's CallManager)."""

    kind: str
    src: str
    dst: str
    trusts: tuple[str, ...] = ()

    @classmethod
    def from_args(cls, args: Any, node_names: Sequence[str]) -> LinkSpec:
        if not isinstance(args, dict):
            raise BadInput("a link is {kind, from, to}")
        kind = str(args.get("kind") or "")
        if kind not in LINK_KINDS:
            raise BadInput(f"unknown link kind {kind!r}; known: {', '.join(LINK_KINDS)}")
        src, dst = str(args.get("from") or ""), str(args.get("to") or "")
        if src not in node_names:
            raise BadInput(f"'from' must be a node of this lab ({', '.join(node_names)}), got {src!r}")
        if not dst:
            raise BadInput("'to' names a node, or the lab CA certificate of an LDAP server or SIP gateway")
        if kind in ("tomcat", "imp") and dst not in node_names:
            raise BadInput(f"'to' must be a node of this lab for a {kind} link, got {dst!r}")
        if "/" in dst and (kind != "sip" or dst.count("/") != 1 or not all(dst.split("/"))):
            raise BadInput(f"'to' names another cluster's node as <cluster>/<node>, for sip links only (got {dst!r})")
        trusts = args.get("trusts") or []
        if not isinstance(trusts, list):
            raise BadInput("'trusts' is a list of lab CA names or <unit>@<node>")
        return cls(kind, src, dst, tuple(str(t) for t in trusts))


async def node_party(lab: Lab, node: str, unit: str, store: str, *, qualified: bool = False) -> Party:
    """A node's current identity (certificate and key) and trust store, from its database.

    Like the front doors, the link checker reads an in-process node's database directly: the
    control path never hands out private keys."""
    agent = lab.agents.get(node)
    if agent is None or not agent.running:
        raise Unavailable(f"node '{node}' is not running in this lab process")
    async with agent.store.transaction():  # one snapshot: never a half-written change of another request
        ident = (await agent.store.identities()).get(unit)
        entries = await agent.store.entries(store)
    if ident is None:
        raise NotFound(f"node '{node}' has no '{unit}' identity certificate")
    trust = tuple(x509.load_der_x509_certificate(r.der) for r in entries if r.der)
    cert = x509.load_der_x509_certificate(ident.cert_der)
    where = f"{lab.spec.name}/{node}" if qualified else node
    return Party(f"{where} ({unit})", (cert,), certs.load_key(ident.key_pem), trust, f"{store} on {where}")


def other_cluster(lab: Lab, name: str) -> Lab:
    """Another cluster of the same lab file, served by this process (R-LINK-2 between clusters)."""
    for other in IN_PROCESS:
        if other is not lab and other.spec.name == name and other.running_nodes():
            return other
    raise Unavailable(f"cluster '{name}' is not running in this lab process (with --workers it may run in another)")


def ca_party(issued: Issued, label: str, trust: Sequence[x509.Certificate], trust_label: str) -> Party:
    if issued.key is None:
        raise BadInput(f"the lab CA does not hold the key of '{issued.name}' (signed from a CSR)")
    return Party(label, (issued.cert, *issued.chain), issued.key, tuple(trust), trust_label)


async def _resolve(lab: Lab, ca: LabCA, ref: str) -> x509.Certificate:
    if "@" in ref:
        unit, node = ref.split("@", 1)
        return (await node_party(lab, node, unit, "CallManager-trust")).chain[0]
    return ca.get(ref).cert


async def check_link(lab: Lab, spec: LinkSpec, ca: LabCA) -> LinkResult:
    """Build both parties of ``spec`` from the lab as it is now and shake hands."""
    now = lab.clock.now()
    if spec.kind == "tomcat":  # R-LINK-1
        client = await node_party(lab, spec.src, "tomcat", "tomcat-trust")
        server = await node_party(lab, spec.dst, "tomcat", "tomcat-trust")
        return await handshake("tomcat", client, server, mutual=False, now=now)
    if spec.kind == "imp":  # R-LINK-5
        client = await node_party(lab, spec.src, "tomcat", "tomcat-trust")
        server = await node_party(lab, spec.dst, "tomcat", "tomcat-trust")
        return await handshake("imp", client, server, mutual=True, now=now)
    if spec.kind == "ldap":  # R-LINK-3
        client = await node_party(lab, spec.src, "tomcat", "tomcat-trust")
        server = ca_party(ca.get(spec.dst), f"LDAP server ({spec.dst})", (), "the LDAP server")
        return await handshake("ldap", client, server, mutual=False, now=now)
    # sip, R-LINK-2: mutual, CallManager certificates and CallManager-trust on both sides
    if "/" in spec.dst:  # a SIP trunk to another cluster
        cluster, node = spec.dst.split("/")
        client = await node_party(lab, spec.src, "CallManager", "CallManager-trust", qualified=True)
        server = await node_party(other_cluster(lab, cluster), node, "CallManager", "CallManager-trust", qualified=True)
        return await handshake("sip", client, server, mutual=True, now=now)
    client = await node_party(lab, spec.src, "CallManager", "CallManager-trust")
    if spec.dst in lab.spec.node_names:
        server = await node_party(lab, spec.dst, "CallManager", "CallManager-trust")
    else:
        refs = spec.trusts or (f"CallManager@{spec.src}",)
        trust = [await _resolve(lab, ca, r) for r in refs]
        server = ca_party(ca.get(spec.dst), f"SIP gateway ({spec.dst})", trust, f"the trust list of gateway {spec.dst}")
    return await handshake("sip", client, server, mutual=True, now=now)
