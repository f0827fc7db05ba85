"""``certsim service list|restart``: services of a node and what they loaded (R-SVC-1)."""

from __future__ import annotations

from pathlib import Path

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    emit_json,
    node_option,
    running_lab_options,
)


@main.group()
def service() -> None:
    """Services of a node: state, restart pending, restart (R-SVC-1)."""


@service.command("list")
@node_option
@running_lab_options(json=True)
def service_list(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Services on NODE with their state and whether they need a restart to use current certificates."""
    from rich.table import Table  # noqa: PLC0415

    rows = certops_request(lab_name, lab_dir, node, "service_list", {})
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"services on {node}", title_justify="left")
    for col in ("service", "state", "restart pending", "started"):
        table.add_column(col)
    for r in rows:
        pending = f"yes ({', '.join(r['pending'])})" if r["restart_pending"] else ""
        table.add_row(r["name"], r["state"], pending, r["started"])
    console.print(table)


@service.command("restart")
@node_option
@click.argument("name")
@running_lab_options(json=True)
def service_restart(node: str, name: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Restart service NAME on NODE (takes simulated time; it then loads the current certificates)."""
    result = certops_request(lab_name, lab_dir, node, "service_restart", {"name": name})
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['name']} restarted on {node}", highlight=False)
    if result["resync"]:
        console.print("resync with the cluster started (R-REPL-6)", highlight=False)
