"""Hybrid logical clock: versions that order every change in the cluster (last writer wins).

A version is (simulated milliseconds, logical counter, node id). The physical part reads
the lab's simulated clock, never the wall clock; the counter orders events within one
millisecond and after observing a peer's version from the future.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Version(NamedTuple):
    """A totally ordered version stamp; ties between nodes break on the node id."""

    ms: int
    counter: int
    node: str

    def to_json(self) -> list[int | str]:
        return [self.ms, self.counter, self.node]

    @classmethod
    def from_json(cls, raw: object) -> Version:
        if (
            not isinstance(raw, list | tuple)
            or len(raw) != 3
            or not isinstance(raw[0], int)
            or not isinstance(raw[1], int)
            or not isinstance(raw[2], str)
        ):
            raise ValueError(f"not a version: {raw!r}")
        return cls(raw[0], raw[1], raw[2])

    def __str__(self) -> str:
        return f"{self.ms}.{self.counter}@{self.node}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """The inverse of ``str``: ``1767225600000.3@cucm-pub``."""
        stamp, sep, node = text.partition("@")
        ms, dot, counter = stamp.partition(".")
        if not sep or not dot or not ms.isdigit() or not counter.isdigit():
            raise ValueError(f"not a version: {text!r}")
        return cls(int(ms), int(counter), node)


ZERO = Version(0, 0, "")


class HybridClock:
    """Issues versions for one node; ``observe`` keeps it ahead of every version it has seen."""

    def __init__(self, node: str, now_ms: Callable[[], int], last: Version = ZERO) -> None:
        self.node = node
        self._now_ms = now_ms
        self._ms = last.ms
        self._counter = last.counter

    def tick(self) -> Version:
        """A new version for a local change, later than everything seen so far."""
        physical = self._now_ms()
        if physical > self._ms:
            self._ms, self._counter = physical, 0
        else:
            self._counter += 1
        return Version(self._ms, self._counter, self.node)

    def observe(self, seen: Version) -> None:
        """Fold in a version received from a peer so later local versions outrank it."""
        physical = self._now_ms()
        top = max(physical, self._ms, seen.ms)
        if top == self._ms and top == seen.ms:
            self._counter = max(self._counter, seen.counter) + 1
        elif top == self._ms:
            self._counter += 1
        elif top == seen.ms:
            self._counter = seen.counter + 1
        else:
            self._counter = 0
        self._ms = top

    @property
    def last(self) -> Version:
        return Version(self._ms, self._counter, self.node)
