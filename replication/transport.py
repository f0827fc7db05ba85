"""The MQTT adapter: one persistent, self-reconnecting connection per node (aiomqtt).

aiomqtt has no automatic reconnect, so ``Bus`` wraps a client in a retry loop,
re-subscribes on every connect and hands each message, in arrival order, to the owner's
handler. Nothing here knows about certificates or rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiomqtt

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker listens. Only ``mqtt://`` over TCP is supported."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"unsupported broker URL scheme {parts.scheme!r} in {url!r}; use mqtt://host:port")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        try:
            port = parts.port or 1883
        except ValueError:
            raise ValueError(f"broker URL {url!r} has an invalid port") from None
        return cls(parts.hostname, port)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


class NotConnected(Exception):
    """Raised by ``publish`` while the connection is down; callers retry after reconnect."""


class Bus:
    """A persistent MQTT session that survives broker restarts by reconnecting."""

    def __init__(
        self,
        address: BrokerAddress,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: MessageHandler,
        *,
        on_connect: ConnectHandler | None = None,
        clean_session: bool = False,
        will: tuple[str, bytes] | None = None,
        username: str = "certsim",
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._clean_session = clean_session
        self._will = will
        # amqtt queues QoS 1 for offline persistent sessions only for named clients (DESIGN.md)
        self._username = username
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()  # replaced at every connect; set when that connection ends
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.connects = 0
        self._log = logging.getLogger("certsim.bus")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"bus:{self.client_id}")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1, wait for the broker's acknowledgement."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise NotConnected(self.client_id)
        lost = self._lost
        publish = asyncio.ensure_future(client.publish(topic, payload, qos=qos, retain=retain))
        watch = asyncio.ensure_future(lost.wait())
        try:
            # aiomqtt leaves a QoS 1 publish waiting for its PUBACK until the timeout even when the
            # connection is gone; racing it against the loss lets the caller retry at once on reconnect.
            await asyncio.wait({publish, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not publish.done():
                publish.cancel()
        if publish.cancelled():
            raise NotConnected(f"{self.client_id}: connection lost while publishing")
        try:
            publish.result()
        except aiomqtt.MqttError as exc:
            raise NotConnected(f"{self.client_id}: {exc}") from exc

    async def stop(self) -> None:
        """Disconnect cleanly (the broker keeps a persistent session's queue)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        self._task = None
        self._connected.clear()

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stopping:
            will = aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True) if self._will else None
            try:
                async with aiomqtt.Client(
                    self.address.host,
                    self.address.port,
                    identifier=self.client_id,
                    username=self._username,
                    clean_session=self._clean_session,
                    will=will,
                    keepalive=10,
                    timeout=10,
                ) as client:
                    client.pending_calls_threshold = 1_000_000  # many QoS 1 publishes in flight is normal here
                    _no_delay(client)
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._lost = asyncio.Event()
                    self._connected.set()
                    self.connects += 1
                    delay = RECONNECT_MIN_S
                    if self._on_connect is not None:
                        await self._on_connect()
                    async for message in client.messages:
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            continue
                        try:
                            await self._on_message(message.topic.value, bytes(payload))
                        except Exception:  # a bad message must never take the connection down
                            self._log.exception("bus %s: handler failed on %s", self.client_id, message.topic)
            except aiomqtt.MqttError as exc:
                self._log.debug("bus %s disconnected: %s", self.client_id, exc)
            finally:
                self._connected.clear()
                self._lost.set()
                self._client = None
            if not self._stopping:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)


def _no_delay(client: aiomqtt.Client) -> None:
    """Disable Nagle: small QoS 1 exchanges otherwise wait ~40 ms on delayed ACKs."""
    sock = client._client.socket()  # paho owns the socket; aiomqtt has no option for this
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
