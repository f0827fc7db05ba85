"""The SSH front door of a node: its platform CLI at the ``admin:`` prompt, over a real SSH server.

This module only does I/O (asyncssh); ``cluster.doors.platform_cli`` interprets the lines. What it does:

- authentication: password and keyboard-interactive against the lab's ``Credentials``; wrong
  ones are refused and slowed per peer IP by the ``Throttle``; public-key, host-based and GSS
  authentication are not offered. Passwords are never logged.
- a session is the platform CLI and nothing else: no shell, no SFTP or other subsystem, no SCP,
  no TCP/UNIX forwarding, no X11 or agent forwarding.
- ``ssh admin@node 'show cert list own'`` (an exec request) runs that one platform command,
  reading any answer or pasted certificate it asks for from stdin, and exits with status 0, or 1
  when the command was executed unsuccessfully; it is never handed to an operating system shell.
- line discipline: the server echoes what is typed (interactive sessions, and execs with a PTY),
  with backspace/DEL and Ctrl+U editing; ``\\r``, ``\\n`` and ``\\r\\n`` are each one Enter; escape
  sequences (arrow keys) and other control characters are ignored; Ctrl+C abandons a question or
  a paste; Ctrl+D on an empty line ends the session. Type-ahead is kept, as a terminal keeps it:
  what arrives while a command runs (or with the line that started it) is read, in order, once the
  command is done, whatever the packets and their timing: ``yes\\r\\r\\r`` answers a question and
  then shows two more prompts, every run (issue 14: the rule no longer depends on timing).
  A line over ``MAX_LINE_CHARS`` is refused. Output lines end in ``\\r\\n`` when a PTY was
  requested, ``\\n`` otherwise; the prompt is written in one write at the start of a line, and
  what follows an unechoed answer (an exec without a PTY) starts on a new line.
- paste: a blank line followed, in input already received (or arriving within
  ``PASTE_SETTLE_S``), by ``-----BEGIN`` does not end a paste, so a chain pasted with blank lines
  between its certificates is imported whole; input received after the end of a paste (or after
  Ctrl+C or an over-long line abandoned it) is discarded, never run as commands.
- end of input (the client's EOF) ends a last line typed without Enter: it is run like any line
  (``printf yes | ssh node 'set cert regen tomcat'``), then an exec's pending paste or question ends.
- input is interpreted in slices of ``SLICE_CHARS`` with the event loop served in between, and
  the rest of an over-long line is skipped without looking at each character, so a flood of input
  on one session never stalls the others (the process serves every node's doors).
- the host key is ed25519, made on first use and kept at ``host_key_path`` (mode 0600); without
  a path, a key made for this server only and kept in memory.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import os
import re
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from cluster.doors.auth import Credentials, RequestFn, Throttle
from cluster.doors.platform_cli import MAX_LINE_CHARS, PlatformCli
from node.clock import Clock

log = logging.getLogger(__name__)

MAX_PENDING_CHARS = 2 << 20  # unprocessed input held before the channel stops reading (flow control)
SLICE_CHARS = 64 * 1024  # input interpreted between two turns of the event loop
EVENTS_PER_SLICE = 256  # lines handled between two turns of the event loop
MAX_AUTH_TRIES = 6  # wrong passwords before the connection is closed (OpenSSH sshd MaxAuthTries default)
PASTE_SETTLE_S = 0.15  # wall seconds: how long a blank line that may end a paste waits for more of it
_PLAIN = re.compile(r"[^\x00-\x1f\x7f]+")  # typed text: anything but C0 controls and DEL
_LINE_END = re.compile(r"[\r\n\x03]")  # where skipping an over-long line stops: Enter or Ctrl+C
_NON_BLANK = re.compile(r"[^ \t\r\n]")
_BEGIN = "-----BEGIN "
_BACKSPACE = ("\x7f", "\x08")
_CTRL_C, _CTRL_D, _CTRL_U, _ESC = "\x03", "\x04", "\x15", "\x1b"


@dataclass(frozen=True)
class _Event:
    kind: str  # line | long | interrupt | eof | end
    line: str = ""


class _LineEditor:
    """Turns typed characters into lines: echo, backspace, one Enter for ``\\r``/``\\n``/``\\r\\n``."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self._buf: list[str] = []
        self._overflow = False
        self._after_cr = False
        self._esc = 0  # 1 after ESC, 2 inside a CSI/SS3 sequence

    def feed(self, text: str, start: int, stop: int | None = None) -> tuple[str, _Event | None, int]:
        """Consume ``text[start:stop]`` up to and including the next event; returns the echo, the
        event (or None when the text ran out) and where to continue. Runs of typed text are taken
        whole, and the rest of an over-long line is skipped with one search."""
        echo: list[str] = []
        end = len(text) if stop is None else min(stop, len(text))
        i = start
        while i < end:
            if not self._esc and (after_run := self._run(text, i, end, echo)) > i:
                i = after_run
                continue
            ch = text[i]
            i += 1
            after_cr, self._after_cr = self._after_cr, False
            if self._esc:
                if self._esc == 1 and ch in "[O":
                    self._esc = 2
                elif self._esc == 1 or "\x40" <= ch <= "\x7e":
                    self._esc = 0
                continue
            if ch == "\n" and after_cr:
                continue  # the second half of \r\n
            if ch in "\r\n":
                self._after_cr = ch == "\r"
                return self._out(echo, "\n"), self._take_line(), i
            if ch in _BACKSPACE:
                if self._buf and not self._overflow:
                    self._buf.pop()
                    echo.append("\b \b")
            elif ch == _CTRL_U:
                if not self._overflow:
                    echo.append("\b \b" * len(self._buf))
                    self._buf.clear()
            elif ch == _CTRL_C:
                self._buf.clear()
                self._overflow = False
                return self._out(echo, "^C\n"), _Event("interrupt"), i
            elif ch == _CTRL_D:
                if not self._buf and not self._overflow:
                    return self._out(echo, ""), _Event("eof"), i
            elif ch == _ESC:
                self._esc = 1
            # typed text was taken by ``_run``; any other control character (tab included) is ignored
        return self._out(echo, ""), None, i

    def _run(self, text: str, i: int, end: int, echo: list[str]) -> int:
        """Take a run of typed text at ``i`` whole (or skip to where an over-long line ends);
        returns where the run ends (``i`` when there is none)."""
        if self._overflow:
            found = _LINE_END.search(text, i, end)
            skip_to = end if found is None else found.start()
        elif run := _PLAIN.match(text, i, end):
            skip_to = run.end()
            if len(run.group()) > MAX_LINE_CHARS - len(self._buf):
                self._overflow = True
                self._buf.clear()
            else:
                self._buf.extend(run.group())
                echo.append(run.group())
        else:
            return i
        if skip_to > i:
            self._after_cr = False
        return skip_to

    def flush(self) -> tuple[str, _Event | None]:
        """End of input: a line typed without Enter becomes a last line (None when there is none)."""
        self._esc = 0
        self._after_cr = False
        if not self._buf and not self._overflow:
            return "", None
        return self._out([], "\n"), self._take_line()

    def _out(self, echo: list[str], tail: str) -> str:
        return "".join(echo) + tail if self.echo else ""

    def _take_line(self) -> _Event:
        line = "".join(self._buf)
        overflow = self._overflow
        self._buf.clear()
        self._overflow = False
        return _Event("long") if overflow else _Event("line", line)


class _Session(asyncssh.SSHServerSession[bytes]):
    """One SSH channel: a platform CLI session (shell) or a single platform command (exec)."""

    def __init__(self, door: SshDoor) -> None:
        self._door = door
        self._cli = PlatformCli(door.node, door.request, door.clock, user=door.credentials.user)
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._pty = False
        self._command: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._pending_chars = 0
        self._chunk = ""  # received input being interpreted, from ``_pos`` on
        self._pos = 0
        self._paused = False
        self._wake = asyncio.Event()
        self._eof = False
        self._busy = False
        self._at_line_start = True
        self._task: asyncio.Task[None] | None = None

    # -- asyncssh callbacks ----------------------------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan

    def pty_requested(self, term_type: str, term_size: tuple[int, int, int, int], term_modes: object) -> bool:
        self._pty = True
        return True

    def shell_requested(self) -> bool:
        return True

    def exec_requested(self, command: str) -> bool:
        if len(command) > MAX_LINE_CHARS:
            return False
        self._command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        self._door.log.info("ssh-subsystem-refused", subsystem=subsystem[:64])
        return False  # no SFTP, no other subsystem

    def session_started(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._main(), name=f"ssh-cli:{self._door.node}")

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        text = self._decoder.decode(data)
        if datatype is not None or not text:
            return
        self._pending.append(text)
        self._pending_chars += len(text)
        if self._pending_chars > MAX_PENDING_CHARS and self._chan is not None and not self._paused:
            self._chan.pause_reading()
            self._paused = True
        self._wake.set()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake.set()
        return True  # keep the channel open for our output

    def break_received(self, msec: int) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # -- output ------------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        if not text or self._chan is None or self._chan.is_closing():
            return
        self._at_line_start = text.endswith("\n")
        if self._pty:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionError):
            self._chan.write(text.encode())

    def _write_prompt(self) -> None:
        prompt = self._cli.prompt
        if prompt:
            self._write(prompt if self._at_line_start else "\n" + prompt)

    # -- input -------------------------------------------------------------------------------------

    async def _events(self, editor: _LineEditor) -> AsyncGenerator[_Event, None]:
        """Events from the input, a slice at a time: the event loop gets a turn after every
        ``SLICE_CHARS`` characters or ``EVENTS_PER_SLICE`` events. While an event is being handled
        the consumer may drop the input not yet interpreted (``_discard_typeahead``)."""
        while True:
            while self._pos >= len(self._chunk):
                if self._pending:
                    self._take_pending()
                    continue
                if self._eof:
                    echo, last = editor.flush()
                    self._write(echo)
                    if last is not None:
                        yield last
                    yield _Event("end")
                    return
                self._wake.clear()
                await self._wake.wait()
            stop = self._pos + SLICE_CHARS
            events = 0
            while self._pos < min(stop, len(self._chunk)) and events < EVENTS_PER_SLICE:
                echo, event, self._pos = editor.feed(self._chunk, self._pos, stop)
                self._write(echo)
                if event is not None:
                    events += 1
                    yield event
            await asyncio.sleep(0)

    def _take_pending(self) -> None:
        self._chunk = "".join(self._pending)
        self._pos = 0
        self._pending.clear()
        self._pending_chars = 0
        if self._paused and self._chan is not None:
            self._chan.resume_reading()
            self._paused = False

    def _discard_typeahead(self) -> None:
        """Drop the input received but not yet interpreted."""
        self._chunk, self._pos = "", 0
        self._pending.clear()
        self._pending_chars = 0
        if self._paused and self._chan is not None:
            self._chan.resume_reading()
            self._paused = False

    def _next_text(self) -> str:
        """Up to 16 characters of the input not yet interpreted, from its first non-blank one
        (enough to recognise ``-----BEGIN``); empty while there is nothing but blank space."""
        got: list[str] = []
        size = 0
        for piece, begin in ((self._chunk, self._pos), *((p, 0) for p in self._pending)):
            start = begin
            if not got:
                found = _NON_BLANK.search(piece, begin)
                if found is None:
                    continue
                start = found.start()
            got.append(piece[start : start + 16 - size])
            size += len(got[-1])
            if size >= 16:
                break
        return "".join(got)

    async def _paste_lookahead(self) -> str:
        """What follows a blank line that may end a paste: the next text already received or
        arriving within ``PASTE_SETTLE_S`` (a paste can be split anywhere between packets)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PASTE_SETTLE_S
        text = self._next_text()
        while _BEGIN.startswith(text) and len(text) < len(_BEGIN) and not self._eof:  # undecided yet
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
            text = self._next_text()
        return text

    async def _run_line(self, line: str) -> None:
        more = await self._paste_lookahead() if self._cli.ends_paste(line) else ""
        self._busy = True
        try:
            async for out in self._cli.handle_line(line, more=more):
                self._write(out)
        finally:
            self._busy = False

    # -- the session -------------------------------------------------------------------------------

    async def _main(self) -> None:
        status = 0
        try:
            status = await (self._shell() if self._command is None else self._exec(self._command))
        except asyncio.CancelledError:
            raise
        except Exception:  # the adapter must not leave a session hanging
            self._door.log.exception("ssh-session-failed")
            status = 1
        if self._chan is not None and not self._chan.is_closing():
            self._chan.exit(status)

    async def _shell(self) -> int:
        self._write(self._cli.greeting())
        self._write_prompt()
        async with contextlib.aclosing(self._events(_LineEditor(echo=True))) as events:
            async for event in events:
                if event.kind in ("end", "eof"):
                    break
                await self._handle(event)
                if self._cli.closed:
                    break
                self._write_prompt()
        return 0

    async def _exec(self, command: str) -> int:
        """One platform command; answers and pastes it asks for come from stdin."""
        await self._run_line(command)
        if not self._cli.idle:
            self._write_prompt()
            async with contextlib.aclosing(self._events(_LineEditor(echo=self._pty))) as events:
                async for event in events:
                    if not self._at_line_start:
                        self._write("\n")  # after a question whose answer was not echoed
                    if event.kind in ("end", "eof"):
                        async for out in self._cli.end_of_input():
                            self._write(out)
                    else:
                        await self._handle(event)
                    if self._cli.idle:
                        break
                    self._write_prompt()
        return 0 if self._cli.last_ok else 1

    async def _handle(self, event: _Event) -> None:
        pasting = self._cli.pasting
        if event.kind == "line":
            await self._run_line(event.line)
        elif event.kind == "long":
            self._write(self._cli.reject_long_line())
        elif event.kind == "interrupt":
            self._write(self._cli.cancel())
        if pasting and not self._cli.pasting:
            self._discard_typeahead()  # the rest of what was pasted is not a command


class _Server(asyncssh.SSHServer):
    """One SSH connection: authentication and the refusal of everything but platform CLI sessions."""

    def __init__(self, door: SshDoor) -> None:
        self._door = door
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"
        self._failures = 0  # wrong passwords on this connection (MAX_AUTH_TRIES ends it)

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "?"
        self._door.connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._door.connections.discard(self._conn)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._check(username, password)

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return "", "", "", [("Password: ", False)]

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        return len(responses) == 1 and await self._check(username, responses[0])

    async def _check(self, username: str, password: str) -> bool:
        # the attempt counts as a failure from before its wait until the password proves right, so
        # parallel attempts from one peer wait for each other's (Throttle)
        async with self._door.throttle.attempt(self._peer) as attempt:
            ok = self._door.credentials.check(username, password)
            if ok:
                attempt.succeeded()
            else:
                attempt.failed()
                self._door.log.warning("ssh-login-refused", user=username[:64], peer=self._peer)
        if not ok:
            self._failures += 1
            if self._failures >= MAX_AUTH_TRIES and self._conn is not None:
                # as sshd's MaxAuthTries: the connection ends, so a client cannot retry forever on it
                self._door.log.warning("ssh-too-many-failures", peer=self._peer, tries=self._failures)
                self._conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")
        return ok

    def session_requested(self) -> _Session:
        return _Session(self._door)


class _StdlibLog:
    """Structured calls (``event, **fields``) onto a stdlib logger, for a door run without a node log."""

    def __init__(self, node: str) -> None:
        self._node = node

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        log.log(level, "%s node=%s %s", event, self._node, extra, exc_info=exc_info)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, exc_info=True)


class SshDoor:
    """A node's running SSH front door."""

    def __init__(
        self,
        *,
        node: str,
        request: RequestFn,
        credentials: Credentials,
        throttle: Throttle,
        clock: Clock,
        log: Any = None,
    ) -> None:
        self.node = node
        self.log: Any = log if log is not None else _StdlibLog(node)
        self.request = request
        self.credentials = credentials
        self.throttle = throttle
        self.clock = clock
        self.port = 0
        self.connections: set[asyncssh.SSHServerConnection] = set()
        self._acceptor: asyncssh.SSHAcceptor | None = None

    async def close(self) -> None:
        """Stop listening and end every open session."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        conns = list(self.connections)
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        self.connections.clear()


def load_host_key(path: Path | None) -> asyncssh.SSHKey:
    """The door's ed25519 host key: read from ``path``, or made and written there (mode 0600);
    without a path, a new key kept in memory only."""
    if path is None:
        return asyncssh.generate_private_key("ssh-ed25519")
    if path.exists():
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


async def start_ssh_server(
    *,
    host: str,
    port: int,
    node: str,
    request: RequestFn,
    credentials: Credentials,
    throttle: Throttle,
    host_key_path: Path | None,
    clock: Clock,
    log: Any = None,
) -> SshDoor:
    """Listen on ``host``:``port`` (0 picks a free port, see ``SshDoor.port``) for ``node``'s platform CLI
    (``host_key_path`` None: an ephemeral host key, nothing written)."""
    key = await asyncio.to_thread(load_host_key, host_key_path)
    door = SshDoor(node=node, request=request, credentials=credentials, throttle=throttle, clock=clock, log=log)
    acceptor = await asyncssh.create_server(
        lambda: _Server(door),
        host,
        port,
        server_host_keys=[key],
        encoding=None,  # bytes: decoded here, incrementally, with replacement of invalid UTF-8
        line_editor=False,  # the line discipline is ours (echo, Enter, discard while busy)
        x11_forwarding=False,
        agent_forwarding=False,
        allow_scp=False,
        sftp_factory=None,
        gss_host=None,
    )
    door._acceptor = acceptor
    door.port = acceptor.get_port()
    door.log.info("ssh-door-listening", host=host, port=door.port)
    return door
