"""The lab's simulated clock: the only place that reads the wall clock.

Simulated time is ``sim_origin + rate * (wall - wall_origin) + offset``; the origin pair is
persisted in the lab directory, so every agent of a lab, in any process, reads the same
time. ``advance`` jumps forward (scenarios, ``certsim clock advance``).

Timers sleep with :meth:`SimClock.sleep_until`. A jump does not just move the offset: it
steps through the timers due inside it, earliest first, pins the clock to each one's due
time, wakes it, and waits until the woken tasks are idle again (asleep on the clock or
done) before the next step. So a 30-day jump runs every 30-minute resync and every daily
expiry check in order, each seeing the simulated time it was due at.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

POLL_S = 0.5  # wall seconds between re-reads of the clock while a timer sleeps (rate changes, other processes)
STEP_GRANULARITY = dt.timedelta(seconds=2)  # timers due this close together wake in one step
MAX_ADVANCE = dt.timedelta(days=3650)  # one jump: ten years of timers is already minutes of work
SETTLE_TIMEOUT_S = 30.0  # wall seconds a jump waits for woken timers before moving on regardless


class Clock(Protocol):
    sim_origin: dt.datetime  # the simulated moment the lab's clock started from (shared by its processes)

    def now(self) -> dt.datetime: ...

    def now_ms(self) -> int: ...

    async def sleep_until(self, due: dt.datetime) -> None: ...


@dataclass(order=True)
class _Waiter:
    """One sleeping timer: one heap entry for the whole sleep (polls re-arm its future, not the heap)."""

    due: dt.datetime
    seq: int
    future: asyncio.Future[bool] = field(compare=False)  # True: woken by a jump; False: time to re-read
    task: asyncio.Task[object] | None = field(compare=False)
    done: bool = field(default=False, compare=False)  # the sleep is over (woken, time reached, cancelled)


def _time_to_look(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(False)


SettleHook = Callable[[], Awaitable[None]]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


class SimClock:
    """Simulated UTC time running at ``rate`` times wall speed from ``sim_origin``."""

    def __init__(self, sim_origin: dt.datetime, *, rate: float = 1.0, wall_origin: float | None = None) -> None:
        if sim_origin.tzinfo is None:
            raise ValueError("sim_origin must be timezone-aware")
        if rate <= 0:
            raise ValueError("clock rate must be positive")
        self.sim_origin = sim_origin.astimezone(dt.UTC)
        self._origin_us = (self.sim_origin - _EPOCH) // _MICROSECOND
        self.rate = rate
        self.wall_origin = time.time() if wall_origin is None else wall_origin
        self._offset = dt.timedelta(0)
        self._offset_us = 0  # the same in whole microseconds: read several times per message (``now_ms``)
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._woken: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._jump: asyncio.Lock | None = None
        self._watched: set[asyncio.Task[object]] = set()
        self.settle_hooks: list[SettleHook] = []  # awaited after each step of a jump
        self.steps = 0  # timer wake-up steps taken by jumps (benchmarks report it)

    def now(self) -> dt.datetime:
        elapsed = max(0.0, time.time() - self.wall_origin) * self.rate
        return self.sim_origin + dt.timedelta(seconds=elapsed) + self.offset

    @property
    def offset(self) -> dt.timedelta:
        """How far jumps have moved simulated time beyond the rate's own course."""
        return self._offset

    @offset.setter
    def offset(self, value: dt.timedelta) -> None:
        self._offset = value
        self._offset_us = value // _MICROSECOND

    def now_ms(self) -> int:
        """``now()`` in whole milliseconds since the epoch, in integers (no datetime: the nodes read it
        several times per message)."""
        elapsed_us = round(max(0.0, time.time() - self.wall_origin) * self.rate * 1e6)
        return (self._origin_us + elapsed_us + self._offset_us) // 1000

    def advance(self, delta: dt.timedelta) -> None:
        """Jump without running timers in between (they fire late, once); tests of pure parts only.
        Labs use :meth:`jump`."""
        if delta < dt.timedelta(0):
            raise ValueError("the lab clock only moves forward")
        self.offset += delta

    async def sleep_until(self, due: dt.datetime) -> None:
        """Sleep until simulated ``due``; woken early and in order by :meth:`jump`."""
        task = asyncio.current_task()
        if task is not None:
            self._settled(task)
        if self.now() >= due:
            return
        loop = asyncio.get_running_loop()
        waiter = _Waiter(due, next(self._seq), loop.create_future(), task)
        heapq.heappush(self._waiters, waiter)
        try:
            while True:
                remaining = (due - self.now()).total_seconds() / self.rate
                if remaining <= 0:
                    return
                poll = loop.call_later(min(remaining, POLL_S), _time_to_look, waiter.future)
                try:
                    woken = await waiter.future
                finally:
                    poll.cancel()
                if woken:
                    return  # a jump woke us at our due time
                waiter.future = loop.create_future()  # a poll: re-read the clock (rate, other processes)
        finally:
            waiter.done = True
            self._next_waiter()  # drop finished sleeps from the top of the heap

    def _settled(self, task: asyncio.Task[object]) -> None:
        self._woken.discard(task)
        if not self._woken:
            self._idle.set()

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._watched.discard(task)
        self._settled(task)

    async def jump(self, delta: dt.timedelta) -> int:
        """Move forward by ``delta``, firing every timer due on the way at its own time; returns
        how many wake-up steps it took. Jumps are serialised."""
        if delta < dt.timedelta(0):
            raise ValueError("the lab clock only moves forward")
        async with self._jump_lock():
            return await self._jump_to(self.offset + delta)

    async def follow(self, offset: dt.timedelta) -> int:
        """Catch up with another process's clock (the clock travels on the bus): jump to its offset,
        firing due timers in order, when it is ahead of ours; returns the steps taken."""
        async with self._jump_lock():  # compared under the lock: two messages never add up
            return await self._jump_to(offset) if offset > self.offset else 0

    def _jump_lock(self) -> asyncio.Lock:
        if self._jump is None:
            self._jump = asyncio.Lock()
        return self._jump

    async def _jump_to(self, target_offset: dt.timedelta) -> int:
        """Step to ``target_offset`` (kept exact, so clocks in other processes can match it)."""
        steps = 0
        while (waiter := self._next_waiter()) is not None:
            base = self.now() - self.offset
            target = base + target_offset
            if waiter.due > target:
                break
            self.offset = max(self.offset, waiter.due - base)
            await self._wake_due(min(waiter.due + STEP_GRANULARITY, target))
            for hook in self.settle_hooks:  # e.g. the lab waits for the messages the timers sent
                await hook()
            steps += 1
        self.offset = max(self.offset, target_offset)
        self.steps += steps
        return steps

    def _next_waiter(self) -> _Waiter | None:
        while self._waiters and self._waiters[0].done:
            heapq.heappop(self._waiters)
        return self._waiters[0] if self._waiters else None

    async def _wake_due(self, until: dt.datetime) -> None:
        """Wake every waiter due before ``until`` and wait until their tasks sleep again or end."""
        self._idle.clear()
        while (waiter := self._next_waiter()) is not None and waiter.due <= until:
            heapq.heappop(self._waiters)
            waiter.done = True
            if waiter.task is not None and not waiter.task.done():
                self._woken.add(waiter.task)
                if waiter.task not in self._watched:  # one callback per task, not one per wake
                    self._watched.add(waiter.task)
                    waiter.task.add_done_callback(self._task_done)
            if not waiter.future.done():
                waiter.future.set_result(True)
        if not self._woken:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), SETTLE_TIMEOUT_S)
        except TimeoutError:
            self._woken.clear()  # a timer blocked on I/O for long: do not hold the whole lab
