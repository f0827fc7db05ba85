"""``certsim cert list|upload|delete|download|regen|identities`` on a node of the running lab."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    emit_json,
    node_option,
    on_node,
    read_user_bytes,
    run_async,
    running_lab_options,
    store_option,
    unit_option,
    write_output,
)
from node.errors import BadInput


@main.group()
def cert() -> None:
    """List, upload, delete and download certificates on a node of the running lab."""


@cert.command("list")
@node_option
@click.option("--store", default=None, metavar="STORE", help="Only this trust store or identity unit.")
@click.option("--usage", type=click.Choice(["identity", "trust"]), help="Identity or trust certificates.")
@click.option("--cn", metavar="TEXT", help="Common name contains TEXT (case-insensitive).")
@click.option("--key-type", type=click.Choice(["RSA", "EC"], case_sensitive=False))
@click.option("--expires-before", metavar="DATE", help="Expiring before this ISO date.")
@click.option("--expires-after", metavar="DATE", help="Expiring after this ISO date.")
@running_lab_options(json=True)
def cert_list(
    node: str,
    store: str | None,
    usage: str | None,
    cn: str | None,
    key_type: str | None,
    expires_before: str | None,
    expires_after: str | None,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Certificates on NODE, with filters (R-OP-LIST)."""
    from cluster import running as rl  # noqa: PLC0415
    from cluster.views import cert_table  # noqa: PLC0415

    args = {
        "store": store,
        "usage": usage,
        "cn": cn,
        "key_type": key_type,
        "expires_before": expires_before,
        "expires_after": expires_after,
    }
    running = rl.find_running(lab_name, lab_dir)

    async def go() -> list[dict[str, Any]]:
        async with rl.connect(running) as client:
            found: list[dict[str, Any]] = await client.request(node, "list", {k: v for k, v in args.items() if v})
            described = await client.request(node, "cert_descriptions")  # Description(friendly name)
            for r in found:
                name = r["store"] if r["usage"] == "identity" else r["name"]
                if f"{r['store']}/{name}" in described:
                    r["description"] = described[f"{r['store']}/{name}"]
            if any(r["usage"] == "identity" for r in found):
                # R-OP-UPLOAD-4 / R-KU-1: which services still use an older certificate, and flags
                extra = {i["unit"]: i for i in await client.request(node, "identity_list")}
                for r in found:
                    if r["usage"] == "identity" and r["store"] in extra:
                        r["restart_pending"] = extra[r["store"]]["restart_pending"]
                        r["flags"] = extra[r["store"]]["flags"]
            return found

    rows = run_async(go())
    if as_json:
        emit_json(rows)
    else:
        console.print(cert_table(rows, node))


# `cert upload` (trust stores with --store, identities with --purpose) is defined in cluster.cli_certops.


@cert.command("delete")
@node_option
@store_option
@click.argument("name")
@running_lab_options(json=True)
def cert_delete(node: str, store: str, name: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Delete trust certificate NAME from a store on NODE (identity certificates cannot be deleted)."""
    result = on_node(lab_name, lab_dir, node, "delete", {"store": store, "name": name})
    if as_json:
        emit_json(result)
    else:
        where = "from every node" if result["replicated"] else "from this node only"
        console.print(f"deleted {store}/{result['deleted']}.pem {where}", highlight=False)


@cert.command("download")
@node_option
@store_option
@click.argument("name", required=False)
@click.option("--format", "fmt", type=click.Choice(["pem", "der"]), default="pem", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write to this file (default: stdout for PEM, NAME.der for DER).",
)
@running_lab_options()
def cert_download(
    node: str,
    store: str,
    name: str | None,
    fmt: str,
    output: Path | None,
    lab_name: str | None,
    lab_dir: Path | None,
) -> None:
    """Download a trust certificate NAME, or the identity certificate of a unit (--store tomcat)."""
    result = on_node(lab_name, lab_dir, node, "download", {"store": store, "name": name or "", "format": fmt})
    data = base64.b64decode(result["data"])
    if output is None and fmt == "der":
        output = Path(result["filename"])
    write_output(data, output)


@cert.command("regen")
@node_option
@unit_option
@click.option("--key-size", type=int, default=None, help="Same length (default), 3072 or 4096.")
@running_lab_options(json=True)
def cert_regen(
    node: str, unit: str, key_size: int | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Regenerate the self-signed certificate of UNIT on NODE (R-OP-REGEN-1..3)."""
    args: dict[str, Any] = {"unit": unit}
    if key_size is not None:
        args["key_size"] = key_size
    result = certops_request(lab_name, lab_dir, node, "regen", args)
    if as_json:
        emit_json(result)
        return
    _advice(result)


def _advice(result: dict[str, Any]) -> None:
    console.print(result["message"], highlight=False)
    console.print(result["hint"], highlight=False)
    if result["restart"]:
        console.print(f"restart on this node: {', '.join(result['restart'])}", highlight=False)
    for extra in result.get("restart_elsewhere", []):
        console.print(f"restart: {extra}", highlight=False)
    if result.get("ctl_update_needed"):
        console.print("update the CTL file if one is configured (utils ctl update CTLFile)", highlight=False)
    if result.get("phones"):
        console.print(f"phones: {result['phones']} (Phone Interaction on Certificate Update)", highlight=False)
    if result.get("backup_due"):
        console.print("run a new backup so it contains the new certificate", highlight=False)
    for note in [*result.get("notes", []), *result.get("trust_updated", [])]:
        console.print(note, highlight=False)


@cert.command("upload")
@node_option
@click.option("--store", default=None, metavar="STORE", help="Trust store to upload to (e.g. tomcat-trust).")
@click.option(
    "--purpose", default=None, metavar="UNIT", help="Identity unit for a CA-signed certificate (e.g. tomcat)."
)
@click.option(
    "--description", default="", metavar="TEXT", help="Description(friendly name) shown in the certificate list."
)
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True))
@running_lab_options(json=True)
def cert_upload_any(
    node: str,
    store: str | None,
    purpose: str | None,
    description: str,
    file: Path,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Upload FILE (PEM, DER or PKCS#7; '-' for stdin): to a trust store (--store) or, with
    --purpose UNIT, as NODE's CA-signed identity certificate for UNIT (R-OP-UPLOAD-1..3)."""
    from cluster.doors.descriptions import describe_args  # noqa: PLC0415
    from node import certops, certs  # noqa: PLC0415

    if (store is None) == (purpose is None):
        raise BadInput("give --store STORE for a trust certificate or --purpose UNIT for an identity certificate")
    description = certops.check_description(description)  # refused before anything changes, as every door
    data = read_user_bytes(file, "certificate")  # '-' reads standard input; bounded either way
    if len(data) > certs.MAX_UPLOAD_BYTES:  # refused here: a bus envelope that big would never reach the node
        raise BadInput(f"{file} is {len(data):,} bytes; the limit is {certs.MAX_UPLOAD_BYTES:,} bytes")
    if store is not None:
        _trust_upload(node, store, data, lab_name, lab_dir, as_json, description)
        return
    assert purpose is not None
    args = {"unit": purpose, "data": base64.b64encode(data).decode()}
    result = certops_request(lab_name, lab_dir, node, "identity_upload", args)
    if (describe := describe_args(purpose, result, description)) is not None:
        certops_request(lab_name, lab_dir, node, "cert_describe", describe)
    if as_json:
        emit_json(result)
        return
    console.print(f"installed {result['cn']} as {purpose} on {node} (issuer {result['issuer']})", highlight=False)
    if result["shared_with"]:
        console.print(f"multi-server: also installed on {', '.join(result['shared_with'])}", highlight=False)
    for flag in result["flags"]:
        console.print(f"flagged: {flag}", highlight=False)
    _advice(result)


def _trust_upload(
    node: str, store: str, data: bytes, lab_name: str | None, lab_dir: Path | None, as_json: bool, description: str
) -> None:
    """The trust upload of ``cert upload --store`` (same request and output as before --purpose existed)."""
    from cluster.doors.descriptions import describe_args  # noqa: PLC0415

    result = certops_request(
        lab_name, lab_dir, node, "upload", {"store": store, "data": base64.b64encode(data).decode()}
    )
    if (describe := describe_args(store, result, description)) is not None:
        certops_request(lab_name, lab_dir, node, "cert_describe", describe)
    if as_json:
        emit_json(result)
        return
    for key in ("added", "replaced", "unchanged"):
        for name in result[key]:
            console.print(f"{key} {store}/{name}.pem", highlight=False)
    for note in result["notes"]:
        console.print(note, highlight=False)
    console.print("replicates to every node" if result["replicated"] else "stays on this node", highlight=False)


@cert.command("identities")
@node_option
@running_lab_options(json=True)
def cert_identities(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Identity certificates of NODE: source, R-KU-1 flag, pending CSR, services still on the old one."""
    from rich.table import Table  # noqa: PLC0415

    rows = certops_request(lab_name, lab_dir, node, "identity_list", {})
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"identity certificates on {node}", title_justify="left")
    for col in ("unit", "cn", "key", "source", "flags", "CSR", "restart pending"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["unit"],
            str(r["cn"]),
            f"{r['key_type']}-{r['key_bits']}",
            r["source"],
            ", ".join(r["flags"]),
            "pending" if r["csr_pending"] else "",
            ", ".join(r["restart_pending"]),
        )
    console.print(table)
