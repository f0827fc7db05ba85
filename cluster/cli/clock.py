"""``certsim clock show|advance``: the lab's simulated clock (timers fire on the way)."""

from __future__ import annotations

from pathlib import Path

import click

from cluster.cli.app import main
from cluster.cli.common import (
    LAB_TARGET,
    console,
    emit_json,
    on_node,
    running_lab_options,
)

ADVANCE_TIMEOUT_S = 3600.0  # a year of timers on a big lab takes a while; the lab answers when done


@main.group()
def clock() -> None:
    """The lab's simulated clock: show it, or jump it forward (timers fire on the way)."""


@clock.command("show")
@running_lab_options(json=True)
def clock_show(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Print the lab's simulated time, rate and the jumps made so far."""
    result = on_node(lab_name, lab_dir, LAB_TARGET, "clock", {})
    if as_json:
        emit_json(result)
        return
    console.print(
        f"{result['sim_time']}  (rate {result['rate']:g}x, jumped {result['offset_s'] / 86400:g} days)", highlight=False
    )


@clock.command("advance")
@click.argument("duration")
@running_lab_options(json=True)
def clock_advance(duration: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Jump the lab clock by DURATION (30d, 12h, 90m, 2w or seconds).

    Every timer due inside the jump fires in order at its own simulated time: resyncs every
    30 minutes, expiry-monitor runs, OCSP checks. Nodes in other processes follow.
    """
    with console.status(f"advancing the lab clock by {duration} ..."):
        result = on_node(lab_name, lab_dir, LAB_TARGET, "advance", {"by": duration}, timeout=ADVANCE_TIMEOUT_S)
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['from']} -> {result['sim_time']} ({result['timer_steps']} timer steps)", highlight=False)
