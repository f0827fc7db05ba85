"""CLI verbs for certificate operations: CSR, a file-backed lab CA, identity upload, regenerate,
services, enterprise parameters, OAuth keys and the remote-node check.

``cluster.cli`` imports this module after its own verbs; ``register`` then adds these to its
groups. The module does not import ``cluster.cli`` itself: under ``python -m cluster.cli``
that module runs as ``__main__``, and a second copy would get the verbs instead.
Every verb goes through the one control path.
"""

from __future__ import annotations

import base64
import datetime as dt
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from cryptography import x509
from rich.table import Table

from cluster import running as rl
from cluster.cli_common import (
    cli_modules,
    console,
    emit_json,
    err,
    handles_errors,
    json_option,
    lab_dir_option,
    lab_option,
    node_option,
    on_node,
)
from cluster.labca import Issued, LabCA
from cluster.views import write_output
from node import certs
from node.catalog import KeyAlgo
from node.clock import Clock, SimClock
from node.errors import BadInput, NotFound, Unavailable


def _certops_request(lab_name: str | None, lab_dir: Path | None, node: str, op: str, args: dict[str, Any]) -> Any:
    """A certificate operation may generate RSA 4096 keys: allow it a minute."""
    return on_node(lab_name, lab_dir, node, op, args, timeout=60)


unit_option = click.option("--unit", required=True, metavar="UNIT", help="Identity unit, e.g. tomcat or CallManager.")


def _out(data: bytes, output: Path | None) -> None:
    write_output(data, output, err)


# ------------------------------------------------------------------------------------------
# csr


@click.group()
def csr() -> None:
    """Generate, list and download certificate signing requests (R-OP-CSR-1)."""


@csr.command("gen")
@node_option
@unit_option
@click.option("--key-size", type=int, default=None, help="RSA 2048/3072/4096, or EC 256/384/521 for -ECDSA units.")
@click.option("--multi-server", is_flag=True, help="On the publisher: one CSR whose SAN lists every node.")
@click.option("--no-ou", is_flag=True, help="Leave the organisational unit out of the subject.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the CSR here.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
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
    result = _certops_request(lab_name, lab_dir, node, "csr_gen", args)
    if as_json:
        emit_json(result)
        return
    err.print(f"CSR for {unit}: {result['subject']}  SAN {', '.join(result['san'])}", highlight=False)
    _out(str(result["csr"]).encode(), output)


@csr.command("download")
@node_option
@unit_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the CSR here.")
@lab_option
@lab_dir_option
@handles_errors
def csr_download(node: str, unit: str, output: Path | None, lab_name: str | None, lab_dir: Path | None) -> None:
    """Download the pending CSR of UNIT on NODE (PEM, R-OP-DOWNLOAD)."""
    result = _certops_request(lab_name, lab_dir, node, "csr_get", {"unit": unit})
    _out(str(result["csr"]).encode(), output)


@csr.command("list")
@node_option
@lab_option
@lab_dir_option
@json_option
@handles_errors
def csr_list(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Pending CSRs on NODE."""
    rows = _certops_request(lab_name, lab_dir, node, "csr_list", {})
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"CSRs on {node}", title_justify="left")
    for col in ("unit", "subject", "SAN", "key"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["unit"], r["subject"], ", ".join(r["san"]), f"{r['key_type']}-{r['key_bits']}")
    console.print(table)


# ------------------------------------------------------------------------------------------
# a lab CA whose material lives in files


ca_dir_option = click.option(
    "--ca-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the CA keeps its certificates and keys (default: <lab dir>/ca of the running lab).",
)


def _ca_context(ca_dir: Path | None, lab_name: str | None, lab_dir: Path | None) -> tuple[Path, Clock]:
    try:
        running = rl.find_running(lab_name, lab_dir)
    except (NotFound, Unavailable):
        if ca_dir is None:
            raise
        return ca_dir, SimClock(dt.datetime.now(dt.UTC))  # no lab: the CA dates by the wall clock
    return ca_dir or running.lab_dir / "ca", running.state.clock(running.lab_dir)


def _load_ca(directory: Path, clock: Clock) -> LabCA:
    ca = LabCA(clock)
    if not directory.is_dir():
        return ca
    for pem in sorted(directory.glob("*.pem")):
        chain = x509.load_pem_x509_certificates(pem.read_bytes())
        key_file = pem.with_suffix(".key")
        key = certs.load_key(key_file.read_bytes()) if key_file.exists() else None
        ca.items[pem.stem] = Issued(pem.stem, chain[0], key, tuple(chain[1:]))
    return ca


def _save(directory: Path, issued: Issued) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{issued.name}.pem"
    path.write_bytes(issued.pem(with_chain=True))
    if issued.key is not None:
        key_file = path.with_suffix(".key")
        key_file.write_bytes(certs.key_pem(issued.key))
        key_file.chmod(0o600)
    return path


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise BadInput(f"'{name}' is not a usable CA name (no slashes, not starting with a dot)")


@click.group()
def ca() -> None:
    """A lab CA for the third-party flow: create roots and intermediates, sign CSRs."""


@ca.command("create")
@click.argument("name")
@click.option("--issuer", default=None, metavar="CA", help="Make an intermediate signed by this CA.")
@click.option("--cn", default=None, help="Common name (default: NAME).")
@click.option("--key-type", type=click.Choice(["RSA", "EC"], case_sensitive=False), default="RSA")
@click.option("--days", type=int, default=3650, show_default=True)
@ca_dir_option
@lab_option
@lab_dir_option
@handles_errors
def ca_create(
    name: str,
    issuer: str | None,
    cn: str | None,
    key_type: str,
    days: int,
    ca_dir: Path | None,
    lab_name: str | None,
    lab_dir: Path | None,
) -> None:
    """Create a root CA NAME (or an intermediate with --issuer); prints its certificate."""
    _check_name(name)
    directory, clock = _ca_context(ca_dir, lab_name, lab_dir)
    lab_ca = _load_ca(directory, clock)
    algo = KeyAlgo.EC if key_type.upper() == "EC" else KeyAlgo.RSA
    issued = lab_ca.create_ca(
        name, issuer=issuer, cn=cn, key_algo=algo, key_size=256 if algo is KeyAlgo.EC else 2048, days=days
    )
    path = _save(directory, issued)
    err.print(f"created {name} in {path}", highlight=False)
    sys.stdout.write(issued.pem().decode())


@ca.command("sign")
@click.argument("name")
@click.option("--issuer", required=True, metavar="CA", help="The CA that signs.")
@click.option("--csr", "csr_file", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--days", type=int, default=365, show_default=True)
@click.option("--drop-data-encipherment", is_flag=True, help="Imitate a CA that loses the data-encipherment bit.")
@click.option("--chain", is_flag=True, help="Write the certificate followed by its CA chain.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write the certificate here.")
@ca_dir_option
@lab_option
@lab_dir_option
@handles_errors
def ca_sign(
    name: str,
    issuer: str,
    csr_file: Path,
    days: int,
    drop_data_encipherment: bool,
    chain: bool,
    output: Path | None,
    ca_dir: Path | None,
    lab_name: str | None,
    lab_dir: Path | None,
) -> None:
    """Sign the CSR in --csr as certificate NAME, copying its extensions (R-OP-UPLOAD-3)."""
    _check_name(name)
    directory, clock = _ca_context(ca_dir, lab_name, lab_dir)
    lab_ca = _load_ca(directory, clock)
    issued = lab_ca.sign_csr(
        name,
        issuer=issuer,
        csr_pem=csr_file.read_bytes(),
        days=days,
        drop_data_encipherment=drop_data_encipherment,
    )
    _save(directory, issued)
    _out(issued.pem(with_chain=chain), output)


# ------------------------------------------------------------------------------------------
# cert regen, identity upload, identities


@click.command("regen")
@node_option
@unit_option
@click.option("--key-size", type=int, default=None, help="Same length (default), 3072 or 4096.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def cert_regen(
    node: str, unit: str, key_size: int | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Regenerate the self-signed certificate of UNIT on NODE (R-OP-REGEN-1..3)."""
    args: dict[str, Any] = {"unit": unit}
    if key_size is not None:
        args["key_size"] = key_size
    result = _certops_request(lab_name, lab_dir, node, "regen", args)
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


@click.command("upload")
@node_option
@click.option("--store", default=None, metavar="STORE", help="Trust store to upload to (e.g. tomcat-trust).")
@click.option(
    "--purpose", default=None, metavar="UNIT", help="Identity unit for a CA-signed certificate (e.g. tomcat)."
)
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False, allow_dash=True))
@lab_option
@lab_dir_option
@json_option
@handles_errors
def cert_upload_any(
    node: str,
    store: str | None,
    purpose: str | None,
    file: Path,
    lab_name: str | None,
    lab_dir: Path | None,
    as_json: bool,
) -> None:
    """Upload FILE (PEM, DER or PKCS#7; '-' for stdin): to a trust store (--store) or, with
    --purpose UNIT, as NODE's CA-signed identity certificate for UNIT (R-OP-UPLOAD-1..3)."""
    if (store is None) == (purpose is None):
        raise BadInput("give --store STORE for a trust certificate or --purpose UNIT for an identity certificate")
    data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    if len(data) > certs.MAX_UPLOAD_BYTES:  # refused here: a bus envelope that big would never reach the node
        raise BadInput(f"{file} is {len(data):,} bytes; the limit is {certs.MAX_UPLOAD_BYTES:,} bytes")
    if store is not None:
        _trust_upload(node, store, data, lab_name, lab_dir, as_json)
        return
    args = {"unit": purpose, "data": base64.b64encode(data).decode()}
    result = _certops_request(lab_name, lab_dir, node, "identity_upload", args)
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
    node: str, store: str, data: bytes, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """The trust upload of ``cert upload --store`` (same request and output as before --purpose existed)."""
    result = _certops_request(
        lab_name, lab_dir, node, "upload", {"store": store, "data": base64.b64encode(data).decode()}
    )
    if as_json:
        emit_json(result)
        return
    for key in ("added", "replaced", "unchanged"):
        for name in result[key]:
            console.print(f"{key} {store}/{name}.pem", highlight=False)
    for note in result["notes"]:
        console.print(note, highlight=False)
    console.print("replicates to every node" if result["replicated"] else "stays on this node", highlight=False)


@click.command("identities")
@node_option
@lab_option
@lab_dir_option
@json_option
@handles_errors
def cert_identities(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Identity certificates of NODE: source, R-KU-1 flag, pending CSR, services still on the old one."""
    rows = _certops_request(lab_name, lab_dir, node, "identity_list", {})
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


# ------------------------------------------------------------------------------------------
# services and enterprise parameters


@click.group()
def service() -> None:
    """Services of a node: state, restart pending, restart (R-SVC-1)."""


@service.command("list")
@node_option
@lab_option
@lab_dir_option
@json_option
@handles_errors
def service_list(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Services on NODE with their state and whether they need a restart to use current certificates."""
    rows = _certops_request(lab_name, lab_dir, node, "service_list", {})
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
def service_restart(node: str, name: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Restart service NAME on NODE (takes simulated time; it then loads the current certificates)."""
    result = _certops_request(lab_name, lab_dir, node, "service_restart", {"name": name})
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['name']} restarted on {node}", highlight=False)
    if result["resync"]:
        console.print("resync with the cluster started (R-REPL-6)", highlight=False)


@click.group()
def param() -> None:
    """Enterprise parameters the certificate operations read (cluster-wide)."""


@param.command("set")
@node_option
@click.argument("name")
@click.argument("value")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def param_set(node: str, name: str, value: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Set enterprise parameter NAME to VALUE (e.g. "HTTPS Ciphers" "All Ciphers")."""
    result = _certops_request(lab_name, lab_dir, node, "param_set", {"name": name, "value": value})
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['name']} = {result['value']}", highlight=False)
    for r in result.get("restart", []):
        console.print(f"restart {r}", highlight=False)


@param.command("get")
@node_option
@lab_option
@lab_dir_option
@handles_errors
def param_get(node: str, lab_name: str | None, lab_dir: Path | None) -> None:
    """Show the enterprise parameters."""
    emit_json(_certops_request(lab_name, lab_dir, node, "param_get", {}))


# ------------------------------------------------------------------------------------------
# set key regen authz encryption|signing


@click.group()
def key() -> None:
    """Key operations (the platform CLI's `set key regen ...`)."""


@key.group("regen")
def key_regen() -> None:
    """Regenerate keys."""


@key_regen.command("authz")
@click.argument("kind", type=click.Choice(["encryption", "signing"]))
@click.option("--node", default=None, metavar="NODE", help="The publisher (default: the lab's first node).")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def key_regen_authz(kind: str, node: str | None, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Regenerate the OAuth encryption (symmetric) or signing (RSA) key on the publisher (R-OP-AUTHZ)."""
    target = node or rl.find_running(lab_name, lab_dir).spec.node_names[0]
    result = _certops_request(lab_name, lab_dir, target, "authz_regen", {"kind": kind})
    if as_json:
        emit_json(result)
        return
    console.print(f"regenerated the authz {kind} key; replicated to {result['replicated_to']}", highlight=False)
    for note in result["notes"]:
        console.print(note, highlight=False)


# ------------------------------------------------------------------------------------------
# node check-remote (R-TS-1)


@click.command("check-remote")
@node_option
@click.option("--peer", required=True, metavar="NODE", help="The remote node to connect to.")
@lab_option
@lab_dir_option
@json_option
@handles_errors
def node_check_remote(node: str, peer: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Connect from NODE to PEER's Tomcat and validate its certificate against NODE's tomcat-trust."""
    result = _certops_request(lab_name, lab_dir, node, "check_remote", {"peer": peer})
    if as_json:
        emit_json(result)
    else:
        console.print(result["message"], highlight=False)
        if result.get("reason"):
            err.print(result["reason"], highlight=False)
    if not result["connected"]:
        sys.exit(1)


# ------------------------------------------------------------------------------------------
# OCSP: revoke at the lab CA's responder, and the nodes' revocation checking (R-OCSP-1..4)
#
# The responder of a running lab runs in its ``lab serve`` process over <lab dir>/ca; revocations
# live in <lab dir>/ca/revoked.json, which ``ca revoke`` writes and the responder re-reads.


@ca.command("revoke")
@click.argument("name")
@click.option(
    "--reason",
    default="unspecified",
    show_default=True,
    help="RFC 5280 reason, e.g. keyCompromise, superseded, cessationOfOperation.",
)
@ca_dir_option
@lab_option
@lab_dir_option
@json_option
@handles_errors
def ca_revoke(
    name: str, reason: str, ca_dir: Path | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Revoke certificate NAME (or a hex serial) of the lab CA: its OCSP responder answers revoked from now on."""
    from cluster.ocsp import REVOKED_FILE, DirectoryCA, OcspResponder  # noqa: PLC0415 - aiohttp only when needed

    directory, clock = _ca_context(ca_dir, lab_name, lab_dir)
    revocations = OcspResponder(DirectoryCA(directory), clock, revocations_file=directory / REVOKED_FILE)
    revocation = revocations.revoke(name, reason)
    result = {
        "revoked": name,
        "serial": f"{revocation.serial:x}",
        "ca": revocation.ca_name,
        "at": certs.iso(revocation.at),
        "reason": revocation.reason.value,
        "file": str(directory / REVOKED_FILE),
    }
    if as_json:
        emit_json(result)
        return
    console.print(
        f"revoked {name} (serial {result['serial']}, issued by {revocation.ca_name}) at {result['at']}, "
        f"reason {result['reason']}",
        highlight=False,
    )
    console.print(
        "the lab's OCSP responder answers revoked from now on; nodes learn it at their next check "
        "(certsim ocsp check --node NODE checks now)",
        highlight=False,
    )


@click.group()
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
    table = Table(title=title, title_justify="left")
    for col in ("certificate", "held in", "status", "connection", "signed by", "checked", "reason"):
        table.add_column(col, overflow="fold")
    style = {"good": "green", "revoked": "bold red", "unknown": "yellow"}
    for r in rows:
        status = str(r["status"] or "not checked")
        table.add_row(
            str(r["name"]),
            "\n".join(r["places"]),
            f"[{style.get(status, 'dim')}]{status}[/]",
            "allowed" if r["allowed"] else "[red]fails[/red]",
            str(r.get("signer") or ""),
            str(r.get("checked") or ""),
            str(r["reason"]).replace("[", r"\["),
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
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
    result = _certops_request(lab_name, lab_dir, node, "ocsp_set", args)
    if as_json:
        emit_json(result)
        return
    console.print(f"{node}: {_ocsp_settings_line(result['settings'])}", highlight=False)
    if "checked" in result:
        console.print(_ocsp_table(f"OCSP status on {node}", result["checked"]))


@ocsp.command("show")
@node_option
@lab_option
@lab_dir_option
@json_option
@handles_errors
def ocsp_show(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """NODE's OCSP settings, its last and next check, and the status of every certificate it checked."""
    result = _certops_request(lab_name, lab_dir, node, "ocsp_get", {})
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
@lab_option
@lab_dir_option
@json_option
@handles_errors
def ocsp_check_now(node: str, lab_name: str | None, lab_dir: Path | None, as_json: bool) -> None:
    """Check every certificate of NODE at its OCSP responder now."""
    result = _certops_request(lab_name, lab_dir, node, "ocsp_check", {})
    if as_json:
        emit_json(result)
        return
    console.print(_ocsp_table(f"OCSP status on {node}", [*result["checked"], *result["not_checked"]]))


def register(cli: ModuleType) -> None:
    """Add these verbs to the groups of a ``cluster.cli`` module (once)."""
    main: click.Group = cli.main
    if "csr" in main.commands:
        return
    for group in (csr, ca, service, param, key, ocsp):  # ocsp: R-OCSP-1..4
        main.add_command(group)
    cert: click.Group = cli.cert
    cert.add_command(cert_regen)
    cert.add_command(cert_identities)
    cert.add_command(cert_upload_any, "upload")  # --store as before, plus --purpose for identities
    node: click.Group = cli.node
    node.add_command(node_check_remote)


for _module in cli_modules():
    register(_module)
