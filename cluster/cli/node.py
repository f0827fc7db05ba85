"""``certsim node run|check-remote``: one node agent as its own process, and the R-TS-1 check."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    door_address,
    emit_json,
    err,
    handles_errors,
    lab_dir_option,
    node_option,
    run_async,
    running_lab_options,
    smtp_option,
)

if TYPE_CHECKING:
    from cluster.labfile import LabSpec


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
    from cluster import running as rl  # noqa: PLC0415
    from cluster.labdir import STATE_FILE, default_lab_dir  # noqa: PLC0415
    from cluster.labfile import load_lab  # noqa: PLC0415

    spec = load_lab(lab_file)
    spec.node(node_name)
    directory = lab_dir or default_lab_dir(spec.name)
    if not (directory / STATE_FILE).exists():
        # the instance id in lab.json names the lab's topics: a node that makes its own never meets the others
        err.print(
            f"note: {directory} has no {STATE_FILE}, so {node_name} starts a new instance of lab {spec.name}. "
            f"To join nodes of this lab running elsewhere (another machine, another --lab-dir), stop it and copy "
            f"{STATE_FILE} from their lab directory into {directory} first.",
            highlight=False,
            soft_wrap=True,
        )
    run_async(_serve_node(spec, directory, node_name, broker, smtp or rl.running_smtp(directory)))


async def _serve_node(spec: LabSpec, directory: Path, node_name: str, broker: str, smtp: str | None) -> None:
    # doors live with the agent; mail goes to the running lab's sink, so the node needs none of its own
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from cluster.keys import use_home_pool  # noqa: PLC0415
    from cluster.lab import Lab, settle_heap_soon  # noqa: PLC0415
    from cluster.labdir import STATE_FILE  # noqa: PLC0415

    use_home_pool()
    lab = Lab(spec, directory, broker_url=broker, front_doors=spec.front_doors.enabled, smtp_url=smtp)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await lab.start(nodes=[node_name])
    settle_heap_soon()
    console.print(
        f"node {node_name} of lab {spec.name} (instance {lab.state.instance} from {lab.lab_dir / STATE_FILE}) "
        f"running on {lab.broker_url}; Ctrl+C to stop",
        highlight=False,
    )
    if node_name in lab.doors:
        info = lab.doors[node_name].describe()
        console.print(f"  ssh {door_address(info, 'ssh')}  https {door_address(info, 'https')}", highlight=False)
    try:
        await stop.wait()
    finally:
        await lab.stop()


@node.command("check-remote")
@node_option
@click.option("--peer", required=True, metavar="NODE", help="The remote node to connect to.")
@running_lab_options(json=True)
def node_check_remote(node: str, peer: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Connect from NODE to PEER's Tomcat and validate its certificate against NODE's tomcat-trust."""
    result = certops_request(lab_name, lab_dir, node, "check_remote", {"peer": peer})
    if as_json:
        emit_json(result)
    else:
        console.print(result["message"], highlight=False)
        if result.get("reason"):
            err.print(result["reason"], highlight=False)
    if not result["connected"]:
        sys.exit(1)
