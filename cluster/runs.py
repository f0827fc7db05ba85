"""One scenario run from start to results folder: lab up, steps, verdict, files, lab down.

The results folder holds ``results.json`` (verdict and every step), ``history.jsonl``
(every operation and message event, simulated and wall time), ``nodes/<node>.log``
(structlog JSON per node), ``timeline.txt`` (the human view) and ``report.html`` (``cluster.report``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.broker import MosquittoBroker
from cluster.lab import MAILS_FILE, BrokerControl, History, Lab
from cluster.report import write_report
from cluster.scenario import Runner, RunResult, Scenario, StepResult
from node.errors import CertsimError


@dataclass
class RunReport:
    """What a finished run produced, for the CLI and tests."""

    result: RunResult
    results_dir: Path
    broker: str
    stores: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # node -> trust entries at the end
    wall_seconds: float = 0.0


def default_results_dir(scenario: str, base: Path | None = None) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")  # a folder name, not simulation logic
    root = base or Path("certsim-results")
    path = root / f"{scenario}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{scenario}-{stamp}-{n}"
    return path


async def run_scenario(
    scenario: Scenario,
    results_dir: Path,
    *,
    broker_url: str | None = None,
    lab_dir: Path | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    on_node: Callable[[str], None] | None = None,
    collect_stores: bool = False,
    broker_control: BrokerControl | None = None,
    smtp_url: str | None = None,
) -> RunReport:
    """Run ``scenario`` on a fresh lab (or ``lab_dir``) and write the results folder.

    ``broker_url`` None runs the embedded broker; ``"mosquitto"`` starts a private mosquitto
    (which the lab may restart); any ``mqtt://`` URL uses that broker as it is. ``smtp_url``
    (``smtp://host:port``) receives the expiry monitor's mails instead of the lab's own sink,
    whose mails are kept in the results folder (``mails.jsonl``).
    """
    if broker_url == "embedded":
        broker_url = None
    if broker_url == "mosquitto":
        private = MosquittoBroker()
        await private.start()
        try:
            return await run_scenario(
                scenario,
                results_dir,
                broker_url=private.url,
                lab_dir=lab_dir,
                on_step=on_step,
                on_node=on_node,
                collect_stores=collect_stores,
                broker_control=private,
                smtp_url=smtp_url,
            )
        finally:
            await private.stop()
    results_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any node runs
    history = History(results_dir / "history.jsonl")
    lab = Lab(
        scenario.lab,
        lab_dir or results_dir / "lab",
        broker_url=broker_url,
        log_dir=results_dir / "nodes",
        history=history,
        broker_control=broker_control,
        smtp_url=smtp_url,
    )
    started = time.perf_counter()
    sim_start = lab.clock.now()
    holdings: dict[str, list[dict[str, Any]]] = {}
    try:
        try:
            await lab.start(progress=on_node)
            conv = await lab.converge(timeout=scenario.settle_timeout)
            if conv.converged:
                result = await Runner(scenario, lab, on_step).run()
            else:
                detail = f"the lab did not settle after installation: {conv.detail}"
                result = RunResult(scenario.name, "unknown", reason=detail)
            for node in lab.running_nodes():  # the report's trust matrix (and RunReport.stores when asked)
                with contextlib.suppress(CertsimError):
                    holdings[node] = await lab.request(node, "list", {"usage": "trust"})
        except (CertsimError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            result = RunResult(scenario.name, "unknown", reason=f"the lab could not run: {message}")
        broker = lab.broker_url if lab.broker else (broker_url or "embedded")
    finally:
        if lab.smtp is not None:
            lab.smtp.write_jsonl(results_dir / MAILS_FILE)
        await lab.stop()
        history.close()
    report = RunReport(result, results_dir, broker, holdings if collect_stores else {}, time.perf_counter() - started)
    _write(report, scenario, sim_start, lab.clock.now())
    write_report(results_dir, holdings)
    return report


def _write(report: RunReport, scenario: Scenario, sim_start: dt.datetime, sim_end: dt.datetime) -> None:
    result = report.result
    failed = [s for s in result.steps if s.status in ("failed", "error", "unknown")]
    payload = {
        "scenario": scenario.name,
        "description": scenario.description,
        "verdict": result.verdict,
        "exit_code": result.exit_code,
        "reason": result.reason,
        "lab": scenario.lab.name,
        "release": scenario.lab.release.name,
        "nodes": list(scenario.lab.node_names),
        "broker": report.broker,
        "wall_seconds": round(report.wall_seconds, 3),
        "sim_start": sim_start.isoformat(),
        "sim_end": sim_end.isoformat(),
        "expectations": {
            "total": len(result.expectations),
            "held": sum(1 for s in result.expectations if s.status == "ok"),
            "failed": sum(1 for s in result.expectations if s.status == "failed"),
        },
        "rules": sorted({s.rule for s in result.steps if s.rule}),
        "failures": [asdict(s) for s in failed],
        "steps": [asdict(s) for s in result.steps],
    }
    (report.results_dir / "results.json").write_text(
        json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8"
    )
    lines = [f"{scenario.name}: {result.verdict.upper()}  ({report.wall_seconds:.1f} s wall, broker {report.broker})"]
    if result.reason:
        lines.append(f"  reason: {result.reason}")
    for s in result.steps:
        rule = f" [{s.rule}]" if s.rule else ""
        lines.append(f"{s.sim}  step {s.index:>3} {s.kind:<8} {s.status:<7}{rule} {s.detail}")
    (report.results_dir / "timeline.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
