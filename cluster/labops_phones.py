"""``@lab`` requests for phones, CTL, DRS backups and TLS links on a running lab.

``certsim phone ...``, ``certsim backup ...`` and ``certsim link check`` (and the platform CLI's
``utils itl reset``, ``utils ctl``, ``utils disaster_recovery``) reach a lab started with
``certsim lab up`` as ``@lab`` requests; ``cluster.controller`` adds these to its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cluster import backup
from cluster.lab import Lab
from cluster.labca import load_ca_dir
from cluster.links import LinkSpec, check_link
from cluster.phones import fleet
from node.catalog import Role
from node.errors import BadInput, NotFound


def _names(args: dict[str, Any]) -> list[str] | None:
    raw = args.get("phones")
    if raw in (None, "all", []):
        return None
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw):
        raise BadInput("phones is 'all' or a list of phone names")
    return list(raw)


async def _phone_list(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    f = await fleet(lab)
    await f.settle()
    node = args.get("node")
    state = args.get("state")
    return {
        "summary": f.summary(),
        "phones": f.rows(node=None if node is None else str(node), state=None if state is None else str(state)),
    }


async def _phone_show(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    f = await fleet(lab)
    await f.settle()
    return f.show(str(args.get("phone") or ""))


async def _phone_reset(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    f = await fleet(lab)
    node = args.get("node")
    names = _names(args)
    if node is not None:
        names = [p.name for p in f.phones.values() if p.node == node]
    return await f.reset(names)


async def _phone_erase(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    return await (await fleet(lab)).erase(_names(args))


async def _itl_reset(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    """`utils itl reset localkey|remotekey` (remotekey: the ITLRecovery key of the newest backup, or ``backup``)."""
    source = str(args.get("source") or "")
    f = await fleet(lab)
    if source == "remotekey":
        name = args.get("backup")
        reset = await backup.remotekey_reset_file(lab, None if name is None else str(name))
        return await f.itl_reset("remotekey", recovery_key_file=reset)
    return await f.itl_reset(source)


async def _itl_show(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    return await (await fleet(lab)).show_itl(str(args.get("node") or ""))


async def _ctl_show(lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
    """`show ctl`: the CTL the publisher keeps (mixed mode) or the non-secure mode."""
    pub = next((n.name for n in lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)
    if pub is None:
        raise NotFound("this lab has no Unified CM publisher")
    got = await lab.request(pub, "ctl_get", {})
    return {k: v for k, v in got.items() if k != "file"}


async def _ctl(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    return await (await fleet(lab)).ctl(str(args.get("action") or ""))


async def _capf(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    entered = args.get("auth_string")
    return await (await fleet(lab)).capf_install(_names(args), entered=None if entered is None else str(entered))


async def _backup_create(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    name = args.get("name")
    return await backup.create(lab, None if name is None else str(name))


async def _backup_list(lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
    return {"backups": backup.list_backups(lab)}


async def _backup_restore(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    nodes = args.get("nodes") or None
    if nodes is not None and not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)):
        raise BadInput("nodes is a list of node names")
    return await backup.restore(lab, str(args.get("name") or ""), nodes)


async def _link_check(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    spec = LinkSpec.from_args(args, lab.spec.node_names)
    ca = load_ca_dir(lab.lab_dir / "ca", lab.clock)
    return (await check_link(lab, spec, ca)).to_json()


async def run(lab: Lab, op: str, args: dict[str, Any]) -> Any:
    """One of these requests, in the lab's process (the platform CLI's utils itl/ctl/disaster_recovery)."""
    handler = OPS.get(op)
    if handler is None:
        raise NotFound(f"unknown lab operation '{op}'")
    return await handler(lab, args)


OPS: dict[str, Callable[[Lab, dict[str, Any]], Awaitable[Any]]] = {
    "phone_list": _phone_list,
    "phone_show": _phone_show,
    "phone_reset": _phone_reset,
    "phone_erase_itl": _phone_erase,
    "itl_reset": _itl_reset,
    "ctl": _ctl,
    "itl_show": _itl_show,
    "ctl_show": _ctl_show,
    "capf": _capf,
    "backup_create": _backup_create,
    "backup_list": _backup_list,
    "backup_restore": _backup_restore,
    "link_check": _link_check,
}
