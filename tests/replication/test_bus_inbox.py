"""replication.transport.Bus on a real broker: the inbox (arrival order, nothing before on_connect,
its bound), the read-ahead socket and the direct writes (a message bigger than the socket buffers)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from cluster.broker import EmbeddedBroker, MosquittoBroker
from replication import transport
from replication.transport import BrokerAddress, Bus

BIG = 4 << 20  # bigger than a loopback socket's buffers: written in parts, read in parts


@contextlib.asynccontextmanager
async def address_of(broker: MosquittoBroker | None) -> AsyncIterator[BrokerAddress]:
    """The test's mosquitto, or an embedded broker of its own."""
    if broker is not None:
        yield broker.address
        return
    embedded = EmbeddedBroker()
    await embedded.start()
    try:
        yield embedded.address
    finally:
        await embedded.stop()


async def until(check: object, what: str, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.both_brokers
async def test_messages_are_handled_in_order_after_on_connect_and_intact(broker: MosquittoBroker | None) -> None:
    """Every message reaches the owner once, in the order sent, and only after the connection's
    on_connect has finished (a node checks its absence there before anything it receives counts);
    a 4 MiB message among small ones arrives byte for byte (partial writes, partial reads)."""
    root = f"inbox-{uuid.uuid4().hex[:8]}"
    subscribed = asyncio.Event()
    connect_done = False
    handled: list[tuple[str, bytes, bool]] = []

    async def on_connect() -> None:
        nonlocal connect_done
        subscribed.set()
        await asyncio.sleep(0.3)  # messages published meanwhile wait in the inbox
        connect_done = True

    async def on_message(topic: str, payload: bytes) -> None:
        handled.append((topic, payload, connect_done))

    big = hashlib.sha256(b"seed").digest() * (BIG // 32)
    sent = [f"m{i:03d}".encode() for i in range(60)]
    sent[30] = big
    async with address_of(broker) as address:
        receiver = Bus(address, f"{root}-rx", [f"{root}/#"], on_message, on_connect=on_connect)
        sender = Bus(address, f"{root}-tx", [], lambda _t, _p: asyncio.sleep(0))
        try:
            receiver.start()
            sender.start()
            await asyncio.wait_for(subscribed.wait(), 20)
            assert await sender.wait_connected(20)
            # all at once: several messages reach the receiver in one read (the read-ahead must go on
            # with what it buffered although the socket is no longer readable)
            await asyncio.gather(*(sender.publish(f"{root}/m", payload) for payload in sent))
            # (a message left in the read-ahead buffer would wait for the next keepalive, 10 s away)
            await until(lambda: len(handled) >= len(sent), "every message to be handled", timeout=8)
        finally:
            await receiver.stop()
            await sender.stop()
    assert [p for _t, p, _c in handled] == sent, "lost, duplicated, reordered or altered"
    assert {t for t, _p, _c in handled} == {f"{root}/m"}
    assert all(after for _t, _p, after in handled), "a message was handled before on_connect had finished"
    assert receiver.inbox_waiting == 0


async def test_a_full_inbox_drops_new_messages_and_says_so(
    broker: MosquittoBroker | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10 item 6: the incoming queue is bounded. While the owner is stuck on one message, the
    inbox keeps the next INBOX_MAX_MESSAGES and drops the rest with a warning naming the bound;
    what it kept is handled in order once the owner moves on."""
    monkeypatch.setattr(transport, "INBOX_MAX_MESSAGES", 5)
    root = f"full-{uuid.uuid4().hex[:8]}"
    release = asyncio.Event()
    handled: list[bytes] = []

    async def on_message(_topic: str, payload: bytes) -> None:
        handled.append(payload)
        await release.wait()

    async with address_of(broker) as address:
        receiver = Bus(address, f"{root}-rx", [f"{root}/#"], on_message)
        sender = Bus(address, f"{root}-tx", [], lambda _t, _p: asyncio.sleep(0))
        try:
            receiver.start()
            sender.start()
            assert await receiver.wait_connected(20) and await sender.wait_connected(20)
            await asyncio.sleep(0.2)  # the subscription is in place before the first publish
            with caplog.at_level(logging.WARNING, logger="certsim.bus"):
                for i in range(30):
                    await sender.publish(f"{root}/x", f"{i:02d}".encode())
                await until(lambda: receiver.inbox_dropped == 30 - 6, "the inbox to drop what it cannot hold")
            assert receiver.inbox_waiting == 6  # the five kept and the one in hand
            release.set()
            await until(lambda: receiver.inbox_waiting == 0, "the inbox to drain")
            await asyncio.sleep(0.1)
        finally:
            release.set()
            await receiver.stop()
            await sender.stop()
    assert handled == [f"{i:02d}".encode() for i in range(6)], "the one in progress, then the five kept, in order"
    warnings = [r.getMessage() for r in caplog.records if "incoming queue full" in r.getMessage()]
    assert warnings and "(5 messages" in warnings[0], warnings


def test_read_ahead_cuts_pieces_from_one_read_and_reports_what_it_holds() -> None:
    """paho asks for one byte, then the length, then the body: one system call serves them all, and
    ``pending`` keeps aiomqtt's reader going while bytes remain buffered."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        ahead = transport._ReadAhead(ours)
        with pytest.raises(BlockingIOError):
            ahead.recv(1)  # nothing there yet: as from the socket itself
        peer.sendall(b"\x30\x05hello\x40")
        assert ahead.recv(1) == b"\x30"
        assert ahead.pending() == 7
        assert ahead.recv(1) == b"\x05"
        assert ahead.recv(5) == b"hello"
        assert ahead.recv(10) == b"\x40"  # less than asked: what there is
        assert ahead.pending() == 0
        assert ahead.fileno() == ours.fileno()  # everything else is the socket's own
        peer.close()
        assert ahead.recv(1) == b""  # the end of the stream
    finally:
        ours.close()
        with contextlib.suppress(OSError):
            peer.close()


async def test_messages_of_a_connection_whose_on_connect_failed_wait_for_one_that_finished(
    broker: MosquittoBroker | None,
) -> None:
    """A node's on_connect checks how long it was away before anything it receives counts. When it
    fails (its presence publish meets a dropped link), what that connection received is handled
    only after a later connection's on_connect has finished, still in order."""
    root = f"failconn-{uuid.uuid4().hex[:8]}"
    attempts = 0
    finished = 0
    handled: list[tuple[bytes, int]] = []
    receiver: Bus | None = None

    async def on_connect() -> None:
        nonlocal attempts, finished
        attempts += 1
        if attempts == 1:
            assert receiver is not None
            published.set()  # the test publishes now; wait until it is all in the inbox, then fail
            await until(lambda: receiver.inbox_waiting >= 5, "the messages to reach the inbox")
            raise transport.NotConnected("injected: presence publish timed out")
        finished += 1

    async def on_message(_topic: str, payload: bytes) -> None:
        handled.append((payload, finished))

    published = asyncio.Event()
    async with address_of(broker) as address:
        receiver = Bus(address, f"{root}-rx", [f"{root}/#"], on_message, on_connect=on_connect)
        sender = Bus(address, f"{root}-tx", [], lambda _t, _p: asyncio.sleep(0))
        try:
            sender.start()
            assert await sender.wait_connected(20)
            receiver.start()
            await asyncio.wait_for(published.wait(), 20)
            for i in range(5):
                await sender.publish(f"{root}/m", f"{i}".encode())
            await until(lambda: len(handled) >= 5, "the messages to be handled")
        finally:
            await receiver.stop()
            await sender.stop()
    assert attempts >= 2
    assert [p for p, _f in handled] == [f"{i}".encode() for i in range(5)]
    assert all(done >= 1 for _p, done in handled), "handled before any on_connect had finished"


@pytest.mark.both_brokers
async def test_messages_read_together_are_acknowledged_once_and_never_come_again(
    broker: MosquittoBroker | None,
) -> None:
    """The PUBACKs of messages read together leave in one batch at the loop's next turn
    (``transport._WriteBatch``): they do leave. Two receivers with persistent sessions get a burst,
    then crash (no DISCONNECT) and come back: the broker, which resends every unacknowledged QoS 1
    message of a resumed session, has nothing to resend."""
    root = f"acks-{uuid.uuid4().hex[:8]}"
    handled: dict[str, list[bytes]] = {"a": [], "b": []}

    def receiver_bus(address: BrokerAddress, name: str) -> Bus:
        async def on_message(_topic: str, payload: bytes) -> None:
            handled[name].append(payload)

        return Bus(address, f"{root}-{name}", [f"{root}/#"], on_message)

    sent = [f"m{i:02d}".encode() for i in range(40)]
    batch_flushes = transport._write_batch().flushes
    async with address_of(broker) as address:
        sender = Bus(address, f"{root}-tx", [], lambda _t, _p: asyncio.sleep(0))
        receivers = [receiver_bus(address, "a"), receiver_bus(address, "b")]
        try:
            sender.start()
            for bus in receivers:
                bus.start()
            assert await sender.wait_connected(20)
            for bus in receivers:
                assert await bus.wait_connected(20)
            await asyncio.sleep(0.2)  # the subscriptions are in place before the first publish
            await asyncio.gather(*(sender.publish(f"{root}/m", payload) for payload in sent))
            await until(lambda: all(len(h) >= len(sent) for h in handled.values()), "every message handled")
            await asyncio.sleep(0.2)  # (the last batch's turn, and the broker reading it)
            assert transport._write_batch().flushes > batch_flushes
            for bus in receivers:
                await bus.abort()
            receivers = [receiver_bus(address, "a"), receiver_bus(address, "b")]
            for bus in receivers:
                bus.start()
            for bus in receivers:
                assert await bus.wait_connected(20)
            await sender.publish(f"{root}/m", b"after")  # in order after anything resent
            await until(lambda: all(h[-1:] == [b"after"] for h in handled.values()), "the message after the crash")
        finally:
            for bus in (*receivers, sender):
                await bus.stop()
    for name, got in handled.items():
        assert got == [*sent, b"after"], f"receiver {name}: a message came again after the crash (never acknowledged)"
