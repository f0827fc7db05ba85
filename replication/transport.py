"""The MQTT adapter: one persistent, self-reconnecting connection per node (aiomqtt).

aiomqtt has no automatic reconnect, so ``Bus`` wraps a client in a retry loop,
re-subscribes on every connect and hands each message, in arrival order, to the owner's
handler. Nothing here knows about certificates or rules.

Three shortcuts past aiomqtt's defaults carry a lab's traffic (twenty nodes of one process
receiving every change) with fewer event-loop turns and system calls; each was measured by
``bench/replication_latency.py`` and is tested in ``tests/replication/test_bus_inbox.py``:

- Incoming messages go from paho's ``on_message`` callback straight into the bus's own bounded
  inbox, drained in order by one task per bus, instead of a task and an ``asyncio.wait`` per
  message in aiomqtt's iterator (which now only reports the disconnect).
- An outgoing packet (a publish, the PUBACK of a received message) is written at once when the
  socket takes it, as paho does without an external loop (its ``on_socket_register_write``
  callback); only a full socket waits for the loop's writability callback (aiomqtt's own path).
  The PUBACKs paho queues while it reads go out together at the loop's next turn, for every bus
  of the process at once (``_WriteBatch``).
- paho reads through ``_ReadAhead``: one ``recv`` per burst instead of four per message. This one
  sets paho's private socket attribute, so paho-mqtt is pinned to the minor versions tested.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import errno
import functools
import inspect
import logging
import socket
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.matcher import MQTTMatcher

from replication.faults import LinkFaults

MessageHandler = Callable[[str, bytes], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]

RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
STOP_TIMEOUT_S = 5.0  # wall seconds a clean disconnect may take before the socket is dropped
INBOX_MAX_MESSAGES = 10_000  # received, not yet handled; beyond it (or the bytes) a message is dropped
INBOX_MAX_BYTES = 64 << 20  # and logged: anti-entropy repairs a lost change, a client resends a request
INBOX_LOG_EVERY = 1_000  # a full inbox logs its first drop and every this many after


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
        sync_topics: Sequence[str] = (),
        on_heal: ConnectHandler | None = None,
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
        self._lost: asyncio.Future[None] | None = None  # one per connection: done when it ends
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._open = asyncio.Event()  # cleared while the link is cut (a partition)
        self._open.set()
        self.faults = LinkFaults()
        # Replication partition: traffic on these topics (prefix match) is cut both ways, the rest
        # (control requests and answers) still flows, as when the sync link breaks but the GUI works.
        self._sync_topics = tuple(t.rstrip("/") for t in sync_topics)
        self._sync_open = asyncio.Event()
        self._sync_open.set()
        self._on_heal = on_heal
        self._held: list[tuple[str, bytes]] = []
        self._delivering: set[asyncio.Task[None]] = set()
        # received messages, in arrival order, until the drain task hands them to the owner; it waits
        # while a connection's on_connect runs, as the messages waited in aiomqtt's queue before
        self._inbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._inbox_bytes = 0
        self._inbox_ready = asyncio.Event()
        self._inbox_wakeup: asyncio.Future[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        self._handling = False  # the drain task is inside the owner's handler
        self._handler_idle = asyncio.Event()  # set while it is not: a new on_connect waits for it
        self._handler_idle.set()
        self.inbox_dropped = 0
        self.connects = 0
        self._log = logging.getLogger("certsim.bus")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        _quiet_closed_socket_callbacks(asyncio.get_running_loop())
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"bus:{self.client_id}")
        self._start_drainer()

    def _start_drainer(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name=f"bus-inbox:{self.client_id}")
            self._drainer.add_done_callback(self._drainer_ended)

    def _drainer_ended(self, task: asyncio.Task[None]) -> None:
        """The drain task ends only when stopped; anything else it died of is logged and it starts
        again, so a connected bus never goes on acknowledging messages nobody handles."""
        if task.cancelled() or self._stopping:
            return
        self._log.error("bus %s: the inbox task ended (%r); started again", self.client_id, task.exception())
        self._handling = False
        self._handler_idle.set()
        if self._drainer is task:
            self._drainer = None
            self._start_drainer()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1, wait for the broker's acknowledgement."""
        if not self._sync_open.is_set() and self._is_sync(topic):
            await self._sync_open.wait()  # partitioned: replication waits for the heal
        client = self._client
        if client is None or not self._connected.is_set():
            raise NotConnected(self.client_id)
        lost = self._lost
        assert lost is not None  # (made before the connection is announced)
        # on the wire now, not at the loop's next turn; what is left is waiting for the PUBACK
        publish = _start_eagerly(client.publish(topic, payload, qos=qos, retain=retain), f"publish:{self.client_id}")
        try:
            # aiomqtt leaves a QoS 1 publish waiting for its PUBACK until the timeout even when the
            # connection is gone; racing it against the loss lets the caller retry at once on reconnect.
            if not publish.done():
                await asyncio.wait({publish, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not publish.done():
                publish.cancel()  # (only a request: the task ends later, its outcome retrieved then)
                publish.add_done_callback(_retrieve)
        if not publish.done() or publish.cancelled():
            raise NotConnected(f"{self.client_id}: connection lost while publishing")
        try:
            publish.result()
        except aiomqtt.MqttError as exc:
            raise NotConnected(f"{self.client_id}: {exc}") from exc

    def partition(self) -> None:
        """Cut replication traffic both ways: inbound sync messages are lost, outbound ones wait."""
        self._sync_open.clear()

    async def heal(self) -> None:
        if not self._sync_open.is_set():
            self._sync_open.set()
            if self._on_heal is not None and self.connected:
                await self._on_heal()

    @property
    def partitioned(self) -> bool:
        return not self._sync_open.is_set()

    def _is_sync(self, topic: str) -> bool:
        return any(topic == t or topic.startswith(t + "/") for t in self._sync_topics)

    def cut(self) -> None:
        """Partition: drop the connection abruptly (the broker sends our will, queues our QoS 1
        messages) and stay away until ``restore``."""
        self._open.clear()
        self._drop_socket()

    def restore(self) -> None:
        """Heal a partition: reconnect at once."""
        self._open.set()

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    async def abort(self) -> None:
        """Crash: kill the connection without a DISCONNECT and stop, as a dying process would."""
        self._stopping = True
        self._drop_socket()
        tasks = [*self._delivering, *(t for t in (self._task, self._drainer) if t is not None)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError, Exception):
                await task
        self._task = self._drainer = None
        self._clear_inbox()  # what a dying process had received and not handled is gone with it
        self._connected.clear()

    def _drop_socket(self) -> None:
        client = self._client
        if client is None:
            return
        sock = _socket_of(client)  # closing it is what a network cut does
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    async def _inbound(self, topic: str, payload: bytes) -> None:
        """Hand a message to the owner, through the fault layer when one is active."""
        if not self._sync_open.is_set() and self._is_sync(topic):
            return  # lost in the partition
        if not self.faults.active and not self._held:
            await self._deliver(topic, payload)
            return
        if self._is_sync(topic) and self.faults.drops(payload):
            return  # lost in transit; only anti-entropy can repair it
        for _ in range(self.faults.copies()):
            if self.faults.hold_back():
                self._held.append((topic, payload))
                continue
            delay = self.faults.delay()
            if delay:
                task = asyncio.create_task(self._deliver_later(delay, topic, payload))
                self._delivering.add(task)
                task.add_done_callback(self._delivering.discard)
            else:
                await self._deliver(topic, payload)
            while self._held:  # held-back messages arrive after this one: reordered
                await self._deliver(*self._held.pop(0))

    async def _deliver_later(self, delay: float, topic: str, payload: bytes) -> None:
        await asyncio.sleep(delay)
        await self._deliver(topic, payload)

    async def _deliver(self, topic: str, payload: bytes) -> None:
        try:
            await self._on_message(topic, payload)
        except Exception:  # a bad message must never take the connection down
            self._log.exception("bus %s: handler failed on %s", self.client_id, topic)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Disconnect cleanly (the broker keeps a persistent session's queue). Never raises and
        never waits longer than ``timeout``: whatever the connection task died of is logged, so a
        failing link cannot stop the rest of a node (or a lab) from shutting down."""
        self._stopping = True
        task, self._task = self._task, None
        drainer, self._drainer = self._drainer, None
        for delivering in list(self._delivering):
            delivering.cancel()
        if drainer is not None:  # a handler in progress is cancelled, as it was inside the connection task
            drainer.cancel()
        if task is not None:
            task.cancel()
        running = {t for t in (task, drainer) if t is not None}
        done: set[asyncio.Task[None]] = set()
        if running:
            done, _ = await asyncio.wait(running, timeout=timeout)
        if task is not None:
            if task not in done:
                self._drop_socket()  # the disconnect itself hangs: cut it, as a crash would
                self._log.warning("bus %s: disconnect took over %.1f s; socket dropped", self.client_id, timeout)
            elif not task.cancelled() and (exc := task.exception()) is not None:
                self._log.warning("bus %s: connection task had failed: %r", self.client_id, exc)
        if drainer is not None and drainer not in done:  # kept: a later start must not run a second one
            self._drainer = drainer
            self._log.warning(
                "bus %s: a message handler did not end within %.1f s of the stop", self.client_id, timeout
            )
        self._clear_inbox()
        self._connected.clear()

    # ---------------------------------------------------------------------------------------
    # the inbox: paho's callback -> a bounded deque -> one drain task -> the owner's handler

    def _arrived(self, _paho: Any, _userdata: Any, message: Any) -> None:
        """paho's on_message (in the event loop, inside paho's read): queue it. Never raises: paho
        would end the connection."""
        try:
            topic, payload = message.topic, message.payload  # (paho decodes the topic's UTF-8 here)
            if isinstance(payload, bytes | bytearray):
                self._queue(topic, bytes(payload))
        except Exception:
            self._log.exception("bus %s: a received message could not be queued", self.client_id)

    def _queue(self, topic: str, payload: bytes) -> None:
        if len(self._inbox) >= INBOX_MAX_MESSAGES or self._inbox_bytes + len(payload) > INBOX_MAX_BYTES:
            self.inbox_dropped += 1
            if self.inbox_dropped == 1 or self.inbox_dropped % INBOX_LOG_EVERY == 0:
                self._log.warning(
                    "bus %s: incoming queue full (%d messages, %d bytes): message on %s dropped (%d so far)",
                    self.client_id,
                    len(self._inbox),
                    self._inbox_bytes,
                    topic,
                    self.inbox_dropped,
                )
            return
        self._inbox.append((topic, payload))
        self._inbox_bytes += len(payload)
        wakeup = self._inbox_wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    @property
    def inbox_waiting(self) -> int:
        """Messages received and not yet handled (the one being handled included)."""
        return len(self._inbox) + self._handling

    def _clear_inbox(self) -> None:
        self._inbox.clear()
        self._inbox_bytes = 0

    async def _drain(self) -> None:
        """Hand the inbox to the owner, one message at a time, in arrival order."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._inbox_ready.is_set():
                await self._inbox_ready.wait()
                continue
            if not self._inbox:
                self._inbox_wakeup = loop.create_future()
                try:
                    await self._inbox_wakeup
                finally:
                    self._inbox_wakeup = None
                continue
            topic, payload = self._inbox.popleft()
            self._inbox_bytes -= len(payload)
            self._handling = True
            self._handler_idle.clear()
            try:
                await self._inbound(topic, payload)
            except Exception:  # the fault layer or the owner: one message must not stop the rest
                self._log.exception("bus %s: handling a message on %s failed", self.client_id, topic)
            finally:
                self._handling = False
                self._handler_idle.set()

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stopping:
            await self._open.wait()
            will = aiomqtt.Will(self._will[0], self._will[1], qos=1, retain=True) if self._will else None
            self._inbox_ready.clear()  # until this connection's on_connect has run
            client = aiomqtt.Client(
                self.address.host,
                self.address.port,
                identifier=self.client_id,
                username=self._username,
                clean_session=self._clean_session,
                will=will,
                keepalive=10,
                timeout=10,
            )
            # paho's public callback, straight to the inbox: aiomqtt's own copies each message into its
            # Message type and its queue (nothing is ever queued there now; its iterator only reports the end)
            client._client.on_message = self._arrived
            # paho's own log lines off: one DEBUG call per packet, and after a cut link an ERROR
            # ("failed to receive on socket") for what the bus reports itself as a disconnection
            client._client.disable_logger()
            client._client._on_message_filtered = _TopicCallbacks()
            _write_at_once(client)
            try:
                async with client:
                    client.pending_calls_threshold = 1_000_000  # many QoS 1 publishes in flight is normal here
                    _no_delay(client)
                    _read_ahead(client)
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._lost = lost = asyncio.get_running_loop().create_future()
                    _on_disconnection(client, functools.partial(_settle, lost))
                    self._connected.set()
                    self.connects += 1
                    delay = RECONNECT_MIN_S
                    if self._on_connect is not None:
                        # never beside a handler still busy with an earlier connection's message (the
                        # gate is closed: none starts meanwhile); a stuck one is not waited for long
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._handler_idle.wait(), STOP_TIMEOUT_S)
                        await self._on_connect()
                    self._inbox_ready.set()
                    async for _never in client.messages:  # messages go to the inbox; this ends at a disconnect
                        pass
            except aiomqtt.MqttError as exc:
                self._log.debug("bus %s disconnected: %s", self.client_id, exc)
            except NotConnected as exc:  # the owner's on_connect publish found the new connection gone
                self._log.debug("bus %s lost while connecting: %s", self.client_id, exc)
            except Exception as exc:  # whatever a dying connection or a handler raises: log, retry
                self._log.warning("bus %s connection failed: %r", self.client_id, exc)
            finally:
                self._connected.clear()
                if self._lost is not None:
                    _settle(self._lost)
                self._client = None
                # what arrived and was not handled waits, in order, for the next connection's
                # on_connect (which may check how long the node was away before anything counts)
            if not self._stopping and self._open.is_set():
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take a finished background task's outcome, so none is logged as never retrieved."""
    if not task.cancelled():
        task.exception()


def _quiet_closed_socket_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """Drop one known race from the loop's error log: when a connection is cut or a node crashes,
    aiomqtt may schedule ``add_writer`` for a socket paho has just closed (EBADF). Anything else
    still reaches the previous handler."""
    previous = loop.get_exception_handler()
    if getattr(previous, "certsim_quiet", False):
        return

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EBADF and "add_writer" in repr(context.get("handle")):
            return
        if isinstance(exc, aiomqtt.MqttError) and "never retrieved" in str(context.get("message", "")):
            return  # the disconnection future of a client we cut or killed on purpose
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    handler.certsim_quiet = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _on_disconnection(client: aiomqtt.Client, callback: Callable[[], object]) -> None:
    """Call ``callback`` as soon as aiomqtt learns the connection is gone (its private
    ``_disconnected`` future), not only when the connection task unwinds: a publish waiting for
    its PUBACK, even one made inside on_connect, gives up at once."""
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future):
        disconnected.add_done_callback(lambda _done: callback())


def _socket_of(client: aiomqtt.Client) -> socket.socket | None:
    """The TCP socket under a connected client (paho owns it; aiomqtt has no accessor)."""
    sock = client._client.socket()
    if isinstance(sock, _ReadAhead):
        return sock.raw
    return sock if isinstance(sock, socket.socket) else None


def _no_delay(client: aiomqtt.Client) -> None:
    """Disable Nagle: small QoS 1 exchanges otherwise wait ~40 ms on delayed ACKs."""
    sock = _socket_of(client)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


READ_AHEAD_BYTES = 64 << 10


class _ReadAhead:
    """A connected client's socket as paho reads it, one large ``recv`` at a time.

    paho reads a packet in pieces (its first byte, each byte of its length, then its body): four
    system calls per received message. Here one call fills a buffer the pieces are cut from.
    ``pending`` tells aiomqtt's reader to go on while buffered bytes remain (the socket itself may
    no longer be readable then), as it does for an SSL socket's own buffer. Everything else is the
    socket's own.
    """

    __slots__ = ("_buffer", "raw")

    def __init__(self, raw: socket.socket) -> None:
        self.raw = raw
        self._buffer = bytearray()

    def recv(self, size: int) -> bytes:
        buffer = self._buffer
        if not buffer:
            data = self.raw.recv(max(size, READ_AHEAD_BYTES))  # BlockingIOError / OSError as from the socket
            if len(data) <= size:
                return data  # (b"" at the end of the stream)
            buffer += data
        piece = bytes(buffer[:size])
        del buffer[:size]
        return piece

    def pending(self) -> int:
        return len(self._buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _read_ahead(client: aiomqtt.Client) -> None:
    """Give paho the read-ahead socket; done once connected, in the loop's thread (paho reads only
    there from then on, and it has read exactly up to the CONNACK, so no byte is skipped)."""
    paho = client._client
    sock = paho.socket()
    if isinstance(sock, socket.socket):
        paho._sock = _ReadAhead(sock)


class _WriteBatch:
    """The packets paho queued while reading (the PUBACKs of the messages it read), written for every
    bus of an event loop together, at the loop's next turn.

    A change reaches twenty nodes of a process at once. Written as each message was read, every
    PUBACK woke the broker on its own (21 us of system time each, measured in the replication bench)
    and held up the next node's read; written back to back, one wake-up serves them all (4 us each)
    and the nodes' handlers start 0.4 ms sooner. A PUBACK still leaves on arrival, one loop turn
    later, never after the message was handled (that held the embedded broker up: it sends a client
    its next QoS 1 message only once the last one is acknowledged).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._writes: list[Callable[[], None]] = []
        self.flushes = 0  # loop turns that wrote a batch (tests)

    def add(self, write: Callable[[], None]) -> None:
        if not self._writes:
            self._loop.call_soon(self._flush)
        self._writes.append(write)

    def _flush(self) -> None:
        writes, self._writes = self._writes, []
        self.flushes += 1
        for write in writes:
            try:
                write()
            except Exception:  # one connection's failure must not keep the others' PUBACKs back
                logging.getLogger("certsim.bus").exception("a deferred write failed")


_WRITE_BATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _WriteBatch] = weakref.WeakKeyDictionary()


def _write_batch() -> _WriteBatch:
    """The running loop's batch (made on first use)."""
    loop = asyncio.get_running_loop()
    batch = _WRITE_BATCHES.get(loop)
    if batch is None:
        batch = _WRITE_BATCHES[loop] = _WriteBatch(loop)
    return batch


def _write_at_once(client: aiomqtt.Client) -> None:
    """Write each packet paho queues at once, in the event loop's thread, as paho itself does when
    no external loop is registered. aiomqtt instead registers the socket for writing on every packet
    (a self-pipe wake-up, two epoll changes and one more loop turn per PUBACK); its path is kept for
    a socket whose buffer is full and for paho's connect, which runs in an executor thread. What
    paho queues while it reads (a PUBACK) waits for the loop's batch (``_WriteBatch``)."""
    paho = client._client  # paho's client; on_socket_register_write is its public callback
    register_with_loop = paho.on_socket_register_write
    unregister_with_loop = paho.on_socket_unregister_write
    if register_with_loop is None or unregister_with_loop is None:
        return
    writes = _DirectWrites(paho.loop_read, register_with_loop, unregister_with_loop)
    paho.loop_read = writes.loop_read  # type: ignore[method-assign]  # (aiomqtt's reader calls it)
    paho.on_socket_register_write = writes.register_write
    paho.on_socket_unregister_write = writes.unregister_write


class _DirectWrites:
    """One paho client's write hooks (``_write_at_once``)."""

    def __init__(self, read: Callable[[int], Any], register: Callable[..., None], unregister: Callable[..., None]):
        self._read = read
        self._register_with_loop = register
        self._unregister_with_loop = unregister
        self._loop_thread = threading.get_ident()  # made in the event loop's thread
        self._writing = False
        self._reading = False
        self._batched = False  # this client's packets wait in the loop's batch
        self._with_loop = True  # aiomqtt may have registered the socket before this took over: unregister once

    def loop_read(self, max_packets: int = 1) -> Any:
        self._reading = True
        try:
            return self._read(max_packets)
        finally:
            self._reading = False

    def register_write(self, pc: Any, userdata: Any, sock: Any) -> None:
        # (never from inside one of paho's callbacks, as paho's own direct write: a failed write there
        # would take the callback lock paho already holds)
        if not self._writing and threading.get_ident() == self._loop_thread and not _in_paho_callback(pc):
            if not self._reading:
                self._write(pc, userdata, sock)
            elif not self._batched:
                self._batched = True
                _write_batch().add(functools.partial(self._write_batched, pc, userdata, sock))
            return
        self._with_loop = True
        self._register_with_loop(pc, userdata, sock)

    def unregister_write(self, pc: Any, userdata: Any, sock: Any) -> None:
        # paho unregisters after every write it finished; only a socket the loop watches has anything
        # to undo (aiomqtt's remove_writer costs a selector look-up per packet otherwise)
        if self._with_loop:
            self._with_loop = False
            self._unregister_with_loop(pc, userdata, sock)

    def _write(self, pc: Any, userdata: Any, sock: Any) -> None:
        self._writing = True
        try:
            pc.loop_write()  # paho unregisters the socket when everything went out
        except Exception as exc:  # the reader meets the broken connection too, and disconnects
            logging.getLogger("certsim.bus").debug("direct write failed: %r", exc)
        finally:
            self._writing = False
        if not pc.want_write() or pc.socket() is None:
            return
        self._with_loop = True
        self._register_with_loop(pc, userdata, sock)

    def _write_batched(self, pc: Any, userdata: Any, sock: Any) -> None:
        self._batched = False
        if pc.want_write() and pc.socket() is not None:  # (a publish since may have taken it along)
            self._write(pc, userdata, sock)


class _TopicCallbacks(MQTTMatcher):
    """paho's table of per-topic callbacks, which a bus never fills (every message goes to its
    ``on_message``). paho looks a topic up in it for every message received, and the look-up builds a
    recursive closure, a reference cycle only the cyclic garbage collector frees: six objects per
    message, all the cyclic garbage a replication left (138 objects per upload in a 21-node lab).
    An empty table answers at once."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def iter_match(self, topic: str) -> Iterator[Any]:
        root = self._root
        if not root._children and root._content is None:
            return iter(())
        return super().iter_match(topic)  # type: ignore[no-untyped-call,no-any-return]


def _in_paho_callback(pc: Any) -> bool:
    lock = getattr(pc, "_in_callback_mutex", None)
    return lock is not None and bool(lock.locked())


T = TypeVar("T")


def _start_eagerly(coro: Coroutine[Any, Any, T], name: str) -> asyncio.Future[T]:
    """Run ``coro`` now, up to its first real wait, then on as a task: a future of its outcome.

    asyncio runs a new task's first step at the loop's next turn; a publish made that way reaches
    the socket one turn late, behind whatever else is ready. Python 3.12 starts a task eagerly
    itself; on 3.11 the first step runs here, in a context of its own that the task keeps
    (``asyncio.current_task`` is still the caller's during it: fine for aiomqtt's publish, which
    does not ask).
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration as stop:
        finished: asyncio.Future[T] = loop.create_future()
        finished.set_result(stop.value)
        return finished
    except Exception as exc:
        failed: asyncio.Future[T] = loop.create_future()
        failed.set_exception(exc)
        return failed
    task = loop.create_task(_Resumed(coro, awaited).run(), name=name, context=context)
    task.add_done_callback(functools.partial(_unwind, coro, awaited, context))
    return task


def _unwind(coro: Coroutine[Any, Any, Any], awaited: Any, context: contextvars.Context, _task: Any) -> None:
    """A task cancelled before its first step never went on with ``coro``: cancel it where it
    waits, as the task would have (the future it waits for is cancelled, or if that is done already
    the coroutine gets the cancellation), so its own clean-up runs (aiomqtt forgets the publish,
    wait_for cancels what it waits for) instead of it being dropped half-way. (The task's awaiter
    has already seen the cancellation by then.)"""
    if inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED:
        if isinstance(awaited, asyncio.Future) and awaited.cancel():
            resumed = _Resumed(coro, awaited)  # it meets the cancellation at its await
        else:
            resumed = _Resumed(coro, None, asyncio.CancelledError())
        unwinding = asyncio.get_running_loop().create_task(resumed.run(), context=context)
        _UNWINDING.add(unwinding)  # (the loop keeps tasks weakly)
        unwinding.add_done_callback(_UNWINDING.discard)
        unwinding.add_done_callback(_retrieve)


_UNWINDING: set[asyncio.Task[Any]] = set()


class _Resumed:
    """Goes on with a coroutine stopped at ``awaited`` (the future it waits for): the task running
    it waits for that same future, then passes results, errors and cancellation in; with ``throw``
    it starts by throwing that into the coroutine instead."""

    def __init__(self, coro: Coroutine[Any, Any, Any], awaited: Any, throw: BaseException | None = None) -> None:
        self._coro = coro
        self._awaited = awaited
        self._throw = throw

    async def run(self) -> Any:
        return await self

    def __await__(self) -> Generator[Any, Any, Any]:
        awaited, pending = self._awaited, self._throw
        while True:
            try:
                if pending is not None:
                    thrown, pending = pending, None
                    awaited = self._coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            try:
                sent = yield awaited
            except BaseException as exc:  # a cancellation (or anything thrown in) is the coroutine's to handle
                pending = exc
                continue
            try:
                awaited = self._coro.send(sent)
            except StopIteration as stop:
                return stop.value
