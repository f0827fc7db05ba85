"""Disaster Recovery System on a node (R-DRS-1/2): export and restore what a backup captures.

A node's backup holds its identity certificates and private keys, its trust stores, its CTL
file and the enterprise parameters. It leaves the node encrypted (AES-GCM, ``seal_secret``) under a key derived
from the cluster secret, itself derived from the cluster security password: private keys never
cross the bus in the clear, and a restore under another security password fails with a clear
error and changes nothing (R-DRS-1). A restore brings back what the backup held, old keys
included (R-DRS-2: phones that already took a newer ITL may reject the restored signer).

Operations (its ``EXTENSION``): drs_export, drs_restore, drs_check, drs_itl_reset (`utils itl reset
remotekey`: a reset file signed with the ITLRecovery key kept in a backup, R-PHONE-3).
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from cryptography import x509

from node import certs, ops, trustlist
from node.agent_phones import CTL_META
from node.errors import BadInput, Refused
from node.extension import Extension, b64_arg
from node.store import Identity, NodeStore
from node.trustlist import FileKind, Role

if TYPE_CHECKING:
    from node.agent import NodeAgent


FORMAT = "certsim-drs-1"
MISMATCH_TEXT = (
    "the backup cannot be decrypted: it was taken under another cluster security password "
    "(a restore needs the security password the backup was taken with, R-DRS-1)"
)


def _context(agent: NodeAgent) -> str:
    """What a node's backup part is bound to: opened only as this node's part of this lab's backup."""
    return f"{FORMAT}|{agent.config.lab}|{agent.name}"


async def _settings(store: NodeStore) -> list[list[str]]:
    rows = await store.fetchall("SELECT name, value, version FROM setting ORDER BY name")
    return [[str(r[0]), str(r[1]), str(r[2])] for r in rows]


async def op_drs_export(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    """The node's part of a DRS backup, sealed under the cluster security password (R-DRS-1)."""
    ids = await agent.store.identities()
    identities = [
        {"unit": i.unit, "cert": _b64(i.cert_der), "key": _b64(i.key_pem), "source": i.source} for i in ids.values()
    ]
    body: dict[str, Any] = {
        "format": FORMAT,
        "node": agent.name,
        "taken_at": certs.iso(agent.clock.now()),
        "identities": identities,
        "entries": [{"store": r.store, "name": r.name, "der": _b64(r.der or b"")} for r in await agent.store.entries()],
        "settings": await _settings(agent.store),
        "ctl": await agent.store.get_meta(CTL_META),
    }
    # sealed with the cluster secret (replication.envelope.seal_secret, as keys on the bus are)
    sealed = agent.seal_secret(json.dumps(body).encode(), _context(agent))
    agent.log.info("drs-backup", identities=len(identities), entries=len(body["entries"]))
    return {
        "node": agent.name,
        "taken_at": body["taken_at"],
        "data": sealed,
        "units": sorted(ids),
        "fingerprints": {u: certs.der_sha256(i.cert_der) for u, i in ids.items()},
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _open(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    if len(b64_arg(args, "data")) < 28:
        raise BadInput("the backup file is truncated")
    try:
        plain = agent.open_secret(args["data"], _context(agent), from_bus=False)
    except ValueError:
        raise Refused(MISMATCH_TEXT) from None
    body = json.loads(plain)
    if not isinstance(body, dict) or body.get("format") != FORMAT or body.get("node") != agent.name:
        raise BadInput(f"this is not a backup of node {agent.name}")
    return body


async def op_drs_restore(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """Put the node back to the backup: identities and keys, trust stores, CTL file, parameters
    (R-DRS-1). Trust entries the backup holds come back (replicated stores spread them again)."""
    body = _open(agent, args)
    idents = [
        Identity(str(i["unit"]), base64.b64decode(i["cert"]), base64.b64decode(i["key"]), str(i["source"]))
        for i in body["identities"]
    ]
    wanted = {(str(e["store"]), str(e["name"])): base64.b64decode(e["der"]) for e in body["entries"]}
    held = {(r.store, r.name): r.der for r in await agent.store.entries()}
    puts = [ops.Put(s, n, der) for (s, n), der in wanted.items() if held.get((s, n)) != der and s in agent.stores]
    # node-local stores return exactly; replicated ones only get back what they lost (a one-node
    # restore must not delete, cluster-wide, what peers added since the backup)
    removes = [ops.Remove(s, n) for (s, n) in held if (s, n) not in wanted and not agent.policies[s].replicate_delete]
    now_ms = agent.clock.now_ms()
    ctl = body.get("ctl")

    async def write(store: NodeStore) -> None:
        for ident in idents:
            await store.put_identity(ident, now_ms)
        for name, value, version in body["settings"]:
            await store.execute(
                "INSERT OR REPLACE INTO setting(name, value, version) VALUES (?,?,?)", (name, value, version)
            )
        if ctl:
            await store.set_meta(CTL_META, str(ctl))
        else:
            await store.execute("DELETE FROM meta WHERE key=?", (CTL_META,))

    await agent.commit(puts=puts, removes=removes, extra=write)
    agent.log.warning("drs-restored", taken_at=body["taken_at"], puts=len(puts), removes=len(removes))
    return {
        "node": agent.name,
        "taken_at": body["taken_at"],
        "identities": sorted(i.unit for i in idents),
        "trust_restored": len(puts),
        "trust_removed": len(removes),
        "hint": "Restart the services of this node; phones holding a newer ITL may need an ITL reset (R-DRS-2)",
    }


async def op_drs_check(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """Whether this node can open its part of a backup (the security password matches); changes nothing."""
    body = _open(agent, args)
    return {"node": agent.name, "taken_at": body["taken_at"]}


async def op_drs_itl_reset(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """`utils itl reset remotekey`: the bulk ITL reset file signed with the ITLRecovery key of a backup."""
    body = _open(agent, args)
    rec = next((i for i in body["identities"] if i["unit"] == "ITLRecovery"), None)
    if rec is None:
        raise Refused("this backup holds no ITLRecovery key (take the backup on the publisher)")
    cert = x509.load_der_x509_certificate(base64.b64decode(rec["cert"]))
    key = certs.load_key(base64.b64decode(rec["key"]))
    signed = trustlist.build(FileKind.ITL_RESET, Role.ITL_RECOVERY, cert, key)
    return {"file": base64.b64encode(signed).decode(), "taken_at": body["taken_at"]}


EXTENSION = Extension(
    name="drs",
    ops={
        "drs_export": op_drs_export,
        "drs_restore": op_drs_restore,
        "drs_check": op_drs_check,
        "drs_itl_reset": op_drs_itl_reset,
    },
)
