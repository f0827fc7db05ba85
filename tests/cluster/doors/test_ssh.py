"""The SSH front door: a real asyncssh client against a node of a running lab (embedded and mosquitto).

Rules: "Real-product interfaces: platform CLI" in DOMAIN.md (the `admin:` prompt and its commands),
the front-door contract of issue 6 (authentication, nothing but the platform CLI, input limits, the
prompt/echo/Enter discipline) and the operation rules the commands reach (R-OP-CSR-1, R-OP-UPLOAD-1..4,
R-OP-REGEN-1, R-OP-DELETE-1, R-OP-AUTHZ, R-SVC-1, R-OP-LIST).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
from cryptography import x509

from cluster.doors.auth import Credentials, Throttle
from cluster.doors.frontdoors import lab_request, node_request
from cluster.doors.platform_cli import MAX_LINE_CHARS, MAX_PASTE_BYTES
from cluster.doors.ssh import SshDoor, _Event, _LineEditor, start_ssh_server
from cluster.lab import Lab
from cluster.labca import LabCA
from node.clock import SimClock
from node.errors import NotFound
from tests.conftest import LabFactory, small_lab

USER, PASSWORD = "admin", "s3cret-Platform-pw"
PROMPT = b"admin:"
NODE = "cucm1"
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class SshLab:
    lab: Lab
    door: SshDoor
    throttle: Throttle


async def start_door(tmp_path: Path, request: Any, clock: Any, throttle: Throttle | None = None) -> SshDoor:
    return await start_ssh_server(
        host="127.0.0.1",
        port=0,
        node=NODE,
        request=request,
        credentials=Credentials(USER, PASSWORD),
        throttle=throttle or Throttle(),
        host_key_path=tmp_path / "ssh" / f"{NODE}.key",
        clock=clock,
    )


@pytest.fixture
async def ssh_lab(make_lab: LabFactory, tmp_path: Path) -> AsyncIterator[SshLab]:
    lab = await make_lab(small_lab(nodes=2, imp=0))
    throttle = Throttle()
    request = node_request(lab.client.request, NODE, lambda op, args: lab_request(lab, op, args))
    door = await start_door(tmp_path, request, lab.clock, throttle)
    yield SshLab(lab, door, throttle)
    await door.close()


@pytest.fixture
async def fake_door(tmp_path: Path) -> AsyncIterator[SshDoor]:
    """A door whose node answers every operation with an error (but ``status``: a Unified CM
    publisher, which commands ask before a question or a paste): for rules that reach no node."""

    async def request(op: str, args: dict[str, Any]) -> Any:
        if op == "status":
            return {"role": "cucm", "publisher": True}
        raise NotFound(f"no operation {op} here")

    door = await start_door(tmp_path, request, SimClock(EPOCH))
    yield door
    await door.close()


def connect(door: SshDoor, **kw: Any) -> Any:
    options: dict[str, Any] = {"username": USER, "password": PASSWORD, "known_hosts": None, "client_keys": None}
    options.update(kw)
    return asyncssh.connect("127.0.0.1", door.port, **options)


class Term:
    """An interactive client session: everything the server writes, and helpers to wait for it."""

    def __init__(self, proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self.proc = proc
        self.data = bytearray()
        self.pos = 0
        self.closed = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        while chunk := await self.proc.stdout.read(1 << 16):
            self.data += chunk
            self._changed.set()
        self.closed = True
        self._changed.set()

    def send(self, text: str | bytes) -> None:
        self.proc.stdin.write(text.encode() if isinstance(text, str) else text)

    async def until(self, end: bytes = PROMPT, *, contains: bool = False, timeout: float = 20) -> bytes:
        """Output since the last call, once it ends with ``end`` (or contains it)."""
        deadline = time.monotonic() + timeout
        while True:
            chunk = bytes(self.data[self.pos :])
            if (end in chunk) if contains else chunk.endswith(end):
                cut = chunk.index(end) + len(end) if contains else len(chunk)
                self.pos += cut
                return chunk[:cut]
            if self.closed:
                raise AssertionError(f"session closed; output so far {chunk[-500:]!r}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"waited for {end!r}; output so far {chunk[-500:]!r}") from None

    async def quiet(self, seconds: float = 0.4) -> None:
        """Nothing more arrives (no second prompt, no output of discarded input)."""
        await asyncio.sleep(seconds)
        assert bytes(self.data[self.pos :]) == b""

    async def command(self, line: str, end: bytes = PROMPT) -> str:
        """Type ``line`` and Enter; check the echo; return the output up to (without) the next prompt."""
        self.send(line + "\r")
        out = await self.until(end)
        echo = line.encode() + b"\r\n"
        assert out.startswith(echo), (line, out[:200])
        return out[len(echo) : len(out) - len(end)].decode()

    async def close(self) -> None:
        self.proc.close()
        self._task.cancel()


async def open_term(conn: asyncssh.SSHClientConnection) -> Term:
    proc = await conn.create_process(term_type="xterm", term_size=(200, 50), encoding=None)
    term = Term(proc)
    greeting = await term.until()
    assert b"Welcome to the Platform Command Line Interface" in greeting
    assert b"ERROR" not in greeting.upper()
    assert greeting.endswith(b"\r\n" + PROMPT)
    return term


def no_bare_newlines(data: bytes) -> bool:
    return re.search(rb"(?<!\r)\n", data) is None


# ---------------------------------------------------------------------------------------------
# the line discipline on its own


def test_line_editor_enter_backspace_and_escapes() -> None:
    """Door contract: `\\r`, `\\n` and `\\r\\n` are each ONE Enter (also split across packets); backspace
    and Ctrl+U edit with `\\b \\b` echo; arrow-key escape sequences and other controls are ignored."""
    ed = _LineEditor(echo=True)
    lines: list[str] = []
    echoes: list[str] = []
    for text in ("a\rb\nc\r\nd\r", "\nex\x7fE\x08f\r", "x\x1b[A\x1bOBy\tz\r", "abc\x15q\r"):
        i = 0
        while i < len(text):
            echo, event, i = ed.feed(text, i)
            echoes.append(echo)
            if event is not None:
                assert event.kind == "line"
                lines.append(event.line)
    assert lines == ["a", "b", "c", "d", "ef", "xyz", "q"]
    assert "".join(echoes) == "a\nb\nc\nd\nex\b \bE\b \bf\nxyz\nabc\b \b\b \b\b \bq\n"
    ed = _LineEditor(echo=False)
    echo, event, _ = ed.feed("secret\r", 0)
    assert echo == "" and event is not None and event.line == "secret"
    ed = _LineEditor(echo=True)
    echo, event, _ = ed.feed("x" * (MAX_LINE_CHARS + 5) + "\r", 0)
    assert event is not None and event.kind == "long"
    assert ed.feed("\x03", 0)[1].kind == "interrupt"  # type: ignore[union-attr]
    assert ed.feed("\x04", 0)[1].kind == "eof"  # type: ignore[union-attr]


def test_line_editor_slices_flush_and_skips_long_lines_fast() -> None:
    """Door contract (issue 6 review, findings 3 and 4): input fed in slices (``stop``) gives the same
    lines as in one piece; at end of input a line typed without Enter is flushed as a last line (echoed
    with its newline), nothing when there is none; the rest of an over-long line is skipped without a
    per-character loop (30 MB in well under a second) and the line is refused, not run."""
    text = "show certs\x7f\x7f\x7f\x7f\x7fcert list own\r\nyes\rpartial"
    whole, sliced = _LineEditor(echo=True), _LineEditor(echo=True)
    assert [e.line for e in events_of(whole, text, len(text))] == ["show cert list own", "yes"]
    assert [e.line for e in events_of(sliced, text, 3)] == ["show cert list own", "yes"]
    assert sliced.flush() == ("\n", _Event("line", "partial"))
    assert sliced.flush() == ("", None)
    assert _LineEditor(echo=False).flush() == ("", None)

    ed = _LineEditor(echo=False)
    flood = "y" * (30 << 20)
    assert events_of(ed, flood, 64 * 1024) == []  # bench-free: speed is not asserted, only behaviour
    [event] = events_of(ed, "tail\r", 64 * 1024)
    assert event.kind == "long"
    [event] = events_of(ed, "help\r", 64 * 1024)
    assert event == _Event("line", "help")
    assert ed.feed("x" * 10, 0)[1] is None
    assert ed.flush()[1] == _Event("line", "x" * 10)
    ed.feed("z" * (MAX_LINE_CHARS + 1), 0)
    assert ed.flush()[1] == _Event("long")


def events_of(editor: _LineEditor, text: str, step: int) -> list[Any]:
    """Feed ``text`` in slices of ``step`` characters; the events it makes."""
    events = []
    i = 0
    while i < len(text):
        _echo, event, i = editor.feed(text, i, i + step)
        if event is not None:
            events.append(event)
    return events


# ---------------------------------------------------------------------------------------------
# an interactive session with a PTY, as `ssh admin@node` opens


async def test_prompt_echo_enter_and_discard_while_running(ssh_lab: SshLab) -> None:
    """Door contract: the prompt is exactly `admin:` at the start of a line with nothing after it; each
    command line is echoed first; `\\r`, `\\n`, `\\r\\n` are one Enter each; backspace edits; with a PTY
    every line ends in `\\r\\n`; input typed while a command runs is kept and read after it, one prompt
    per Enter (issue 14: deterministic type-ahead); `exit` ends the session with status 0."""
    async with connect(ssh_lab.door) as conn:
        term = await open_term(conn)
        await term.quiet(0.3)
        for enter in ("\r", "\n", "\r\n"):
            term.send("set cli pagination off" + enter)
            out = await term.until()
            assert out == b"set cli pagination off\r\nAutomatic pagination is turned off\r\nadmin:", enter
            await term.quiet(0.3)  # one Enter: one prompt
        term.send("set cli paginatiom\x7fn off\r")
        out = await term.until()
        assert out == b"set cli paginatiom\x08 \x08n off\r\nAutomatic pagination is turned off\r\nadmin:"
        term.send("\r")
        assert await term.until() == b"\r\nadmin:"  # an empty line: just a new prompt

        term.send("utils service restart Cisco Tomcat\r")
        await term.until(b"Cisco Tomcat[STARTING]\r\n", contains=True)
        term.send("show cert list own\r")  # typed while the restart runs: kept, read after it (type-ahead)
        out = await term.until(b"Self-signed certificate generated by system\r\n", contains=True)
        assert out.startswith(b"Cisco Tomcat[STARTED]\r\nadmin:"), out
        await term.until()
        term.send("set cert regen tomcat\ryes\r\r\r")  # an answer typed ahead, then two extra Enters
        await term.until(b"Successfully regenerated certificate for tomcat.", contains=True)
        await asyncio.sleep(0.5)
        tail = bytes(term.data[term.pos :])
        assert tail.count(b"admin:") == 3, tail  # one prompt per Enter, however the bytes arrived
        term.pos = len(term.data)

        listing = await term.command("utils service list")
        assert "Cisco Tomcat[STARTED]  Restart pending: tomcat\r\n" in listing  # the regen typed above
        assert no_bare_newlines(bytes(term.data))
        term.send("exit\r")
        await asyncio.wait_for(term.proc.wait_closed(), 20)
        assert term.proc.exit_status == 0
        await term.close()


async def test_every_command_and_the_third_party_ca_flow_over_ssh(ssh_lab: SshLab) -> None:
    """Platform CLI over SSH, R-OP-LIST, R-OP-CSR-1, R-OP-UPLOAD-1..4, R-OP-REGEN-1, R-OP-DELETE-1,
    R-OP-AUTHZ, R-SVC-1: every command, and the whole third-party CA flow typed at the prompt
    (`set csr gen` -> `show csr own` -> lab CA signs -> `set cert import trust` -> `set cert import own`),
    checked against the node's stores."""
    lab = ssh_lab.lab
    async with connect(ssh_lab.door) as conn:
        term = await open_term(conn)
        line_re = re.compile(
            r"^([\w.-]+)/([\w.-]+)\.pem: "
            r"(Self-signed certificate generated by system|Certificate Signed by .+|Trust Certificate)$"
        )

        # show cert list own|trust: every line's path is a valid argument of show cert own|trust
        for kind in ("own", "trust"):
            out = await term.command(f"show cert list {kind}")
            lines = out.split("\r\n")[:-1]
            assert lines, kind
            for line in lines:
                match = line_re.match(line)
                assert match, line
                details = await term.command(f"show cert {kind} {match[1]}/{match[2]}.pem")
                assert re.search(r"\r\n           To:   \w{3} \w{3} \d\d \d\d:\d\d:\d\d UTC \d{4}\r\n", details), (
                    details
                )
                assert details.count("-----BEGIN CERTIFICATE-----") == 1
                assert "Executed command unsuccessfully" not in details
        own = await term.command("show cert list own")
        assert "tomcat/tomcat.pem: Self-signed certificate generated by system\r\n" in own
        assert "-----BEGIN CERTIFICATE-----" in await term.command("show cert own tomcat")

        # CSR
        assert await term.command("set csr gen tomcat", end=b"Include OU in CSR (yes|no)? ") == ""
        assert await term.command("yes") == "Successfully Generated CSR for tomcat\r\n"
        assert await term.command("show csr list own") == "tomcat/tomcat.csr\r\n"
        csr_out = await term.command("show csr own tomcat")
        assert csr_out.count("-----BEGIN CERTIFICATE REQUEST-----") == 1
        assert csr_out.count("-----END CERTIFICATE REQUEST-----") == 1
        csr_pem = csr_out.replace("\r\n", "\n").encode()
        x509.load_pem_x509_csr(csr_pem)

        # the lab CA signs; the root goes into tomcat-trust, the leaf becomes the identity
        ca = LabCA(lab.clock)
        root = ca.create_ca("SshRoot", cn="certsim SSH Root")
        signed = ca.sign_csr("ssh-tomcat", issuer="SshRoot", csr_pem=csr_pem)
        for kind, pem in (("trust", root.pem()), ("own", signed.pem())):
            out = await term.command(f"set cert import {kind} tomcat", end=b"Paste the Certificate and Hit Enter\r\n")
            assert out == ""
            term.send("".join(f"{line}\r" for line in pem.decode().splitlines()) + "\r")
            out = (await term.until()).decode()
            assert (
                "-----END CERTIFICATE-----\r\n\r\n"
                "Successfully imported certificate for tomcat.\r\n"
                "Please restart services related to tomcat for the new certificate to become active.\r\n"
            ) in out, out[-400:]
            assert out.endswith("\r\nadmin:")
        trusted = {r["sha256"]: r["name"] for r in await lab.request(NODE, "list", {"store": "tomcat-trust"})}
        root_fp = root.cert.fingerprint(root.cert.signature_hash_algorithm).hex()  # type: ignore[arg-type]
        assert root_fp in trusted
        ident = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")
        assert ident["source"] == "ca-signed"
        assert ident["sha256"] == signed.cert.fingerprint(signed.cert.signature_hash_algorithm).hex()  # type: ignore[arg-type]
        assert "Cisco Tomcat" in ident["restart_pending"]  # R-OP-UPLOAD-4
        own = await term.command("show cert list own")
        assert "tomcat/tomcat.pem: Certificate Signed by certsim SSH Root\r\n" in own
        assert "Cisco Tomcat[STARTED]  Restart pending: tomcat" in await term.command("utils service list")
        out = await term.command("utils service restart Cisco Tomcat")
        assert out == (
            "Do not press Ctrl+C while the service is restarting. If the service has not restarted properly, "
            "execute the same command again.\r\nService Manager is running\r\n"
            "Cisco Tomcat[STOPPING]\r\nCisco Tomcat[STARTING]\r\nCisco Tomcat[STARTED]\r\n"
        )
        ident = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")
        assert "Cisco Tomcat" not in ident["restart_pending"]
        out = await term.command("show csr own tomcat")  # the CSR was deleted by the import (R-OP-UPLOAD-3)
        assert out.endswith("\r\nExecuted command unsuccessfully\r\n")

        # regen overwrites the CA-signed certificate (R-OP-REGEN-1)
        out = await term.command("set cert regen tomcat", end=b"Proceed with regeneration (yes|no)? ")
        assert (
            out == "WARNING: This operation will overwrite any CA signed certificate previously imported for tomcat\r\n"
        )
        out = await term.command("yes")
        assert out.startswith(
            "Successfully regenerated certificate for tomcat.\r\n"
            "Please restart services related to tomcat for the new certificate to become active.\r\n"
        )
        ident = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")
        assert ident["source"] == "self-signed"

        # delete (R-OP-DELETE-1: trust only)
        name = trusted[root_fp]
        out = await term.command(f"set cert delete tomcat-trust {name}.pem")
        assert out == f"Successfully deleted certificate {name}.pem from tomcat-trust.\r\n"
        assert root_fp not in {r["sha256"] for r in await lab.request(NODE, "list", {"store": "tomcat-trust"})}
        out = await term.command("set cert delete tomcat tomcat.pem")
        assert "only trust certificates can be deleted" in out and out.endswith("Executed command unsuccessfully\r\n")

        # authz keys (R-OP-AUTHZ), CTL, replication state, errors, help
        before = await lab.request(NODE, "authz_status", {})
        out = await term.command("set key regen authz encryption")
        assert out.startswith("Successfully regenerated the authz encryption key.\r\n")
        assert (await lab.request(NODE, "authz_status", {}))["encryption"] != before["encryption"]
        out = await term.command("utils ctl update CTLFile")
        assert "not in mixed mode" in out and out.endswith("Executed command unsuccessfully\r\n")
        out = await term.command("utils ctl set-cluster mixed-mode")
        assert out.startswith("Updating CTL file\r\nCTL file Updated\r\n") and "now in mixed-mode" in out
        assert (await term.command("utils ctl update CTLFile")).startswith("Updating CTL file\r\nCTL file Updated\r\n")
        out = await term.command("utils dbreplication runtimestate")
        assert out.startswith("Server Time: ")
        assert "Cluster Detailed View from cucm1 (2 Servers):" in out
        assert re.search(r"\r\ncucm1 +cucm1\.lab\.example +cucm +Y +0 +\(2\) Setup Completed\r\n", out), out
        assert re.search(r"\r\ncucm2 +cucm2\.lab\.example +cucm +Y +0 +\(2\) Setup Completed\r\n", out), out  # asked
        assert (await term.command("show version active")).startswith("Active Master Version: ")
        assert "Host Name           : cucm1\r\n" in await term.command("show status")
        out = await term.command("show network cluster")
        assert "cucm1.lab.example cucm1 Publisher callmanager DBPub" in out and out.endswith("Successful\r\n")
        assert "account name    : " in await term.command("show myself")
        out = await term.command("show cert own nosuchunit")
        assert out.endswith("Executed command unsuccessfully\r\n")
        assert await term.command("frobnicate") == "Executed command unsuccessfully\r\nNo valid command entered\r\n"
        assert "utils dbreplication runtimestate" in await term.command("help")
        assert no_bare_newlines(bytes(term.data))
        term.send("quit\r")
        await asyncio.wait_for(term.proc.wait_closed(), 20)
        assert term.proc.exit_status == 0
        await term.close()


async def test_ctrl_c_abandons_a_question(ssh_lab: SshLab) -> None:
    """Door contract: Ctrl+C at a question abandons the command (nothing changes) and returns to `admin:`."""
    async with connect(ssh_lab.door) as conn:
        term = await open_term(conn)
        await term.command("set cert regen tomcat", end=b"Proceed with regeneration (yes|no)? ")
        term.send("\x03")
        assert await term.until() == b"^C\r\nCommand cancelled\r\nadmin:"
        ident = next(r for r in await ssh_lab.lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")
        await term.command("set cli pagination off")
        assert (
            ident["sha256"]
            == next(r for r in await ssh_lab.lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")["sha256"]
        )
        await term.close()


async def test_a_chain_pasted_with_blank_lines_is_imported_whole_and_nothing_after_it_runs(ssh_lab: SshLab) -> None:
    """Door contract, R-OP-UPLOAD-1 (issue 6 review, finding 2): a chain pasted with blank lines between
    its certificates is ONE paste, also when the paste arrives in two packets split at the blank line;
    whatever was pasted after the end of a paste is discarded, never run at `admin:` (here a regen and
    its `yes`, which would replace the tomcat certificate)."""
    lab = ssh_lab.lab
    ca = LabCA(lab.clock)
    pems = [ca.create_ca(f"PasteRoot{i}").pem().decode() for i in range(4)]
    tomcat = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")["sha256"]

    def typed(pem: str) -> str:
        return "".join(f"{line}\r" for line in pem.splitlines())

    async with connect(ssh_lab.door) as conn:
        term = await open_term(conn)
        await term.command("set cert import trust tomcat", end=b"Paste the Certificate and Hit Enter\r\n")
        term.send(typed(pems[0]) + "\r\r" + typed(pems[1]) + "\r" + "set cert regen tomcat\ryes\rhelp\r")
        out = (await term.until()).decode()
        assert out.count("Successfully imported certificate for tomcat.") == 1, out[-600:]
        assert "WARNING" not in out and "Proceed with regeneration" not in out and "Syntax" not in out
        await term.quiet(0.5)

        await term.command("set cert import trust tomcat", end=b"Paste the Certificate and Hit Enter\r\n")
        term.send(typed(pems[2]) + "\r")
        await asyncio.sleep(0.03)  # the rest of the paste comes in a later packet
        term.send("\r" + typed(pems[3]) + "\r")
        out = (await term.until()).decode()
        assert out.count("Successfully imported certificate for tomcat.") == 1, out[-600:]
        await term.quiet(0.3)
        assert await term.command("set cli pagination off") == "Automatic pagination is turned off\r\n"
        await term.close()
    names = {r["sha256"] for r in await lab.request(NODE, "list", {"store": "tomcat-trust"})}
    for pem in pems:
        cert = x509.load_pem_x509_certificate(pem.encode())
        assert cert.fingerprint(cert.signature_hash_algorithm).hex() in names  # type: ignore[arg-type]
    after = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")["sha256"]
    assert after == tomcat  # the pasted `set cert regen tomcat` / `yes` never ran


async def test_exec_ends_the_last_line_at_eof_and_ctrl_c_fails_the_command(ssh_lab: SshLab) -> None:
    """Door contract (issue 6 review, findings 3, 5 and 6): in an exec, a last answer or PEM line without
    a newline is still read at end of input; Ctrl+C at a question or in a paste exits 1, like end of
    input does; without a PTY what follows a question starts on a new line; a unit the node would
    refuse fails before any question (nothing is asked, exit 1)."""
    lab = ssh_lab.lab
    before = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")["sha256"]
    async with connect(ssh_lab.door) as conn:
        result = await conn.run("set cert regen tomcat", input="yes", timeout=30)
        assert result.exit_status == 0, result.stdout
        assert "Proceed with regeneration (yes|no)? \nSuccessfully regenerated certificate for tomcat." in str(
            result.stdout
        )
        after = next(r for r in await lab.request(NODE, "identity_list", {}) if r["unit"] == "tomcat")["sha256"]
        assert after != before

        root = LabCA(lab.clock).create_ca("NoNewlineRoot")
        result = await conn.run("set cert import trust tomcat", input=root.pem().decode().rstrip("\n"), timeout=20)
        assert result.exit_status == 0, result.stdout
        assert "Successfully imported certificate for tomcat." in str(result.stdout)

        for command, typed in (("set cert regen tomcat", "\x03"), ("set cert import trust tomcat", "-----BEGIN\n\x03")):
            result = await conn.run(command, input=typed, timeout=20)
            assert result.exit_status == 1, (command, result.stdout)
            assert str(result.stdout).endswith("\nCommand cancelled\n"), result.stdout

        result = await conn.run("set csr gen ITLRecovery", input="yes\n", timeout=20)
        assert result.exit_status == 1
        assert result.stdout == (
            "ITLRecovery is issued by the cluster; it has no CSR (regenerate it instead)\n"
            "Executed command unsuccessfully\n"
        )
        result = await conn.run("set cert regen cup", input="yes\n", timeout=20)
        assert result.exit_status == 1 and "Proceed" not in str(result.stdout)
        assert "a cucm node has no 'cup' identity certificate" in str(result.stdout)
    assert [r["unit"] for r in await lab.request(NODE, "csr_list", {})] == []


# ---------------------------------------------------------------------------------------------
# exec, SFTP, forwarding: nothing but platform commands


async def test_exec_runs_one_platform_command_and_nothing_else(ssh_lab: SshLab) -> None:
    """Door contract: `ssh node CMD` runs CMD as ONE platform command (exit 0, or 1 when executed
    unsuccessfully), answers and pastes come from stdin (end of input ends a paste), never an OS shell;
    SFTP, other subsystems, and local and remote port forwarding are refused."""
    async with connect(ssh_lab.door) as conn:
        result = await conn.run("show cert list own", timeout=20)
        assert result.exit_status == 0
        assert "tomcat/tomcat.pem: Self-signed certificate generated by system\n" in str(result.stdout)
        for command in ("ls /", "/bin/sh -c id", "bash", "scp -f /etc/passwd"):
            result = await conn.run(command, timeout=20)
            assert result.exit_status == 1, command
            assert result.stdout == "Executed command unsuccessfully\nNo valid command entered\n"
        result = await conn.run("set cert regen tomcat", stdin=asyncssh.DEVNULL, timeout=20)  # no answer: abandoned
        assert result.exit_status == 1
        assert str(result.stdout).endswith("Proceed with regeneration (yes|no)? \nCommand cancelled\n")
        result = await conn.run("set csr gen tomcat", input="no\n", timeout=20)
        assert result.exit_status == 0
        assert result.stdout == "Include OU in CSR (yes|no)? \nSuccessfully Generated CSR for tomcat\n"
        ca = LabCA(ssh_lab.lab.clock)
        root = ca.create_ca("ExecRoot")
        result = await conn.run("set cert import trust tomcat", input=root.pem().decode(), timeout=20)
        assert result.exit_status == 0, result.stdout
        assert "Successfully imported certificate for tomcat." in str(result.stdout)

        with pytest.raises(asyncssh.ChannelOpenError):  # the sftp subsystem request is refused
            await conn.start_sftp_client()
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.create_process(subsystem="sftp")
        with pytest.raises(asyncssh.ChannelOpenError):
            await conn.open_connection("127.0.0.1", ssh_lab.door.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 22)


# ---------------------------------------------------------------------------------------------
# authentication, limits and the host key: no lab needed (the node is never reached)


async def test_authentication(fake_door: SshDoor, caplog: pytest.LogCaptureFixture) -> None:
    """Door contract: password and keyboard-interactive logins with the lab's credentials; a wrong
    password or user is refused, counted per peer IP and slowed by the Throttle; public-key
    authentication is not offered; no password reaches a log line."""
    caplog.set_level(logging.DEBUG)
    throttle = fake_door.throttle
    for user, password in ((USER, "wrong-password-1"), ("root", PASSWORD)):
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(fake_door, username=user, password=password, preferred_auth="password"):
                pass
    assert throttle.failures("127.0.0.1") == 2
    key = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(fake_door, client_keys=[key], password=None, preferred_auth="publickey"):
            pass
    async with connect(fake_door, preferred_auth="keyboard-interactive") as conn:
        result = await conn.run("set cli pagination off", timeout=20)
        assert result.stdout == "Automatic pagination is turned off\n"
    assert throttle.failures("127.0.0.1") == 0  # a success resets the count
    async with connect(fake_door, preferred_auth="password") as conn:
        assert (await conn.run("help", timeout=20)).exit_status == 0

    throttle.free = 0  # from now on every answer to this peer waits
    start = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(fake_door, password="wrong-password-2", preferred_auth="password"):
            pass
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(fake_door, password="wrong-password-3", preferred_auth="password"):
            pass
    assert time.monotonic() - start >= 0.5 + 1.0 - 0.1  # 0.5 s, then 1 s
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ssh-login-refused" in logged
    for secret in (PASSWORD, "wrong-password-1", "wrong-password-2"):
        assert secret not in logged


async def test_wrong_passwords_end_the_connection_after_max_tries(fake_door: SshDoor) -> None:
    """Issue 14: like sshd's MaxAuthTries, the sixth wrong password on one connection ends it, so a
    client that keeps offering passwords (some retry forever) is disconnected instead of looping."""
    from cluster.doors.ssh import MAX_AUTH_TRIES

    fake_door.throttle.free = 100  # this test counts tries, not the slowdown
    offered: list[str] = []

    class Persistent(asyncssh.SSHClient):
        def password_auth_requested(self) -> str:
            offered.append(f"wrong-{len(offered)}")
            return offered[-1]

    with pytest.raises((asyncssh.DisconnectError, asyncssh.PermissionDenied, ConnectionError)) as info:
        async with asyncssh.connect(
            "127.0.0.1",
            fake_door.port,
            username=USER,
            known_hosts=None,
            client_keys=None,
            client_factory=Persistent,
            preferred_auth="password",
        ):
            pass
    assert len(offered) == MAX_AUTH_TRIES, offered
    assert "Too many authentication failures" in str(info.value) or isinstance(info.value, ConnectionError)


async def test_parallel_wrong_passwords_wait_for_each_other(tmp_path: Path) -> None:
    """Door contract, Throttle (issue 6 review, finding 1): wrong passwords tried in parallel from one
    peer are slowed like the same attempts one after another: each counts as a failure from before its
    wait, so the burst cannot all pass before the first is counted."""
    throttle = Throttle(free=2, max_delay_s=1.0)

    async def request(op: str, args: dict[str, Any]) -> Any:
        raise NotFound(op)

    door = await start_door(tmp_path, request, SimClock(EPOCH), throttle)

    async def wrong(n: int) -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(door, password=f"wrong-{n}", preferred_auth="password"):
                pass

    try:
        start = time.monotonic()
        await asyncio.gather(*(wrong(n) for n in range(6)))
        assert time.monotonic() - start >= 1.0 - 0.05  # delays 0, 0, 0.5, 1, 1, 1 (in parallel)
        assert throttle.failures("127.0.0.1") == 6
    finally:
        await door.close()


async def test_a_flood_of_input_never_stalls_the_event_loop(tmp_path: Path) -> None:
    """Door contract (issue 6 review, finding 4): megabytes of input held while a command runs (up to
    the 2 MiB flow-control limit, then more) are interpreted in slices with the event loop served in
    between, so other sessions and nodes keep running; the over-long line is refused (exit 1)."""

    async def request(op: str, args: dict[str, Any]) -> Any:
        await asyncio.sleep(0.5)  # a slow node: the input piles up meanwhile
        return {"role": "cucm", "publisher": True}

    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            await asyncio.sleep(0)
            ticks += 1

    door = await start_door(tmp_path, request, SimClock(EPOCH))
    try:
        async with connect(door) as conn:
            tick = asyncio.create_task(ticker())
            result = await conn.run("set cert regen tomcat", input="z" * (12 << 20) + "\nyes\n", timeout=60)
            stop.set()
            await tick
        assert result.exit_status == 1
        assert str(result.stdout).endswith(
            "\nInput line too long: the limit is 65536 characters; the line was ignored\n"
            "Executed command unsuccessfully\n"
        )
        assert ticks > 1  # other tasks ran while the flood was interpreted (slices, not one long run)
    finally:
        await door.close()


async def test_input_size_limits(fake_door: SshDoor) -> None:
    """Door contract: a line over 64 KiB is refused with a clear message (and not interpreted); a pasted
    certificate over 1 MiB is refused; the session goes on."""
    async with connect(fake_door) as conn:
        term = await open_term(conn)
        term.send("show " + "x" * MAX_LINE_CHARS + "\r")
        out = await term.until(timeout=30)
        assert out.endswith(
            b"\r\nInput line too long: the limit is 65536 characters; the line was ignored\r\n"
            b"Executed command unsuccessfully\r\nadmin:"
        )
        assert await term.command("set cert import trust tomcat", end=b"Paste the Certificate and Hit Enter\r\n") == ""
        body = "".join(f"{'A' * 64}\r" for _ in range(MAX_PASTE_BYTES // 65 + 100))
        term.send(f"-----BEGIN CERTIFICATE-----\r{body}-----END CERTIFICATE-----\r\r")
        out = await term.until(timeout=60)
        assert out.endswith(
            b"\r\nPasted text too large: the limit is 1048576 bytes; nothing was imported\r\n"
            b"Executed command unsuccessfully\r\nadmin:"
        )
        assert await term.command("set cli pagination off") == "Automatic pagination is turned off\r\n"
        await term.close()


async def test_host_key_is_ed25519_persisted_and_reused(tmp_path: Path) -> None:
    """Door contract: the host key is ed25519, made on first use, kept with mode 0600 and reused."""

    async def request(op: str, args: dict[str, Any]) -> Any:
        return []

    keys = []
    for _ in range(2):
        door = await start_door(tmp_path, request, SimClock(EPOCH))
        assert door.port > 0
        async with connect(door) as conn:
            key = conn.get_server_host_key()
            assert key is not None and key.get_algorithm() == "ssh-ed25519"
            keys.append(key.public_data)
        await door.close()
    assert keys[0] == keys[1]
    path = tmp_path / "ssh" / f"{NODE}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_without_a_key_path_the_host_key_is_ephemeral(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Door contract (issue 6 review, finding 8): ``host_key_path=None`` gives an ed25519 host key made
    for that server and kept in memory: nothing is written (not in the working directory either)."""

    async def request(op: str, args: dict[str, Any]) -> Any:
        return []

    monkeypatch.chdir(tmp_path)
    keys = []
    for _ in range(2):
        door = await start_ssh_server(
            host="127.0.0.1",
            port=0,
            node=NODE,
            request=request,
            credentials=Credentials(USER, PASSWORD),
            throttle=Throttle(),
            host_key_path=None,
            clock=SimClock(EPOCH),
        )
        try:
            async with connect(door) as conn:
                key = conn.get_server_host_key()
                assert key is not None and key.get_algorithm() == "ssh-ed25519"
                keys.append(key.public_data)
                assert (await conn.run("set cli pagination off", timeout=20)).exit_status == 0
        finally:
            await door.close()
    assert keys[0] != keys[1]
    assert list(tmp_path.iterdir()) == []
