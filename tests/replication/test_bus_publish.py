"""replication.transport.Bus.publish when the connection is lost while a publish is in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from replication.transport import BrokerAddress, Bus, NotConnected


class _StuckClient:
    """Stands in for aiomqtt's client (not ours): a publish that never gets its acknowledgement."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def publish(self, *_args: Any, **_kwargs: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_a_connection_lost_during_a_publish_is_not_connected_not_a_crash() -> None:
    """The loss wins the race against a publish still in flight: the caller gets NotConnected (which
    every caller handles), never asyncio's InvalidStateError from a task whose cancellation was only
    requested (seen as a traceback from 'certsim lab status' right after a broker restart)."""
    bus = Bus(BrokerAddress("127.0.0.1", 1), "test-client", [], on_message=lambda _t, _p: asyncio.sleep(0))
    client = _StuckClient()
    bus._client = client  # type: ignore[assignment]
    bus._lost = asyncio.get_running_loop().create_future()
    bus._connected.set()
    publishing = asyncio.create_task(bus.publish("t", b"x", qos=0))
    await asyncio.sleep(0.01)
    bus._lost.set_result(None)
    with pytest.raises(NotConnected, match="connection lost while publishing"):
        await publishing
    await asyncio.wait_for(client.cancelled.wait(), 1)  # the abandoned publish was cancelled, not leaked
