"""A local SMTP sink for the lab, and the sender the nodes' expiry monitor uses (R-MON-3).

:class:`SmtpSink` is an aiosmtpd server bound to loopback on a free port (the
:mod:`cluster.broker` style: ``start()`` / ``stop()`` / ``url``) that keeps every message
it receives in memory and can append them to a JSON-lines file with the run's results.
aiosmtpd is the maintained asyncio successor of the stdlib ``smtpd`` module (removed in
Python 3.12); its protocol is served here with ``loop.create_server`` in the caller's
event loop rather than through its ``Controller`` thread, so a lab needs no extra thread
and ``stop()`` is an ordinary await.

:func:`send_mail` (in :mod:`node.mail`: nodes send) delivers one message with the stdlib
:mod:`smtplib`, run through
``asyncio.to_thread`` so the event loop stays free. A mail per expiry warning is a rare,
tiny event, so a thread per send costs nothing worth a further dependency (aiosmtplib).
Any SMTP server can receive them, not only the sink.

Times: the sink records the wall time a message arrived (it is an observer, not logic)
and, when given the lab clock, the simulated time too; senders may also stamp the
simulated time in a header (``X-Certsim-Sim-Time``, see :func:`send_mail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.broker import LOOPBACK, free_port, listen_on
from node.clock import Clock
from node.errors import Unavailable
from node.mail import SIM_TIME_HEADER, build_message, send_mail

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["SIM_TIME_HEADER", "ReceivedMail", "SmtpSink", "build_message", "send_mail"]


@dataclass(frozen=True)
class ReceivedMail:
    """One message the sink accepted: envelope sender and recipients, subject, plain-text body."""

    sender: str
    to: tuple[str, ...]
    subject: str
    body: str
    received_wall: str  # ISO 8601 UTC, when the sink accepted it
    received_sim: str | None = None  # the lab clock at that moment, when the sink has one
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["to"] = list(self.to)
        return data


def _parse(envelope: Envelope, received_wall: str, received_sim: str | None) -> ReceivedMail:
    raw = envelope.original_content or b""
    message = BytesParser(policy=default_policy).parsebytes(raw)
    part = message.get_body(preferencelist=("plain",))
    body = part.get_content() if part is not None else ""
    return ReceivedMail(
        sender=envelope.mail_from or "",
        to=tuple(envelope.rcpt_tos),
        subject=str(message.get("Subject", "")),
        body=body.replace("\r\n", "\n") if isinstance(body, str) else "",  # SMTP's CRLF back to text lines
        received_wall=received_wall,
        received_sim=received_sim,
        headers={k: str(v) for k, v in message.items()},
    )


class SmtpSink:
    """An SMTP server on loopback that accepts every message and keeps it.

    ``messages`` lists what arrived, in order; ``jsonl`` (optional) is appended one JSON
    object per message as it arrives; :meth:`wait_for` waits until ``n`` messages arrived.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = LOOPBACK,
        *,
        clock: Clock | None = None,
        jsonl: Path | None = None,
    ) -> None:
        self.host = host
        self._picked = port is None  # (not asked for: another one will do if it is taken, ``listen_on``)
        self.port = port or free_port(host)
        self.clock = clock
        self.jsonl = jsonl
        self.messages: list[ReceivedMail] = []
        self._server: asyncio.AbstractServer | None = None
        self._protocols: list[SMTP] = []
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd handler hook: keep the message and accept it."""
        del server, session
        wall = dt.datetime.now(dt.UTC).isoformat()  # observation time of a real delivery, not simulation logic
        sim = self.clock.now().isoformat() if self.clock is not None else None
        mail = _parse(envelope, wall, sim)
        self.messages.append(mail)
        if self.jsonl is not None:
            with self.jsonl.open("a", encoding="utf-8") as out:
                out.write(json.dumps(mail.to_json(), sort_keys=True) + "\n")
        async with self._arrived:
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def _factory(self) -> SMTP:
        # aiosmtpd loads with the first connection: every lab starts a sink, few ever receive a mail
        from aiosmtpd.smtp import SMTP  # noqa: PLC0415

        protocol = SMTP(self, hostname="certsim-smtp-sink", ident="certsim SMTP sink")
        self._protocols.append(protocol)
        return protocol

    async def start(self) -> None:
        """Listen on ``host:port``; raises :class:`Unavailable` if the port cannot be bound."""
        loop = asyncio.get_running_loop()

        async def listen(port: int) -> int:
            self._server = await loop.create_server(self._factory, host=self.host, port=port)
            return int(self._server.sockets[0].getsockname()[1])

        try:
            self.port = await listen_on(self.port, listen, picked=self._picked)
        except OSError as exc:
            raise Unavailable(f"the SMTP sink cannot listen on {self.host}:{self.port}: {exc}") from None

    async def stop(self) -> None:
        """Stop listening and close open client connections."""
        if self._server is not None:
            self._server.close()
            for protocol in self._protocols:
                transport = getattr(protocol, "transport", None)
                if transport is not None:
                    transport.close()
            self._protocols.clear()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages arrived; raises TimeoutError otherwise."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.messages) >= count)
        return list(self.messages)

    def write_jsonl(self, path: Path) -> None:
        """Write every message received so far to ``path``, one JSON object a line."""
        path.write_text("".join(json.dumps(m.to_json(), sort_keys=True) + "\n" for m in self.messages), "utf-8")
