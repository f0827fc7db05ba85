"""``certsim phone|itl|ctl|backup|link``: phones and their trust files, DRS backups, real TLS links.

Every verb is an ``@lab`` request to a lab started with ``certsim lab up`` (cluster.labops_phones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cluster.cli.app import main
from cluster.cli.common import LAB_TARGET, console, emit_json, fail, on_node, running_lab_options

PHONES_TIMEOUT_S = 600.0  # a reset of thousands of phones signs thousands of configuration files


def _lab(lab_name: str | None, lab_dir: Path | None, op: str, args: dict[str, Any]) -> Any:
    return on_node(lab_name, lab_dir, LAB_TARGET, op, args, timeout=PHONES_TIMEOUT_S)


def _print_summary(result: dict[str, Any]) -> None:
    states = ", ".join(f"{n} {s}" for s, n in sorted(result.get("states", {}).items())) or "no phones"
    console.print(f"{result.get('phones', 0)} phones: {states}", highlight=False, markup=False)
    for reason, n in result.get("reasons", {}).items():
        console.print(f"  {n} x {reason}", highlight=False, markup=False)
    for event in result.get("events", []):
        console.print(f"  {event}", highlight=False, markup=False)


def _done(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)


# --- phone ----------------------------------------------------------------------------------


@main.group()
def phone() -> None:
    """The lab's simulated phones: states, trust lists, resets (R-PHONE-1..6)."""


@phone.command("list")
@click.option("--node", default=None, help="Only phones registered to this node.")
@click.option("--state", default=None, help="Only phones in this state (registered, registered-old-config, ...).")
@running_lab_options(json=True)
def phone_list(node: str | None, state: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """List phones with their state and the reason."""
    result = _lab(lab_name, lab_dir, "phone_list", {"node": node, "state": state})
    if as_json:
        emit_json(result)
        return
    for row in result["phones"]:
        console.print(
            f"{row['name']}  {row['model']:<6} {row['node']:<12} {row['state']:<22} {row['reason']}",
            highlight=False,
            markup=False,
        )
    _print_summary(result["summary"])


@phone.command("show")
@click.argument("name")
@running_lab_options()
def phone_show(name: str, lab_name: str | None, lab_dir: Path | None) -> None:
    """One phone: its state, ITL and CTL records, LSC and recent events (JSON)."""
    emit_json(_lab(lab_name, lab_dir, "phone_show", {"phone": name}))


@phone.command("reset")
@click.argument("names", nargs=-1)
@click.option("--node", default=None, help="Reset the phones registered to this node.")
@running_lab_options(json=True)
def phone_reset(
    names: tuple[str, ...], node: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Reset phones (all unless NAMES or --node): each fetches its ITL, CTL and configuration and boots."""
    _done(_lab(lab_name, lab_dir, "phone_reset", {"phones": list(names) or "all", "node": node}), as_json)


@phone.command("erase-itl")
@click.argument("names", nargs=-1)
@running_lab_options(json=True)
def phone_erase(names: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Settings > Security > Reset Security Settings on phones (all unless NAMES), then they boot (R-PHONE-3)."""
    _done(_lab(lab_name, lab_dir, "phone_erase_itl", {"phones": list(names) or "all"}), as_json)


@phone.command("capf")
@click.argument("names", nargs=-1)
@click.option("--auth-string", default=None, help="What the user types on the phone (default: the configured one).")
@running_lab_options(json=True)
def phone_capf(
    names: tuple[str, ...], auth_string: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Install LSCs through CAPF by authentication string (R-PHONE-6)."""
    result = _lab(lab_name, lab_dir, "capf", {"phones": list(names) or "all", "auth_string": auth_string})
    _done(result, as_json)
    for line in result.get("refused", []):
        console.print(f"  refused: {line}", highlight=False, markup=False)


# --- utils itl / utils ctl ------------------------------------------------------------------


@main.group()
def itl() -> None:
    """ITL files on the phones (utils itl ...)."""


@itl.command("reset")
@click.argument("source", type=click.Choice(["localkey", "remotekey"]))
@click.option("--backup", "backup_name", default=None, help="remotekey: the backup holding the ITLRecovery key.")
@running_lab_options(json=True)
def itl_reset(source: str, backup_name: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """utils itl reset localkey|remotekey: a bulk ITL reset signed with the ITLRecovery key, then every phone resets."""
    _done(_lab(lab_name, lab_dir, "itl_reset", {"source": source, "backup": backup_name}), as_json)


@main.group()
def ctl() -> None:
    """The CTL file (utils ctl ...), mixed mode (R-PHONE-5)."""


@ctl.command("set-cluster")
@click.argument("mode", type=click.Choice(["mixed-mode", "non-secure-mode"]))
@running_lab_options()
def ctl_set_cluster(mode: str, lab_name: str | None, lab_dir: Path | None) -> None:
    """utils ctl set-cluster mixed-mode|non-secure-mode."""
    emit_json(_lab(lab_name, lab_dir, "ctl", {"action": mode}))


@ctl.command("update")
@running_lab_options()
def ctl_update(lab_name: str | None, lab_dir: Path | None) -> None:
    """utils ctl update CTLFile: re-sign the CTL with the current certificates (after a regeneration)."""
    emit_json(_lab(lab_name, lab_dir, "ctl", {"action": "update"}))


# --- backups ---------------------------------------------------------------------------------


@main.group()
def backup() -> None:
    """DRS backups of the lab's nodes, kept under <lab dir>/backups (R-DRS-1/2)."""


@backup.command("create")
@click.argument("name", required=False)
@running_lab_options(json=True)
def backup_create(name: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Back up every running node (utils disaster_recovery backup network)."""
    result = _lab(lab_name, lab_dir, "backup_create", {"name": name})
    if as_json:
        emit_json(result)
        return
    console.print(
        f"backup {result['name']} taken at {result['taken_at']}: {', '.join(result['nodes'])}", highlight=False
    )


@backup.command("list")
@running_lab_options(json=True)
def backup_list(lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """List the lab's backups, oldest first."""
    result = _lab(lab_name, lab_dir, "backup_list", {})
    if as_json:
        emit_json(result)
        return
    for b in result["backups"]:
        console.print(f"{b['name']}  {b['taken_at']}  {', '.join(b['nodes'])}", highlight=False, markup=False)


@backup.command("restore")
@click.argument("name")
@click.option("--node", "nodes", multiple=True, help="Restore only this node (repeatable; default: every node).")
@running_lab_options(json=True)
def backup_restore(
    name: str, nodes: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Restore a backup (utils disaster_recovery restore network); needs the same security password."""
    result = _lab(lab_name, lab_dir, "backup_restore", {"name": name, "nodes": list(nodes)})
    if as_json:
        emit_json(result)
        return
    for node, r in result["restored"].items():
        console.print(
            f"{node}: restored to {r['taken_at']} ({r['trust_restored']} trust entries back)", highlight=False
        )
    console.print("Restart the nodes' services; phones holding a newer ITL may need utils itl reset (R-DRS-2)")


# --- links -----------------------------------------------------------------------------------


@main.group()
def link() -> None:
    """Real TLS connections between the lab's parties (R-LINK-1..5)."""


@link.command("check")
@click.argument("kind", type=click.Choice(["tomcat", "sip", "ldap", "imp"]))
@click.option("--from", "src", required=True, help="The node that connects.")
@click.option(
    "--to",
    "dst",
    required=True,
    help="A node, <cluster>/<node> of another cluster (sip), or the lab CA name of the LDAP server / SIP gateway.",
)
@click.option("--trusts", multiple=True, help="SIP gateway: what it trusts (lab CA names or CallManager@<node>).")
@running_lab_options(json=True)
def link_check(
    kind: str, src: str, dst: str, trusts: tuple[str, ...], lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Open a TLS connection on loopback; exit 1 naming the missing certificate when it fails."""
    result = _lab(lab_name, lab_dir, "link_check", {"kind": kind, "from": src, "to": dst, "trusts": list(trusts)})
    if as_json:
        emit_json(result)
    else:
        mark = "ok" if result["ok"] else "FAILED"
        console.print(
            f"{mark}: {result['client']} -> {result['server']}: {result['detail']}", highlight=False, markup=False
        )
        if result.get("missing"):
            console.print(f"  {result['missing']}", highlight=False, markup=False)
    if not result["ok"]:
        fail("the TLS link failed", 1)
