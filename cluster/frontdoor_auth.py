"""What both front doors (SSH platform CLI, certmgr REST) share: the OS administrator's
credentials, a brake on repeated wrong passwords, and the one way they reach a node.

Every request a front door accepts becomes the same node request the ``certsim`` CLI and
scenarios send (``RequestFn``), so nothing is implemented twice.
"""

from __future__ import annotations

import collections
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

RequestFn = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""``await request(op, args)`` runs one node operation; raises ``node.errors.CertsimError``."""

FREE_FAILURES = 3  # wrong passwords from one peer before answers slow down
MAX_DELAY_S = 8.0  # wall seconds: pacing of a network peer, not simulated time
MAX_PEERS = 4096  # peers remembered; the oldest are forgotten first


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


class Throttle:
    """Per-peer failure counter: after ``FREE_FAILURES`` wrong attempts every further answer
    (right or wrong) waits ``0.5 * 2**n`` wall seconds, up to ``MAX_DELAY_S``; a success resets."""

    def __init__(self, free: int = FREE_FAILURES, max_delay_s: float = MAX_DELAY_S) -> None:
        self.free = free
        self.max_delay_s = max_delay_s
        self._failures: collections.OrderedDict[str, int] = collections.OrderedDict()

    def delay(self, peer: str) -> float:
        """Seconds to wait before answering an attempt from ``peer``."""
        over = self._failures.get(peer, 0) - self.free
        return 0.0 if over < 0 else min(self.max_delay_s, 0.5 * 2**over)

    def failed(self, peer: str) -> None:
        self._failures[peer] = self._failures.pop(peer, 0) + 1
        while len(self._failures) > MAX_PEERS:
            self._failures.popitem(last=False)

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)

    def failures(self, peer: str) -> int:
        return self._failures.get(peer, 0)
