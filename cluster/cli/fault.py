"""``certsim fault ...``: break a running lab on purpose (every fault is a request to the lab's controller)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    LAB_TARGET,
    console,
    emit_json,
    on_node,
    running_lab_options,
)


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
@running_lab_options(json=True)
def fault_crash(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Kill NODE abruptly: no clean shutdown, open transactions lost; 'fault restart' brings it back."""
    _say(_on_lab(lab_name, lab_dir, "crash", {"node": node}), as_json)


@fault.command("stop")
@click.argument("node")
@running_lab_options(json=True)
def fault_stop(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Stop NODE cleanly (as shutting the server down)."""
    _say(_on_lab(lab_name, lab_dir, "stop", {"node": node}), as_json)


@fault.command("restart")
@click.argument("node")
@running_lab_options(json=True)
def fault_restart(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Start NODE again from its database after a crash or stop."""
    _say(_on_lab(lab_name, lab_dir, "start", {"node": node}), as_json)


@fault.command("partition")
@click.argument("nodes", nargs=-1, required=True)
@running_lab_options(json=True)
def fault_partition(nodes: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Cut the replication link of NODES (they stay administrable, like a broken sync link)."""
    _say(_on_lab(lab_name, lab_dir, "partition", {"nodes": list(nodes)}), as_json)


@fault.command("heal")
@click.argument("nodes", nargs=-1)
@running_lab_options(json=True)
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
@running_lab_options(json=True)
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
@running_lab_options(json=True)
def fault_broker(down_s: float, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Stop the lab's embedded broker and start it again; sessions and queued messages are lost."""
    _say(_on_lab(lab_name, lab_dir, "broker_restart", {"down_s": down_s}), as_json)
