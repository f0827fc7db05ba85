"""replication.transport: a received message is acknowledged (PUBACK) once handled, not on arrival.

So a node that crashes before it handled a message gets it again from its persistent session, and
the acknowledgements of a process's nodes wait for an idle loop turn without ever starving.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from cluster.broker import MosquittoBroker
from replication import transport
from replication.transport import BrokerAddress, Bus
from tests.replication.test_bus_inbox import address_of, until


@contextlib.asynccontextmanager
async def sender_on(address: BrokerAddress, root: str) -> AsyncIterator[Bus]:
    sender = Bus(address, f"{root}-tx", [], lambda _t, _p: asyncio.sleep(0))
    sender.start()
    try:
        assert await sender.wait_connected(20)
        yield sender
    finally:
        await sender.stop()


async def test_a_message_whose_handler_did_not_finish_comes_again_after_a_crash(
    broker: MosquittoBroker | None,
) -> None:
    """DESIGN property 4 (nothing lost): a node that crashes while handling a message has not
    acknowledged it, so its persistent session delivers it again when the node is back. (On
    mosquitto: amqtt 0.12 does not resend an unacknowledged message to a returning session, so
    there anti-entropy repairs it, as after a broker restart.)"""
    root = f"acks-crash-{uuid.uuid4().hex[:8]}"
    stuck = asyncio.Event()
    first: list[bytes] = []
    again: list[bytes] = []

    async def handle_and_hang(_topic: str, payload: bytes) -> None:
        first.append(payload)
        stuck.set()
        await asyncio.Event().wait()  # the process dies before this handler ends

    async def handle(_topic: str, payload: bytes) -> None:
        again.append(payload)

    async with address_of(broker) as address, sender_on(address, root) as sender:
        receiver = Bus(address, f"{root}-rx", [f"{root}/#"], handle_and_hang)
        receiver.start()
        assert await receiver.wait_connected(20)
        await asyncio.sleep(0.2)  # subscribed before the publish
        await sender.publish(f"{root}/m", b"change-1")
        await asyncio.wait_for(stuck.wait(), 20)
        await receiver.abort()
        back = Bus(address, f"{root}-rx", [f"{root}/#"], handle)
        back.start()
        try:
            await until(lambda: again, "the unhandled message to be delivered again")
        finally:
            await back.stop()
    assert first == [b"change-1"]
    assert again == [b"change-1"]
    assert receiver.acks_sent == 0


async def test_a_handled_message_is_acknowledged_and_not_delivered_again(broker: MosquittoBroker | None) -> None:
    """A message whose handler finished is acknowledged on its connection: after a crash the
    session has nothing of it left to deliver (the next message is the first that comes)."""
    root = f"acks-done-{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []

    async def handle(_topic: str, payload: bytes) -> None:
        got.append(payload)

    async with address_of(broker) as address, sender_on(address, root) as sender:
        receiver = Bus(address, f"{root}-rx", [f"{root}/#"], handle)
        receiver.start()
        assert await receiver.wait_connected(20)
        await asyncio.sleep(0.2)
        await sender.publish(f"{root}/m", b"one")
        await until(lambda: receiver.acks_sent == 1, "the PUBACK of the handled message")
        await receiver.abort()
        back = Bus(address, f"{root}-rx", [f"{root}/#"], handle)
        back.start()
        try:
            assert await back.wait_connected(20)
            await sender.publish(f"{root}/m", b"two")
            await until(lambda: got[-1] == b"two", "the next message")
            await asyncio.sleep(0.2)
        finally:
            await back.stop()
    assert got == [b"one", b"two"], "the acknowledged message came again"


async def test_acknowledgements_go_out_on_a_loop_that_never_idles(broker: MosquittoBroker | None) -> None:
    """PUBACKs wait for an idle loop turn, but at most ACK_WAIT_TURNS: with a task that keeps the
    loop busy forever, every message is still acknowledged, so the broker, which stops sending
    once a client's in-flight window (20 on mosquitto) is unacknowledged, delivers all of them."""
    root = f"acks-busy-{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []

    async def handle(_topic: str, payload: bytes) -> None:
        got.append(payload)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    try:
        async with address_of(broker) as address, sender_on(address, root) as sender:
            receiver = Bus(address, f"{root}-rx", [f"{root}/#"], handle)
            receiver.start()
            try:
                assert await receiver.wait_connected(20)
                await asyncio.sleep(0.2)
                sent = [f"{i:02d}".encode() for i in range(45)]
                await asyncio.gather(*(sender.publish(f"{root}/m", p) for p in sent))
                await until(lambda: len(got) == len(sent) and receiver.acks_sent == len(sent), "every message")
            finally:
                await receiver.stop()
    finally:
        spinner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await spinner
    assert got == sent


async def test_acks_wait_for_an_idle_turn_a_slice_at_a_time_in_order() -> None:
    """The loop's PUBACK writer keeps the order they were due in (MQTT wants them in the order
    received). While other work is ready in every turn it writes ACK_SLICE of them once per
    ACK_WAIT_TURNS turns; on an idle loop it writes them all at once."""
    written: list[int] = []

    class Recorder:
        def _send_ack(self, ack: tuple[object, int]) -> None:
            written.append(ack[1])

    acks = transport._acks()
    bus = Recorder()
    for mid in range(1, 11):
        acks.add(bus, (None, mid))  # type: ignore[arg-type]
    counts = []
    for _ in range(3 * (transport.ACK_WAIT_TURNS + 2)):
        await asyncio.sleep(0)  # this task is ready again in every turn: the loop is never idle
        counts.append(len(written))
    first = counts.index(transport.ACK_SLICE)
    assert counts[:first] == [0] * first and first >= transport.ACK_WAIT_TURNS, counts
    step = transport.ACK_SLICE
    assert sorted(set(counts)) == sorted({min(10, k * step) for k in range(10 // step + 2)}), counts  # never more
    assert written == list(range(1, 11))
    for mid in range(11, 21):
        acks.add(bus, (None, mid))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)  # an idle loop
    assert written == list(range(1, 21))


async def test_an_ack_is_never_written_on_another_connection_than_its_own() -> None:
    """A packet id means nothing on a later connection: the PUBACK of a message received on an
    ended connection is not written (the broker delivers the message again instead)."""
    bus = Bus(BrokerAddress("127.0.0.1", 9), "acks-stale", [], lambda _t, _p: asyncio.sleep(0))

    class Paho:
        def ack(self, _mid: int, _qos: int) -> None:
            raise AssertionError("written on a connection that is not the message's")

    bus._send_ack((Paho(), 7))
    assert bus.acks_stale == 1
    assert bus.acks_sent == 0
