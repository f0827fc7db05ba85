"""replication.transport.Bus guards that keep a node's link alive and its shutdown bounded: the inbox
task comes back after dying, a stop keeps a handler it could not end, no packet is written from
inside a paho callback, and a publish learns of a disconnection from aiomqtt at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import types
from typing import Any

import pytest
from paho.mqtt.matcher import MQTTMatcher

from replication import transport
from replication.transport import BrokerAddress, Bus
from tests.replication.test_bus_inbox import address_of

NOWHERE = BrokerAddress("127.0.0.1", 1)  # never connected to: these tests run the inbox alone


class Boom(BaseException):
    """Not an ``Exception``: what the drain loop does not catch itself."""


async def test_the_inbox_task_comes_back_after_dying(caplog: pytest.LogCaptureFixture) -> None:
    handled: list[bytes] = []

    async def on_message(_topic: str, payload: bytes) -> None:
        if payload == b"fatal":
            raise Boom
        handled.append(payload)

    bus = Bus(NOWHERE, "guard-drain", [], on_message)
    bus._start_drainer()  # the inbox alone: no connection task to close its gate
    try:
        bus._inbox_ready.set()  # as after a connection's on_connect
        with caplog.at_level(logging.ERROR, logger="certsim.bus"):
            bus._queue("t", b"fatal")
            for _ in range(200):
                if any("the inbox task ended" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        bus._queue("t", b"after")
        for _ in range(200):
            if handled:
                break
            await asyncio.sleep(0.01)
    finally:
        await bus.stop(timeout=2)
    assert handled == [b"after"], "nothing handles messages any more once the inbox task died"
    assert any("the inbox task ended" in r.getMessage() for r in caplog.records)


async def test_a_stop_keeps_a_handler_it_could_not_end(caplog: pytest.LogCaptureFixture) -> None:
    """A later start must not run a second inbox task beside one still handling a message."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def stubborn(_topic: str, _payload: bytes) -> None:
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores the stop

    bus = Bus(NOWHERE, "guard-stop", [], stubborn)
    bus._start_drainer()  # the inbox alone: no connection task to close its gate
    bus._inbox_ready.set()
    bus._queue("t", b"x")
    await asyncio.wait_for(entered.wait(), 5)
    drainer = bus._drainer
    with caplog.at_level(logging.WARNING, logger="certsim.bus"):
        await bus.stop(timeout=0.2)
    try:
        assert drainer is not None and not drainer.done()
        assert bus._drainer is drainer, "the stop forgot a handler it could not end"
        assert any("did not end within" in r.getMessage() for r in caplog.records)
    finally:
        release.set()  # the handler ends; the inbox task, kept, is stopped for good
        if drainer is not None:
            await asyncio.sleep(0.05)
            drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(drainer, 5)


class _Lock:
    def __init__(self, held: bool) -> None:
        self.held = held

    def locked(self) -> bool:
        return self.held


class _FakePaho:
    """Stands in for paho's client (not ours): records what the write hook asks of it."""

    def __init__(self, in_callback: bool) -> None:
        self._in_callback_mutex = _Lock(in_callback)
        self.loop_writes = 0
        self.registered: list[Any] = []
        self.unregistered: list[Any] = []
        self.on_socket_register_write = lambda pc, userdata, sock: self.registered.append(sock)
        self.on_socket_unregister_write = lambda pc, userdata, sock: self.unregistered.append(sock)

        self.queued = 0  # packets waiting in paho's out queue (a read queues its PUBACKs here)
        self.written: list[str] = []

    def loop_write(self) -> None:
        self.loop_writes += 1
        self.written.extend(["packet"] * self.queued)
        self.queued = 0

    def loop_read(self, max_packets: int = 1) -> int:
        """As paho reading one QoS 1 message: it queues the PUBACK and asks for a write."""
        self.queued += 1
        self.on_socket_register_write(self, None, "sock")
        return 0

    def want_write(self) -> bool:
        return self.queued > 0

    def socket(self) -> object:
        return object()


class _FakeClient:
    def __init__(self, paho: _FakePaho) -> None:
        self._client = paho


@pytest.mark.parametrize("in_callback", [False, True])
def test_no_packet_is_written_from_inside_a_paho_callback(in_callback: bool) -> None:
    """Inside one of paho's callbacks (its callback lock held) a packet goes to the loop's
    writability path, as paho's own direct write does; outside, it is written at once."""
    paho = _FakePaho(in_callback)
    transport._write_at_once(_FakeClient(paho))  # type: ignore[arg-type]
    paho.on_socket_register_write(paho, None, "sock")
    if in_callback:
        assert paho.loop_writes == 0 and paho.registered == ["sock"]
    else:
        assert paho.loop_writes == 1 and paho.registered == []


def test_only_a_socket_the_loop_watches_is_unregistered() -> None:
    """paho unregisters its socket after every write it finished; aiomqtt's remove_writer (a selector
    look-up) is called only when the loop was asked to watch the socket: once for a registration made
    before the hook took over, once per registration through aiomqtt, never for a direct write."""
    paho = _FakePaho(False)
    transport._write_at_once(_FakeClient(paho))  # type: ignore[arg-type]
    paho.on_socket_unregister_write(paho, None, "sock")  # (aiomqtt may have registered it before)
    assert paho.unregistered == ["sock"]
    paho.on_socket_register_write(paho, None, "sock")  # written at once
    paho.on_socket_unregister_write(paho, None, "sock")
    assert paho.loop_writes == 1 and paho.unregistered == ["sock"]
    paho._in_callback_mutex.held = True  # inside a callback: the loop watches the socket
    paho.on_socket_register_write(paho, None, "sock")
    paho.on_socket_unregister_write(paho, None, "sock")
    paho.on_socket_unregister_write(paho, None, "sock")
    assert paho.registered == ["sock"] and paho.unregistered == ["sock", "sock"]


async def test_pubacks_queued_while_reading_go_out_together_at_the_next_loop_turn() -> None:
    """The PUBACKs paho queues while it reads wait for the loop's next turn and leave together, every
    bus's in one batch, in the order read (one broker wake-up for them all); a packet queued outside
    a read is still written at once."""
    first, second = _FakePaho(False), _FakePaho(False)
    for paho in (first, second):
        transport._write_at_once(_FakeClient(paho))  # type: ignore[arg-type]
    batch = transport._write_batch()
    flushes = batch.flushes
    order: list[str] = []
    first.loop_write = lambda: order.append("first")  # type: ignore[method-assign]
    second.loop_write = lambda: order.append("second")  # type: ignore[method-assign]
    first.loop_read()
    first.loop_read()  # two messages read on one connection: one write takes both
    second.loop_read()
    assert order == []  # nothing written while reading
    await asyncio.sleep(0)
    assert order == ["first", "second"] and batch.flushes == flushes + 1
    third = _FakePaho(False)
    transport._write_at_once(_FakeClient(third))  # type: ignore[arg-type]
    third.queued = 1
    third.on_socket_register_write(third, None, "sock")  # a publish: not inside a read
    assert third.written == ["packet"] and batch.flushes == flushes + 1


async def test_a_batched_puback_taken_along_by_a_publish_is_not_written_twice() -> None:
    """A publish between the read and the batch writes the PUBACK with it: the batch finds nothing
    left for that connection; and a connection whose write fails does not hold the others back."""
    taken, failing, other = _FakePaho(False), _FakePaho(False), _FakePaho(False)
    for paho in (taken, failing, other):
        transport._write_at_once(_FakeClient(paho))  # type: ignore[arg-type]

    def broken() -> None:
        raise OSError("connection reset")

    failing.loop_write = broken  # type: ignore[method-assign]
    for paho in (taken, failing, other):
        paho.loop_read()
    taken.on_socket_register_write(taken, None, "sock")  # the node publishes before the next turn
    assert taken.loop_writes == 1 and taken.written == ["packet"]
    await asyncio.sleep(0)
    assert taken.loop_writes == 1  # nothing left for it
    assert other.written == ["packet"]  # written although the connection before it failed
    assert failing.registered == ["sock"]  # its packet waits for the loop's writability path


def test_a_write_from_another_thread_goes_to_the_loop() -> None:
    """paho's connect runs in an executor thread: its packets take aiomqtt's thread-safe path."""
    paho = _FakePaho(False)
    transport._write_at_once(_FakeClient(paho))  # type: ignore[arg-type]
    worker = threading.Thread(target=paho.on_socket_register_write, args=(paho, None, "sock"))
    worker.start()
    worker.join()
    assert paho.loop_writes == 0 and paho.registered == ["sock"]


async def test_a_disconnection_aiomqtt_sees_is_passed_on_at_once() -> None:
    """A publish waiting for its PUBACK (even one made inside on_connect) gives up when aiomqtt's
    own disconnection future ends, not only once the connection task has unwound."""
    disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    client = types.SimpleNamespace(_disconnected=disconnected)
    seen: list[str] = []
    transport._on_disconnection(client, lambda: seen.append("lost"))  # type: ignore[arg-type]
    disconnected.set_exception(ConnectionError("gone"))
    disconnected.exception()
    await asyncio.sleep(0)
    assert seen == ["lost"]


async def test_a_crashed_link_is_reported_by_the_bus_alone(broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    """paho's own log is off on a bus's client: a node crash (its socket shut) made paho log an ERROR,
    "failed to receive on socket: Broken pipe", for what the bus reports itself as a disconnection
    (and paho made a logging call for every packet)."""
    async with address_of(broker) as address:
        bus = Bus(address, "guard-crash-log", ["guard-crash-log/#"], lambda _t, _p: asyncio.sleep(0))
        bus.start()
        try:
            assert await bus.wait_connected(20)
            with caplog.at_level(logging.DEBUG):
                await bus.publish("guard-crash-log/x", b"one")
                await bus.abort()
                await asyncio.sleep(0.3)
        finally:
            await bus.stop()
    paho = [r.getMessage() for r in caplog.records if r.name == "mqtt"]
    assert paho == []


def garbage_of_lookups(table: MQTTMatcher, topic: str = "certsim/lab/repl") -> int:
    """Objects the cyclic collector finds unreachable after 50 look-ups of ``topic`` in ``table``."""
    gc.collect()
    gc.disable()
    try:
        for _ in range(50):
            assert list(table.iter_match(topic)) == []
        return gc.collect()
    finally:
        gc.enable()


def test_an_empty_topic_table_is_looked_up_without_garbage() -> None:
    """paho looks every received message's topic up in its per-topic callbacks, and its matcher leaves
    a reference cycle behind each time (work for the cyclic collector, in the middle of a replication).
    A bus's table, empty, leaves none, and matches as paho's does once a callback is added."""
    assert garbage_of_lookups(MQTTMatcher()) > 0  # (what the check would see)
    assert garbage_of_lookups(transport._TopicCallbacks()) == 0
    table = transport._TopicCallbacks()
    table["certsim/+/repl"] = "callback"
    assert list(table.iter_match("certsim/lab/repl")) == ["callback"]
    assert list(table.iter_match("certsim/lab/ctl")) == []


async def test_a_bus_client_has_the_empty_topic_table(broker: Any) -> None:
    """The table is the one paho consults on a connected bus's client."""
    async with address_of(broker) as address:
        bus = Bus(address, "guard-topic-table", ["guard-topic-table/#"], lambda _t, _p: asyncio.sleep(0))
        bus.start()
        try:
            assert await bus.wait_connected(20)
            client = bus._client
            assert client is not None
            assert isinstance(client._client._on_message_filtered, transport._TopicCallbacks)
        finally:
            await bus.stop()
