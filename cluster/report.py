"""``report.html``: one self-contained, offline page per run (pure: results data in, HTML out).

It shows the verdict, each step and expectation with its rule, the failures with their node and
store, a per-node swimlane diagram (SVG, in the spirit of Maelstrom's ``messages.svg``) of the
operations and the replication messages of ``history.jsonl``, and the trust matrix at the end of the
run (certificates x nodes per replicated store, differences highlighted). Everything shown comes from
the run's files and is escaped (Jinja2 autoescape): certificate names are untrusted text.

The trust matrix is also what the lab dashboard shows live (``trust_matrix``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from node.catalog import STORES, replicated_stores

READ_ONLY_OPS = frozenset(
    {
        "ping",
        "status",
        "list",
        "download",
        "digest",
        "barrier",
        "barrier_seen",
        "identity_list",
        "csr_list",
        "csr_get",
        "service_list",
        "service_cert",
        "param_get",
        "monitor_get",
        "ocsp_get",
        "syslog",
        "cluster_nodes",
        "cert_descriptions",
        "authz_status",
        "token_verify",
        "check_remote",
        "phone_material",
        "ctl_get",
    }
)  # operations that change nothing: left out of the swimlane so what changed stands out
MAX_SWIMLANE_EVENTS = 800  # a long run keeps its last events (the report says how many were left out)
LANE_W, ROW_H, TOP, LEFT = 150, 16, 46, 170


@dataclass(frozen=True)
class MatrixRow:
    store: str
    name: str
    held: tuple[bool, ...]  # per node, in ``TrustMatrix.nodes`` order

    @property
    def differs(self) -> bool:
        return not all(self.held)


@dataclass(frozen=True)
class TrustMatrix:
    """Certificates x nodes of each replicated store: where every node should hold the same."""

    nodes: tuple[str, ...]
    rows: tuple[MatrixRow, ...]
    stores: tuple[str, ...] = field(default=())

    @property
    def differences(self) -> int:
        return sum(1 for r in self.rows if r.differs)


def trust_matrix(holdings: Mapping[str, Iterable[Mapping[str, Any]] | None], stores: Sequence[str] = ()) -> TrustMatrix:
    """The matrix of ``holdings`` (node -> its ``list`` rows; None for a node that did not answer,
    shown holding nothing). Only replicated stores the nodes have (a store of another role is skipped
    for nodes without it)."""
    wanted = set(stores or replicated_stores())
    nodes = tuple(holdings)
    held: dict[tuple[str, str], set[str]] = {}
    has_store: dict[str, set[str]] = {}
    for node, rows in holdings.items():
        for r in rows or ():
            if r.get("usage", "trust") != "trust" or r["store"] not in wanted:
                continue
            held.setdefault((str(r["store"]), str(r["name"])), set()).add(node)
            has_store.setdefault(str(r["store"]), set()).add(node)
    out = []
    for (store, name), where in sorted(held.items(), key=lambda kv: (kv[0][0].lower(), kv[0][1].lower())):
        out.append(MatrixRow(store, name, tuple(n in where for n in nodes)))
    return TrustMatrix(nodes, tuple(out), tuple(sorted({r.store for r in out}, key=str.lower)))


# ---------------------------------------------------------------------------------------------
# swimlane


@dataclass(frozen=True)
class Mark:
    """A dot on a lane: an operation or a node event."""

    lane: int
    row: int
    label: str
    kind: str  # op | fail | node | step
    title: str


@dataclass(frozen=True)
class Arrow:
    """A replication message from one lane to another, sent at ``row_from``, applied at ``row_to``."""

    lane_from: int
    row_from: int
    lane_to: int
    row_to: int
    label: str
    kind: str  # apply | state


@dataclass(frozen=True)
class Swimlane:
    nodes: tuple[str, ...]
    marks: tuple[Mark, ...]
    arrows: tuple[Arrow, ...]
    steps: tuple[tuple[int, str], ...]  # (row, label): a scenario step starts here
    rows: int
    left_out: int

    @property
    def width(self) -> int:
        return LEFT + LANE_W * max(1, len(self.nodes))

    @property
    def height(self) -> int:
        return TOP + ROW_H * (self.rows + 1) + 10

    def x(self, lane: int) -> int:
        return LEFT + LANE_W * lane + LANE_W // 2

    def y(self, row: int) -> int:
        return TOP + ROW_H * row


def _interesting(event: Mapping[str, Any]) -> bool:
    kind = event.get("event")
    if kind == "op":
        return str(event.get("op")) not in READ_ONLY_OPS
    return kind in {
        "apply",
        "state-out",
        "state-in",
        "state-adopted",
        "crash",
        "rejoin",
        "install",
        "service-started",
        "step",
        "monitor-alarms",
        "ocsp-status",
        "chaos",
    }


def swimlane(events: Sequence[Mapping[str, Any]], nodes: Sequence[str]) -> Swimlane:
    """Lanes per node, one row per event (in the order the history recorded them), arrows per message."""
    lanes = {n: i for i, n in enumerate(nodes)}
    chosen = [e for e in events if _interesting(e) and (e.get("event") == "step" or e.get("node") in lanes)]
    left_out = max(0, len(chosen) - MAX_SWIMLANE_EVENTS)
    chosen = chosen[left_out:]
    marks: list[Mark] = []
    arrows: list[Arrow] = []
    steps: list[tuple[int, str]] = []
    first_receipt: dict[str, int] = {}
    sent_state: dict[tuple[str, str], list[int]] = {}  # (from, to) -> rows of state-out not yet received
    for row, e in enumerate(chosen, start=1):
        kind = str(e.get("event"))
        when = str(e.get("sim", ""))
        if kind == "step":
            label = f"step {e.get('step')} {e.get('kind')} {e.get('status')}"
            steps.append((row, label + (f" [{e['rule']}]" if e.get("rule") else "")))
            continue
        lane = lanes[str(e["node"])]
        if kind == "op":
            ok = bool(e.get("ok"))
            error = (e.get("error") or {}).get("message", "") if isinstance(e.get("error"), dict) else ""
            marks.append(
                Mark(
                    lane, row, str(e.get("op")), "op" if ok else "fail", f"{when} {e.get('op')} {'ok' if ok else error}"
                )
            )
        elif kind == "apply":
            sender = str(e.get("sender"))
            msg = str(e.get("msg", ""))
            start = first_receipt.setdefault(msg, row - 1 if row > 1 else row)
            if sender in lanes:
                arrows.append(
                    Arrow(lanes[sender], start, lane, row, f"{e.get('changed', 0)}/{e.get('records', 0)}", "apply")
                )
            marks.append(
                Mark(lane, row, "", "node", f"{when} applied {e.get('records')} record(s) from {sender} (msg {msg})")
            )
        elif kind == "state-out":
            sent_state.setdefault((str(e["node"]), str(e.get("to"))), []).append(row)
            marks.append(
                Mark(
                    lane, row, "state", "node", f"{when} state transfer to {e.get('to')}: {e.get('records')} record(s)"
                )
            )
        elif kind in ("state-in", "state-adopted"):
            sender = str(e.get("sender"))
            pending = sent_state.get((sender, str(e["node"])))
            start = pending.pop(0) if pending else row - 1
            if sender in lanes:
                arrows.append(Arrow(lanes[sender], start, lane, row, "state", "state"))
            marks.append(Mark(lane, row, "", "node", f"{when} {kind} from {sender}: {e.get('records')} record(s)"))
        elif kind == "chaos":  # a fault or operation of a chaos schedule, on the node it hits
            marks.append(
                Mark(lane, row, str(e.get("kind")), "fail", f"{when} chaos {e.get('kind')} {e.get('args') or ''}")
            )
        else:
            detail = e.get("service") or e.get("units") or e.get("count") or e.get("status") or ""
            marks.append(Mark(lane, row, kind, "node", f"{when} {kind} {detail}"))
    return Swimlane(tuple(nodes), tuple(marks), tuple(arrows), tuple(steps), len(chosen), left_out)


# ---------------------------------------------------------------------------------------------
# the page


def failure_where(step: Mapping[str, Any], nodes: Sequence[str]) -> tuple[list[str], list[str]]:
    """The nodes and stores a failed step names: from its result when it says, else from its detail text
    (which names them: "cucm-sub1 still holds tomcat-trust/...")."""
    raw = step.get("result")
    result: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    found_nodes = [str(n) for n in ([result["node"]] if result.get("node") else list(result.get("nodes") or []))]
    found_stores = [str(result["store"])] if result.get("store") else []
    words = set(re.findall(r"[A-Za-z0-9_.-]+", str(step.get("detail", ""))))
    words |= {w.split("/")[0] for w in re.findall(r"[A-Za-z0-9_.-]+/", str(step.get("detail", "")))}
    found_nodes = found_nodes or [n for n in nodes if n in words]
    found_stores = found_stores or [s for s in STORES if s in words or f"{s}/" in str(step.get("detail", ""))]
    return found_nodes, found_stores


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cluster", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.globals["LANE_W"] = LANE_W
    return env


def render_report(
    results: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    holdings: Mapping[str, Iterable[Mapping[str, Any]] | None],
    *,
    generated: dt.datetime | None = None,
) -> str:
    """The report of one run: ``results`` as in ``results.json``, ``events`` the lines of ``history.jsonl``,
    ``holdings`` each node's trust ``list`` at the end (empty when the run could not collect them)."""
    nodes = [str(n) for n in results.get("nodes", [])] or sorted({str(e["node"]) for e in events if "node" in e})
    steps = list(results.get("steps", []))
    return (
        _env()
        .get_template("report.html")
        .render(
            r=results,
            steps=steps,
            failures=[(f, *failure_where(f, nodes)) for f in results.get("failures", [])],
            lane=swimlane(events, nodes),
            matrix=trust_matrix(holdings) if holdings else None,
            generated=(generated.isoformat(timespec="seconds") if generated else ""),
        )
    )


REPORT_FILE = "report.html"
PROPERTY_RULES = {"resurrection": "R-REPL-9", "locality": "R-REPL-2"}  # the chaos checker's properties with a rule


def chaos_results(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A chaos run's ``results.json`` (``cluster.chaos``) in the shape the report shows: the schedule as steps,
    each checker violation as a failure naming its property, node, store and entry."""
    cfg = payload.get("config") or {}
    violations = list(payload.get("violations") or [])
    steps = [
        {
            "index": a.get("index"),
            "kind": a.get("kind"),
            "status": "scheduled",
            "sim": "",
            "rule": None,
            "detail": " ".join(str(x) for x in (a.get("node"), json.dumps(a.get("args") or {})) if x),
        }
        for a in payload.get("schedule") or []
    ]
    failures = [
        {
            "index": i,
            "kind": v.get("prop"),
            "status": "failed",
            "sim": "",
            "rule": PROPERTY_RULES.get(str(v.get("prop"))),
            "detail": f"{v.get('entry')}: {v.get('detail')}",
            "result": {"node": v.get("node"), "store": v.get("store")},
        }
        for i, v in enumerate(violations, start=1)
    ]
    counts = payload.get("counts") or {}
    return {
        "scenario": f"chaos seed {payload.get('seed')}",
        "description": (
            f"{cfg.get('nodes')} nodes, {cfg.get('ops')} operations, faults {', '.join(cfg.get('faults') or [])}"
        ),
        "verdict": payload.get("verdict", "unknown"),
        "reason": "; ".join(str(n) for n in payload.get("notes") or []),
        "lab": "chaos",
        "release": cfg.get("release", ""),
        "nodes": [f"node{i:02d}" for i in range(1, int(cfg.get("nodes") or 0) + 1)],
        "broker": cfg.get("broker") or "embedded",
        "wall_seconds": payload.get("wall_seconds"),
        "sim_start": "",
        "sim_end": "",
        "expectations": {"total": 0, "held": 0, "failed": len(violations)},
        "rules": sorted({f["rule"] for f in failures if f["rule"]}),
        "failures": failures,
        "steps": steps,
        "counts": counts,
    }


def write_report(results_dir: Path, holdings: Mapping[str, Iterable[Mapping[str, Any]] | None]) -> Path:
    """Read ``results.json`` and ``history.jsonl`` of a finished run and write ``report.html`` beside them
    (the runner's one call; the rendering above stays pure)."""
    results = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    if "seed" in results and "scenario" not in results:  # a chaos run (cluster.chaos)
        results = chaos_results(results)
    events: list[dict[str, Any]] = []
    history = results_dir / "history.jsonl"
    if history.exists():
        for line in history.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
    path = results_dir / REPORT_FILE
    path.write_text(render_report(results, events, holdings), encoding="utf-8")
    return path
