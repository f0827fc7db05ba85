"""``certsim demo``, ``run``, ``scenarios`` and ``chaos``: scenario runs and seeded chaos runs in this process."""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    broker_option,
    console,
    emit_json,
    err,
    fail,
    handles_errors,
    json_option,
    run_async,
    smtp_option,
)
from node.errors import CertsimError

# cluster.chaos.FAULTS, spelled here so 'certsim --help' need not import the chaos runner (a test keeps them equal)
FAULTS = ("crash", "partition", "broker", "dup", "delay", "reorder")


def _run(
    scenario_ref: str,
    broker: str | None,
    results: Path | None,
    lab_dir: Path | None,
    as_json: bool,
    show_stores: bool,
    smtp: str | None = None,
) -> int:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from cluster import running as rl  # noqa: PLC0415
    from cluster.keys import refill_later, rsa_keys_to_install, use_home_pool  # noqa: PLC0415
    from cluster.runs import default_results_dir, run_scenario  # noqa: PLC0415
    from cluster.scenario import load_scenario  # noqa: PLC0415
    from cluster.views import print_report, step_line, trust_tables  # noqa: PLC0415

    scenario = load_scenario(rl.resolve_scenario(scenario_ref))
    results_dir = results or default_results_dir(scenario.name)
    if not as_json:
        first = scenario.description.splitlines()[0] if scenario.description else ""
        console.print(Text.assemble((scenario.name, "bold"), f": {first}"))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as progress:
        nodes_task = progress.add_task("starting nodes", total=len(scenario.lab.nodes))
        steps_task = progress.add_task("steps", total=len(scenario.steps), visible=False)

        def on_node(_name: str) -> None:
            progress.advance(nodes_task)

        def on_step(step: Any) -> None:
            progress.update(nodes_task, visible=False)
            progress.update(steps_task, visible=True)
            progress.advance(steps_task)
            if not as_json:
                progress.console.print(step_line(step), highlight=False)

        pool = use_home_pool()  # a run's fresh lab installs from keys made ahead
        report = run_async(
            run_scenario(
                scenario,
                results_dir,
                broker_url=broker,
                lab_dir=lab_dir,
                on_step=on_step,
                on_node=on_node,
                collect_stores=show_stores,
                smtp_url=smtp,
            )
        )
    refill_later(pool, rsa_keys_to_install(scenario.lab), scenario.lab.rsa_key_size)
    if as_json:
        emit_json(json.loads((report.results_dir / "results.json").read_text(encoding="utf-8")))
        return report.result.exit_code
    if show_stores and report.stores:
        roles = {n.name: n.role.value + (" publisher" if n.publisher else "") for n in scenario.lab.nodes}
        for table in trust_tables(report.stores, roles):
            console.print(table)
    print_report(console, report)
    return report.result.exit_code


@main.command()
@broker_option
@click.option(
    "--results",
    type=click.Path(path_type=Path, file_okay=False),
    help="Results folder (default: ./certsim-results/<scenario>-<time>).",
)
@json_option
@handles_errors
def demo(broker: str | None, results: Path | None, as_json: bool) -> None:
    """Start the four-node demo lab, run the quickstart scenario, show every node's trust stores."""
    sys.exit(_run("quickstart", broker, results, None, as_json, show_stores=True))


@main.command("run")
@click.argument("scenario")
@broker_option
@click.option(
    "--results",
    type=click.Path(path_type=Path, file_okay=False),
    help="Results folder (default: ./certsim-results/<scenario>-<time>).",
)
@click.option(
    "--lab-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Reuse this lab directory (default: a fresh one in the results folder).",
)
@click.option("--stores", "show_stores", is_flag=True, help="Print every node's trust stores at the end.")
@smtp_option
@json_option
@handles_errors
def run_cmd(
    scenario: str,
    broker: str | None,
    results: Path | None,
    lab_dir: Path | None,
    show_stores: bool,
    smtp: str | None,
    as_json: bool,
) -> None:
    """Run SCENARIO (a file, or the name of a shipped one). Exit 0 valid, 1 an expectation failed, 2 undecided."""
    from cluster.labfile import LabFileError  # noqa: PLC0415
    from cluster.scenario import ScenarioError  # noqa: PLC0415

    try:
        code = _run(scenario, broker, results, lab_dir, as_json, show_stores, smtp)
    except (CertsimError, LabFileError, ScenarioError) as exc:
        fail(getattr(exc, "message", None) or str(exc), code=2)
    sys.exit(code)


@main.command("scenarios")
def scenarios_cmd() -> None:
    """List the shipped scenarios."""
    from rich.text import Text  # noqa: PLC0415

    from cluster.scenario import ScenarioError, load_scenario  # noqa: PLC0415
    from scenarios import shipped  # noqa: PLC0415

    for name, path in shipped().items():
        try:
            desc = load_scenario(path).description.splitlines()[0]
        except (ScenarioError, IndexError):
            desc = ""
        console.print(Text.assemble((f"{name:<22}", "cyan"), f" {desc}"), highlight=False)


@main.command("chaos")
@click.option("--seed", type=int, default=None, help="Seed of the schedule (default: a random one, printed).")
@click.option("--seeds", metavar="A-B", help="Run every seed from A to B and print totals.")
@click.option("--nodes", type=click.IntRange(2, 21), default=4, show_default=True)
@click.option("--ops", type=click.IntRange(1, 100_000), default=30, show_default=True, help="Operations per seed.")
@click.option("--faults", default=",".join(FAULTS), show_default=True, help="Comma-separated faults to inject.")
@click.option("--release", default="15", show_default=True, help="Release profile (10.5 resurrects deletions).")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Seeds run side by side in this process, each with its own lab (and broker).",
)
@broker_option
@click.option("--results", type=click.Path(path_type=Path, file_okay=False), help="Results folder.")
@json_option
@handles_errors
def chaos_cmd(
    seed: int | None,
    seeds: str | None,
    nodes: int,
    ops: int,
    faults: str,
    release: str,
    jobs: int,
    broker: str | None,
    results: Path | None,
    as_json: bool,
) -> None:
    """Random operations under random faults, drawn from a seed; then check every replication property.

    Exit 0 when every seed is valid, 1 when a property failed, 2 when a run could not decide.
    """
    from rich.text import Text  # noqa: PLC0415

    from cluster.chaos import ChaosConfig, ChaosReport, run_seeds, summarize  # noqa: PLC0415
    from cluster.keys import use_home_pool  # noqa: PLC0415
    from cluster.views import VERDICT_STYLE  # noqa: PLC0415

    if seeds:
        first, _, last = seeds.partition("-")
        try:
            seed_list = list(range(int(first), int(last or first) + 1))
        except ValueError:
            fail("--seeds takes A-B: two whole numbers, A <= B", code=2)
        if not seed_list:
            fail("--seeds A-B: the first seed is after the last", code=2)
    else:
        seed_list = [seed if seed is not None else secrets.randbelow(1_000_000)]
    fault_list = tuple(f.strip() for f in faults.split(",") if f.strip())
    try:
        cfgs = [ChaosConfig(seed=s, nodes=nodes, ops=ops, faults=fault_list, release=release) for s in seed_list]
    except ValueError as exc:
        fail(str(exc), code=2)
    base = results or Path("certsim-results") / f"chaos-{seed_list[0]}-{int(time.time())}"
    use_home_pool()  # the template lab's RSA keys come from the key pool when it has them

    def show(report: ChaosReport) -> None:
        if as_json:
            return
        style = VERDICT_STYLE.get(report.verdict, "")
        console.print(
            Text.assemble(f"seed {report.seed}: ", (report.verdict, style)),
            f" acknowledged {report.counts['acknowledged']}"
            f"/{report.counts['attempted']}  faults {report.counts['faults']}  lost {report.counts.get('lost')}"
            f"  resurrected {report.counts.get('resurrected')}  divergent {report.counts.get('divergent')}"
            f"  converged in {report.convergence_s} s  ({report.wall_s} s)",
            highlight=False,
        )
        for v in report.violations[:5]:
            console.print(f"  {v['prop']}: {v['node']} {v['store']}/{v['entry']}: {v['detail']}", highlight=False)

    if not as_json:
        side = f", {jobs} at a time" if jobs > 1 and len(cfgs) > 1 else ""
        err.print(
            f"{len(cfgs)} seed(s) {seed_list[0]}..{seed_list[-1]}{side}: {nodes} nodes, {ops} operations, "
            f"faults {','.join(fault_list) or 'none'}"
        )
    reports = run_async(run_seeds(cfgs, base, broker_url=broker, jobs=jobs, done=show))
    summary = summarize(reports)
    (base / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if as_json:
        emit_json({"summary": summary, "runs": [r.results_dir.as_posix() for r in reports]})
    elif len(reports) > 1:
        console.print_json(json.dumps(summary))
    sys.exit(max(r.exit_code for r in reports))
