"""Certificate operations on a running node: the I/O half of ``node.certops``.

Operations (its ``EXTENSION``): csr_gen, csr_get, csr_list, csr_delete, identity_upload,
identity_list, regen, service_list, service_restart, service_cert, param_set, param_get,
authz_regen, authz_status, token_issue, token_verify, check_remote, cluster_nodes, cert_describe,
cert_descriptions.
Bus messages (its ``EXTENSION``): certops-hello (who is in the cluster), identity-install
(a multi-server certificate the publisher shares, durable), authz-keys and param
(cluster-wide OAuth keys and enterprise parameters, durable, last writer wins by HLC
version), tomcat-serving-req / tomcat-serving (what a peer's Tomcat serves, for R-TS-1).

Every change is one ``agent.commit`` (identity, CSR, settings, trust puts and outgoing
messages in one transaction); every refusal is raised before anything is written.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cryptography import x509

from node import certops, certs, ops
from node.catalog import (
    AUTHZ_KEYS,
    AUTHZ_UNIT,
    HTTPS_CIPHERS,
    IDENTITY_VALIDITY_DAYS,
    PARAMS,
    PEER_TRUST_UNITS,
    UNITS,
    KeyAlgo,
    Role,
    ServiceSpec,
    services_for,
)
from node.certops import AuthzKey, NodeInfo, PendingCSR, ServiceState
from node.errors import BadInput, CertsimError, NotFound, Refused
from node.extension import Extension, PerAgent, b64_arg, sleep_until
from node.store import Identity, NodeStore
from replication.envelope import Envelope
from replication.hlc import Version

if TYPE_CHECKING:
    from node.agent import NodeAgent

ROSTER_WAIT_S = 0.4  # wall seconds to collect hellos: transport pacing, not simulated time
PEER_ANSWER_S = 2.0  # wall seconds a remote-node check waits for the peer's Tomcat


class _NodeRuntime:
    """Per-agent, per-process state: which services are restarting, pending peer answers."""

    def __init__(self) -> None:
        self.booted = False
        self.restarting: set[str] = set()
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.lock = asyncio.Lock()


_rt = PerAgent(_NodeRuntime)


# ---------------------------------------------------------------------------------------------
# database access for the certificate-operation tables (node/store.py SCHEMA)


async def _csrs(store: NodeStore) -> dict[str, PendingCSR]:
    rows = await store.fetchall("SELECT unit, csr_pem, key_pem, multi_server, nodes FROM csr")
    return {
        str(r[0]): PendingCSR(str(r[0]), bytes(r[1]), bytes(r[2]), bool(r[3]), tuple(json.loads(str(r[4]))))
        for r in rows
    }


async def _put_csr(store: NodeStore, csr: PendingCSR, now_ms: int) -> None:
    await store.execute(
        "INSERT OR REPLACE INTO csr(unit, csr_pem, key_pem, multi_server, nodes, created_ms) VALUES (?,?,?,?,?,?)",
        (csr.unit, csr.csr_pem, csr.key_pem, int(csr.multi_server), json.dumps(list(csr.nodes)), now_ms),
    )


async def _delete_csr(store: NodeStore, unit: str) -> None:
    await store.execute("DELETE FROM csr WHERE unit=?", (unit,))


async def _services(store: NodeStore) -> dict[str, ServiceState]:
    rows = await store.fetchall("SELECT name, state, loaded, started_ms FROM service")
    return {str(r[0]): ServiceState(str(r[0]), str(r[1]), json.loads(str(r[2])), int(r[3])) for r in rows}


async def _put_service(store: NodeStore, state: ServiceState) -> None:
    await store.execute(
        "INSERT OR REPLACE INTO service(name, state, loaded, started_ms) VALUES (?,?,?,?)",
        (state.name, state.state, json.dumps(dict(state.loaded), sort_keys=True), state.started_ms),
    )


async def _put_loaded_cert(store: NodeStore, der: bytes) -> None:
    await store.execute(
        "INSERT OR IGNORE INTO loaded_cert(sha256, cert_der) VALUES (?, ?)", (certs.der_sha256(der), der)
    )


async def _loaded_cert(store: NodeStore, sha: str) -> bytes | None:
    row = await store.fetchone("SELECT cert_der FROM loaded_cert WHERE sha256=?", (sha,))
    return None if row is None else bytes(row[0])


async def _settings(store: NodeStore) -> dict[str, tuple[str, Version]]:
    rows = await store.fetchall("SELECT name, value, version FROM setting")
    return {str(r[0]): (str(r[1]), Version.from_json(json.loads(str(r[2])))) for r in rows}


async def _params(store: NodeStore) -> dict[str, str]:
    held = await _settings(store)
    return {name: held[name][0] if name in held else spec.default for name, spec in PARAMS.items()}


async def _put_setting(store: NodeStore, name: str, value: str, version: Version) -> None:
    store.generation += 1  # anti-entropy: something replicated changed here
    await store.execute(
        "INSERT OR REPLACE INTO setting(name, value, version) VALUES (?,?,?)",
        (name, value, json.dumps(version.to_json())),
    )


async def _authz_keys(store: NodeStore) -> dict[str, AuthzKey]:
    rows = await store.fetchall("SELECT kind, material, version FROM authz_key")
    return {str(r[0]): AuthzKey(str(r[0]), bytes(r[1]), str(r[2])) for r in rows}


async def _put_authz_key(store: NodeStore, key: AuthzKey) -> None:
    store.generation += 1  # anti-entropy: something replicated changed here
    await store.execute(
        "INSERT OR REPLACE INTO authz_key(kind, material, version) VALUES (?,?,?)",
        (key.kind, key.material, key.version),
    )


async def _peers(store: NodeStore) -> dict[str, NodeInfo]:
    rows = await store.fetchall("SELECT name, fqdn, role FROM peer")
    return {str(r[0]): NodeInfo(str(r[0]), str(r[1]), str(r[2])) for r in rows}


# ---------------------------------------------------------------------------------------------
# services: what is current, and a node (re)start loading everything


def _node_services(agent: NodeAgent) -> dict[str, ServiceSpec]:
    return {s.name: s for s in services_for(agent.config.role, publisher=agent.config.publisher)}


async def _current(agent: NodeAgent) -> tuple[dict[str, str], dict[str, str], dict[str, Identity]]:
    identities = await agent.store.identities()
    by_unit = {u: certs.der_sha256(i.cert_der) for u, i in identities.items()}
    params = await _params(agent.store)
    extras = {certops.param_item(name): certops.material_sha(value) for name, value in params.items()}
    keys = await _authz_keys(agent.store)
    if keys:
        extras[AUTHZ_KEYS] = certops.authz_keys_sha(keys)
    return by_unit, extras, identities


async def _ensure_services(agent: NodeAgent) -> dict[str, ServiceState]:
    """Services as persisted; the first call after the node started loads everything current
    (starting a node starts its services), so later changes show as "restart pending"."""
    rt = _rt(agent)
    async with rt.lock:
        held = await _services(agent.store)
        specs = _node_services(agent)
        if rt.booted and set(specs) <= set(held):
            return held
        by_unit, extras, identities = await _current(agent)
        now_ms = agent.clock.now_ms()
        fresh = {
            name: ServiceState(name, "running", certops.current_items(spec, by_unit, extras), now_ms)
            for name, spec in specs.items()
            if not rt.booted or name not in held
        }

        async def write(store: NodeStore) -> None:
            for state in fresh.values():
                await _put_service(store, state)
            for ident in identities.values():
                await _put_loaded_cert(store, ident.cert_der)

        await agent.commit(extra=write)
        rt.booted = True
        return {**held, **fresh}


async def _pending_by_service(agent: NodeAgent) -> dict[str, list[str]]:
    states = await _ensure_services(agent)
    by_unit, extras, _ = await _current(agent)
    specs = _node_services(agent)
    return {
        name: certops.pending_items(state, certops.current_items(specs[name], by_unit, extras))
        for name, state in states.items()
        if name in specs
    }


# ---------------------------------------------------------------------------------------------
# cluster roster (who to list in a multi-server SAN)


def _me(agent: NodeAgent) -> NodeInfo:
    return NodeInfo(agent.name, agent.config.fqdn, agent.config.role.value)


async def _record_peer(agent: NodeAgent, info: NodeInfo) -> None:
    known = await _peers(agent.store)
    if known.get(info.name) == info:
        return

    async def write(store: NodeStore) -> None:
        await store.execute(
            "INSERT OR REPLACE INTO peer(name, fqdn, role) VALUES (?,?,?)", (info.name, info.fqdn, info.role)
        )

    await agent.commit(extra=write)


async def _roster(agent: NodeAgent) -> list[NodeInfo]:
    """Every node this one knows: those that answer a hello now, plus those seen before (a node that
    is down is still a member of the cluster)."""
    me = _me(agent)
    agent.send(None, "certops-hello", {"fqdn": me.fqdn, "role": me.role, "reply": True})
    await asyncio.sleep(ROSTER_WAIT_S)
    peers = await _peers(agent.store)
    peers[me.name] = me
    return sorted(peers.values(), key=lambda p: p.name)


async def _on_hello(agent: NodeAgent, env: Envelope) -> None:
    info = NodeInfo(env.sender, str(env.body["fqdn"]), str(env.body["role"]))
    await _record_peer(agent, info)
    if env.body.get("reply"):
        me = _me(agent)
        agent.send(env.sender, "certops-hello", {"fqdn": me.fqdn, "role": me.role, "reply": False})


# ---------------------------------------------------------------------------------------------
# CSR (R-OP-CSR-1)


def _unit_arg(args: Mapping[str, Any]) -> str:
    unit = args.get("unit")
    if not isinstance(unit, str) or not unit:
        raise BadInput("no unit given (e.g. tomcat, CallManager, cup-xmpp)")
    return unit


async def op_csr_gen(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    cfg = agent.config
    unit = certops.identity_unit(cfg.role, cfg.publisher, _unit_arg(args), op="csr gen")
    if unit.trust_store is None:
        raise Refused(f"{unit.name} is issued by the cluster; it has no CSR (regenerate it instead)")
    multi = bool(args.get("multi_server", False))
    if multi:
        certops.check_multi_server(unit, publisher=cfg.publisher)
    ident = (await agent.store.identities()).get(unit.name)
    current_bits = certs.key_type(x509.load_der_x509_certificate(ident.cert_der))[1] if ident else None
    size = certops.choose_key_size(unit, args.get("key_size"), current_bits, regen=False)
    extra_san = certops.check_alt_names(args.get("alt_names"))
    hash_name = certops.check_csr_hash(unit, args.get("hash"))
    roster = await _roster(agent) if multi else []
    san = certops.csr_san(unit, cfg.fqdn, roster, cfg.role, multi_server=multi)
    san += [n for n in extra_san if n not in {s.lower() for s in san}]  # the GUI's "Other Domains"
    nodes = tuple(p.name for p in roster if p.fqdn in san and p.name != agent.name) if multi else ()
    key = await asyncio.to_thread(certs.new_private_key, unit.key_algo, size)
    cn = certops.csr_cn(unit, cfg.fqdn, multi_server=multi)
    include_ou = bool(args.get("include_ou", True))
    csr = certops.build_unit_csr(unit, cn, san, key, cfg.subject, include_ou=include_ou, hash_name=hash_name)
    pending = PendingCSR(unit.name, certs.csr_pem(csr).encode(), certs.key_pem(key), multi, nodes)
    now_ms = agent.clock.now_ms()

    async def write(store: NodeStore) -> None:
        await _put_csr(store, pending, now_ms)

    await agent.commit(extra=write)
    agent.log.info("csr-generated", unit=unit.name, multi_server=multi, san=san, key_bits=size)
    return {
        "unit": unit.name,
        "csr": pending.csr_pem.decode(),
        "multi_server": multi,
        "nodes": list(nodes),
        "filename": f"{unit.name}.csr",
        **certs.describe_csr(csr),
    }


async def op_csr_get(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    unit = _unit_arg(args)
    pending = (await _csrs(agent.store)).get(unit)
    if pending is None:
        raise NotFound(f"there is no CSR for '{unit}' on this node; generate one with csr gen")
    return {"unit": unit, "csr": pending.csr_pem.decode(), "filename": f"{unit}.csr", **certs.describe_csr(pending.csr)}


async def op_csr_list(agent: NodeAgent, _args: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for unit, pending in sorted((await _csrs(agent.store)).items()):
        d = certs.describe_csr(pending.csr)
        rows.append(
            {
                "unit": unit,
                "subject": d["subject"],
                "san": d["san"],
                "key_type": d["key_type"],
                "key_bits": d["key_bits"],
                "multi_server": pending.multi_server,
                "sha256": certops.material_sha(pending.csr_pem),
            }
        )
    return rows


async def op_csr_delete(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    unit = _unit_arg(args)
    if unit not in await _csrs(agent.store):
        raise NotFound(f"there is no CSR for '{unit}' on this node")

    async def write(store: NodeStore) -> None:
        await _delete_csr(store, unit)

    await agent.commit(extra=write)
    return {"unit": unit, "deleted": True}


# ---------------------------------------------------------------------------------------------
# identity changes: upload, regenerate, install from the publisher


async def _peer_trust_puts(
    agent: NodeAgent, unit: str, cert: x509.Certificate, previous: bytes | None = None
) -> list[ops.Put]:
    """R-REPL-5: a changed tomcat / tomcat-ECDSA certificate goes into tomcat-trust, which replicates
    to every node (R-REPL-1). It supersedes the node's own previous certificate of that name; any
    other same-name entry is decided by the same-name rule R-REPL-8 (later validity start wins)."""
    store = PEER_TRUST_UNITS.get(unit)
    if store is None or store not in agent.stores:
        return []
    name = certs.entry_name(cert)
    der = certs.der_of(cert)
    held = await agent.store.get_entry(store, name)
    if held is not None and previous is not None and held.der == previous and held.der != der:
        return [ops.Put(store, name, der, supersedes=True)]  # the node's own certificate, replaced by its successor
    existing = {(r.store, r.name): r.der or b"" for r in await agent.store.entries(store)}
    return list(ops.plan_trust_upload(agent.config.role, store, [cert], existing, agent.clock.now()).puts)


async def op_identity_upload(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    cfg = agent.config
    unit = certops.identity_unit(cfg.role, cfg.publisher, _unit_arg(args), op="certificate upload")
    data = b64_arg(args, "data")
    uploaded = certs.load_certificates(data)
    if unit.trust_store is None or unit.trust_store not in agent.stores:
        raise Refused(f"{unit.name} is issued by the cluster and cannot be replaced by a CA-signed certificate")
    trust = [x509.load_der_x509_certificate(r.der or b"") for r in await agent.store.entries(unit.trust_store)]
    pending = await _csrs(agent.store)
    plan = certops.plan_identity_upload(unit, uploaded, pending, trust, agent.clock.now())
    key = certs.load_key(plan.csr.key_pem)
    der = certs.der_of(plan.leaf)
    previous = (await agent.store.identities()).get(unit.name)
    puts = await _peer_trust_puts(agent, unit.name, plan.leaf, previous.cert_der if previous else None)
    await _ensure_services(agent)
    messages: list[tuple[str | None, str, dict[str, Any]]] = []
    shared_with: list[str] = []
    if plan.csr.multi_server and cfg.publisher:
        san = set(certs.cert_san(plan.leaf))
        peers = await _peers(agent.store)
        shared_with = [n for n in plan.csr.nodes if n in peers and peers[n].fqdn in san]
        messages = [
            (
                n,
                "identity-install",
                {
                    "unit": unit.name,
                    "cert": base64.b64encode(der).decode(),
                    "key": agent.seal_secret(plan.csr.key_pem, f"identity-install:{unit.name}:{n}"),
                },
            )
            for n in shared_with
        ]
    now_ms = agent.clock.now_ms()

    async def write(store: NodeStore) -> None:
        await store.put_identity(Identity(unit.name, der, certs.key_pem(key), "ca-signed"), now_ms)
        await _delete_csr(store, unit.name)

    await agent.commit(puts=puts, messages=messages, extra=write)
    services = list(_node_services(agent).values())
    advice = certops.after_change_advice(unit.name, services, await _params(agent.store), regenerated=False)
    agent.log.info("identity-uploaded", unit=unit.name, flags=list(plan.flags), shared_with=shared_with)
    result: dict[str, Any] = {
        "unit": unit.name,
        "source": "ca-signed",
        "cn": certs.common_name(plan.leaf.subject),
        "sha256": certs.fingerprint(plan.leaf),
        "issuer": certs.common_name(plan.leaf.issuer),
        "chain": [certs.common_name(c.subject) for c in plan.chain],
        "flags": list(plan.flags),
        "notes": list(plan.notes),
        "csr_deleted": True,
        "shared_with": shared_with,
        "trust_updated": sorted({f"{p.store}/{p.name}" for p in puts}),
        **advice,
    }
    # --- OCSP (node/agent_ocsp.py): R-OCSP-1, the uploaded certificate is checked; never refused for its status
    from node import agent_ocsp  # noqa: PLC0415 - imported here: node.agent imports both modules

    checked = await agent_ocsp.on_upload(agent, [plan.leaf])
    if checked is not None:
        result["ocsp"] = checked
    # --- end OCSP
    return result


async def _on_identity_install(agent: NodeAgent, env: Envelope) -> None:
    """A multi-server certificate the publisher installed: it becomes this node's identity too."""
    unit = str(env.body["unit"])
    der = base64.b64decode(str(env.body["cert"]))
    key_pem = agent.open_secret(env.body["key"], f"identity-install:{unit}:{agent.name}")  # AEAD, not clear text
    try:
        spec = certops.identity_unit(agent.config.role, agent.config.publisher, unit, op="install")
        cert = certs.load_certificates(der)[0]
        if not certops.key_matches(cert, certs.load_key(key_pem)):
            raise Refused("the shared key does not match the certificate")
        if spec.key_algo.value != certs.key_type(cert)[0]:
            raise Refused("wrong key type")
        previous = (await agent.store.identities()).get(unit)
        try:
            puts = await _peer_trust_puts(agent, unit, cert, previous.cert_der if previous else None)
        except Refused:
            puts = []  # the publisher's copy already reached tomcat-trust
    except CertsimError as exc:
        agent.log.warning("identity-install-refused", unit=unit, sender=env.sender, reason=exc.message)
        return
    await _ensure_services(agent)
    now_ms = agent.clock.now_ms()

    async def write(store: NodeStore) -> None:
        await store.put_identity(Identity(unit, der, key_pem, "ca-signed"), now_ms)
        await _delete_csr(store, unit)

    await agent.commit(puts=puts, extra=write)
    agent.log.info("identity-installed", unit=unit, sender=env.sender, multi_server=True)


async def op_regen(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    cfg = agent.config
    unit = certops.identity_unit(cfg.role, cfg.publisher, _unit_arg(args), op="regen")
    ident = (await agent.store.identities()).get(unit.name)
    old = x509.load_der_x509_certificate(ident.cert_der) if ident else None
    current_bits = certs.key_type(old)[1] if old else None
    size = certops.choose_key_size(unit, args.get("key_size"), current_bits, regen=True)
    key = await asyncio.to_thread(certs.new_private_key, unit.key_algo, size)
    start = certops.regen_start(old, agent.clock.now())
    cert = certs.self_signed_identity(unit, cfg.fqdn, key, start, cfg.subject, validity_days=IDENTITY_VALIDITY_DAYS)
    der = certs.der_of(cert)
    puts = await _peer_trust_puts(agent, unit.name, cert, ident.cert_der if ident else None)
    await _ensure_services(agent)
    messages: list[tuple[str | None, str, dict[str, Any]]] = []
    new_keys: list[AuthzKey] = []
    if unit.name == AUTHZ_UNIT:  # R-OP-AUTHZ: the AUTHZ certificate's key is the OAuth signing key
        new_keys = [AuthzKey("signing", certs.key_pem(key), _version_text(agent))]
        messages.append((None, "authz-keys", _keys_body(agent, new_keys)))
    now_ms = agent.clock.now_ms()

    async def write(store: NodeStore) -> None:
        await store.put_identity(Identity(unit.name, der, certs.key_pem(key), "self-signed"), now_ms)
        for k in new_keys:
            await _put_authz_key(store, k)

    await agent.commit(puts=puts, messages=messages, extra=write)
    services = list(_node_services(agent).values())
    advice = certops.after_change_advice(unit.name, services, await _params(agent.store), regenerated=True)
    agent.log.info("identity-regenerated", unit=unit.name, key_bits=size, replaced=ident.source if ident else None)
    return {
        "unit": unit.name,
        "source": "self-signed",
        "replaced": ident.source if ident else None,
        "cn": certs.common_name(cert.subject),
        "sha256": certs.fingerprint(cert),
        "key_type": unit.key_algo.value,
        "key_bits": size,
        "trust_updated": sorted({f"{p.store}/{p.name}" for p in puts}),
        **advice,
    }


async def op_identity_list(agent: NodeAgent, _args: dict[str, Any]) -> list[dict[str, Any]]:
    """Identity certificates with their source, R-KU-1 flag, pending CSR and the services that still
    use the previous certificate ("restart pending", R-OP-UPLOAD-4)."""
    pending = await _pending_by_service(agent)
    csrs = await _csrs(agent.store)
    rows = []
    for unit, ident in sorted((await agent.store.identities()).items()):
        cert = x509.load_der_x509_certificate(ident.cert_der)
        rows.append(
            {
                "unit": unit,
                "source": ident.source,
                "cn": certs.common_name(cert.subject),
                "sha256": certs.fingerprint(cert),
                "not_after": certs.iso(cert.not_valid_after_utc),
                "key_type": certs.key_type(cert)[0],
                "key_bits": certs.key_type(cert)[1],
                "san": certs.cert_san(cert),
                "flags": ["R-KU-1"] if certops.ku1_flagged(unit, cert, ident.source) else [],
                "csr_pending": unit in csrs,
                "restart_pending": sorted(s for s, items in pending.items() if unit in items),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# services (R-SVC-1, R-OP-UPLOAD-4, R-OP-ECDSA)


def _service_arg(agent: NodeAgent, args: Mapping[str, Any]) -> ServiceSpec:
    name = args.get("name") or args.get("service")
    specs = _node_services(agent)
    if not isinstance(name, str) or not name:
        raise BadInput("no service name given")
    if name not in specs:
        raise NotFound(f"this node runs no service '{name}'; it runs: {', '.join(sorted(specs))}")
    return specs[name]


async def op_service_list(agent: NodeAgent, _args: dict[str, Any]) -> list[dict[str, Any]]:
    states = await _ensure_services(agent)
    pending = await _pending_by_service(agent)
    rt = _rt(agent)
    rows = []
    for name, state in sorted(states.items()):
        if name not in pending:
            continue
        rows.append(
            {
                "name": name,
                "state": "restarting" if name in rt.restarting else state.state,
                "restart_pending": bool(pending[name]),
                "pending": pending[name],
                "loaded": dict(state.loaded),
                "started": certs.iso(dt.datetime.fromtimestamp(state.started_ms / 1000, dt.UTC)),
            }
        )
    return rows


async def op_service_restart(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    spec = _service_arg(agent, args)
    await _ensure_services(agent)
    rt = _rt(agent)
    if spec.name in rt.restarting:
        raise Refused(f"{spec.name} is already restarting")
    rt.restarting.add(spec.name)
    try:
        seconds = float(args.get("seconds", spec.restart_s))
        if not 0 <= seconds <= 3600:
            raise BadInput("a restart takes between 0 and 3600 simulated seconds")
        agent.log.info("service-restarting", service=spec.name)
        await sleep_until(agent.clock, agent.clock.now() + dt.timedelta(seconds=seconds))
        by_unit, extras, identities = await _current(agent)
        loaded = certops.current_items(spec, by_unit, extras)
        state = ServiceState(spec.name, "running", loaded, agent.clock.now_ms())

        async def write(store: NodeStore) -> None:
            await _put_service(store, state)
            for unit in spec.loads:
                if unit in identities:
                    await _put_loaded_cert(store, identities[unit].cert_der)

        await agent.commit(extra=write)
    finally:
        rt.restarting.discard(spec.name)
    if spec.forces_resync:  # R-REPL-6: restarting the sync agent forces a resync
        await agent.resync()
    agent.log.info("service-restarted", service=spec.name, loaded=sorted(loaded))
    agent._emit("service-started", service=spec.name, loaded=loaded)
    return {"name": spec.name, "state": "running", "loaded": loaded, "resync": spec.forces_resync}


async def _served(agent: NodeAgent, service: str, unit: str) -> x509.Certificate | None:
    states = await _ensure_services(agent)
    state = states.get(service)
    sha = state.loaded.get(unit) if state else None
    der = await _loaded_cert(agent.store, sha) if sha else None
    return None if der is None else x509.load_der_x509_certificate(der)


async def op_service_cert(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """The certificate a service loaded at its last start (TFTP's cached tomcat, R-OP-UPLOAD-4)."""
    spec = _service_arg(agent, args)
    unit = _unit_arg(args)
    if unit not in spec.loads:
        raise NotFound(f"{spec.name} does not load '{unit}'; it loads: {', '.join(spec.loads) or 'no certificate'}")
    cert = await _served(agent, spec.name, unit)
    if cert is None:
        raise NotFound(f"{spec.name} on this node has loaded no '{unit}' certificate")
    return {"service": spec.name, "unit": unit, **certs.describe(cert)}


# ---------------------------------------------------------------------------------------------
# enterprise parameters (R-OP-REGEN-3, R-OP-ECDSA)


def _version_text(agent: NodeAgent) -> str:
    return json.dumps(agent.hlc.tick().to_json())


def _newer(mine: str | None, theirs: str) -> bool:
    if mine is None:
        return True
    return Version.from_json(json.loads(theirs)) > Version.from_json(json.loads(mine))


async def op_param_set(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    name, value = certops.check_param(args.get("name"), args.get("value"))
    await _ensure_services(agent)
    version = agent.hlc.tick()

    async def write(store: NodeStore) -> None:
        await _put_setting(store, name, value, version)

    body = {"name": name, "value": value, "version": version.to_json()}
    await agent.commit(messages=[(None, "param", body)], extra=write)
    result: dict[str, Any] = {"name": name, "value": value, "rule": PARAMS[name].rule}
    if name == HTTPS_CIPHERS:  # R-OP-ECDSA
        result["restart"] = ["Cisco Tomcat on every node"]
    return result


async def op_param_get(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    params = await _params(agent.store)
    name = args.get("name")
    if name:
        if name not in params:
            raise NotFound(f"unknown enterprise parameter '{name}'; known: {', '.join(sorted(params))}")
        return {"name": name, "value": params[str(name)]}
    return params


async def _on_param(agent: NodeAgent, env: Envelope) -> None:
    await _apply_param(agent, env.body, env.sender)


async def _apply_param(agent: NodeAgent, raw: Mapping[str, Any], sender: str) -> None:
    """An enterprise parameter from a peer: the newer version wins (last writer wins)."""
    name, value = certops.check_param(raw["name"], raw["value"])
    version = Version.from_json(raw["version"])
    agent.hlc.observe(version)
    held = (await _settings(agent.store)).get(name)
    if held is not None and held[1] >= version:
        return
    await _ensure_services(agent)

    async def write(store: NodeStore) -> None:
        await _put_setting(store, name, value, version)

    await agent.commit(extra=write)
    agent.log.info("param-applied", name=name, value=value, sender=sender)


# ---------------------------------------------------------------------------------------------
# OAuth keys and tokens (R-OP-AUTHZ)


def _keys_body(agent: NodeAgent, keys: list[AuthzKey]) -> dict[str, Any]:
    """AUTHZ keys for the bus: the material is encrypted for cluster members (AEAD), bound to its kind
    and version, so a broker-side reader learns nothing and cannot move it to another key."""
    return {
        "keys": [
            {"kind": k.kind, "material": agent.seal_secret(k.material, _key_context(k)), "version": k.version}
            for k in keys
        ]
    }


def _key_context(key: AuthzKey) -> str:
    return f"authz-key:{key.kind}:{key.version}"


def _require_publisher(agent: NodeAgent, what: str) -> None:
    if not (agent.config.publisher and agent.config.role is Role.CUCM):
        raise Refused(f"{what} runs on the Unified CM publisher, which replicates the keys to every node")


async def _initial_keys(agent: NodeAgent) -> dict[str, AuthzKey]:
    """The publisher's keys; made on first use (signing = the AUTHZ certificate's key) and shared."""
    keys = await _authz_keys(agent.store)
    if not agent.config.publisher or agent.config.role is not Role.CUCM or len(keys) == 2:
        return keys
    await _ensure_services(agent)
    made: list[AuthzKey] = []
    if "encryption" not in keys:
        made.append(AuthzKey("encryption", os.urandom(32), _version_text(agent)))
    if "signing" not in keys:
        ident = (await agent.store.identities()).get(AUTHZ_UNIT)
        material = (
            ident.key_pem if ident else certs.key_pem(await asyncio.to_thread(certs.new_private_key, KeyAlgo.RSA, 2048))
        )
        made.append(AuthzKey("signing", material, _version_text(agent)))

    async def write(store: NodeStore) -> None:
        for k in made:
            await _put_authz_key(store, k)

    await agent.commit(messages=[(None, "authz-keys", _keys_body(agent, made))], extra=write)
    return await _authz_keys(agent.store)


async def op_authz_regen(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    kind = certops.check_authz_kind(args.get("kind"))
    _require_publisher(agent, f"set key regen authz {kind}")
    await _initial_keys(agent)
    if kind == "encryption":
        new = AuthzKey("encryption", os.urandom(32), _version_text(agent))
        extra_ident = None
    else:
        key = await asyncio.to_thread(certs.new_private_key, KeyAlgo.RSA, 2048)
        new = AuthzKey("signing", certs.key_pem(key), _version_text(agent))
        unit = UNITS[AUTHZ_UNIT]
        ident = (await agent.store.identities()).get(AUTHZ_UNIT)
        old = x509.load_der_x509_certificate(ident.cert_der) if ident else None
        cert = certs.self_signed_identity(
            unit,
            agent.config.fqdn,
            key,
            certops.regen_start(old, agent.clock.now()),
            agent.config.subject,
            validity_days=IDENTITY_VALIDITY_DAYS,
        )
        extra_ident = Identity(AUTHZ_UNIT, certs.der_of(cert), new.material, "self-signed")
    now_ms = agent.clock.now_ms()

    async def write(store: NodeStore) -> None:
        await _put_authz_key(store, new)
        if extra_ident is not None:
            await store.put_identity(extra_ident, now_ms)

    await agent.commit(messages=[(None, "authz-keys", _keys_body(agent, [new]))], extra=write)
    agent.log.info("authz-key-regenerated", kind=kind)
    return {
        "kind": kind,
        "version": new.version,
        "replicated_to": "every node, IM and Presence included",
        "notes": [
            "tokens made with the old key no longer work (R-OP-AUTHZ)",
            "restart Cisco XCP Authentication Service on the IM and Presence nodes",
            "a centralized IM and Presence cluster needs the same regeneration",
        ],
    }


async def _on_authz_keys(agent: NodeAgent, env: Envelope) -> None:
    await _apply_keys(agent, env.body["keys"], env.sender)


async def _apply_keys(agent: NodeAgent, raw_keys: list[Any], sender: str) -> None:
    """AUTHZ keys from a peer (decrypted here): per kind, the newer version wins."""
    incoming = []
    for k in raw_keys:
        kind, version = certops.check_authz_kind(k["kind"]), str(k["version"])
        material = agent.open_secret(k["material"], f"authz-key:{kind}:{version}")  # AEAD, not clear text
        incoming.append(AuthzKey(kind, material, version))
    held = await _authz_keys(agent.store)
    newer = [k for k in incoming if _newer(held[k.kind].version if k.kind in held else None, k.version)]
    for k in incoming:
        agent.hlc.observe(Version.from_json(json.loads(k.version)))
    if not newer:
        return
    await _ensure_services(agent)

    async def write(store: NodeStore) -> None:
        for k in newer:
            await _put_authz_key(store, k)

    await agent.commit(extra=write)
    agent.log.info("authz-keys-applied", kinds=[k.kind for k in newer], sender=sender)


# ---------------------------------------------------------------------------------------------
# anti-entropy of enterprise parameters and AUTHZ keys (R-REPL-6): a digest rides on every
# replication digest; a peer that differs sends what it holds, and asks for ours in return


async def _state_digest(agent: NodeAgent) -> str:
    settings = await _settings(agent.store)
    keys = await _authz_keys(agent.store)
    if not settings and not keys:
        return ""
    lines = [f"p:{n}={v}@{ver}" for n, (v, ver) in sorted(settings.items())]
    lines += [f"k:{k.kind}@{k.version}:{certops.material_sha(k.material)}" for _, k in sorted(keys.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


async def _send_state(agent: NodeAgent, to: str, want: bool) -> None:
    settings = await _settings(agent.store)
    keys = list((await _authz_keys(agent.store)).values())
    params = [{"name": n, "value": v, "version": ver.to_json()} for n, (v, ver) in sorted(settings.items())]
    agent.send(to, "certops-state", {"params": params, "keys": _keys_body(agent, keys)["keys"], "want": want})


async def _on_state(agent: NodeAgent, env: Envelope) -> None:
    for raw in env.body["params"]:
        await _apply_param(agent, raw, env.sender)
    if env.body["keys"]:
        await _apply_keys(agent, env.body["keys"], env.sender)
    if env.body.get("want"):
        await _send_state(agent, env.sender, want=False)


async def op_authz_status(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    keys = await _initial_keys(agent)
    return {k: {"version": v.version, "sha256": certops.material_sha(v.material)} for k, v in sorted(keys.items())}


async def op_token_issue(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """An access token (RSA, signing key) or a refresh token (HMAC, encryption key)."""
    kind = str(args.get("type") or "access")
    if kind not in ("access", "refresh"):
        raise BadInput(f"token type must be access or refresh, not '{kind}'")
    user = str(args.get("user") or "jabber-user")
    keys = await _initial_keys(agent)
    key = keys.get("signing" if kind == "access" else "encryption")
    if key is None:
        raise Refused("this node has no authz keys yet; the publisher issues them")
    claims = {"sub": user, "typ": kind, "iss": agent.name, "jti": secrets.token_hex(8)}
    token = certops.issue_token(key, claims, agent.clock.now())
    return {"token": token, "type": kind, "key": key.kind}


async def op_token_verify(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    token = args.get("token")
    if not isinstance(token, str) or not token:
        raise BadInput("no token given")
    claims = certops.verify_token(token, await _authz_keys(agent.store), agent.clock.now())
    return {"valid": True, "claims": claims}


# ---------------------------------------------------------------------------------------------
# troubleshooting: connect to a remote node (R-TS-1)


async def op_check_remote(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """Validate the certificate the peer's Cisco Tomcat serves now against this node's tomcat-trust."""
    peer = args.get("peer")
    if not isinstance(peer, str) or not peer:
        raise BadInput("no peer node given")
    if peer == agent.name:
        raise BadInput("a node checks a remote node, not itself")
    nonce = secrets.token_hex(8)
    rt = _rt(agent)
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    rt.waiters[nonce] = fut
    failure = {"peer": peer, "connected": False, "message": certops.CONNECT_FAILURE}
    try:
        agent.send(peer, "tomcat-serving-req", {"nonce": nonce})
        answer = await asyncio.wait_for(fut, PEER_ANSWER_S)
    except TimeoutError:
        return {**failure, "reason": f"{peer} did not answer: it is down or unreachable"}
    finally:
        rt.waiters.pop(nonce, None)
    if not answer.get("cert"):
        return {**failure, "reason": f"Cisco Tomcat on {peer} is not serving (restarting)"}
    cert = x509.load_der_x509_certificate(base64.b64decode(str(answer["cert"])))
    trust = [x509.load_der_x509_certificate(r.der or b"") for r in await agent.store.entries("tomcat-trust")]
    try:
        certops.verify_chain(cert, [], trust, agent.clock.now(), "tomcat-trust")
    except Refused:
        agent.log.warning("remote-node-untrusted", peer=peer, cn=certs.common_name(cert.subject))
        return {
            **failure,
            "reason": (
                f"{peer}'s Tomcat serves '{certs.common_name(cert.subject)}' (sha256 {certs.fingerprint(cert)[:16]}…), "
                "which this node's tomcat-trust does not trust"
            ),
            "peer_cert": certs.fingerprint(cert),
        }
    # --- OCSP (node/agent_ocsp.py): R-OCSP-3/R-OCSP-4, the peer's leaf is asked about in real time
    from node import agent_ocsp  # noqa: PLC0415 - imported here: node.agent imports both modules
    from node.ocsp_check import OcspStatus  # noqa: PLC0415

    verdict = await agent_ocsp.check_connection(agent, cert, trust)
    if verdict is not None and not verdict.allowed:
        agent.log.warning("remote-node-revocation", peer=peer, status=verdict.status.value, reason=verdict.reason)
        return {
            **failure,
            "reason": (
                f"{peer}'s Tomcat serves '{certs.common_name(cert.subject)}', whose OCSP status is {verdict.status}"
                f"{' (Common Criteria mode)' if verdict.status is not OcspStatus.REVOKED else ''}: {verdict.reason}"
            ),
            "peer_cert": certs.fingerprint(cert),
            "ocsp": verdict.status.value,
        }
    # --- end OCSP
    return {
        "peer": peer,
        "connected": True,
        "message": f"Connected to {peer}",
        "peer_cert": certs.fingerprint(cert),
        "peer_cn": certs.common_name(cert.subject),
        "ocsp": None if verdict is None else verdict.status.value,
    }


async def _on_serving_req(agent: NodeAgent, env: Envelope) -> None:
    nonce = str(env.body["nonce"])
    served = None if "Cisco Tomcat" in _rt(agent).restarting else await _served(agent, "Cisco Tomcat", "tomcat")
    body = {"nonce": nonce, "cert": base64.b64encode(certs.der_of(served)).decode() if served else ""}
    agent.send(env.sender, "tomcat-serving", body)


async def _on_serving(agent: NodeAgent, env: Envelope) -> None:
    fut = _rt(agent).waiters.get(str(env.body["nonce"]))
    if fut is not None and not fut.done():
        fut.set_result(dict(env.body))


DESCRIPTIONS_META = "descriptions"  # meta key: {"store/name": {"sha256", "text"}}, this node's only


async def _held_shas(agent: NodeAgent) -> dict[str, str]:
    """``store/name`` (an identity: ``unit/unit``) -> what is held there now: the SHA-256 of the certificate
    (and, for a trust entry, its version: deleted and uploaded again is another certificate)."""
    held = {f"{u}/{u}": certs.der_sha256(i.cert_der) for u, i in (await agent.store.identities()).items()}
    held.update(
        {f"{r.store}/{r.name}": f"{certs.der_sha256(r.der or b'')}@{r.version}" for r in await agent.store.entries()}
    )
    return held


async def _descriptions(agent: NodeAgent) -> dict[str, str]:
    """The descriptions that still describe the certificate held under their name (a certificate
    replaced or deleted since loses its description)."""
    raw = json.loads(await agent.store.get_meta(DESCRIPTIONS_META) or "{}")
    held = await _held_shas(agent)
    return {k: str(v["text"]) for k, v in raw.items() if held.get(k) == v.get("sha256")}


async def op_cert_describe(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """A certificate's Description(friendly name), as the upload dialog sets it: ``store`` (a trust store
    or an identity unit), ``names`` (trust certificates; none for a unit) and ``description``. Kept by
    this node (the list of every door shows it); an empty description goes back to the default."""
    text = certops.check_description(args.get("description"))
    store = str(args.get("store") or "")
    names = [store] if store in UNITS else [certs.normalize_name(str(n)) for n in args.get("names") or []]
    if not store or not names:
        raise BadInput("give the store and the names of the certificates to describe")
    held = await _held_shas(agent)
    keys = [f"{store}/{n}" for n in names]
    missing = [k for k in keys if k not in held]
    if missing:
        raise NotFound(f"no certificate {', '.join(missing)} on this node")
    raw = json.loads(await agent.store.get_meta(DESCRIPTIONS_META) or "{}")
    kept = {k: v for k, v in raw.items() if held.get(k) == v.get("sha256")}  # forget the stale ones
    for k in keys:
        if text:
            kept[k] = {"sha256": held[k], "text": text}
        else:
            kept.pop(k, None)

    async def write(s: NodeStore) -> None:
        await s.set_meta(DESCRIPTIONS_META, json.dumps(kept, sort_keys=True))

    await agent.commit(extra=write)
    return {"store": store, "described": sorted(names), "description": text}


async def op_cert_descriptions(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, str]:
    """``store/name`` -> description of the certificates this node holds that have one."""
    return await _descriptions(agent)


async def op_cluster_nodes(agent: NodeAgent, _args: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": p.name, "fqdn": p.fqdn, "role": p.role} for p in await _roster(agent)]


EXTENSION = Extension(
    name="certops",
    ops={
        "csr_gen": op_csr_gen,
        "csr_get": op_csr_get,
        "csr_list": op_csr_list,
        "csr_delete": op_csr_delete,
        "identity_upload": op_identity_upload,
        "identity_list": op_identity_list,
        "regen": op_regen,
        "service_list": op_service_list,
        "service_restart": op_service_restart,
        "service_cert": op_service_cert,
        "param_set": op_param_set,
        "param_get": op_param_get,
        "authz_regen": op_authz_regen,
        "authz_status": op_authz_status,
        "token_issue": op_token_issue,
        "token_verify": op_token_verify,
        "check_remote": op_check_remote,
        "cluster_nodes": op_cluster_nodes,
        "cert_describe": op_cert_describe,
        "cert_descriptions": op_cert_descriptions,
    },
    messages={
        "certops-hello": _on_hello,
        "identity-install": _on_identity_install,
        "param": _on_param,
        "authz-keys": _on_authz_keys,
        "tomcat-serving-req": _on_serving_req,
        "tomcat-serving": _on_serving,
        "certops-state": _on_state,
    },
    state_digest=_state_digest,
    send_state=_send_state,
)
