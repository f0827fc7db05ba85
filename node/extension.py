"""How node extensions (certificate operations, expiry monitor, OCSP, ...) plug into the agent.

An extension is a module that builds one ``Extension``: the administrative operations, bus
message kinds and timers it adds, and the hooks the agent calls at fixed points (an upload,
a listing). ``node/agent.py`` lists the extensions it runs in one explicit table
(``EXTENSIONS``); extension modules import nothing from the agent at run time (only its type,
for annotations), so there is no import circle, and the agent's private names stay private.
"""

from __future__ import annotations

import base64
import datetime as dt
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from node.errors import BadInput

if TYPE_CHECKING:
    from cryptography import x509

    from node.agent import NodeAgent
    from node.clock import Clock
    from replication.envelope import Envelope

T = TypeVar("T")
OpHandler = Callable[["NodeAgent", dict[str, Any]], Awaitable[Any]]
MessageHandler = Callable[["NodeAgent", "Envelope"], Awaitable[None]]
TimerFactory = Callable[["NodeAgent"], Coroutine[Any, Any, None]]
UploadHook = Callable[["NodeAgent", "Sequence[x509.Certificate]"], Awaitable[Any]]
ListingHook = Callable[["NodeAgent"], Awaitable[Mapping[str, Any]]]
StateDigest = Callable[["NodeAgent"], Awaitable[str]]
StateSender = Callable[["NodeAgent", str, bool], Awaitable[None]]


@dataclass(frozen=True)
class Extension:
    """What one extension adds to every node agent.

    ``on_upload``: called after a trust upload with the uploaded certificates; a result that is
    not None is added to the upload's answer under the extension's ``name``.
    ``listing``: per-certificate values (by SHA-256) shown under ``name`` in ``list``.
    ``state_digest`` / ``send_state``: anti-entropy of what the extension replicates besides trust
    stores (R-REPL-6): its digest rides on every replication digest; a peer whose digest differs
    is sent the extension's state (``send_state(agent, peer, want_reply)``).
    """

    name: str
    ops: Mapping[str, OpHandler] = field(default_factory=dict)
    messages: Mapping[str, MessageHandler] = field(default_factory=dict)
    timers: Mapping[str, TimerFactory] = field(default_factory=dict)
    on_upload: UploadHook | None = None
    listing: ListingHook | None = None
    state_digest: StateDigest | None = None
    send_state: StateSender | None = None


class PerAgent(Generic[T]):
    """Memory an extension keeps per running agent (made on first use, gone with the agent):
    ``_rt = PerAgent(_Runtime)`` then ``_rt(agent)``."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._by_agent: weakref.WeakKeyDictionary[object, T] = weakref.WeakKeyDictionary()

    def __call__(self, agent: object) -> T:
        value = self._by_agent.get(agent)
        if value is None:
            value = self._by_agent[agent] = self._factory()
        return value


def b64_arg(args: Mapping[str, Any], key: str) -> bytes:
    """A base64 request argument, or a clear error naming it."""
    raw = args.get(key)
    if not isinstance(raw, str) or not raw:
        raise BadInput(f"no {key} given")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise BadInput(f"{key} is not valid base64") from None


async def sleep_until(clock: Clock, due: dt.datetime) -> None:
    """Sleep until the simulated clock reaches ``due`` (jumps wake timers in order, see node.clock)."""
    await clock.sleep_until(due)
