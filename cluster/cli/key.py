"""``certsim key regen authz``: the platform CLI's ``set key regen authz ...`` (R-OP-AUTHZ)."""

from __future__ import annotations

from pathlib import Path

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    emit_json,
    running_lab_options,
)


@main.group()
def key() -> None:
    """Key operations (the platform CLI's `set key regen ...`)."""


@key.group("regen")
def key_regen() -> None:
    """Regenerate keys."""


@key_regen.command("authz")
@click.argument("kind", type=click.Choice(["encryption", "signing"]))
@click.option("--node", default=None, metavar="NODE", help="The publisher (default: the lab's first node).")
@running_lab_options(json=True)
def key_regen_authz(kind: str, node: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Regenerate the OAuth encryption (symmetric) or signing (RSA) key on the publisher (R-OP-AUTHZ)."""
    from cluster import running as rl  # noqa: PLC0415

    target = node or rl.find_running(lab_name, lab_dir).spec.node_names[0]
    result = certops_request(lab_name, lab_dir, target, "authz_regen", {"kind": kind})
    if as_json:
        emit_json(result)
        return
    console.print(f"regenerated the authz {kind} key; replicated to {result['replicated_to']}", highlight=False)
    for note in result["notes"]:
        console.print(note, highlight=False)
