"""``certsim ca create|sign|revoke``: a lab CA whose material lives in files (<lab dir>/ca or --ca-dir)."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cluster.cli.app import main
from cluster.cli.common import (
    console,
    emit_json,
    err,
    read_user_bytes,
    running_lab_options,
    write_output,
)
from node.errors import BadInput, NotFound, Unavailable

if TYPE_CHECKING:
    from cluster.labca import Issued, LabCA
    from node.clock import Clock


ca_dir_option = click.option(
    "--ca-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Where the CA keeps its certificates and keys (default: <lab dir>/ca of the running lab).",
)


def _ca_context(ca_dir: Path | None, lab_name: str | None, lab_dir: Path | None) -> tuple[Path, Clock]:
    from cluster import running as rl  # noqa: PLC0415
    from node.clock import SimClock  # noqa: PLC0415

    try:
        running = rl.find_running(lab_name, lab_dir)
    except (NotFound, Unavailable):
        if ca_dir is None:
            raise
        return ca_dir, SimClock(dt.datetime.now(dt.UTC))  # no lab: the CA dates by the wall clock
    return ca_dir or running.lab_dir / "ca", running.state.clock(running.lab_dir)


def _load_ca(directory: Path, clock: Clock) -> LabCA:
    from cluster.labca import load_ca_dir  # noqa: PLC0415

    return load_ca_dir(directory, clock)


def _save(directory: Path, issued: Issued) -> Path:
    from node import certs  # noqa: PLC0415

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


@main.group()
def ca() -> None:
    """A lab CA for the third-party flow: create roots and intermediates, sign CSRs."""


@ca.command("create")
@click.argument("name")
@click.option("--issuer", default=None, metavar="CA", help="Make an intermediate signed by this CA.")
@click.option("--cn", default=None, help="Common name (default: NAME).")
@click.option("--key-type", type=click.Choice(["RSA", "EC"], case_sensitive=False), default="RSA")
@click.option("--days", type=int, default=3650, show_default=True)
@ca_dir_option
@running_lab_options()
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
    from node.catalog import KeyAlgo  # noqa: PLC0415

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
@running_lab_options()
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
        csr_pem=read_user_bytes(csr_file, "csr"),
        days=days,
        drop_data_encipherment=drop_data_encipherment,
    )
    _save(directory, issued)
    write_output(issued.pem(with_chain=chain), output)


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
@running_lab_options(json=True)
def ca_revoke(
    name: str, reason: str, ca_dir: Path | None, lab_name: str | None, lab_dir: Path | None, as_json: bool
) -> None:
    """Revoke certificate NAME (or a hex serial) of the lab CA: its OCSP responder answers revoked from now on."""
    from cluster.ocsp import REVOKED_FILE, DirectoryCA, OcspResponder  # noqa: PLC0415 - aiohttp only when needed
    from node import certs  # noqa: PLC0415

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
