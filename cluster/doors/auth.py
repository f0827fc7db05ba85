"""What both front doors (SSH platform CLI, certmgr REST) share: the OS administrator's
credentials, a brake on repeated wrong passwords, and the one way they reach a node.

Every request a front door accepts becomes the same node request the ``certsim`` CLI and
scenarios send (``RequestFn``), so nothing is implemented twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

RequestFn = Callable[[str, dict[str, Any]], Awaitable[Any]]
PEER_OP_PREFIX = "@peer:"  # "@peer:<node>:<op>": a read-only op another node of the cluster answers (PEER_OPS)
PEER_OPS = frozenset({"status"})  # what one node's doors may ask its peers (utils dbreplication runtimestate)
LAB_OP_PREFIX = "@lab:"  # an op the lab answers, not the node (phones, CTL, backups: cluster.labops_phones)
"""``await request(op, args)`` runs one node operation; raises ``node.errors.CertsimError``."""

FREE_FAILURES = 3  # wrong passwords from one peer before answers slow down
MAX_DELAY_S = 8.0  # wall seconds: pacing of a network peer, not simulated time
MAX_PEERS = 4096  # peers remembered; the oldest are forgotten first
STALE_RESERVATION_S = 60.0  # wall seconds after which an attempt reserved by ``delay`` and never
# settled by ``failed``/``succeeded`` (its request vanished) is settled as a failure
_MAX_DOUBLINGS = 32  # 0.5 * 2**32 s is far past any cap: keeps the arithmetic in float range


@dataclass(frozen=True)
class Credentials:
    """The lab's OS administrator (``admin`` on a real server): one account per lab."""

    user: str
    password: str

    def check(self, user: str, password: str) -> bool:
        """Constant-time comparison of both fields, so timing tells nothing about either."""
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_password

    def __repr__(self) -> str:  # never let a password reach a log line or a traceback
        return f"Credentials(user={self.user!r}, password='***')"


@dataclass(eq=False)
class _Peer:
    """What the throttle knows of one peer address. ``settled`` and ``forgiven`` only grow: the
    failures a success forgives are the first ``forgiven`` of the ``settled`` ones."""

    settled: int = 0  # failures confirmed so far
    forgiven: int = 0  # of those, how many successes have forgiven
    pending: int = 0  # attempts in flight: each counts as a failure until it is confirmed a success
    legacy: collections.deque[Attempt] = field(default_factory=collections.deque)  # reserved by ``delay``

    @property
    def count(self) -> int:
        return self.settled - self.forgiven + self.pending


class Attempt:
    """One login attempt's reservation (``Throttle.attempt``/``reserve``): a failure from the moment
    it is made until ``succeeded`` says otherwise."""

    def __init__(self, throttle: Throttle, peer: str, record: _Peer, delay: float) -> None:
        self._throttle = throttle
        self.peer = peer
        self._record = record
        self._seen = record.settled  # the settled failures this attempt waited for
        self.delay = delay  # wall seconds to wait before answering
        self.reserved_at = throttle.now()
        self.outcome: bool | None = None  # None while in flight

    def failed(self) -> None:
        """A wrong password (or no answer): the reservation becomes a settled failure."""
        self._settle(ok=False)

    def succeeded(self) -> None:
        """The right password: this reservation is dropped and the failures settled before the attempt
        began are forgiven; attempts still in flight and failures settled since then stay counted."""
        self._settle(ok=True, forgive=self._seen)

    def _settle(self, *, ok: bool, forgive: int = 0) -> None:
        if self.outcome is not None:
            return
        self.outcome = ok
        self._record.pending -= 1
        if ok:
            self._record.forgiven = max(self._record.forgiven, forgive)
        else:
            self._record.settled += 1
        self._throttle._touch(self.peer, self._record)


class Throttle:
    """Per-peer failure counter: after ``FREE_FAILURES`` wrong attempts every further answer
    (right or wrong) waits ``0.5 * 2**n`` wall seconds, up to ``MAX_DELAY_S``.

    Concurrent attempts: an attempt is counted as a failure from the moment it is reserved (before
    its wait), and only a confirmed success takes it back, so attempts made in parallel see each
    other's pending failures and wait accordingly (the k-th of a burst waits as if the k-1 before it
    had failed); an attempt that never settles (its client vanished) stays a failure.

    Successes: a success drops its own reservation and forgives the failures that were already
    settled when its attempt began (it waited for them). It never clears attempts still in flight,
    nor failures settled after it began: on an address many clients share (every lab client is
    127.0.0.1) a right password does not wipe out a concurrent burst of wrong ones. It does forgive
    earlier failures of another client on the same address, which is what lets a user who mistyped
    work at full speed again; each such success first waits out the delay those failures earned.

    Doors use ``async with throttle.attempt(peer) as attempt:`` then ``attempt.succeeded()`` or
    ``attempt.failed()`` (unsettled at exit: a failure). The older call pattern ``delay(peer)``,
    ``asyncio.sleep``, then ``failed(peer)`` or ``succeeded(peer)`` gets the same protection against
    bursts: ``delay`` reserves an attempt and ``failed``/``succeeded`` settle the peer's oldest open
    one; as that pattern cannot tell which reservation a success was, its success forgives every
    failure settled so far (still never a reservation in flight), and a reservation left open for
    ``STALE_RESERVATION_S`` (its request vanished) is settled as a failure.
    """

    def __init__(
        self,
        free: int = FREE_FAILURES,
        max_delay_s: float = MAX_DELAY_S,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free = free
        self.max_delay_s = max_delay_s
        self.now = now  # wall seconds, for ``STALE_RESERVATION_S`` (tests pass their own)
        self._peers: collections.OrderedDict[str, _Peer] = collections.OrderedDict()

    # -- reservations --------------------------------------------------------------------------

    def reserve(self, peer: str) -> Attempt:
        """Count one attempt from ``peer`` as a failure now; its ``delay`` says how long to wait first."""
        record = self._record(peer)
        ticket = Attempt(self, peer, record, self._delay_for(record.count))
        record.pending += 1
        return ticket

    @contextlib.asynccontextmanager
    async def attempt(self, peer: str) -> AsyncIterator[Attempt]:
        """Reserve an attempt, wait its delay, hand it to the caller to settle; unsettled at exit
        (an exception, a cancelled wait) it is a failure."""
        ticket = self.reserve(peer)
        try:
            if ticket.delay:
                await asyncio.sleep(ticket.delay)
            yield ticket
        finally:
            ticket.failed()  # no-op once settled

    # -- the call pattern of delay / failed / succeeded ------------------------------------------

    def delay(self, peer: str) -> float:
        """Seconds to wait before answering an attempt from ``peer``; reserves that attempt (a
        failure until ``succeeded(peer)``), so parallel attempts slow each other down."""
        ticket = self.reserve(peer)
        ticket._record.legacy.append(ticket)
        return ticket.delay

    def failed(self, peer: str) -> None:
        """The attempt ``delay`` reserved for ``peer`` (its oldest open one) failed; without one,
        count a failure."""
        record = self._record(peer)
        if record.legacy:
            record.legacy.popleft().failed()
        else:
            record.settled += 1

    def succeeded(self, peer: str) -> None:
        """An attempt ``delay`` reserved for ``peer`` (its oldest open one) succeeded: the failures
        settled so far are forgiven (attempts in flight stay counted)."""
        record = self._record(peer)
        if record.legacy:  # which of the open reservations this was is unknown: forgive what has settled
            record.legacy.popleft()._settle(ok=True, forgive=record.settled)
        else:
            record.forgiven = record.settled
            self._touch(peer, record)

    def failures(self, peer: str) -> int:
        """Failures counted for ``peer``: settled ones not forgiven, plus attempts in flight."""
        record = self._peers.get(peer)
        if record is None:
            return 0
        self._expire(record)
        return record.count

    # -- bookkeeping -------------------------------------------------------------------------------

    def _delay_for(self, count: int) -> float:
        over = count - self.free
        return 0.0 if over < 0 else min(self.max_delay_s, 0.5 * 2 ** min(over, _MAX_DOUBLINGS))

    def _record(self, peer: str) -> _Peer:
        record = self._peers.pop(peer, None) or _Peer()
        self._peers[peer] = record  # most recently used last
        while len(self._peers) > MAX_PEERS:
            self._peers.popitem(last=False)
        self._expire(record)
        return record

    def _expire(self, record: _Peer) -> None:
        stale = self.now() - STALE_RESERVATION_S
        while record.legacy and record.legacy[0].reserved_at < stale:
            record.legacy.popleft().failed()

    def _touch(self, peer: str, record: _Peer) -> None:
        """Forget a peer with nothing counted and nothing in flight (its record is still current)."""
        if record.count == 0 and record.pending == 0 and not record.legacy and self._peers.get(peer) is record:
            del self._peers[peer]
