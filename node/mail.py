"""Sending one plain-text mail over SMTP: what a node's expiry monitor does (R-MON-3).

The stdlib :mod:`smtplib` runs through ``asyncio.to_thread`` so the event loop stays free;
a mail per expiry warning is rare and tiny, so a thread per send costs nothing worth a
further dependency. Any SMTP server can receive them, not only the lab's sink
(:mod:`cluster.smtp`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime

from node.errors import BadInput, Unavailable

SIM_TIME_HEADER = "X-Certsim-Sim-Time"


def build_message(
    sender: str,
    to: list[str] | tuple[str, ...],
    subject: str,
    body: str,
    *,
    sim_time: dt.datetime | None = None,
) -> EmailMessage:
    """A plain-text message; with ``sim_time`` its ``Date`` and ``X-Certsim-Sim-Time`` are the simulated time."""
    if not to:
        raise BadInput("a mail needs at least one recipient")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    if sim_time is not None:
        message["Date"] = format_datetime(sim_time.astimezone(dt.UTC))
        message[SIM_TIME_HEADER] = sim_time.astimezone(dt.UTC).isoformat()
    message.set_content(body)
    return message


async def send_mail(
    host: str,
    port: int,
    sender: str,
    to: list[str] | tuple[str, ...],
    subject: str,
    body: str,
    *,
    sim_time: dt.datetime | None = None,
    timeout: float = 10.0,
) -> None:
    """Deliver one plain-text mail over SMTP to ``host:port`` (smtplib in a worker thread).

    Raises :class:`Unavailable` when no server answers or it refuses the message, and
    :class:`BadInput` for a message without recipients.
    """
    message = build_message(sender, to, subject, body, sim_time=sim_time)

    def deliver() -> None:
        with smtplib.SMTP(host, port, timeout=timeout, local_hostname="certsim") as client:
            client.send_message(message, from_addr=sender, to_addrs=list(to))

    try:
        await asyncio.to_thread(deliver)
    except (TimeoutError, OSError) as exc:
        raise Unavailable(f"no SMTP server answered at {host}:{port}: {exc}") from None
    except smtplib.SMTPException as exc:
        raise Unavailable(f"the SMTP server at {host}:{port} refused the mail: {exc}") from None
