"""``certsim ocsp set|show|check``: OCSP revocation checking on a node (R-OCSP-1..4)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    certops_request,
    console,
    emit_json,
    node_option,
    running_lab_options,
)
from node.errors import BadInput, Unavailable

if TYPE_CHECKING:
    from rich.table import Table


@main.group()
def ocsp() -> None:
    """OCSP revocation checking on a node: settings, statuses, check now (R-OCSP-1..4)."""


def _ocsp_settings_line(settings: dict[str, Any]) -> str:
    if not settings["enabled"]:
        return "OCSP off"
    where = settings["url"] if settings["url"] else "the URI in each certificate (AIA)"
    hours = settings["interval_s"] / 3600
    cc = "on" if settings["cc_mode"] else "off"
    return f"OCSP on: responder {where}, check every {hours:g} h, Common Criteria mode {cc}"


def _ocsp_table(title: str, rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title=title, title_justify="left")
    for col in ("certificate", "held in", "status", "connection", "signed by", "checked", "reason"):
        table.add_column(col, overflow="fold")
    style = {"good": "green", "revoked": "bold red", "unknown": "yellow"}
    for r in rows:
        status = str(r["status"] or "not checked")
        table.add_row(
            str(r["name"]),
            "\n".join(r["places"]),
            Text(status, style=style.get(status, "dim")),
            "allowed" if r["allowed"] else Text("fails", style="red"),
            str(r.get("signer") or ""),
            str(r.get("checked") or ""),
            str(r["reason"]),
        )
    return table


@ocsp.command("set")
@node_option
@click.option("--enable/--disable", "enabled", default=None, help="Turn OCSP checking on or off.")
@click.option(
    "--responder",
    default=None,
    metavar="lab|certificate|URI",
    help="'lab': the running lab's responder; 'certificate': the URI in each certificate's AIA; or a URI.",
)
@click.option("--interval", default=None, metavar="DURATION", help="Check interval, e.g. 12h or 1d (default 1d).")
@click.option("--cc-mode/--no-cc-mode", "cc_mode", default=None, help="Common Criteria mode (unknown fails too).")
@running_lab_options(json=True)
def ocsp_set(
    node: str,
    enabled: bool | None,
    responder: str | None,
    interval: str | None,
    cc_mode: bool | None,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Set NODE's OCSP settings; enabling (or a new responder) checks every certificate at once."""
    from cluster import running as rl  # noqa: PLC0415

    args: dict[str, Any] = {}
    if enabled is not None:
        args["enabled"] = enabled
    if responder == "lab":
        from cluster.ocsp import lab_responder_url  # noqa: PLC0415 - keeps aiohttp off the CLI's start

        url = lab_responder_url(rl.find_running(lab_name, lab_dir).lab_dir)
        if url is None:
            raise Unavailable("the running lab serves no OCSP responder (start it again with 'certsim lab up')")
        args["url"] = url
    elif responder is not None:
        args["url"] = None if responder == "certificate" else responder
    if interval is not None:
        args["interval"] = interval
    if cc_mode is not None:
        args["cc_mode"] = cc_mode
    if not args:
        raise BadInput("nothing to set: give --enable/--disable, --responder, --interval or --cc-mode")
    result = certops_request(lab_name, lab_dir, node, "ocsp_set", args)
    if as_json:
        emit_json(result)
        return
    console.print(f"{node}: {_ocsp_settings_line(result['settings'])}", highlight=False)
    if "checked" in result:
        console.print(_ocsp_table(f"OCSP status on {node}", result["checked"]))


@ocsp.command("show")
@node_option
@running_lab_options(json=True)
def ocsp_show(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """NODE's OCSP settings, its last and next check, and the status of every certificate it checked."""
    result = certops_request(lab_name, lab_dir, node, "ocsp_get", {})
    if as_json:
        emit_json(result)
        return
    console.print(f"{node}: {_ocsp_settings_line(result['settings'])}", highlight=False)
    console.print(
        f"last check {result['last_check'] or 'none'}, next {result['next_check'] or 'none'}", highlight=False
    )
    console.print(_ocsp_table(f"OCSP status on {node}", result["statuses"]))


@ocsp.command("check")
@node_option
@running_lab_options(json=True)
def ocsp_check_now(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Check every certificate of NODE at its OCSP responder now."""
    result = certops_request(lab_name, lab_dir, node, "ocsp_check", {})
    if as_json:
        emit_json(result)
        return
    console.print(_ocsp_table(f"OCSP status on {node}", [*result["checked"], *result["not_checked"]]))
