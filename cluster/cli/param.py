"""``certsim param set|get``: enterprise parameters (cluster-wide)."""

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
def param() -> None:
    """Enterprise parameters the certificate operations read (cluster-wide)."""


@param.command("set")
@node_option
@click.argument("name")
@click.argument("value")
@running_lab_options(json=True)
def param_set(node: str, name: str, value: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Set enterprise parameter NAME to VALUE (e.g. "HTTPS Ciphers" "All Ciphers")."""
    result = certops_request(lab_name, lab_dir, node, "param_set", {"name": name, "value": value})
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['name']} = {result['value']}", highlight=False)
    for r in result.get("restart", []):
        console.print(f"restart {r}", highlight=False)


@param.command("get")
@node_option
@running_lab_options()
def param_get(node: str, lab_name: str | None, lab_dir: Path | None) -> None:
    """Show the enterprise parameters."""
    emit_json(certops_request(lab_name, lab_dir, node, "param_get", {}))
