"""``certsim keys status|fill``: the per-home pool of RSA keys made ahead (``$CERTSIM_HOME/keypool``)."""

from __future__ import annotations

import click

from cluster.cli.app import main
from cluster.cli.common import console, emit_json, handles_errors, json_option


@main.group()
def keys() -> None:
    """RSA keys generated ahead, so a new lab's nodes install as fast as a restart (each key used once)."""


@keys.command("status")
@json_option
@handles_errors
def keys_status(as_json: bool) -> None:
    """How many keys wait in the pool, per size."""
    from cluster.keys import home_pool  # noqa: PLC0415
    from node.keypool import POOLED_SIZES  # noqa: PLC0415

    pool = home_pool()
    counts = {size: pool.count(size) for size in POOLED_SIZES}
    if as_json:
        emit_json({"pool": str(pool.root), "keys": counts})
        return
    console.print(f"{pool.root}: " + ", ".join(f"RSA-{size} {n}" for size, n in counts.items()), highlight=False)


@keys.command("fill")
@click.option("--count", type=click.IntRange(1, 100_000), default=256, show_default=True, help="Keys to hold.")
@click.option("--size", type=click.Choice(["2048", "3072", "4096"]), default="2048", show_default=True)
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Processes (default: one per core).")
@handles_errors
def keys_fill(count: int, size: str, workers: int | None) -> None:
    """Generate keys on every core until the pool holds COUNT of SIZE bits (e.g. before a classroom)."""
    from rich.progress import Progress  # noqa: PLC0415

    from cluster.keys import home_pool  # noqa: PLC0415

    pool = home_pool()
    bits = int(size)
    have = pool.count(bits)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"RSA-{bits} keys", total=max(count - have, 0))
        added = pool.fill(count, bits, workers=workers, progress=lambda n: progress.update(task, completed=n))
    console.print(f"{pool.root}: {pool.count(bits)} RSA-{bits} keys waiting ({added} new)", highlight=False)
