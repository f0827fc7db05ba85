"""``certsim class up|status|down``: a classroom, N copies of a template cluster in one lab (student01 ..)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    broker_option,
    console,
    emit_json,
    err,
    handles_errors,
    json_option,
    lab_dir_option,
    run_async,
    smtp_option,
)

workers_option = click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Processes the clusters are spread over (all on the one broker); use the cores of the machine.",
)
class_option = click.option(
    "--lab", "lab_name", default="class", show_default=True, metavar="NAME", help="Which class (its lab name)."
)


def start_class(
    raw: Mapping[str, Any], lab_dir: Path | None, broker: str | None, workers: int, timeout: float, smtp: str | None
) -> None:
    """Start a multi-cluster lab in the background and print one line per cluster (``lab up`` and ``class up``)."""
    import asyncio  # noqa: PLC0415

    from cluster.classroom import prepare_class_dir, spawn_class, wait_class_up  # noqa: PLC0415
    from cluster.labdir import default_lab_dir  # noqa: PLC0415
    from cluster.labfile import parse_clusters  # noqa: PLC0415
    from cluster.limits import ensure_fd_limit, fds_needed  # noqa: PLC0415

    wanted = parse_clusters(raw, "lab file")
    per_worker = -(-sum(len(c.nodes) for c in wanted.clusters) // workers)
    doors = any(c.front_doors.enabled for c in wanted.clusters)
    ensure_fd_limit(fds_needed(per_worker, embedded_broker=broker is None, front_doors=doors))
    directory = lab_dir or default_lab_dir(wanted.name)
    multi = prepare_class_dir(raw, directory)
    # the lab process first: it starts while this one loads what it needs to wait and print
    proc = spawn_class(directory, broker, workers, smtp)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    async def up() -> dict[str, Any]:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
        ) as p:
            p.add_task(f"starting {len(multi.clusters)} clusters of {multi.name}")
            state = await wait_class_up(directory, proc, timeout)
        await asyncio.sleep(0)
        return state

    state = run_async(up())
    console.print(
        f"lab {multi.name}: {len(multi.clusters)} clusters, {sum(len(c.nodes) for c in multi.clusters)} nodes, "
        f"{len(state['workers'])} process(es), broker {state['broker']}",
        highlight=False,
    )
    console.print(f"clusters: {', '.join(multi.names)}  (e.g. certsim cert list --lab {multi.names[0]} --node NODE)")
    console.print(f"lab directory {directory} · stop with: certsim class down --lab {multi.name}", highlight=False)


@main.group("class")
def class_() -> None:
    """A classroom: many clusters in one lab, each a student's own (own password, bus traffic and stores)."""


@class_.command("up")
@click.option("--clusters", "count", type=click.IntRange(1, 250), required=True, help="How many student clusters.")
@click.option(
    "--template",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="A one-cluster lab file every student gets a copy of (e.g. scenarios/labs/demo.yaml).",
)
@click.option("--name", default="class", show_default=True, help="The class's lab name.")
@click.option("--prefix", default="student", show_default=True, help="Cluster names: PREFIX01, PREFIX02 ...")
@broker_option
@lab_dir_option
@workers_option
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for every cluster.")
@smtp_option
@handles_errors
def class_up(
    count: int,
    template: Path,
    name: str,
    prefix: str,
    broker: str | None,
    lab_dir: Path | None,
    workers: int,
    timeout: float,
    smtp: str | None,
) -> None:
    """Start COUNT copies of the template's cluster (student01 ..), each with its own security password."""
    from cluster.classroom import classroom  # noqa: PLC0415

    start_class(classroom(template, count, name, prefix), lab_dir, broker, workers, timeout, smtp)


def _cluster_line(name: str, st: dict[str, dict[str, Any] | None], alarms: int) -> dict[str, Any]:
    """Nodes up, converged (every answering node holds the same replicated stores, nothing queued), alarms."""
    up = {n: s for n, s in st.items() if s is not None and s.get("connected")}
    digests = {tuple(sorted(s["digests"].items())) for s in up.values()}
    converged = len(up) == len(st) and len(digests) <= 1 and not any(s["outbox"] for s in up.values())
    return {"cluster": name, "nodes": len(st), "up": len(up), "converged": converged, "alarms": alarms}


@class_.command("status")
@class_option
@lab_dir_option
@json_option
@handles_errors
def class_status(lab_name: str, lab_dir: Path | None, as_json: bool) -> None:
    """One line per cluster: nodes up, converged, alarms (the expiry monitor's syslog alarms)."""
    import asyncio  # noqa: PLC0415

    from cluster import running as rl  # noqa: PLC0415
    from cluster.classroom import cluster_dir, load_class  # noqa: PLC0415
    from cluster.labdir import default_lab_dir  # noqa: PLC0415
    from node.errors import Unavailable  # noqa: PLC0415

    directory = lab_dir or default_lab_dir(lab_name)
    if not (directory / "class.yaml").exists():
        raise Unavailable(f"no class in {directory}; start one with 'certsim class up'")
    multi = load_class(directory)

    async def one(name: str) -> dict[str, Any]:
        running = rl.read_running(cluster_dir(directory, name))
        if running is None or not running.alive:
            return {"cluster": name, "nodes": len(multi.cluster(name).nodes), "up": 0, "converged": False, "alarms": 0}
        async with rl.connect(running) as client:
            st = await rl.statuses(client)

            async def alarms(node: str) -> int:
                try:
                    return len(await client.request(node, "syslog", {"grep": "", "limit": 10_000}))
                except Unavailable:
                    return 0

            counts = await asyncio.gather(*(alarms(n) for n, s in st.items() if s is not None))
        return _cluster_line(name, st, sum(counts))

    async def everything() -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(16)  # a bounded number of bus clients at once

        async def bounded(name: str) -> dict[str, Any]:
            async with limit:
                return await one(name)

        return list(await asyncio.gather(*(bounded(n) for n in multi.names)))

    rows = run_async(everything())
    if as_json:
        emit_json({"lab": multi.name, "clusters": rows})
        return
    for r in rows:
        mark = "converged" if r["converged"] else "[yellow]not converged[/yellow]"
        console.print(f"{r['cluster']:<14} nodes {r['up']}/{r['nodes']} up  {mark}  alarms {r['alarms']}")


@class_.command("down")
@class_option
@lab_dir_option
@handles_errors
def class_down(lab_name: str, lab_dir: Path | None) -> None:
    """Stop every cluster of the class (and its worker processes); the lab directory is kept."""
    import asyncio  # noqa: PLC0415
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from cluster.classroom import CLASS_STATE, read_class  # noqa: PLC0415
    from cluster.labdir import default_lab_dir  # noqa: PLC0415
    from node.errors import Unavailable  # noqa: PLC0415

    directory = lab_dir or default_lab_dir(lab_name)
    state = read_class(directory)
    if state is None:
        raise Unavailable(f"no class is running in {directory}")
    pid = int(state["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise Unavailable(f"the class process {pid} is gone; nothing to stop") from None

    async def wait() -> None:
        for _ in range(600):
            if not (directory / CLASS_STATE).exists():
                return
            await asyncio.sleep(0.1)
        raise Unavailable(f"class process {pid} did not stop within 60 s")

    run_async(wait())
    console.print(f"class {state['lab']} stopped ({len(state['clusters'])} clusters); state kept in {directory}")
