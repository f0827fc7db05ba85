"""The lab's simulated clock: the only place that reads the wall clock.

Simulated time is ``sim_origin + rate * (wall - wall_origin) + offset``; the origin pair is
persisted in the lab directory, so every agent of a lab, in any process, reads the same
time. ``advance`` jumps forward (scenarios, ``certsim clock advance``).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def now_ms(self) -> int: ...


class SimClock:
    """Simulated UTC time running at ``rate`` times wall speed from ``sim_origin``."""

    def __init__(self, sim_origin: dt.datetime, *, rate: float = 1.0, wall_origin: float | None = None) -> None:
        if sim_origin.tzinfo is None:
            raise ValueError("sim_origin must be timezone-aware")
        if rate <= 0:
            raise ValueError("clock rate must be positive")
        self.sim_origin = sim_origin.astimezone(dt.UTC)
        self.rate = rate
        self.wall_origin = time.time() if wall_origin is None else wall_origin
        self.offset = dt.timedelta(0)

    def now(self) -> dt.datetime:
        elapsed = max(0.0, time.time() - self.wall_origin) * self.rate
        return self.sim_origin + dt.timedelta(seconds=elapsed) + self.offset

    def now_ms(self) -> int:
        return int(self.now().timestamp() * 1000)

    def advance(self, delta: dt.timedelta) -> None:
        if delta < dt.timedelta(0):
            raise ValueError("the lab clock only moves forward")
        self.offset += delta
