"""Brokers a lab can run on: the embedded amqtt broker (default) or a mosquitto process.

Both bind loopback only, on a free port unless one is given. Labs on an external broker
(``--broker mqtt://host:port``) need neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from replication.transport import BrokerAddress

LOOPBACK = "127.0.0.1"
SHUTDOWN_GRACE_S = 2.0


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def listen_on(port: int, listen: Callable[[int], Awaitable[int]], *, picked: bool) -> int:
    """``listen(port)`` (which starts a server and returns the port it bound). A port ``picked`` with
    :func:`free_port` rather than asked for may be taken by the time it is bound (a thousand nodes'
    MQTT connections draw from the same ephemeral range): then the system chooses one while binding.
    A port the user asked for is kept, and a taken one raises ``OSError``."""
    try:
        return await listen(port)
    except OSError:
        if not picked:
            raise
        return await listen(0)


async def wait_listening(address: BrokerAddress, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections at ``address``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _reader, writer = await asyncio.open_connection(address.host, address.port)
        except OSError:
            if loop.time() > deadline:
                raise TimeoutError(f"no broker is listening at {address.url}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def quiet_amqtt() -> None:
    """amqtt and its state machine log every packet at INFO; keep only warnings."""
    for name in ("amqtt", "transitions", "amqtt.broker", "amqtt.client", "amqtt.mqtt.protocol"):
        logging.getLogger(name).setLevel(logging.ERROR)


class EmbeddedBroker:
    """amqtt in this process's event loop, bound to loopback, with only the auth plugin.

    Clients must send a username (any): amqtt queues QoS 1 messages for offline persistent
    sessions only for non-anonymous clients.
    """

    def __init__(self, port: int | None = None, host: str = LOOPBACK) -> None:
        self.address = BrokerAddress(host, port or free_port(host))
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker  # noqa: PLC0415 - amqtt is slow to import; only labs that embed it pay

        quiet_amqtt()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.address.host}:{self.address.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False}},
        }
        self._broker = Broker(config)
        patch_amqtt_subscriptions(self._broker)
        await self._broker.start()

    async def stop(self) -> None:
        """Stop the broker as a killed broker process would: no new connections, every client
        connection dropped at once, then amqtt's own cleanup, bounded in time.

        amqtt 0.12's graceful shutdown can wait forever for a connection's reader task, and it
        keeps accepting connections while it stops; clients would reconnect to the dying broker
        and be left talking to nobody. So the listeners close first and the connections are
        aborted before the cleanup runs.
        """
        broker, self._broker = self._broker, None
        if broker is None:
            return
        for server in list(broker._servers.values()):
            if server.instance is not None:
                server.instance.close()
        _abort_connections(broker)
        task = asyncio.ensure_future(broker.shutdown())
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_GRACE_S)
        _abort_connections(broker)  # any handshake that was still completing
        if not done:
            task.cancel()
            for background in (broker._broadcast_task, broker._session_monitor_task):
                if background is not None:
                    background.cancel()
            logging.getLogger("certsim.broker").info("embedded broker cleanup abandoned after %.0f s", SHUTDOWN_GRACE_S)

    @property
    def url(self) -> str:
        return self.address.url


class SnapshotDict(dict[str, Any]):
    """A dict whose iteration walks a copy of its keys or items, so it may change while being iterated.

    amqtt 0.12.1 (the latest release) iterates ``Broker._subscriptions`` and awaits inside the loop:
    the connection handler (``_handle_client_session``) loops over every topic filter and awaits the
    retained-message publish for each, and ``_run_broadcast`` awaits topic filtering per filter. A
    client that subscribes to a new filter during that await adds a key, and the loop raises
    ``RuntimeError: dictionary changed size during iteration``: the connecting client's handler dies
    after its CONNACK and that client waits for a SUBACK that never comes (a CLI call failed after its
    ~21 s of retries when several ran at once). Upstream's fix is to iterate a snapshot
    (``for topic in list(self._subscriptions)``); this container makes every such loop do that without
    copying amqtt's long methods. Remove it when a fixed amqtt release is pinned
    (tests/cluster/test_broker_amqtt.py shows whether the unpatched broker still fails).
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(super().values())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


def patch_amqtt_subscriptions(broker: Any) -> None:
    """Give an amqtt broker the snapshot-iterating subscription table (see :class:`SnapshotDict`)."""
    broker._subscriptions = SnapshotDict(broker._subscriptions)


def _abort_connections(broker: Any) -> None:
    for _session, handler in list(broker._sessions.values()):
        stream = getattr(getattr(handler, "writer", None), "_writer", None)
        if stream is not None:
            stream.transport.abort()


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class MosquittoBroker:
    """A private mosquitto process on a free loopback port, persistence off, for tests and benchmarks."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        found = binary or mosquitto_binary()
        if found is None:
            raise FileNotFoundError("no mosquitto binary found (Debian: apt-get install mosquitto)")
        self.binary = found
        self.address = BrokerAddress(LOOPBACK, port or free_port())
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    async def start(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="certsim-mosquitto-")
        conf = Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(
            f"listener {self.address.port} {self.address.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "user root\n"
            "log_dest none\nset_tcp_nodelay true\n",
            encoding="utf-8",
        )
        self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary and config; Popen returns at once
            [self.binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            await wait_listening(self.address)
        except TimeoutError:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                await asyncio.to_thread(self._proc.wait)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def url(self) -> str:
        return self.address.url
