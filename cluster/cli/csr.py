"""``certsim csr gen|download|list``: certificate signing requests on a node (R-OP-CSR-1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    emit_json,
    err,
    node_option,
    running_lab_options,
    unit_option,
    write_output,
)


@main.group()
def csr() -> None:
    """Generate, list and download certificate signing requests (R-OP-CSR-1)."""


@csr.command("gen")
@node_option
@unit_option
@click.option("--key-size", type=int, default=None, help="RSA 2048/3072/4096, or EC 256/384/521 for -ECDSA units.")
@click.option("--multi-server", is_flag=True, help="On the publisher: one CSR whose SAN lists every node.")
@click.option("--no-ou", is_flag=True, help="Leave the organisational unit out of the subject.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the CSR here.")
@running_lab_options(json=True)
def csr_gen(
    node: str,
    unit: str,
    key_size: int | None,
    multi_server: bool,
    no_ou: bool,
    output: Path | None,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Generate a CSR for UNIT on NODE (a new CSR replaces the previous one)."""
    args: dict[str, Any] = {"unit": unit, "multi_server": multi_server, "include_ou": not no_ou}
    if key_size is not None:
        args["key_size"] = key_size
    result = certops_request(lab_name, lab_dir, node, "csr_gen", args)
    if as_json:
        emit_json(result)
        return
    err.print(f"CSR for {unit}: {result['subject']}  SAN {', '.join(result['san'])}", highlight=False)
    write_output(str(result["csr"]).encode(), output)


@csr.command("download")
@node_option
@unit_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the CSR here.")
@running_lab_options()
def csr_download(node: str, unit: str, output: Path | None, lab_name: str | None, lab_dir: Path | None) -> None:
    """Download the pending CSR of UNIT on NODE (PEM, R-OP-DOWNLOAD)."""
    result = certops_request(lab_name, lab_dir, node, "csr_get", {"unit": unit})
    write_output(str(result["csr"]).encode(), output)


@csr.command("list")
@node_option
@running_lab_options(json=True)
def csr_list(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Pending CSRs on NODE."""
    from rich.table import Table  # noqa: PLC0415

    rows = certops_request(lab_name, lab_dir, node, "csr_list", {})
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"CSRs on {node}", title_justify="left")
    for col in ("unit", "subject", "SAN", "key"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["unit"], r["subject"], ", ".join(r["san"]), f"{r['key_type']}-{r['key_bits']}")
    console.print(table)
