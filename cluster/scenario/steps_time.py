"""Scenario steps for what runs on simulated time: the expiry monitor, its alarms and its mails.

``monitor``: settings on one or more nodes (R-MON-1)::

    - monitor: {nodes: all, notification_start_days: 30, frequency: 1d}
    - monitor: {node: cucm-pub, email_enabled: true, emails: "pki@lab.example;noc@lab.example"}

``expect_alarms``: the syslog alarms about one certificate on a node (R-MON-3): how many,
the first one's time after the monitor started, and the spacing (1 s tolerance)::

    - expect_alarms: {node: cucm-pub, cert: Exp10, count: 60, first: 1d, every: 1d}

``expect_mails``: mails the lab's SMTP sink received about a certificate (same keys, plus
``to`` and ``from_node``). ``expect_monitor``: the cadence of a node's latest runs
(``cadence: 1h`` over the last ``over: 1d``, R-MON-2).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cluster.labfile import LabSpec
from cluster.scenario.base import (
    ScenarioError,
    Step,
    StepKind,
    as_list,
    check_node,
    check_step_nodes,
    need_args,
    parse_duration,
    step_nodes,
)
from node import certs
from node.errors import BadInput
from node.monitor import MonitorSettings

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

TOLERANCE = dt.timedelta(seconds=2)  # the monitor's times are whole seconds in the syslog view
SETTING_KEYS = ("notification_start_days", "frequency", "email_enabled", "emails", "lsc_monitoring")


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _durations(a: Mapping[str, Any], label: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in a:
            parse_duration(a[key])  # raises ScenarioError naming the bad value
    if "count" in a and (isinstance(a["count"], bool) or not isinstance(a["count"], int) or a["count"] < 0):
        raise ScenarioError(f"{label}: count is a whole number (0 or more)")


# --- monitor ---------------------------------------------------------------------------------


def _v_monitor(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["node", "nodes", *SETTING_KEYS])
    check_step_nodes(a, lab, label)
    settings = {k: a[k] for k in SETTING_KEYS if k in a}
    if not settings:
        raise ScenarioError(f"{label}: give at least one of {', '.join(SETTING_KEYS)}")
    try:
        MonitorSettings.from_mapping({k: v for k, v in settings.items() if k != "email_enabled"})
    except BadInput as exc:
        raise ScenarioError(f"{label}: {exc.message}") from None


async def _monitor(runner: Runner, step: Step) -> Any:
    settings = {k: step.args[k] for k in SETTING_KEYS if k in step.args}
    done = []
    for node in step_nodes(runner, step.args):
        await runner.lab.request(node, "monitor_set", settings)
        done.append(node)
    return {"nodes": done, **settings}


# --- expect_alarms / expect_mails ------------------------------------------------------------


def _v_expect_times(args: Any, lab: LabSpec, label: str, extra: tuple[str, ...] = ()) -> None:
    a = need_args(args, ["node", "cert"], label, ["count", "first", "every", *extra])
    check_node(lab, a["node"], label, "node")
    if not any(k in a for k in ("count", "first", "every")):
        raise ScenarioError(f"{label}: give count, first or every, or this would check nothing")
    _durations(a, label, ("first", "every"))


def _check_times(what: str, times: list[dt.datetime], a: Mapping[str, Any], started: dt.datetime) -> str:
    """Assert count, first time (after ``started``) and spacing; return a one-line summary."""
    if "count" in a and len(times) != int(a["count"]):
        shown = ", ".join(certs.iso(t) for t in times[:5]) + (" ..." if len(times) > 5 else "")
        raise AssertionError(f"{len(times)} {what}, expected {a['count']} ({shown or 'none'})")
    if times and "first" in a:
        expected = started + parse_duration(a["first"])
        if abs(times[0] - expected) > TOLERANCE:
            raise AssertionError(f"first {what[:-1]} at {certs.iso(times[0])}, expected {certs.iso(expected)}")
    if len(times) > 1 and "every" in a:
        every = parse_duration(a["every"])
        for before, after in itertools.pairwise(times):
            if abs((after - before) - every) > TOLERANCE:
                raise AssertionError(
                    f"{what} at {certs.iso(before)} and {certs.iso(after)} are {after - before} apart, expected {every}"
                )
    span = f" from {certs.iso(times[0])} to {certs.iso(times[-1])}" if times else ""
    return f"{len(times)} {what}{span}"


async def _started(runner: Runner, node: str) -> dt.datetime:
    state = await runner.lab.request(node, "monitor_get", {})
    if not state.get("started"):
        raise ScenarioError(f"the expiry monitor on {node} has not started")
    return _t(str(state["started"]))


async def _expect_alarms(runner: Runner, step: Step) -> Any:
    a = step.args
    node = str(a["node"])
    name = certs.entry_name(runner.ca.get(str(a["cert"])).cert)
    lines = await runner.lab.request(node, "syslog", {"grep": f"Certificate name:{name}.pem "})
    times = [_t(str(line["sim_time"])) for line in lines]
    return {"detail": f"{node}: " + _check_times("alarms", times, a, await _started(runner, node))}


def _v_expect_mails(args: Any, lab: LabSpec, label: str) -> None:
    _v_expect_times(args, lab, label, ("to",))


async def _expect_mails(runner: Runner, step: Step) -> Any:
    a = step.args
    node = str(a["node"])
    sink = getattr(runner.lab, "smtp", None)
    if sink is None:
        raise ScenarioError("this lab mails to an outside SMTP server; expect_mails needs the lab's own sink")
    name = certs.entry_name(runner.ca.get(str(a["cert"])).cert)
    mails = [m for m in sink.messages if f"{name}.pem" in m.subject and f" on {node}" in m.subject]
    if "to" in a:
        wanted = tuple(str(t) for t in as_list(a["to"]))
        wrong = [m for m in mails if m.to != wanted]
        if wrong:
            raise AssertionError(f"a mail went to {', '.join(wrong[0].to)}, expected {', '.join(wanted)}")
    times = [_t(m.headers.get("X-Certsim-Sim-Time", m.received_sim or "")) for m in mails]
    return {"detail": f"from {node}: " + _check_times("mails", times, a, await _started(runner, node))}


# --- expect_monitor --------------------------------------------------------------------------


def _v_expect_monitor(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "cadence"], label, ["over"])
    check_node(lab, a["node"], label, "node")
    _durations(a, label, ("cadence", "over"))


async def _expect_monitor(runner: Runner, step: Step) -> Any:
    a = step.args
    state = await runner.lab.request(str(a["node"]), "monitor_get", {})
    cadence = parse_duration(a["cadence"])
    over = parse_duration(a.get("over", "1d"))
    runs = [_t(r) for r in state["recent_runs"]]
    last = [r for r in runs if runs and r > runs[-1] - over]
    if len(last) < 2:
        raise AssertionError(f"only {len(last)} monitor runs in the last {over}")
    gaps = {after - before for before, after in itertools.pairwise(last)}
    if any(abs(g - cadence) > TOLERANCE for g in gaps):
        raise AssertionError(f"monitor runs {sorted(str(g) for g in gaps)} apart, expected every {cadence}")
    return {"detail": f"{a['node']}: {len(last)} runs every {cadence} up to {certs.iso(last[-1])}"}


STEPS: Mapping[str, StepKind] = {
    "monitor": StepKind(_v_monitor, _monitor),
    "expect_alarms": StepKind(_v_expect_times, _expect_alarms, may_fail=False, check=True, uses=("cert",)),
    "expect_mails": StepKind(_v_expect_mails, _expect_mails, may_fail=False, check=True, uses=("cert",)),
    "expect_monitor": StepKind(_v_expect_monitor, _expect_monitor, may_fail=False, check=True),
}
