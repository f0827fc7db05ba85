"""The ``certsim`` command line (click + rich). Every verb goes through the one control path."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cluster import running as rl
from cluster.chaos import FAULTS, ChaosConfig, run_chaos, summarize
from cluster.cli_common import (
    console,
    emit_json,
    err,
    fail,
    handles_errors,
    json_option,
    lab_dir_option,
    lab_option,
    node_option,
    on_node,
    run_async,
)
from cluster.control import LAB_TARGET
from cluster.lab import LAB_COPY, Lab, default_lab_dir
from cluster.labfile import LabFileError, LabSpec, hosts_lines, load_lab
from cluster.runs import default_results_dir, run_scenario
from cluster.scenario import ScenarioError, load_scenario
from cluster.views import (
    VERDICT_STYLE,
    cert_table,
    print_report,
    status_table,
    step_line,
    trust_tables,
    write_output,
)
from node.errors import CertsimError
from scenarios import shipped

smtp_option = click.option(
    "--smtp",
    metavar="URL",
    default=None,
    help="smtp://host:port receives the expiry monitor's mails (default: the lab's own SMTP sink on loopback).",
)
broker_option = click.option(
    "--broker",
    metavar="URL",
    default=None,
    help="mqtt://host:port uses that MQTT 3.1.1 broker (mosquitto, EMQX); 'mosquitto' starts a private one"
    " (scenarios may restart it); default: the embedded broker.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="certsim")
def main() -> None:
    """certsim: a Cisco Unified CM / IM and Presence certificate-management lab.

    Every simulated server is an agent with its own SQLite trust stores; trust changes
    travel over MQTT by the product's replication rules (R-REPL-1..9 in the README).

    \b
    Start here:
      certsim demo                       four nodes, the quickstart scenario, tables, verdict
      certsim run deletion-rules         run a shipped scenario (or a path to your own)
      certsim lab up scenarios/labs/demo.yaml; certsim lab status; certsim cert list --node cucm-pub
    """


# ------------------------------------------------------------------------------------------
# scenarios


def _run(
    scenario_ref: str,
    broker: str | None,
    results: Path | None,
    lab_dir: Path | None,
    as_json: bool,
    show_stores: bool,
    smtp: str | None = None,
) -> int:
    scenario = load_scenario(rl.resolve_scenario(scenario_ref))
    results_dir = results or default_results_dir(scenario.name)
    if not as_json:
        console.print(
            f"[bold]{scenario.name}[/bold]: {scenario.description.splitlines()[0] if scenario.description else ''}"
        )
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
    try:
        code = _run(scenario, broker, results, lab_dir, as_json, show_stores, smtp)
    except (CertsimError, LabFileError, ScenarioError) as exc:
        fail(getattr(exc, "message", None) or str(exc), code=2)
    sys.exit(code)


@main.command("scenarios")
def scenarios_cmd() -> None:
    """List the shipped scenarios."""
    for name, path in shipped().items():
        try:
            desc = load_scenario(path).description.splitlines()[0]
        except (ScenarioError, IndexError):
            desc = ""
        console.print(f"[cyan]{name:<22}[/cyan] {desc}", highlight=False)


@main.command("chaos")
@click.option("--seed", type=int, default=None, help="Seed of the schedule (default: a random one, printed).")
@click.option("--seeds", metavar="A-B", help="Run every seed from A to B and print totals.")
@click.option("--nodes", type=click.IntRange(2, 21), default=4, show_default=True)
@click.option("--ops", type=click.IntRange(1, 100_000), default=30, show_default=True, help="Operations per seed.")
@click.option("--faults", default=",".join(FAULTS), show_default=True, help="Comma-separated faults to inject.")
@click.option("--release", default="15", show_default=True, help="Release profile (10.5 resurrects deletions).")
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
    broker: str | None,
    results: Path | None,
    as_json: bool,
) -> None:
    """Random operations under random faults, drawn from a seed; then check every replication property.

    Exit 0 when every seed is valid, 1 when a property failed, 2 when a run could not decide.
    """
    if seeds:
        first, _, last = seeds.partition("-")
        seed_list = list(range(int(first), int(last or first) + 1))
    else:
        seed_list = [seed if seed is not None else secrets.randbelow(1_000_000)]
    fault_list = tuple(f.strip() for f in faults.split(",") if f.strip())
    base = results or Path("certsim-results") / f"chaos-{seed_list[0]}-{int(time.time())}"
    reports = []
    for s in seed_list:
        try:
            cfg = ChaosConfig(seed=s, nodes=nodes, ops=ops, faults=fault_list, release=release)
        except ValueError as exc:
            fail(str(exc), code=2)
        if not as_json:
            err.print(f"seed {s}: {nodes} nodes, {ops} operations, faults {','.join(fault_list) or 'none'}")
        report = run_async(run_chaos(cfg, base / f"seed-{s}", broker_url=broker))
        reports.append(report)
        if not as_json:
            style = VERDICT_STYLE.get(report.verdict, "")
            console.print(
                f"seed {s}: [{style}]{report.verdict}[/{style}]  acknowledged {report.counts['acknowledged']}"
                f"/{report.counts['attempted']}  faults {report.counts['faults']}  lost {report.counts.get('lost')}"
                f"  resurrected {report.counts.get('resurrected')}  divergent {report.counts.get('divergent')}"
                f"  converged in {report.convergence_s} s  ({report.wall_s} s)",
                highlight=False,
            )
            for v in report.violations[:5]:
                console.print(f"  {v['prop']}: {v['node']} {v['store']}/{v['entry']}: {v['detail']}", highlight=False)
    summary = summarize(reports)
    (base / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if as_json:
        emit_json({"summary": summary, "runs": [r.results_dir.as_posix() for r in reports]})
    elif len(reports) > 1:
        console.print_json(json.dumps(summary))
    sys.exit(max(r.exit_code for r in reports))


# ------------------------------------------------------------------------------------------
# labs


@main.group()
def lab() -> None:
    """Start, inspect and stop a lab that keeps running in the background."""


def _door_address(info: dict[str, Any] | None, kind: str) -> str:
    listener = (info or {}).get(kind)
    if not listener:
        return "-"
    fallback = " (fallback)" if listener.get("note") else ""
    return f"{listener['address']}{fallback}"


def _doors_table(spec: LabSpec, doors: dict[str, dict[str, Any]]) -> Table:
    """Where each node's front doors listen (cluster.doors.frontdoors); '-' for a node without them."""
    table = Table(title=f"front doors of {spec.name} (OS administrator: {spec.os_admin.user})", title_justify="left")
    for column in ("node", "fqdn", "SSH", "HTTPS (certmgr REST)", "note"):
        table.add_column(column)
    for node in spec.nodes:
        info = doors.get(node.name)
        notes = [] if info else ["front doors closed" if spec.front_doors.enabled else "front doors disabled"]
        for kind in ("ssh", "https"):
            note = ((info or {}).get(kind) or {}).get("note")
            if note:
                notes.append(note)
        if info and info.get("ssh_note"):
            notes.append(str(info["ssh_note"]))
        table.add_row(node.name, node.fqdn, _door_address(info, "ssh"), _door_address(info, "https"), "; ".join(notes))
    return table


@lab.command("up")
@click.argument("lab_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@broker_option
@lab_dir_option
@click.option("--skip", multiple=True, metavar="NODE", help="Leave NODE to be run elsewhere ('certsim node run').")
@click.option("--foreground", is_flag=True, help="Run in this terminal until Ctrl+C instead of in the background.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the nodes.")
@smtp_option
@handles_errors
def lab_up(
    lab_file: Path,
    broker: str | None,
    lab_dir: Path | None,
    skip: tuple[str, ...],
    foreground: bool,
    timeout: float,
    smtp: str | None,
) -> None:
    """Start the lab described by LAB_FILE: broker (embedded unless --broker) and every node."""
    spec, directory = rl.prepare_lab_dir(lab_file, lab_dir)
    if foreground:
        console.print(f"lab {spec.name} in {directory}; Ctrl+C to stop")

        def node_up(name: str) -> None:
            info = rl.front_doors(directory).get(name)
            doors = f"  ssh {_door_address(info, 'ssh')}  https {_door_address(info, 'https')}" if info else ""
            console.print(f"  {name} up{doors}", highlight=False)

        run_async(rl.serve(spec, directory, broker, skip, progress=node_up, smtp_url=smtp))
        return

    lab_path = lab_file.absolute()

    async def up() -> None:
        proc = rl.spawn_serve(lab_path, directory, broker, skip, smtp)
        with Progress(
            SpinnerColumn(),
            TextColumn("starting lab {task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            progress.add_task(spec.name)
            running = await rl.wait_up(directory, proc, timeout)
        async with rl.connect(running) as client:
            st = await rl.statuses(client)
        console.print(status_table(st, spec.name, running.broker.url))
        if spec.front_doors.enabled:
            console.print(_doors_table(spec, rl.front_doors(directory)))
        console.print(f"lab directory {directory} · pid {running.pid} · stop with: certsim lab down --lab {spec.name}")

    run_async(up())


@lab.command("serve", hidden=True)
@click.argument("lab_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@broker_option
@lab_dir_option
@click.option("--skip", multiple=True)
@smtp_option
@handles_errors
def lab_serve(
    lab_file: Path, broker: str | None, lab_dir: Path | None, skip: tuple[str, ...], smtp: str | None
) -> None:
    """Internal: the background process behind 'lab up'."""
    spec = load_lab(lab_file)
    run_async(rl.serve(spec, lab_dir or default_lab_dir(spec.name), broker, skip, smtp_url=smtp))


@lab.command("status")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def lab_status(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Nodes of the running lab: connected or not, certificates per store."""
    running = rl.find_running(lab_name, lab_dir)

    async def go() -> dict[str, Any]:
        async with rl.connect(running) as client:
            return await rl.statuses(client)

    st = run_async(go())
    doors = rl.front_doors(running.lab_dir)
    if as_json:
        emit_json(
            {
                "lab": running.spec.name,
                "broker": running.broker.url,
                "pid": running.pid,
                "nodes": st,
                "front_doors": {n: {k: v for k, v in d.items() if k != "pid"} for n, d in doors.items()},
            }
        )
    else:
        console.print(status_table(st, running.spec.name, running.broker.url))
        console.print(_doors_table(running.spec, doors))


@lab.command("hosts")
@click.argument("lab_file", required=False, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@lab_option
@lab_dir_option
@handles_errors
def lab_hosts(lab_file: Path | None, lab_name: str | None, lab_dir: Path | None) -> None:
    """Lines for /etc/hosts naming every node's front-door address (LAB_FILE, else the running lab).

    \b
    certsim lab hosts | sudo tee -a /etc/hosts
    ssh admin@cucm-pub.lab.example          # then the platform CLI at admin:
    """
    if lab_file is not None:
        spec = load_lab(lab_file)
    elif (lab_name or lab_dir) and (copy := (lab_dir or default_lab_dir(str(lab_name))) / LAB_COPY).exists():
        spec = load_lab(copy)
    else:
        spec = rl.find_running(lab_name, lab_dir).spec
    click.echo(f"# certsim lab {spec.name}")
    for line in hosts_lines(spec):
        click.echo(line)


@lab.command("down")
@lab_option
@lab_dir_option
@handles_errors
def lab_down(lab_name: str | None, lab_dir: Path | None) -> None:
    """Stop the running lab cleanly (its lab directory is kept for the next 'lab up')."""
    running = rl.find_running(lab_name, lab_dir)
    run_async(rl.stop_running(running))
    console.print(f"lab {running.spec.name} stopped; state kept in {running.lab_dir}")


# ------------------------------------------------------------------------------------------
# certificates on a running lab

store_option = click.option(
    "--store", required=True, metavar="STORE", help="Trust store (e.g. tomcat-trust) or identity unit."
)


@main.group()
def cert() -> None:
    """List, upload, delete and download certificates on a node of the running lab."""


@cert.command("list")
@node_option
@click.option("--store", default=None, metavar="STORE", help="Only this trust store or identity unit.")
@click.option("--usage", type=click.Choice(["identity", "trust"]), help="Identity or trust certificates.")
@click.option("--cn", metavar="TEXT", help="Common name contains TEXT (case-insensitive).")
@click.option("--key-type", type=click.Choice(["RSA", "EC"], case_sensitive=False))
@click.option("--expires-before", metavar="DATE", help="Expiring before this ISO date.")
@click.option("--expires-after", metavar="DATE", help="Expiring after this ISO date.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def cert_list(
    node: str,
    store: str | None,
    usage: str | None,
    cn: str | None,
    key_type: str | None,
    expires_before: str | None,
    expires_after: str | None,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Certificates on NODE, with filters (R-OP-LIST)."""
    args = {
        "store": store,
        "usage": usage,
        "cn": cn,
        "key_type": key_type,
        "expires_before": expires_before,
        "expires_after": expires_after,
    }
    running = rl.find_running(lab_name, lab_dir)

    async def go() -> list[dict[str, Any]]:
        async with rl.connect(running) as client:
            found: list[dict[str, Any]] = await client.request(node, "list", {k: v for k, v in args.items() if v})
            if any(r["usage"] == "identity" for r in found):
                # R-OP-UPLOAD-4 / R-KU-1: which services still use an older certificate, and flags
                extra = {i["unit"]: i for i in await client.request(node, "identity_list")}
                for r in found:
                    if r["usage"] == "identity" and r["store"] in extra:
                        r["restart_pending"] = extra[r["store"]]["restart_pending"]
                        r["flags"] = extra[r["store"]]["flags"]
            return found

    rows = run_async(go())
    if as_json:
        emit_json(rows)
    else:
        console.print(cert_table(rows, node))


# `cert upload` (trust stores with --store, identities with --purpose) is defined in cluster.cli_certops.


@cert.command("delete")
@node_option
@store_option
@click.argument("name")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def cert_delete(node: str, store: str, name: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Delete trust certificate NAME from a store on NODE (identity certificates cannot be deleted)."""
    result = on_node(lab_name, lab_dir, node, "delete", {"store": store, "name": name})
    if as_json:
        emit_json(result)
    else:
        where = "from every node" if result["replicated"] else "from this node only"
        console.print(f"deleted {store}/{result['deleted']}.pem {where}", highlight=False)


@cert.command("download")
@node_option
@store_option
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["pem", "der"]), default="pem", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (default: stdout for PEM, NAME.der for DER).",
)
@lab_option
@lab_dir_option
@handles_errors
def cert_download(
    node: str,
    store: str,
    name: str | None,
    fmt: str,
    output: Path | None,
    lab_name: str | None,
    lab_dir: Path | None,
) -> None:
    """Download a trust certificate NAME, or the identity certificate of a unit (--store tomcat)."""
    result = on_node(lab_name, lab_dir, node, "download", {"store": store, "name": name or "", "format": fmt})
    data = base64.b64decode(result["data"])
    if output is None and fmt == "der":
        output = Path(result["filename"])
    write_output(data, output, err)


# ------------------------------------------------------------------------------------------
# faults on a running lab


@main.group()
def fault() -> None:
    """Break a running lab on purpose: crash or stop nodes, partition them, restart the broker, spoil links."""


def _on_lab(lab_name: str | None, lab_dir: Path | None, op: str, args: dict[str, Any]) -> Any:
    return on_node(lab_name, lab_dir, LAB_TARGET, op, args)


def _say(result: Any, as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        console.print(", ".join(f"{k}: {v}" for k, v in result.items()), highlight=False)


@fault.command("crash")
@click.argument("node")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_crash(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Kill NODE abruptly: no clean shutdown, open transactions lost; 'fault restart' brings it back."""
    _say(_on_lab(lab_name, lab_dir, "crash", {"node": node}), as_json)


@fault.command("stop")
@click.argument("node")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_stop(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Stop NODE cleanly (as shutting the server down)."""
    _say(_on_lab(lab_name, lab_dir, "stop", {"node": node}), as_json)


@fault.command("restart")
@click.argument("node")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_restart(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Start NODE again from its database after a crash or stop."""
    _say(_on_lab(lab_name, lab_dir, "start", {"node": node}), as_json)


@fault.command("partition")
@click.argument("nodes", nargs=-1, required=True)
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_partition(nodes: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Cut the replication link of NODES (they stay administrable, like a broken sync link)."""
    _say(_on_lab(lab_name, lab_dir, "partition", {"nodes": list(nodes)}), as_json)


@fault.command("heal")
@click.argument("nodes", nargs=-1)
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_heal(nodes: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Heal the partition of NODES (default: all); they resynchronise at once."""
    _say(_on_lab(lab_name, lab_dir, "heal", {"nodes": list(nodes)}), as_json)


@fault.command("link")
@click.argument("node")
@click.option("--delay-ms", type=click.FloatRange(0), default=0.0, help="Delay each arriving message up to this long.")
@click.option("--duplicate", type=click.FloatRange(0, 1), default=0.0, help="Probability a message arrives twice.")
@click.option("--reorder", type=click.FloatRange(0, 1), default=0.0, help="Probability a message is overtaken.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--drop", type=click.IntRange(0, 10_000), default=0, help="Lose the next N change messages.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_link(
    node: str,
    delay_ms: float,
    duplicate: float,
    reorder: float,
    seed: int,
    drop: int,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Delay, duplicate, reorder or lose what reaches NODE from the bus (all zero: a clean link again)."""
    args = {
        "node": node,
        "delay_s": delay_ms / 1000,
        "duplicate": duplicate,
        "reorder": reorder,
        "seed": seed,
        "drop": drop,
    }
    _say(_on_lab(lab_name, lab_dir, "link", args), as_json)


@fault.command("broker-restart")
@click.option(
    "--down",
    "down_s",
    type=click.FloatRange(0, 600),
    default=1.0,
    show_default=True,
    help="Seconds the broker stays down.",
)
@lab_option
@lab_dir_option
@json_option
@handles_errors
def fault_broker(down_s: float, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Stop the lab's embedded broker and start it again; sessions and queued messages are lost."""
    _say(_on_lab(lab_name, lab_dir, "broker_restart", {"down_s": down_s}), as_json)


# ------------------------------------------------------------------------------------------
# one node as its own process


@main.group()
def node() -> None:
    """Run a single node agent as its own process (labs can span processes and machines)."""


@node.command("run")
@click.option("--lab-file", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--node", "node_name", required=True, metavar="NODE")
@click.option("--broker", required=True, metavar="URL", help="The lab's broker, mqtt://host:port.")
@lab_dir_option
@smtp_option
@handles_errors
def node_run(lab_file: Path, node_name: str, broker: str, lab_dir: Path | None, smtp: str | None) -> None:
    """Run NODE of LAB_FILE against BROKER until Ctrl+C or SIGTERM.

    Use the same lab directory as the rest of the lab (the default one, or --lab-dir) so the
    node shares its topic root and clock; start the rest with 'certsim lab up --skip NODE'.
    """
    spec = load_lab(lab_file)
    spec.node(node_name)
    directory = lab_dir or default_lab_dir(spec.name)
    run_async(_serve_node(spec, directory, node_name, broker, smtp or rl.running_smtp(directory)))


async def _serve_node(spec: LabSpec, directory: Path, node_name: str, broker: str, smtp: str | None) -> None:
    # doors live with the agent; mail goes to the running lab's sink, so the node needs none of its own
    lab = Lab(spec, directory, broker_url=broker, front_doors=spec.front_doors.enabled, smtp_url=smtp)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await lab.start(nodes=[node_name])
    console.print(f"node {node_name} of lab {spec.name} running on {lab.broker_url}; Ctrl+C to stop")
    if node_name in lab.doors:
        info = lab.doors[node_name].describe()
        console.print(f"  ssh {_door_address(info, 'ssh')}  https {_door_address(info, 'https')}", highlight=False)
    try:
        await stop.wait()
    finally:
        await lab.stop()


import cluster.cli_certops  # noqa: E402 - registers its verbs (before main() runs under python -m)
import cluster.cli_time  # noqa: E402, F401 - clock, monitor and syslog verbs

if __name__ == "__main__":
    main()
