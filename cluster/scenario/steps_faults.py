"""Scenario steps that break things: crashes, partitions, a broker restart, link faults, bursts, a rogue client.

They are listed in ``STEPS``, which ``cluster.scenario.kinds`` reads.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cluster.labfile import LabSpec
from cluster.rogue import KINDS, RogueClient
from cluster.scenario.base import ScenarioError, Step, StepKind, as_list, check_node, check_store, need_args
from node.catalog import KeyAlgo
from node.errors import CertsimError

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

BURST_IN_FLIGHT = 64


def _nodes_arg(args: Any, lab: LabSpec, label: str, *, allow_all: bool = False, key: str = "") -> None:
    names = as_list(args)
    if not names:
        raise ScenarioError(f"{label}: name at least one node")
    for name in names:
        if not (allow_all and name == "all"):
            check_node(lab, name, label, key)


def _nodes(runner: Runner, args: Any) -> list[str]:
    names = [str(n) for n in as_list(args)]
    return list(runner.scenario.lab.node_names) if "all" in names else names


async def _crash(runner: Runner, step: Step) -> Any:
    await runner.lab.crash_node(step.args)
    return {"crashed": step.args}


async def _partition(runner: Runner, step: Step) -> Any:
    names = _nodes(runner, step.args)
    runner.lab.partition(names)
    return {"partitioned": names}


async def _heal(runner: Runner, step: Step) -> Any:
    names = None if step.args == "all" else _nodes(runner, step.args)
    await runner.lab.heal(names)
    return {"healed": names or "all"}


def _validate_faults(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["node", "nodes", "delay_ms", "duplicate", "reorder", "seed", "clear", "drop"])
    for key in ("node", "nodes"):
        _nodes_arg(as_list(a.get(key)) or ["all"], lab, label, allow_all=True, key=key)
    _nodes_arg(as_list(a.get("nodes")) + as_list(a.get("node")), lab, label, allow_all=True)
    for key in ("duplicate", "reorder"):
        if not 0 <= float(a.get(key, 0)) <= 1:
            raise ScenarioError(f"{label}: {key} is a probability from 0 to 1")


async def _faults(runner: Runner, step: Step) -> Any:
    a = step.args
    names = _nodes(runner, as_list(a.get("nodes")) + as_list(a.get("node")))
    for name in names:
        if a.get("clear"):
            runner.lab.set_link_faults(name)
        else:
            runner.lab.set_link_faults(
                name,
                delay_s=float(a.get("delay_ms", 0)) / 1000,
                duplicate=float(a.get("duplicate", 0)),
                reorder=float(a.get("reorder", 0)),
                seed=int(a.get("seed", 0)),
                drop_next=int(a.get("drop", 0)),
            )
    return {"faults": names, "cleared": bool(a.get("clear"))}


def _validate_broker(args: Any, _lab: LabSpec, label: str) -> None:
    if args != "restart" and not (isinstance(args, Mapping) and set(args) <= {"restart", "down_s"}):
        raise ScenarioError(f"{label}: broker takes 'restart' or {{restart: true, down_s: N}}")


async def _broker(runner: Runner, step: Step) -> Any:
    down = float(step.args.get("down_s", 0)) if isinstance(step.args, Mapping) else 0.0
    await runner.lab.restart_broker(down_s=down)
    return {"broker": "restarted", "down_s": down}


def _validate_burst(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "store", "count", "issuer", "as"], label, ["crash_after"])
    check_node(lab, a["node"], label, "node")
    check_store(a["store"], label, units=False)
    if not 1 <= int(a["count"]) <= 5000:
        raise ScenarioError(f"{label}: count must be 1..5000")
    if "crash_after" in a and not 1 <= int(a["crash_after"]) <= int(a["count"]):
        raise ScenarioError(f"{label}: crash_after must be 1..count")


async def _burst(runner: Runner, step: Step) -> Any:
    """Many uploads in flight at once to one node; optionally crash it after N acknowledgements.

    The names whose upload was acknowledged are remembered under ``as`` for ``expect_acknowledged``.
    """
    a = step.args
    node, store, count = str(a["node"]), str(a["store"]), int(a["count"])
    crash_after = int(a["crash_after"]) if "crash_after" in a else None
    prefix = str(a["as"])

    def make() -> list[bytes]:
        return [
            runner.ca.issue(f"{prefix}-{i:04d}", issuer=str(a["issuer"]), key_algo=KeyAlgo.EC, key_size=256).pem()
            for i in range(count)
        ]

    pems = await asyncio.to_thread(make)
    acked: list[str] = []
    crashed = asyncio.Event()
    gate = asyncio.Semaphore(BURST_IN_FLIGHT)

    async def one(pem: bytes) -> None:
        async with gate:
            if crashed.is_set():
                return
            try:
                result = await runner.lab.request(
                    node, "upload", {"store": store, "data": base64.b64encode(pem).decode()}, timeout=5.0
                )
            except CertsimError:
                return  # not acknowledged: the node died under it
            acked.extend(result["added"])
            if crash_after is not None and len(acked) >= crash_after and not crashed.is_set():
                crashed.set()
                await runner.lab.crash_node(node)
                for other in tasks:  # uploads still in flight died with the node: unacknowledged, no 5 s wait
                    if other is not asyncio.current_task():
                        other.cancel()

    tasks = [asyncio.create_task(one(p)) for p in pems]
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            raise outcome
    late = crash_after is not None and not crashed.is_set()
    if late:  # uploads timed out (a loaded machine) before crash_after were acknowledged: crash it now
        await runner.lab.crash_node(node)
    runner.memory[prefix] = acked
    result: dict[str, Any] = {"sent": count, "acknowledged": len(acked), "crashed": crash_after is not None}
    if late:
        result["note"] = f"crashed after the burst: only {len(acked)} of {crash_after} acknowledgements came in time"
    return result


def _validate_expect_acked(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["burst", "store"], label, ["nodes", "rule"])
    _nodes_arg(as_list(a.get("nodes", "all")), lab, label, allow_all=True, key="nodes")
    check_store(a["store"], label, units=False)


async def _expect_acked(runner: Runner, step: Step) -> Any:
    """Every acknowledged upload of a burst is held by every named node (nothing acknowledged is lost)."""
    a = step.args
    acked = runner.memory.get(str(a["burst"]))
    if acked is None:
        raise ScenarioError(f"{step.label}: no burst named '{a['burst']}' ran before")
    if not acked:
        raise ScenarioError(f"{step.label}: burst '{a['burst']}' had no upload acknowledged, so this checks nothing")
    conv = await runner.lab.converge(timeout=runner.scenario.settle_timeout)
    missing: dict[str, int] = {}
    for node in _nodes(runner, a.get("nodes", "all")):
        rows = await runner.lab.request(node, "list", {"store": a["store"]})
        held = {r["name"] for r in rows}
        lost = [n for n in acked if n not in held]
        if lost:
            missing[node] = len(lost)
    if missing:
        raise AssertionError(f"acknowledged uploads lost: {missing} of {len(acked)}")
    if not conv.converged:
        raise AssertionError(f"cluster did not converge: {conv.detail}")
    return {"acknowledged": len(acked), "held_everywhere": True}


def _validate_rogue(args: Any, _lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["sniff", "attack", "kinds", "seed"])
    if ("sniff" in a) == ("attack" in a):
        raise ScenarioError(f"{label}: rogue takes sniff: start, or attack: COUNT")
    for kind in as_list(a.get("kinds", [])):
        if kind not in KINDS:
            raise ScenarioError(f"{label}: unknown rogue kind '{kind}'; kinds: {', '.join(KINDS)}")


async def _rogue(runner: Runner, step: Step) -> Any:
    a = step.args
    rogue = runner.memory.get("__rogue__")
    if "sniff" in a:
        lab = runner.lab
        rogue = RogueClient(lab.broker, lab.topics, lab.spec.name, seed=int(a.get("seed", 0)))
        await rogue.start()
        runner.memory["__rogue__"] = rogue
        runner.cleanups.append(rogue.stop)
        return {"sniffing": True}
    if not isinstance(rogue, RogueClient):
        raise ScenarioError(f"{step.label}: start the rogue client with 'rogue: {{sniff: start}}' first")
    kinds = tuple(str(k) for k in as_list(a.get("kinds"))) or KINDS
    sent = await rogue.attack(int(a["attack"]), kinds)
    return {"sent": dict(sent), "captured": len(rogue.captured)}


def _validate_expect_rejected(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["at_least"], label, ["nodes", "reasons", "rule"])
    _nodes_arg(as_list(a.get("nodes", "all")), lab, label, allow_all=True, key="nodes")


async def _expect_rejected(runner: Runner, step: Step) -> Any:
    """Each node refused at least ``at_least`` envelopes for the given reasons (and logged them)."""
    a = step.args
    await runner.lab.converge(timeout=runner.scenario.settle_timeout)
    reasons = [str(r) for r in as_list(a.get("reasons"))] or ["bad-mac", "replay"]
    short: dict[str, dict[str, int]] = {}
    for node in _nodes(runner, a.get("nodes", "all")):
        status = await runner.lab.request(node, "status")
        counts = {r: int(status["rejected"].get(r, 0)) for r in reasons}
        if sum(counts.values()) < int(a["at_least"]):
            short[node] = counts
    if short:
        raise AssertionError(f"fewer than {a['at_least']} envelopes refused: {short}")
    return {"refused_at_least": a["at_least"], "reasons": reasons}


def _node_validator(args: Any, lab: LabSpec, label: str) -> None:
    check_node(lab, args, label)


def _nodes_validator(args: Any, lab: LabSpec, label: str) -> None:
    _nodes_arg(args, lab, label, allow_all=True)


STEPS: Mapping[str, StepKind] = {
    "crash": StepKind(_node_validator, _crash),
    "partition": StepKind(_nodes_validator, _partition, may_fail=False),
    "heal": StepKind(_nodes_validator, _heal, may_fail=False),
    "faults": StepKind(_validate_faults, _faults, may_fail=False),
    "broker": StepKind(_validate_broker, _broker),
    "burst": StepKind(_validate_burst, _burst, may_fail=False, uses=("issuer",)),
    "expect_acknowledged": StepKind(_validate_expect_acked, _expect_acked, may_fail=False, check=True),
    "rogue": StepKind(_validate_rogue, _rogue, may_fail=False),
    "expect_rejected": StepKind(_validate_expect_rejected, _expect_rejected, may_fail=False, check=True),
}
