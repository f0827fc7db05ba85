"""The lab's SMTP sink and sender: real SMTP deliveries over loopback (R-MON-3 e-mail path)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cluster.broker import free_port
from cluster.smtp import SIM_TIME_HEADER, SmtpSink, send_mail
from node.clock import SimClock
from node.errors import BadInput, Unavailable
from tests.conftest import held_port

SIM = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_mail_is_delivered_over_smtp_to_the_sink(tmp_path: Path) -> None:
    """R-MON-3: an expiry notification arrives as a real SMTP delivery and is kept with its fields."""
    log = tmp_path / "mails.jsonl"
    sink = SmtpSink(clock=SimClock(SIM, rate=1.0), jsonl=log)
    await sink.start()
    try:
        assert sink.host == "127.0.0.1"
        body = "Certificate expiration Notification.\nCertificate name: tomcat.pem\n"
        await send_mail(
            sink.host,
            sink.port,
            "certmonitor@cucm1.lab.test",
            ["pki@lab.test", "ops@lab.test"],
            "Certificate expiration Notification: tomcat.pem",
            body,
            sim_time=SIM,
        )
        (mail,) = await sink.wait_for(1)
    finally:
        await sink.stop()
    assert mail.sender == "certmonitor@cucm1.lab.test"
    assert mail.to == ("pki@lab.test", "ops@lab.test")
    assert mail.subject == "Certificate expiration Notification: tomcat.pem"
    assert mail.body == body
    assert mail.headers[SIM_TIME_HEADER] == SIM.isoformat()
    assert mail.received_sim is not None and mail.received_sim.startswith("2030-01-02T03:04")
    assert dt.datetime.fromisoformat(mail.received_wall).tzinfo is not None
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["subject"] for line in lines] == [mail.subject]
    out = tmp_path / "again.jsonl"
    sink.write_jsonl(out)
    assert json.loads(out.read_text())["to"] == ["pki@lab.test", "ops@lab.test"]


async def test_several_mails_keep_their_order() -> None:
    """R-MON-3: each warning is its own mail, received in the order sent."""
    sink = SmtpSink()
    await sink.start()
    try:
        for i in range(3):
            await send_mail(sink.host, sink.port, "m@lab.test", ["a@lab.test"], f"n{i}", f"body {i}")
        mails = await sink.wait_for(3)
    finally:
        await sink.stop()
    assert [m.subject for m in mails] == ["n0", "n1", "n2"]


async def test_sending_to_nothing_is_a_clear_error() -> None:
    """A node whose SMTP server is down reports Unavailable naming the address."""
    port = free_port()
    with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
        await send_mail("127.0.0.1", port, "m@lab.test", ["a@lab.test"], "s", "b", timeout=2)
    with pytest.raises(BadInput, match="recipient"):
        await send_mail("127.0.0.1", port, "m@lab.test", [], "s", "b")


async def test_stopped_sink_stops_listening() -> None:
    """stop() frees the port: a later delivery fails."""
    sink = SmtpSink()
    await sink.start()
    await sink.stop()
    with pytest.raises(Unavailable):
        await send_mail(sink.host, sink.port, "m@lab.test", ["a@lab.test"], "s", "b", timeout=2)


async def test_a_picked_port_taken_before_the_start_is_replaced_but_an_asked_one_is_not() -> None:
    """Scale: the free port a sink picked can be taken before it listens (a thousand nodes' MQTT
    connections draw from the same range); it then listens on another one. A port the user asked
    for is kept: taken, it is a clear error naming it."""
    sink = SmtpSink()
    with held_port(sink.host, sink.port) as taken:
        await sink.start()
        try:
            assert sink.port != taken and sink.url.endswith(f":{sink.port}")
            await send_mail(sink.host, sink.port, "m@lab.test", ["a@lab.test"], "moved", "body")
            assert [m.subject for m in await sink.wait_for(1)] == ["moved"]
        finally:
            await sink.stop()
        with pytest.raises(Unavailable, match=f"cannot listen on 127.0.0.1:{taken}"):
            await SmtpSink(port=taken).start()
