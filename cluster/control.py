"""The one control path: administrative requests to a node over the bus, with answers or clear errors.

The CLI, scenarios, tests and (later) the REST and SSH front ends all call
``ControlClient.request``; nothing reaches a node's state any other way. Requests are
sealed envelopes like replication traffic, sent at QoS 0 so a request to a node that is
down is not queued and executed later: it times out with an error instead. Answers come at
QoS 0 too; a lost one is made up for by the resend, which the node answers from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from node.errors import BadInput, NotFound, Unavailable, error_from
from replication.envelope import MAX_ENVELOPE_BYTES, Envelope, EnvelopeError, open_envelope
from replication.topics import Topics
from replication.transport import BrokerAddress, Bus, NotConnected

DEFAULT_TIMEOUT_S = 15.0
LAB_TARGET = "@lab"  # the lab process itself (faults, lifecycle): cluster.controller
RESEND_S = 1.0


class ControlClient:
    """Sends requests to named nodes of one lab and waits for their answers."""

    def __init__(
        self,
        broker: BrokerAddress,
        topics: Topics,
        secret: bytes,
        nodes: Iterable[str],
        *,
        name: str | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.name = name or f"admin-{secrets.token_hex(4)}"
        self._now_ms = now_ms  # the lab clock: requests carry their simulated send time (nodes check it)
        self.topics = topics
        self.nodes = tuple(nodes)
        self._secret = secret
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._bus = Bus(
            broker,
            client_id=f"{topics.root}/{self.name}".replace("/", ":"),
            subscriptions=[topics.reply(self.name)],
            on_message=self._on_reply,
            clean_session=True,
        )

    async def start(self, timeout: float = 10.0) -> None:
        self._bus.start()
        if not await self._bus.wait_connected(timeout):
            await self._bus.stop()
            raise Unavailable(f"cannot reach the broker at {self._bus.address.url}")

    async def stop(self) -> None:
        await self._bus.stop()
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()

    @property
    def waiting(self) -> int:
        """Requests sent and not answered yet."""
        return len(self._pending)

    async def announce(self, topic: str, kind: str, body: dict[str, Any], *, retain: bool = True) -> None:
        """Publish one sealed message that no one answers (the lab clock, say)."""
        env = Envelope(kind=kind, sender=self.name, body=body)
        await self._bus.publish(topic, env.seal(self._secret), retain=retain)

    async def __aenter__(self) -> ControlClient:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def request(
        self, node: str, op: str, args: dict[str, Any] | None = None, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        """Run ``op`` on ``node``; returns its result or raises the node's error (``CertsimError``)."""
        if node not in self.nodes and node != LAB_TARGET:
            raise NotFound(f"unknown node '{node}'; nodes of this lab: {', '.join(self.nodes)}")
        env = Envelope(
            kind="ctl",
            sender=self.name,
            to=node,
            body={"op": op, "args": args or {}, "reply_to": self.topics.reply(self.name)},
            sent_ms=self._now_ms() if self._now_ms is not None else 0,
        )
        if not self._bus.connected:  # e.g. just after a broker restart: the bus task is reconnecting
            await self._bus.wait_connected(min(timeout, 10.0))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[env.msg_id] = fut
        payload = env.seal(self._secret)
        if len(payload) > MAX_ENVELOPE_BYTES:
            raise BadInput(
                f"the request to {node} is {len(payload):,} bytes; the bus carries at most {MAX_ENVELOPE_BYTES:,}"
                " (a certificate upload is limited to 1 MiB)"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            # QoS 0 is not queued for a node that is away, so resend (same id) until answered;
            # the node runs a request once and answers resent copies from memory.
            while not fut.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Unavailable(
                        f"node '{node}' did not answer '{op}' within {timeout:g} s; is it running and connected?"
                    )
                with contextlib.suppress(NotConnected):
                    await self._bus.publish(self.topics.ctl(node), payload, qos=0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), min(RESEND_S, remaining))
            answer = fut.result()
        finally:
            self._pending.pop(env.msg_id, None)
        if answer.get("ok"):
            return answer.get("result")
        error = answer.get("error") or {}
        raise error_from(str(error.get("code", "error")), str(error.get("message", "unknown error")))

    async def _on_reply(self, _topic: str, payload: bytes) -> None:
        try:
            env = open_envelope(payload, self._secret)
        except EnvelopeError:
            return
        fut = self._pending.get(str(env.body.get("req")))
        if fut is not None and not fut.done():
            fut.set_result(env.body)
