"""DRS backups of a lab, kept under ``<lab dir>/backups/<name>/`` (R-DRS-1/2).

A backup is one sealed file per node (``node.agent_drs``: encrypted under the cluster
security password, so the lab directory never holds a private key in the clear) and a
manifest with the simulated time it was taken and each node's identity fingerprints. A
restore puts one node or the whole cluster back; under another security password it is
refused with a clear error and nothing changes.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from cluster.lab import Lab
from node import certs
from node.catalog import Role
from node.errors import BadInput, NotFound, Refused

BACKUP_DIR = "backups"
MANIFEST = "manifest.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def backups_dir(lab: Lab) -> Path:
    return lab.lab_dir / BACKUP_DIR


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(f"{name[:70]!r} is not a backup name (letters, digits, '.', '_' and '-'; at most 64)")
    return name


async def create(lab: Lab, name: str | None = None) -> dict[str, Any]:
    """`utils disaster_recovery backup network`: every running node's part, plus a manifest."""
    now = lab.clock.now()
    name = _check_name(name or now.strftime("backup-%Y%m%d-%H%M%S"))
    where = backups_dir(lab) / name
    if where.exists():
        raise Refused(f"a backup named {name!r} already exists")
    nodes = lab.running_nodes()
    if not nodes:
        raise Refused("no node is running: nothing to back up")
    parts = {n: await lab.request(n, "drs_export", {}, timeout=60) for n in nodes}
    where.mkdir(parents=True)
    for node, part in parts.items():
        (where / f"{node}.drs").write_bytes(base64.b64decode(part["data"]))
    manifest = {
        "name": name,
        "lab": lab.spec.name,
        "taken_at": certs.iso(now),
        "nodes": {n: {"taken_at": p["taken_at"], "fingerprints": p["fingerprints"]} for n, p in parts.items()},
    }
    (where / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return {"name": name, "taken_at": manifest["taken_at"], "nodes": nodes, "path": str(where)}


def list_backups(lab: Lab) -> list[dict[str, Any]]:
    out = []
    root = backups_dir(lab)
    for path in sorted(root.glob(f"*/{MANIFEST}")) if root.is_dir() else []:
        raw = json.loads(path.read_text(encoding="utf-8"))
        out.append({"name": raw["name"], "taken_at": raw["taken_at"], "nodes": sorted(raw["nodes"])})
    return sorted(out, key=lambda b: b["taken_at"])


def _manifest(lab: Lab, name: str) -> tuple[Path, dict[str, Any]]:
    where = backups_dir(lab) / _check_name(name)
    if not (where / MANIFEST).exists():
        known = ", ".join(b["name"] for b in list_backups(lab)) or "none"
        raise NotFound(f"no backup named {name!r} (backups: {known})")
    return where, json.loads((where / MANIFEST).read_text(encoding="utf-8"))


async def restore(lab: Lab, name: str, nodes: list[str] | None = None) -> dict[str, Any]:
    """`utils disaster_recovery restore network`: one node, some, or every node the backup holds.

    Every node's part is checked against the cluster security password before any node is
    changed, so a refused restore changes nothing."""
    where, manifest = _manifest(lab, name)
    chosen = nodes or sorted(manifest["nodes"])
    missing = [n for n in chosen if n not in manifest["nodes"]]
    if missing:
        raise NotFound(f"backup {name!r} holds no part for {', '.join(missing)}")
    data = {n: base64.b64encode((where / f"{n}.drs").read_bytes()).decode() for n in chosen}
    for node in chosen:  # every part opens under this cluster's password before any node is written
        await lab.request(node, "drs_check", {"data": data[node]}, timeout=60)
    results = {}
    for node in chosen:
        results[node] = await lab.request(node, "drs_restore", {"data": data[node]}, timeout=60)
    return {"backup": name, "taken_at": manifest["taken_at"], "restored": results}


def _publisher(lab: Lab) -> str | None:
    return next((n.name for n in lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)


def publisher_part(lab: Lab, name: str | None = None) -> tuple[str, str]:
    """(backup name, the publisher's sealed part) of the named or newest backup, for remotekey."""
    pub = _publisher(lab)
    if pub is None:
        raise NotFound("this lab has no Unified CM publisher")
    if name is None:
        found = [b for b in list_backups(lab) if pub in b["nodes"]]
        if not found:
            raise Refused("utils itl reset remotekey needs a backup of the publisher (certsim backup create)")
        name = found[-1]["name"]
    where, _manifest_raw = _manifest(lab, name)
    return name, base64.b64encode((where / f"{pub}.drs").read_bytes()).decode()


async def remotekey_reset_file(lab: Lab, name: str | None = None) -> bytes:
    """The bulk ITL reset file signed with the ITLRecovery key kept in a backup (R-PHONE-3)."""
    _name, part = publisher_part(lab, name)
    pub = _publisher(lab)
    assert pub is not None
    got = await lab.request(pub, "drs_itl_reset", {"data": part})
    return base64.b64decode(got["file"])
