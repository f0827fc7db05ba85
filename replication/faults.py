"""Faults on one node's link to the bus: delay, duplication, reordering (seeded), loss.

This is a layer in the transport, not in the rules: the merge logic never knows it is
being tested. Partitions and crashes cut the connection itself (``Bus.cut``, ``Bus.abort``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from replication.envelope import EnvelopeError, signed_part


@dataclass
class LinkFaults:
    """What happens to messages arriving at one node; all zero means a clean link."""

    delay_s: float = 0.0  # each message waits uniformly 0..delay_s seconds (so messages overtake each other)
    duplicate: float = 0.0  # probability a message is delivered twice
    reorder: float = 0.0  # probability a message is held back and delivered after the next one
    drop_next: int = 0  # the next N change messages arriving are lost (a change "missed" in transit)
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # noqa: S311 - test schedules, not security

    @property
    def active(self) -> bool:
        return self.delay_s > 0 or self.duplicate > 0 or self.reorder > 0 or self.drop_next > 0

    def clear(self) -> None:
        self.delay_s = self.duplicate = self.reorder = 0.0
        self.drop_next = 0

    def drops(self, payload: bytes) -> bool:
        """True when this message is a change to be lost (counts down ``drop_next``). The link looks
        at the envelope's kind only (it is not secret; the seal protects it, not hides it)."""
        if self.drop_next <= 0 or _kind_of(payload) != "change":
            return False
        self.drop_next -= 1
        return True

    def copies(self) -> int:
        return 2 if self.duplicate and self.rng.random() < self.duplicate else 1

    def hold_back(self) -> bool:
        return bool(self.reorder) and self.rng.random() < self.reorder

    def delay(self) -> float:
        return self.rng.uniform(0, self.delay_s) if self.delay_s else 0.0


def _kind_of(payload: bytes) -> str | None:
    try:
        _mac, raw = signed_part(payload)
    except (ValueError, EnvelopeError):
        return None
    kind = raw.get("k")
    return kind if isinstance(kind, str) else None
