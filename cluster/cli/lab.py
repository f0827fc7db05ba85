"""``certsim lab up|serve|status|hosts|down``: a lab that keeps running in the background."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    broker_option,
    console,
    door_address,
    emit_json,
    err,
    handles_errors,
    lab_dir_option,
    lab_option,
    run_async,
    running_lab_options,
    smtp_option,
)

if TYPE_CHECKING:
    from rich.table import Table

    from cluster.labfile import LabSpec


@main.group()
def lab() -> None:
    """Start, inspect and stop a lab that keeps running in the background."""


def _doors_table(spec: LabSpec, doors: dict[str, dict[str, Any]]) -> Table:
    """Where each node's front doors listen (cluster.doors.frontdoors); '-' for a node without them."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"front doors of {spec.name} (OS administrator: {spec.os_admin.user})", title_justify="left")
    for column in ("node", "fqdn", "SSH", "HTTPS (pages /cmplatform, certmgr REST)", "note"):
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
        table.add_row(node.name, node.fqdn, door_address(info, "ssh"), door_address(info, "https"), "; ".join(notes))
    return table


@lab.command("up")
@click.argument("lab_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@broker_option
@lab_dir_option
@click.option("--skip", multiple=True, metavar="NODE", help="Leave NODE to be run elsewhere ('certsim node run').")
@click.option("--foreground", is_flag=True, help="Run in this terminal until Ctrl+C instead of in the background.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the nodes.")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="A lab file of several clusters: spread them over this many processes on the one broker.",
)
@smtp_option
@handles_errors
def lab_up(
    lab_file: Path,
    broker: str | None,
    lab_dir: Path | None,
    skip: tuple[str, ...],
    foreground: bool,
    timeout: float,
    workers: int,
    smtp: str | None,
) -> None:
    """Start the lab described by LAB_FILE: broker (embedded unless --broker) and every node."""
    import yaml  # noqa: PLC0415

    raw = yaml.safe_load(lab_file.read_text(encoding="utf-8"))
    if isinstance(raw, dict) and "clusters" in raw:  # several clusters in one lab (cluster.classroom)
        from cluster.cli.classroom import start_class  # noqa: PLC0415

        start_class(raw, lab_dir, broker, workers, timeout, smtp)
        return
    from cluster import running as rl  # noqa: PLC0415
    from cluster.labfile import load_lab  # noqa: PLC0415
    from cluster.limits import ensure_fd_limit, fds_needed  # noqa: PLC0415

    wanted = load_lab(lab_file)  # checked before the lab directory is touched
    nodes = len([n for n in wanted.node_names if n not in skip])
    ensure_fd_limit(fds_needed(nodes, embedded_broker=broker is None, front_doors=wanted.front_doors.enabled))
    spec, directory = rl.prepare_lab_dir(lab_file, lab_dir)
    if foreground:
        console.print(f"lab {spec.name} in {directory}; Ctrl+C to stop")

        def node_up(name: str) -> None:
            info = rl.front_doors(directory).get(name)
            doors = f"  ssh {door_address(info, 'ssh')}  https {door_address(info, 'https')}" if info else ""
            console.print(f"  {name} up{doors}", highlight=False)

        run_async(rl.serve(spec, directory, broker, skip, progress=node_up, smtp_url=smtp))
        return

    # the lab process first: it starts while this one loads what it needs to wait and print
    proc = rl.spawn_serve(lab_file.absolute(), directory, broker, skip, smtp)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from cluster.views import status_table  # noqa: PLC0415

    async def up() -> None:
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
@click.option("--workers", type=click.IntRange(1, 256), default=1)
@click.option("--worker", type=click.IntRange(1, 255), default=None)
@smtp_option
@handles_errors
def lab_serve(
    lab_file: Path,
    broker: str | None,
    lab_dir: Path | None,
    skip: tuple[str, ...],
    workers: int,
    worker: int | None,
    smtp: str | None,
) -> None:
    """Internal: the background process behind 'lab up' (and each worker of a multi-cluster lab)."""
    from cluster import running as rl  # noqa: PLC0415
    from cluster.labdir import default_lab_dir  # noqa: PLC0415
    from cluster.labfile import load_clusters  # noqa: PLC0415

    multi = load_clusters(lab_file)
    directory = lab_dir or default_lab_dir(multi.name)
    if multi.multi:
        from cluster.classroom import serve_class  # noqa: PLC0415

        run_async(serve_class(multi, directory, broker, workers=workers, worker=worker, smtp_url=smtp))
        return
    run_async(rl.serve(multi.clusters[0], directory, broker, skip, smtp_url=smtp))


@lab.command("status")
@running_lab_options(json=True)
def lab_status(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Nodes of the running lab: connected or not, certificates per store."""
    from cluster import running as rl  # noqa: PLC0415
    from cluster.views import status_table  # noqa: PLC0415

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
@running_lab_options()
def lab_hosts(lab_file: Path | None, lab_name: str | None, lab_dir: Path | None) -> None:
    """Lines for /etc/hosts naming every node's front-door address (LAB_FILE, else the running lab).

    \b
    certsim lab hosts | sudo tee -a /etc/hosts
    ssh admin@cucm-pub.lab.example          # then the platform CLI at admin:
    """
    from cluster import running as rl  # noqa: PLC0415
    from cluster.labdir import LAB_COPY, default_lab_dir  # noqa: PLC0415
    from cluster.labfile import hosts_lines, load_lab  # noqa: PLC0415

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
@running_lab_options()
def lab_down(lab_name: str | None, lab_dir: Path | None) -> None:
    """Stop the running lab cleanly (its lab directory is kept for the next 'lab up')."""
    from cluster import running as rl  # noqa: PLC0415

    running = rl.find_running(lab_name, lab_dir)
    run_async(rl.stop_running(running))
    console.print(f"lab {running.spec.name} stopped; state kept in {running.lab_dir}")


@lab.command("ui")
@lab_option
@lab_dir_option
@click.option("--port", default=0, show_default=True, help="Loopback port of the dashboard (0: any free port).")
@handles_errors
def lab_ui(lab_name: str | None, lab_dir: Path | None, port: int) -> None:
    """Serve a dashboard of the running lab on https://127.0.0.1:PORT/lab until Ctrl+C: nodes, trust
    matrix, live events, lab clock, fault buttons, links to each node's OS Administration pages. A lab of
    several clusters (a class) shows every cluster at a glance, each one's dashboard a click away.
    Log in with the lab's OS administrator."""
    import asyncio  # noqa: PLC0415
    import contextlib  # noqa: PLC0415

    from cluster import running as rl  # noqa: PLC0415
    from cluster.doors.dashboard import ClassDashboard, Dashboard, start_dashboard  # noqa: PLC0415
    from cluster.labdir import default_lab_dir  # noqa: PLC0415
    from node.errors import Unavailable  # noqa: PLC0415

    root = lab_dir or (default_lab_dir(lab_name) if lab_name else None)
    if root is not None and (root / "clusters").is_dir():  # a lab of several clusters (cluster.classroom)
        found = [r for d in sorted((root / "clusters").glob("*")) if (r := rl.read_running(d)) and r.alive]
        if not found:
            raise Unavailable(f"no cluster of {root.name} is running; start it with 'certsim lab up' or 'class up'")
    else:
        found = [rl.find_running(lab_name, lab_dir)]

    async def serve() -> None:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(rl.connect(r)) for r in found]
            if len(found) == 1:
                board: Dashboard | ClassDashboard = Dashboard(found[0].spec, found[0].lab_dir, clients[0])
            else:
                board = ClassDashboard([(r.spec, r.lab_dir, c) for r, c in zip(found, clients, strict=True)])
            ui = await start_dashboard(board, port=port)
            what = found[0].spec.name if len(found) == 1 else f"{len(found)} clusters"
            console.print(
                f"lab ui of {what}: {ui.url}  (log in as {found[0].spec.os_admin.user}; Ctrl+C to stop)",
                highlight=False,
            )
            try:
                await asyncio.Event().wait()
            finally:
                await ui.close()

    run_async(serve())
