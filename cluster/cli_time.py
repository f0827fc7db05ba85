"""``certsim clock``, ``certsim monitor`` and ``certsim syslog``: simulated time and what runs on it.

Registered onto ``cluster.cli`` the way :mod:`cluster.cli_certops` is (this module does not
import ``cluster.cli``).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.table import Table

from cluster.cli_common import (
    cli_modules,
    console,
    emit_json,
    handles_errors,
    json_option,
    lab_dir_option,
    lab_option,
    node_option,
    on_node,
)
from cluster.control import LAB_TARGET

ADVANCE_TIMEOUT_S = 3600.0  # a year of timers on a big lab takes a while; the lab answers when done


@click.group()
def clock() -> None:
    """The lab's simulated clock: show it, or jump it forward (timers fire on the way)."""


@clock.command("show")
@lab_option
@lab_dir_option
@json_option
@handles_errors
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
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


@click.group()
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
def monitor_show(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Show NODE's monitor settings, its last and next run, and the mails it sent."""
    _print_monitor(on_node(lab_name, lab_dir, node, "monitor_get", {}), as_json)


def _print_monitor(result: dict[str, Any], as_json: bool) -> None:
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


@click.command()
@node_option
@click.option("--grep", default="", help="Only lines containing this text.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True, help="Newest lines to show.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def syslog(node: str, grep: str, limit: int, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """NODE's syslog view: the expiry monitor's alarms (R-MON-3) with their simulated time."""
    rows = on_node(lab_name, lab_dir, node, "syslog", {"grep": grep, "limit": limit})
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['sim_time']} {row['app']}: {row['text']}")
    if not rows:
        console.print(f"[dim]no syslog lines on {node}[/dim]")


@click.command()
@lab_option
@lab_dir_option
@json_option
@handles_errors
def mails(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Mails the running lab's SMTP sink received (expiry-monitor notifications, R-MON-3)."""
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


def register(cli: ModuleType) -> None:
    """Add these verbs to a ``cluster.cli`` module's main group (once)."""
    main: click.Group = cli.main
    if "clock" in main.commands:
        return
    for command in (clock, monitor, syslog, mails):
        main.add_command(command)


for _module in cli_modules():
    register(_module)
