"""The lab process's own request handler: faults and lifecycle of a running lab, over the bus.

``certsim fault ...`` reaches a lab started with ``certsim lab up`` the way ``cert ...``
reaches a node: a sealed request to the target ``@lab`` on the control path, answered
with a result or an error. The same operations back the scenario steps and the chaos runner.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from cluster import labops_phones
from cluster.control import LAB_TARGET
from cluster.lab import Lab
from node import certs
from node.errors import BadInput, CertsimError, NotFound, Unavailable
from replication.envelope import Envelope, EnvelopeError, open_envelope
from replication.transport import Bus, NotConnected

_READS = {"status", "clock", "mails"}
ANSWER_MEMORY = 512  # answers kept so a resent request is answered, not run twice


class LabController:
    """Answers ``@lab`` requests for one running ``Lab``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        assert lab.broker is not None
        self._bus = Bus(
            lab.broker,
            client_id=f"{lab.topics.root}/{LAB_TARGET}".replace("/", ":"),
            subscriptions=[lab.topics.ctl(LAB_TARGET)],
            on_message=self._on_request,
            clean_session=True,
        )
        self._answers: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._bus.start()
        await self._bus.wait_connected(10)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._bus.stop()

    async def _on_request(self, _topic: str, payload: bytes) -> None:
        try:
            env = open_envelope(payload, self.lab.secret)
        except EnvelopeError:
            return
        if env.kind != "ctl":
            return
        task = asyncio.create_task(self._answer(env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, env: Envelope) -> None:
        """Run a request once: the client resends it every second until answered, and a long one
        (a year-long clock jump, a broker restart) must not run again for each resent copy."""
        if env.msg_id in self._running:
            return  # still running: its answer goes out when it is done
        body = self._answers.get(env.msg_id)
        if body is None:
            self._running.add(env.msg_id)
            op = str(env.body.get("op"))
            args = env.body.get("args") or {}
            try:
                body = {"req": env.msg_id, "ok": True, "result": await _run(self.lab, op, args)}
                if op not in _READS:  # faults and clock jumps show in the lab's history (certsim lab ui's feed)
                    self.lab.history.record(
                        {"event": f"lab-{op}", "node": LAB_TARGET, "sim": certs.iso(self.lab.clock.now()), "args": args}
                    )
            except CertsimError as exc:
                body = {"req": env.msg_id, "ok": False, "error": {"code": exc.code, "message": exc.message}}
            except (ValueError, TypeError, KeyError) as exc:
                body = {"req": env.msg_id, "ok": False, "error": {"code": "bad-input", "message": str(exc)}}
            except Exception as exc:  # never leave the client waiting for an answer that will not come
                message = f"{type(exc).__name__}: {exc}"
                body = {"req": env.msg_id, "ok": False, "error": {"code": "internal", "message": message}}
            finally:
                self._running.discard(env.msg_id)
            self._answers[env.msg_id] = body
            while len(self._answers) > ANSWER_MEMORY:
                self._answers.popitem(last=False)
        reply_to = env.body.get("reply_to")
        if isinstance(reply_to, str):
            reply = Envelope("ctl-reply", LAB_TARGET, body, to=env.sender).seal(self.lab.secret)
            with contextlib.suppress(NotConnected):
                await self._bus.publish(reply_to, reply)


async def _run(lab: Lab, op: str, args: dict[str, Any]) -> Any:
    handler = OPS.get(op)
    if handler is None:
        raise NotFound(f"unknown lab operation '{op}'; known: {', '.join(sorted(OPS))}")
    return await handler(lab, args)


def _node(lab: Lab, args: dict[str, Any]) -> str:
    name = str(args.get("node") or "")
    if name not in lab.spec.node_names:
        raise NotFound(f"unknown node '{name}'; nodes of this lab: {', '.join(lab.spec.node_names)}")
    return name


async def _status(lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
    return {
        "running": lab.running_nodes(),
        "partitioned": sorted(lab.partitioned),
        "broker": lab.broker_url,
        "front_doors": {name: doors.describe() for name, doors in lab.doors.items()},  # cluster.doors.frontdoors
    }


async def _crash(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    node = _node(lab, args)
    await lab.crash_node(node)
    return {"crashed": node}


async def _stop(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    node = _node(lab, args)
    await lab.stop_node(node)
    return {"stopped": node}


async def _start(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    node = _node(lab, args)
    await lab.start_node(node)
    return {"started": node}


async def _partition(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    nodes = [str(n) for n in args.get("nodes") or []]
    if not nodes:
        raise BadInput("name at least one node to partition")
    for node in nodes:
        _node(lab, {"node": node})
    lab.partition(nodes)
    return {"partitioned": sorted(lab.partitioned)}


async def _heal(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    nodes = [str(n) for n in args.get("nodes") or []] or None
    await lab.heal(nodes)
    return {"partitioned": sorted(lab.partitioned)}


async def _link(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    node = _node(lab, args)
    values = {k: float(args.get(k, 0)) for k in ("delay_s", "duplicate", "reorder")}
    if not (0 <= values["duplicate"] <= 1 and 0 <= values["reorder"] <= 1 and values["delay_s"] >= 0):
        raise BadInput("duplicate and reorder are probabilities from 0 to 1; delay is a non-negative time")
    drop = int(args.get("drop", 0))
    if drop < 0:
        raise BadInput("drop is a number of messages (0 or more)")
    lab.set_link_faults(node, seed=int(args.get("seed", 0)), drop_next=drop, **values)
    return {"node": node, **values, "drop": drop}


async def _broker_restart(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    down = float(args.get("down_s", 0))
    if lab.embedded is None and lab.broker_control is None:
        raise Unavailable("this lab's broker is external; only a broker the lab started can be restarted")
    # Answer first: the restart drops this very connection, and the client resends on silence.
    asyncio.get_running_loop().call_later(0.2, lambda: asyncio.ensure_future(lab.restart_broker(down_s=down)))
    return {"broker": "restarting", "down_s": down}


async def _clock(lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
    return {
        "sim_time": certs.iso(lab.clock.now()),
        "rate": lab.clock.rate,
        "offset_s": lab.clock.offset.total_seconds(),
    }


async def _advance(lab: Lab, args: dict[str, Any]) -> dict[str, Any]:
    """Jump the lab clock; answers once every timer due inside the jump has fired."""
    raw = args.get("by")
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise BadInput("advance needs 'by', a duration such as 30d, 12h, 90m or seconds")
    # the scenario package brings its runner and front-door steps (aiohttp, asyncssh): a lab loads it on its
    # first jump, not while it starts (a warm 'lab up' waits for every import of the lab process)
    from cluster.scenario import parse_duration  # noqa: PLC0415

    delta = parse_duration(raw)
    before = lab.clock.now()
    steps = await lab.advance(delta)
    return {"from": certs.iso(before), "sim_time": certs.iso(lab.clock.now()), "timer_steps": steps}


async def _mails(lab: Lab, _args: dict[str, Any]) -> dict[str, Any]:
    """What the lab's SMTP sink received (the expiry monitors' mails)."""
    if lab.smtp is None:
        return {"sink": None, "server": lab.smtp_server, "mails": []}
    return {"sink": lab.smtp.url, "server": lab.smtp_server, "mails": [m.to_json() for m in lab.smtp.messages]}


OPS: dict[str, Callable[[Lab, dict[str, Any]], Awaitable[Any]]] = {
    "mails": _mails,
    "clock": _clock,
    "advance": _advance,
    "status": _status,
    "crash": _crash,
    "stop": _stop,
    "start": _start,
    "partition": _partition,
    "heal": _heal,
    "link": _link,
    "broker_restart": _broker_restart,
    **labops_phones.OPS,  # phones, CTL, DRS backups, TLS links
}
