"""``certsim monitor set|show``, ``syslog`` and ``mails``: the Certificate Expiry Monitor and what it sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import (
    LAB_TARGET,
    console,
    emit_json,
    node_option,
    on_node,
    running_lab_options,
)


@main.group()
def monitor() -> None:
    """The Certificate Expiry Monitor of a node (R-MON-1..3)."""


def _on_off(value: str | None) -> bool | None:
    return None if value is None else value == "on"


@monitor.command("set")
@node_option
@click.option("--start-days", type=click.IntRange(0, 3650), help="Notification start: days before expiry.")
@click.option("--frequency", metavar="DURATION", help="Notification frequency, e.g. 1d or 12h (at least 1h).")
@click.option("--email", type=click.Choice(["on", "off"]), help="E-mail notification on or off.")
@click.option("--emails", metavar="A;B", help="Addresses, separated by ';' as in the product.")
@click.option("--lsc", type=click.Choice(["on", "off"]), help="Monitor LSCs (locally significant certificates).")
@running_lab_options(json=True)
def monitor_set(
    node: str,
    start_days: int | None,
    frequency: str | None,
    email: str | None,
    emails: str | None,
    lsc: str | None,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Change the monitor settings of NODE; settings not given keep their values."""
    args: dict[str, Any] = {}
    if start_days is not None:
        args["notification_start_days"] = start_days
    if frequency is not None:
        args["frequency"] = frequency
    if emails is not None:
        args["emails"] = emails
    for key, value in (("email_enabled", _on_off(email)), ("lsc_monitoring", _on_off(lsc))):
        if value is not None:
            args[key] = value
    if not args:
        raise click.UsageError("give at least one setting (see --help)")
    _print_monitor(on_node(lab_name, lab_dir, node, "monitor_set", args), as_json)


@monitor.command("show")
@node_option
@running_lab_options(json=True)
def monitor_show(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Show NODE's monitor settings, its last and next run, and the mails it sent."""
    _print_monitor(on_node(lab_name, lab_dir, node, "monitor_get", {}), as_json)


def _print_monitor(result: dict[str, Any], as_json: bool) -> None:
    from rich.table import Table  # noqa: PLC0415

    if as_json:
        emit_json(result)
        return
    table = Table(title=f"Certificate Expiry Monitor on {result['node']}", show_header=False)
    s = result["settings"]
    for label, value in (
        ("notification start", f"{s['notification_start_days']} days"),
        ("frequency", s["frequency"]),
        ("e-mail notification", "on" if s["email_enabled"] else "off"),
        ("addresses", s["emails"] or "-"),
        ("LSC monitoring", "on" if s["lsc_monitoring"] else "off"),
        ("last run", result["last_run"] or "-"),
        ("next run", result["next_run"] or "-"),
        ("runs / mails / mail errors", f"{result['runs']} / {result['mails_sent']} / {result['mail_errors']}"),
        ("SMTP server", result["smtp"] or "none"),
    ):
        table.add_row(label, str(value))
    console.print(table)


@main.command()
@node_option
@click.option("--grep", default="", help="Only lines containing this text.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Newest lines to show.")
@running_lab_options(json=True)
def syslog(node: str, grep: str, limit: int, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """NODE's syslog view: the expiry monitor's alarms (R-MON-3) with their simulated time."""
    rows = on_node(lab_name, lab_dir, node, "syslog", {"grep": grep, "limit": limit})
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['sim_time']} {row['app']}: {row['text']}")
    if not rows:
        console.print(f"no syslog lines on {node}", style="dim")


@main.command()
@running_lab_options(json=True)
def mails(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Mails the running lab's SMTP sink received (expiry-monitor notifications, R-MON-3)."""
    from rich.table import Table  # noqa: PLC0415

    result = on_node(lab_name, lab_dir, LAB_TARGET, "mails", {})
    if as_json:
        emit_json(result)
        return
    if result["sink"] is None:
        console.print(f"this lab mails to {result['server'] or 'no SMTP server'}; it keeps no copies", highlight=False)
        return
    table = Table(title=f"mails received by {result['sink']}")
    for column in ("simulated time", "from", "to", "subject"):
        table.add_column(column)
    for mail in result["mails"]:
        table.add_row(mail["received_sim"] or "-", mail["sender"], ", ".join(mail["to"]), mail["subject"])
    console.print(table)
