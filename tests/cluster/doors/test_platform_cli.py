"""The platform CLI interpreter on its own: a fake node, no network (the SSH tests use a real lab).

Rules: "Real-product interfaces: platform CLI" in DOMAIN.md (texts, prompts, commands) and the
operation rules each command reaches (R-OP-LIST, R-OP-CSR-1, R-OP-UPLOAD-1..4, R-OP-REGEN-1,
R-OP-DELETE-1, R-OP-AUTHZ, R-SVC-1).
"""

from __future__ import annotations

import base64
import datetime as dt
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509

from cluster.doors.platform_cli import COMMANDS, MAX_LINE_CHARS, MAX_PASTE_BYTES, PlatformCli, Text
from cluster.labca import LabCA
from node.clock import SimClock
from node.errors import NotFound, Refused
from node.monitor import java_date

NOW = dt.datetime(2021, 3, 30, 2, 19, 31, tzinfo=dt.UTC)


class FixedClock:
    def now(self) -> dt.datetime:
        return NOW

    def now_ms(self) -> int:
        return int(NOW.timestamp() * 1000)

    async def sleep_until(self, due: dt.datetime) -> None:
        return None


Answer = Any | Exception | Callable[[dict[str, Any]], Any]


PUBLISHER = {"role": "cucm", "publisher": True}


class FakeNode:
    """A request function: canned answers per operation, every call recorded. Unless told otherwise
    it is a Unified CM publisher (``status``), which commands ask before a question or a paste."""

    def __init__(self, **answers: Answer) -> None:
        self.answers = {"status": PUBLISHER, **answers}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, op: str, args: dict[str, Any]) -> Any:
        self.calls.append((op, args))
        if op not in self.answers:
            raise NotFound(f"unknown operation '{op}'")
        answer = self.answers[op]
        if isinstance(answer, Exception):
            raise answer
        return answer(args) if callable(answer) else answer

    def ops(self) -> list[str]:
        return [op for op, _ in self.calls]

    def changes(self) -> list[tuple[str, dict[str, Any]]]:
        """The calls other than ``status`` (which only reads the node's role)."""
        return [call for call in self.calls if call[0] != "status"]


def make_cli(node: FakeNode) -> PlatformCli:
    return PlatformCli("cucm1", node, FixedClock())


async def run(cli: PlatformCli, line: str) -> str:
    return "".join([out async for out in cli.handle_line(line)])


def ca_pems() -> tuple[LabCA, str, str]:
    ca = LabCA(SimClock(NOW))
    root = ca.create_ca("Root", cn="certsim Test Root")
    leaf = ca.issue("leaf", issuer="Root", cn="leaf.lab.example")
    return ca, root.pem().decode(), leaf.pem().decode()


def download_answer(pem: str, name: str) -> Callable[[dict[str, Any]], Any]:
    def answer(args: dict[str, Any]) -> dict[str, Any]:
        return {"store": args["store"], "name": name, "data": base64.b64encode(pem.encode()).decode()}

    return answer


# ---------------------------------------------------------------------------------------------


def test_prompt_greeting_and_command_table() -> None:
    """Platform CLI: the prompt is `admin:` without a trailing space; the greeting never says ERROR;
    every row of the command table has its handler and a distinct usage."""
    cli = make_cli(FakeNode())
    assert cli.prompt == "admin:" == Text.PROMPT
    greeting = cli.greeting()
    assert "Welcome to the Platform Command Line Interface" in greeting
    assert "ERROR" not in greeting.upper()
    for command in COMMANDS:
        assert inspect.isasyncgenfunction(getattr(cli, command.handler)), command.handler
    assert len({c.usage for c in COMMANDS}) == len(COMMANDS)
    for usage in (
        "show cert list own|trust",
        "set cert import own|trust <unit>",
        "set key regen authz encryption|signing",
        "utils ctl update CTLFile",
        "utils dbreplication runtimestate",
        "set cli pagination off",
    ):
        assert usage in {c.usage for c in COMMANDS}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("foo", "Executed command unsuccessfully\nNo valid command entered\n"),
        ("rm -rf /", "Executed command unsuccessfully\nNo valid command entered\n"),
        (
            "show cert",
            "Syntax:\n  show cert list own|trust\n  show cert own <unit>[/<file>.pem]\n"
            "  show cert trust <store>/<file>.pem\nExecuted command unsuccessfully\n",
        ),
        ("show cert list mine", "Syntax:\n  show cert list own|trust\nExecuted command unsuccessfully\n"),
        ("show cert list own extra", "Syntax:\n  show cert list own|trust\nExecuted command unsuccessfully\n"),
        (
            "set cert delete tomcat-trust",
            "Syntax:\n  set cert delete <store> <file>\nExecuted command unsuccessfully\n",
        ),
        ("utils service restart", "Syntax:\n  utils service restart <service name>\nExecuted command unsuccessfully\n"),
        (
            "show cert trust tomcat-trust",
            "Syntax:\n  show cert trust <store>/<file>.pem\nExecuted command unsuccessfully\n",
        ),
        ("", ""),
        ("   ", ""),
    ],
)
async def test_unknown_and_malformed_commands(line: str, expected: str) -> None:
    """Platform CLI: unknown or malformed commands print product-style syntax help and `Executed command
    unsuccessfully`, reach no node operation, and leave the session at `admin:`."""
    node = FakeNode()
    cli = make_cli(node)
    assert await run(cli, line) == expected
    assert node.calls == []
    assert cli.prompt == "admin:"
    assert cli.last_ok is (expected == "")


async def test_keywords_are_case_insensitive_arguments_are_not() -> None:
    """Platform CLI: keywords match in any case; unit names are passed as typed (R-OP-LIST)."""
    node = FakeNode(list=[])
    cli = make_cli(node)
    assert await run(cli, "SHOW Cert LIST Own") == ""
    assert node.calls == [("list", {"usage": "identity"})]


async def test_node_errors_and_bugs_print_a_message_never_a_traceback() -> None:
    """Platform CLI: a node error prints its message then `Executed command unsuccessfully`; an
    unexpected exception is reported the same way, without a traceback."""
    cli = make_cli(FakeNode(csr_get=NotFound("there is no CSR for 'tomcat' on this node")))
    out = await run(cli, "show csr own tomcat")
    assert out == "there is no CSR for 'tomcat' on this node\nExecuted command unsuccessfully\n"
    assert cli.last_ok is False
    cli = make_cli(FakeNode(list=RuntimeError("boom")))
    out = await run(cli, "show cert list trust")
    assert out == "Internal error (RuntimeError)\nExecuted command unsuccessfully\n"
    assert "Traceback" not in out
    assert cli.prompt == "admin:"


async def test_show_cert_list_lines_are_valid_show_arguments() -> None:
    """R-OP-LIST: `show cert list own|trust` prints one `unit/name.pem: ...` line per certificate, nothing
    else; each printed path is accepted by `show cert own` / `show cert trust` and names that certificate."""
    _, root_pem, leaf_pem = ca_pems()
    own_rows = [
        {"store": "tomcat", "name": "cucm1.lab.example", "self_signed": False, "issuer_cn": "Corp CA", "issuer": "x"},
        {"store": "ipsec", "name": "cucm1.lab.example", "self_signed": True, "issuer_cn": "cucm1", "issuer": "x"},
    ]
    trust_rows = [
        {"store": "tomcat-trust", "name": "Corp_CA", "self_signed": True, "issuer_cn": "Corp CA"},
        {"store": "tomcat-trust", "name": "Lab_CA", "self_signed": True, "issuer_cn": "Lab"},
    ]
    node = FakeNode(
        list=lambda a: own_rows if a["usage"] == "identity" else trust_rows,
        download=download_answer(leaf_pem, "cucm1.lab.example"),
        cert_descriptions={"tomcat-trust/Lab_CA": "lab\x1b[2J"},  # as given at upload
    )
    cli = make_cli(node)
    assert await run(cli, "show cert list own") == (
        "ipsec/ipsec.pem: Self-signed certificate generated by system\n"
        "tomcat/tomcat.pem: Certificate Signed by Corp CA\n"
    )
    assert await run(cli, "show cert list trust") == (
        "tomcat-trust/Corp_CA.pem: Trust Certificate\n"  # issue 14: an upload is not "generated by system"
        "tomcat-trust/Lab_CA.pem: lab\\x1b[2J\n"  # the upload's description, escaped
    )
    node.calls.clear()
    for path in ("tomcat/tomcat.pem", "tomcat", "tomcat/cucm1.lab.example.pem"):
        assert "-----BEGIN CERTIFICATE-----" in await run(cli, f"show cert own {path}")
    node.answers["download"] = download_answer(root_pem, "Corp_CA")
    assert "-----BEGIN CERTIFICATE-----" in await run(cli, "show cert trust tomcat-trust/Corp_CA.pem")
    assert node.calls == [
        ("download", {"store": "tomcat", "format": "pem"}),
        ("download", {"store": "tomcat", "format": "pem"}),
        ("download", {"store": "tomcat", "format": "pem"}),
        ("download", {"store": "tomcat-trust", "name": "Corp_CA.pem", "format": "pem"}),
    ]
    out = await run(cli, "show cert own tomcat/other.pem")
    assert out.endswith("Executed command unsuccessfully\n")


async def test_show_cert_details_have_java_dates_and_one_pem_block() -> None:
    """R-OP-DOWNLOAD: `show cert own` prints the details, `To:` in Java's `EEE MMM dd HH:mm:ss zzz yyyy`,
    then the PEM block."""
    _, _, leaf_pem = ca_pems()
    cert = x509.load_pem_x509_certificate(leaf_pem.encode())
    cli = make_cli(FakeNode(download=download_answer(leaf_pem, "leaf.lab.example")))
    out = await run(cli, "show cert own tomcat")
    assert f"\n           To:   {java_date(cert.not_valid_after_utc)}\n" in out
    assert f"  Validity From: {java_date(cert.not_valid_before_utc)}\n" in out
    assert "  SignatureAlgorithm: SHA256withRSA (1.2.840.113549.1.1.11)\n" in out
    assert out.count("-----BEGIN CERTIFICATE-----") == 1
    assert out.endswith(leaf_pem if leaf_pem.endswith("\n") else leaf_pem + "\n")


async def test_csr_gen_asks_include_ou() -> None:
    """R-OP-CSR-1: `set csr gen <unit>` asks `Include OU in CSR (yes|no)?`, asks again on any other answer,
    then generates the CSR with or without OU."""
    node = FakeNode(csr_gen={"unit": "tomcat"})
    cli = make_cli(node)
    assert await run(cli, "set csr gen tomcat") == ""
    assert cli.prompt == "Include OU in CSR (yes|no)? "
    assert await run(cli, "maybe") == "Please answer yes or no\n"
    assert cli.prompt == Text.INCLUDE_OU and node.changes() == []
    assert await run(cli, "no") == "Successfully Generated CSR for tomcat\n"
    assert node.changes() == [("csr_gen", {"unit": "tomcat", "include_ou": False})]
    assert cli.prompt == "admin:"
    await run(cli, "set csr gen tomcat")
    await run(cli, "YES")
    assert node.calls[-1] == ("csr_gen", {"unit": "tomcat", "include_ou": True})
    assert (await run(cli, "set csr gen nosuchunit")).endswith("Executed command unsuccessfully\n")
    assert cli.prompt == "admin:"


async def test_csr_show_and_list() -> None:
    """R-OP-CSR-1: `show csr own <unit>` prints exactly the CSR block; `show csr list own` one line per CSR."""
    pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
    cli = make_cli(FakeNode(csr_get={"csr": pem}, csr_list=[{"unit": "tomcat"}, {"unit": "CallManager"}]))
    assert await run(cli, "show csr own tomcat") == pem
    assert await run(cli, "show csr list own") == "tomcat/tomcat.csr\nCallManager/CallManager.csr\n"


async def test_regen_warns_and_asks() -> None:
    """R-OP-REGEN-1..3: `set cert regen <unit>` warns, asks `Proceed with regeneration (yes|no)?`; `no`
    changes nothing; `yes` regenerates and prints the product's success text and restart reminder."""
    advice = {"restart": ["Cisco CallManager"], "ctl_update_needed": True, "backup_due": True, "phones": None}
    node = FakeNode(regen=advice)
    cli = make_cli(node)
    out = await run(cli, "set cert regen CallManager")
    assert (
        out == "WARNING: This operation will overwrite any CA signed certificate previously imported for CallManager\n"
    )
    assert cli.prompt == "Proceed with regeneration (yes|no)? "
    assert await run(cli, "no") == "Command cancelled\n"
    assert node.changes() == []
    await run(cli, "set cert regen CallManager")
    out = await run(cli, "yes")
    assert out.startswith(
        "Successfully regenerated certificate for CallManager.\n"
        "Please restart services related to CallManager for the new certificate to become active.\n"
    )
    assert "utils ctl update CTLFile" in out
    assert node.changes() == [("regen", {"unit": "CallManager"})]


async def test_paste_ends_at_a_blank_line_after_the_last_end() -> None:
    """R-OP-UPLOAD-1/2: `set cert import trust <unit>` prompts `Paste the Certificate and Hit Enter` and reads
    lines until an empty line follows the last END line (blank lines before the paste and inside a block
    are not the end); several certificates are one upload to the unit's trust store."""
    _, root_pem, leaf_pem = ca_pems()
    node = FakeNode(upload={"added": ["x"], "notes": []})
    cli = make_cli(node)
    assert await run(cli, "set cert import trust tomcat") == "Paste the Certificate and Hit Enter\n"
    assert cli.prompt == "" and not cli.idle
    assert await run(cli, "") == ""  # before the paste: not the end
    lines = root_pem.splitlines()
    for line in [lines[0], "", *lines[1:], *leaf_pem.splitlines()]:
        assert await run(cli, line) == ""
    assert node.changes() == []
    out = await run(cli, "")
    assert out == (
        "Successfully imported certificate for tomcat.\n"
        "Please restart services related to tomcat for the new certificate to become active.\n"
    )
    assert cli.idle and cli.prompt == "admin:"
    [(op, args)] = node.changes()
    assert op == "upload" and args["store"] == "tomcat-trust"
    sent = base64.b64decode(args["data"]).decode()
    assert sent.count("-----BEGIN CERTIFICATE-----") == 2
    assert x509.load_pem_x509_certificates(sent.encode())[0] == x509.load_pem_x509_certificate(root_pem.encode())


async def test_import_own_goes_to_identity_upload() -> None:
    """R-OP-UPLOAD-3: `set cert import own <unit>` sends the pasted chain to identity_upload for that unit."""
    _, _, leaf_pem = ca_pems()
    node = FakeNode(identity_upload={"shared_with": ["cucm2"], "notes": ["R-KU-1: flagged"]})
    cli = make_cli(node)
    await run(cli, "set cert import own tomcat")
    for line in leaf_pem.splitlines():
        await run(cli, line)
    out = await run(cli, "")
    assert out.startswith("Successfully imported certificate for tomcat.\nPlease restart services related to tomcat")
    assert "cucm2" in out and "R-KU-1" in out
    assert node.changes() == [("identity_upload", node.changes()[0][1])]
    assert node.changes()[0][1]["unit"] == "tomcat"


async def test_paste_limits_cancel_and_end_of_input() -> None:
    """Platform CLI input limits: a paste over 1 MiB is refused and nothing is uploaded; Ctrl+C abandons a
    paste; end of input ends one; units without a trust store are refused before the paste."""
    node = FakeNode(upload={"notes": []})
    cli = make_cli(node)
    await run(cli, "set cert import trust tomcat")
    await run(cli, "-----BEGIN CERTIFICATE-----")
    line = "A" * 64
    for _ in range(MAX_PASTE_BYTES // 65 + 10):
        await run(cli, line)
    await run(cli, "-----END CERTIFICATE-----")
    out = await run(cli, "")
    assert (
        out
        == f"Pasted text too large: the limit is {MAX_PASTE_BYTES} bytes; nothing was imported\n{Text.UNSUCCESSFUL}\n"
    )
    assert node.changes() == [] and cli.idle

    await run(cli, "set cert import trust tomcat")
    await run(cli, "-----BEGIN CERTIFICATE-----")
    assert cli.cancel() == "Command cancelled\n"
    assert cli.idle and node.changes() == []

    _, root_pem, _ = ca_pems()
    await run(cli, "set cert import trust CallManager")
    for pem_line in root_pem.splitlines():
        await run(cli, pem_line)
    out = "".join([o async for o in cli.end_of_input()])
    assert out.startswith("Successfully imported certificate for CallManager.")
    assert node.changes()[0][1]["store"] == "CallManager-trust"

    await run(cli, "set cert import trust tomcat")
    await run(cli, root_pem.splitlines()[0])  # input ends inside the block: the node judges what came
    node.answers["upload"] = NotFound("no certificate found in the data")
    out = "".join([o async for o in cli.end_of_input()])
    assert out == "no certificate found in the data\nExecuted command unsuccessfully\n"
    assert cli.idle and not cli.last_ok
    await run(cli, "set csr gen tomcat")
    assert "".join([o async for o in cli.end_of_input()]) == "Command cancelled\n"
    assert cli.idle and not cli.last_ok

    out = await run(cli, "set cert import trust ITLRecovery")
    assert out.endswith("Executed command unsuccessfully\n") and cli.idle
    out = await run(cli, "set cert import own nosuch")
    assert out.startswith("Invalid unit nosuch") and cli.idle
    assert cli.reject_long_line() == (
        f"Input line too long: the limit is {MAX_LINE_CHARS} characters; the line was ignored\n"
        "Executed command unsuccessfully\n"
    )


async def test_delete_authz_ctl_pagination() -> None:
    """R-OP-DELETE-1, R-OP-AUTHZ, R-PHONE-5: `set cert delete`, `set key regen authz`, `utils ctl update
    CTLFile` (publisher only; the lab re-signs the CTL) and pagination."""
    node = FakeNode(
        delete={"deleted": "Corp_CA"},
        **{"@lab:ctl": {"mode": "mixed"}},
        authz_regen={"notes": ["restart Cisco XCP Authentication Service on the IM and Presence nodes"]},
        status={"publisher": True, "role": "cucm"},
    )
    cli = make_cli(node)
    assert await run(cli, "set cert delete tomcat-trust Corp_CA.pem") == (
        "Successfully deleted certificate Corp_CA.pem from tomcat-trust.\n"
    )
    assert node.calls[-1] == ("delete", {"store": "tomcat-trust", "name": "Corp_CA"})
    out = await run(cli, "set key regen authz Signing")
    assert out.startswith("Successfully regenerated the authz signing key.\n")
    assert node.calls[-1] == ("authz_regen", {"kind": "signing"})
    assert await run(cli, "utils ctl update CTLFile") == (
        "Updating CTL file\nCTL file Updated\nPlease Restart the TFTP and Cisco CallManager services on all nodes "
        "in the cluster that run these services\n"
    )
    assert node.calls[-1] == ("@lab:ctl", {"action": "update"})
    node.answers["status"] = {"publisher": False, "role": "cucm"}
    assert (await run(cli, "utils ctl update CTLFile")).endswith("Executed command unsuccessfully\n")
    assert node.calls[-1][0] == "status"  # refused before the lab was asked
    assert await run(cli, "set cli pagination off") == "Automatic pagination is turned off\n"


async def test_service_restart_and_list() -> None:
    """R-SVC-1, R-OP-UPLOAD-4: `utils service restart <name>` prints the product's lines around the restart
    (which the node op makes take simulated time); `utils service list` shows state and pending restarts."""
    rows = [
        {"name": "Cisco Tomcat", "state": "running", "restart_pending": True, "pending": ["tomcat"]},
        {"name": "Cisco TFTP", "state": "restarting", "restart_pending": False, "pending": []},
    ]
    node = FakeNode(service_list=rows, service_restart={"name": "Cisco Tomcat"})
    cli = make_cli(node)
    outs = [o async for o in cli.handle_line("utils service restart cisco tomcat")]
    assert "".join(outs) == (
        "Do not press Ctrl+C while the service is restarting. If the service has not restarted properly, "
        "execute the same command again.\n"
        "Service Manager is running\n"
        "Cisco Tomcat[STOPPING]\n"  # issue 14: tools watch for the stopping phase, then STARTING/STARTED
        "Cisco Tomcat[STARTING]\n"
        "Cisco Tomcat[STARTED]\n"
    )
    assert outs[-1] == "Cisco Tomcat[STARTED]\n"  # printed only once the restart returned
    assert node.calls[-1] == ("service_restart", {"name": "Cisco Tomcat"})
    out = await run(cli, "utils service restart Cisco Nothing")
    assert out.endswith("Command failed -- Invalid service name\nExecuted command unsuccessfully\n")
    node.answers["service_restart"] = Refused("Cisco Tomcat is already restarting")
    out = await run(cli, "utils service restart Cisco Tomcat")
    assert out.endswith("Cisco Tomcat is already restarting\nExecuted command unsuccessfully\n")
    assert await run(cli, "utils service list") == (
        "Requesting service status, please wait...\nCisco Tomcat[STARTED]  Restart pending: tomcat\n"
        "Cisco TFTP[STARTING]\n"
    )


async def test_dbreplication_runtimestate_shows_this_node_and_its_peers() -> None:
    """R-REPL-6: `utils dbreplication runtimestate` shows the server time from the lab clock, this node's
    connection, queue and digest (from `status`) and its peers (from `cluster_nodes`)."""
    node = FakeNode(
        status={"connected": True, "outbox": 0, "digests": {"tomcat-trust": "ab"}},
        cluster_nodes=[
            {"name": "cucm1", "fqdn": "cucm1.lab.example", "role": "cucm"},
            {"name": "cucm2", "fqdn": "cucm2.lab.example", "role": "cucm"},
        ],
    )
    out = await run(make_cli(node), "utils dbreplication runtimestate")
    assert out.startswith("Server Time: Tue Mar 30 02:19:31 UTC 2021\n")
    assert "Cluster Detailed View from cucm1 (2 Servers):" in out
    lines = out.splitlines()
    assert any(line.startswith("cucm1 ") and "(2) Setup Completed" in line for line in lines)
    assert any(line.startswith("cucm2 ") and "(4) Not reachable" in line for line in lines)  # no peer answers here


async def test_dbreplication_runtimestate_shows_every_node_from_its_own_status() -> None:
    """Issue 14: the full per-node table: each peer's row comes from that peer's own status (asked
    over the bus, read-only), so a disconnected or queueing peer shows as such."""
    peers = {
        "cucm2": {"connected": True, "outbox": 3, "publisher": False},
        "cucm3": {"connected": False, "outbox": 0, "publisher": False},
    }
    node = FakeNode(
        status={"connected": True, "outbox": 0, "digests": {}, "publisher": True},
        cluster_nodes=[{"name": n, "fqdn": f"{n}.lab.example", "role": "cucm"} for n in ("cucm1", "cucm2", "cucm3")],
        **{f"@peer:{name}:status": state for name, state in peers.items()},
    )
    lines = (await run(make_cli(node), "utils dbreplication runtimestate")).splitlines()
    assert any(line.startswith("cucm1 ") and "(2) Setup Completed" in line for line in lines)
    assert any(line.startswith("cucm2 ") and "(0) Replicating: 3 change(s) queued" in line for line in lines)
    assert any(line.startswith("cucm3 ") and " N " in line and "(4) Not connected" in line for line in lines)


async def test_show_commands_management_tools_run_first() -> None:
    """Issue 14: show version active, show status, show network cluster and show myself answer in the
    product's format instead of printing the syntax of another command."""
    node = FakeNode(
        status={
            "connected": True,
            "outbox": 0,
            "publisher": True,
            "role": "cucm",
            "release": "15",
            "fqdn": "cucm1.lab.example",
        },
        cluster_nodes=[
            {"name": "cucm1", "fqdn": "cucm1.lab.example", "role": "cucm"},
            {"name": "imp1", "fqdn": "imp1.lab.example", "role": "imp"},
        ],
        **{"@peer:imp1:status": {"connected": True, "publisher": True}},
    )
    cli = make_cli(node)
    assert (await run(cli, "show version active")).startswith("Active Master Version: 15.0.1.10000-10\n")
    status = await run(cli, "show status")
    assert "Host Name           : cucm1\n" in status and "Product Ver         : 15.0.1.10000-10\n" in status
    cluster = (await run(cli, "show network cluster")).splitlines()
    assert "cucm1.lab.example cucm1.lab.example cucm1 Publisher callmanager DBPub authenticated" in cluster
    assert "imp1.lab.example imp1.lab.example imp1 Publisher cups DBPub authenticated" in cluster
    assert cluster[-1] == "Successful"
    myself = await run(cli, "show myself")
    assert "Machine Name    : cucm1\n" in myself and "account name    : admin\n" in myself


async def test_help_and_exit() -> None:
    """Platform CLI: `help` lists every command; `exit` and `quit` end the session."""
    cli = make_cli(FakeNode())
    out = await run(cli, "help")
    for command in COMMANDS:
        assert f"  {command.usage}\n" in out
    assert not cli.closed
    assert await run(cli, "exit") == ""
    assert cli.closed
    cli = make_cli(FakeNode())
    await run(cli, "quit")
    assert cli.closed


async def test_a_blank_line_followed_by_another_pem_does_not_end_the_paste() -> None:
    """Platform CLI paste (issue 6 review, finding 2): a blank line after a complete certificate ends the
    paste unless the input already received after it (``more``) goes on with another `-----BEGIN`
    (after any further blank lines), so a chain pasted with blank lines between its certificates is
    one upload; ``ends_paste`` tells the adapter when to look."""
    _, root_pem, leaf_pem = ca_pems()
    node = FakeNode(upload={"notes": []})
    cli = make_cli(node)
    await run(cli, "set cert import trust tomcat")
    assert cli.pasting and not cli.ends_paste("")  # nothing pasted yet
    for line in root_pem.splitlines():
        await run(cli, line)
    assert cli.ends_paste("") and cli.ends_paste("  ") and not cli.ends_paste("x")
    assert [o async for o in cli.handle_line("", more="\r\n  \n-----BEGIN CERTIFICATE-----\r")] == []
    assert cli.pasting and node.changes() == []
    for line in leaf_pem.splitlines():
        await run(cli, line)
    assert (await run(cli, "")).startswith("Successfully imported certificate for tomcat.")  # no ``more``: ends
    [(op, args)] = node.changes()
    assert op == "upload" and not cli.pasting and cli.idle
    assert base64.b64decode(args["data"]).decode().count("-----BEGIN CERTIFICATE-----") == 2

    await run(cli, "set cert import trust tomcat")
    for line in root_pem.splitlines():
        await run(cli, line)
    out = "".join([o async for o in cli.handle_line("", more="set cert regen tomcat")])
    assert out.startswith("Successfully imported certificate for tomcat.") and cli.idle  # other text: ended


async def test_cancel_makes_the_pending_command_unsuccessful() -> None:
    """Platform CLI (issue 6 review, finding 5): Ctrl+C at a question or in a paste makes the command
    unsuccessful (an exec exits 1, as at end of input); Ctrl+C at `admin:` changes nothing."""
    cli = make_cli(FakeNode(regen={}))
    await run(cli, "set cli pagination off")
    assert cli.cancel() == "" and cli.last_ok
    for command in ("set cert regen tomcat", "set cert import trust tomcat"):
        await run(cli, command)
        assert not cli.idle and cli.last_ok
        assert cli.cancel() == "Command cancelled\n"
        assert cli.idle and not cli.last_ok, command


@pytest.mark.parametrize(
    ("facts", "line", "message"),
    [
        (PUBLISHER, "set csr gen ITLRecovery", "ITLRecovery is issued by the cluster; it has no CSR"),
        (PUBLISHER, "set csr gen AUTHZ", "AUTHZ is issued by the cluster; it has no CSR"),
        (PUBLISHER, "set csr gen cup", "a cucm node has no 'cup' identity certificate"),
        ({"role": "cucm", "publisher": False}, "set csr gen CAPF", "exist on the first node (publisher) only"),
        ({"role": "cucm", "publisher": False}, "set cert regen ITLRecovery", "run regen on the publisher"),
        (
            {"role": "imp", "publisher": True},
            "set cert regen CallManager",
            "imp node has no 'CallManager' identity certificate",
        ),
        (PUBLISHER, "set cert import own cup-xmpp", "a cucm node has no 'cup-xmpp' identity certificate"),
        (PUBLISHER, "set cert import trust cup", "a cucm node has no 'cup-trust' store"),
        ({"role": "cucm", "publisher": False}, "set cert import own CAPF", "(publisher) only"),
    ],
)
async def test_what_the_node_would_refuse_fails_before_any_question(
    facts: dict[str, Any], line: str, message: str
) -> None:
    """Platform CLI (issue 6 review, finding 6), R-OP-CSR-1, R-OP-REGEN-1, R-OP-UPLOAD-1/3: `set csr
    gen`, `set cert regen` and `set cert import` check the unit first, with the rules the node operation
    applies (``certops.identity_unit``, ``ops.check_store``, the catalog's trust stores), so a command
    the node would refuse fails at once, with the node's reason, instead of after the answer or paste."""
    node = FakeNode(status=facts)
    cli = make_cli(node)
    out = await run(cli, line)
    assert message in out and out.endswith("Executed command unsuccessfully\n"), out
    assert "(yes|no)" not in out and "WARNING" not in out and "Paste" not in out
    assert cli.idle and cli.prompt == "admin:" and not cli.last_ok
    assert node.ops() == ["status"]


async def test_the_node_role_is_asked_once_per_session() -> None:
    """Platform CLI: the checks before a question ask the node's role (`status`) once per session; a
    unit the node holds still gets its question."""
    node = FakeNode(csr_gen={"unit": "tomcat"})
    cli = make_cli(node)
    for _ in range(2):
        assert await run(cli, "set csr gen tomcat") == ""
        assert cli.prompt == Text.INCLUDE_OU
        await run(cli, "yes")
    assert await run(cli, "set cert regen CallManager") != ""
    assert cli.prompt == Text.PROCEED_REGEN
    assert node.ops() == ["status", "csr_gen", "csr_gen"]
