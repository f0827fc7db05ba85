"""The lab clock's jumps: timers due inside a jump fire in order, each at its own simulated time."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from node.clock import STEP_GRANULARITY, SimClock

ORIGIN = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def _periodic(clock: SimClock, first: dt.timedelta, every: dt.timedelta, seen: list[dt.datetime]) -> None:
    due = clock.now() + first
    while True:
        await clock.sleep_until(due)
        seen.append(clock.now())
        due += every


async def test_jump_fires_each_timer_at_its_own_time_in_order() -> None:
    """R-TIME: a 2-day jump runs a 30-minute timer 96 times and a daily one twice, each at its due time."""
    clock = SimClock(ORIGIN)
    start = clock.now()
    half_hour: list[dt.datetime] = []
    daily: list[dt.datetime] = []
    tasks = [
        asyncio.create_task(_periodic(clock, dt.timedelta(minutes=30), dt.timedelta(minutes=30), half_hour)),
        asyncio.create_task(_periodic(clock, dt.timedelta(hours=24), dt.timedelta(hours=24), daily)),
    ]
    await asyncio.sleep(0)
    steps = await clock.jump(dt.timedelta(days=2, minutes=1))
    for task in tasks:
        task.cancel()
    assert len(half_hour) == 96
    assert len(daily) == 2
    assert steps == 96  # the daily timer shares a step with the half-hourly one due at the same time
    for i, fired in enumerate(half_hour, start=1):
        assert dt.timedelta(0) <= fired - (start + i * dt.timedelta(minutes=30)) < dt.timedelta(seconds=1)
    merged = sorted(half_hour + daily)
    assert merged == sorted(merged)  # never a later timer before an earlier one
    assert clock.now() - start >= dt.timedelta(days=2, minutes=1)


async def test_jump_waits_for_a_woken_timer_to_finish_its_work() -> None:
    """R-TIME: a timer that does I/O after waking finishes before the clock moves to the next due time."""
    clock = SimClock(ORIGIN)
    log: list[tuple[str, dt.datetime]] = []

    async def slow() -> None:
        due = clock.now() + dt.timedelta(hours=1)
        while True:
            await clock.sleep_until(due)
            await asyncio.sleep(0.02)  # wall-time work, e.g. a database write or an SMTP delivery
            log.append(("slow-done", clock.now()))
            due += dt.timedelta(hours=1)

    async def fast() -> None:
        due = clock.now() + dt.timedelta(hours=1, minutes=30)
        await clock.sleep_until(due)
        log.append(("fast", clock.now()))

    tasks = [asyncio.create_task(slow()), asyncio.create_task(fast())]
    await asyncio.sleep(0)
    await clock.jump(dt.timedelta(hours=3))
    for task in tasks:
        task.cancel()
    assert [name for name, _ in log] == ["slow-done", "fast", "slow-done", "slow-done"]
    assert log[0][1] - clock.sim_origin < dt.timedelta(hours=1, minutes=1)


async def test_timers_close_together_wake_in_one_step() -> None:
    """Timers due within the step granularity share one step (how a 21-node year stays fast)."""
    clock = SimClock(ORIGIN)
    fired: list[dt.datetime] = []

    async def once(after: dt.timedelta) -> None:
        await clock.sleep_until(clock.now() + after)
        fired.append(clock.now())

    base = dt.timedelta(hours=1)
    tasks = [asyncio.create_task(once(base + STEP_GRANULARITY / (i + 2))) for i in range(5)]
    await asyncio.sleep(0)
    steps = await clock.jump(dt.timedelta(hours=2))
    await asyncio.gather(*tasks)
    assert steps == 1
    assert len(fired) == 5


async def test_follow_catches_up_with_another_clock_and_never_goes_back() -> None:
    """R-TIME: a node in another process follows the lab's offset (from the bus), firing its timers."""
    lab_clock = SimClock(ORIGIN, wall_origin=0.0)
    node_clock = SimClock(ORIGIN, wall_origin=0.0)
    seen: list[dt.datetime] = []
    task = asyncio.create_task(_periodic(node_clock, dt.timedelta(hours=24), dt.timedelta(hours=24), seen))
    await asyncio.sleep(0)
    await lab_clock.jump(dt.timedelta(days=3))
    steps = await node_clock.follow(lab_clock.offset)
    assert steps == 3
    assert len(seen) == 3
    assert await node_clock.follow(dt.timedelta(days=1)) == 0  # an older offset changes nothing
    assert node_clock.offset == lab_clock.offset
    task.cancel()


async def test_clock_refuses_to_go_back() -> None:
    clock = SimClock(ORIGIN)
    with pytest.raises(ValueError, match="only moves forward"):
        await clock.jump(dt.timedelta(seconds=-1))


async def test_two_catch_ups_in_a_row_never_overshoot() -> None:
    """R-TIME: two clock messages arriving while the first catch-up runs end at the newest offset, not their sum."""
    clock = SimClock(ORIGIN, wall_origin=0.0)
    seen: list[dt.datetime] = []
    task = asyncio.create_task(_periodic(clock, dt.timedelta(hours=1), dt.timedelta(hours=1), seen))
    await asyncio.sleep(0)
    await asyncio.gather(clock.follow(dt.timedelta(days=10)), clock.follow(dt.timedelta(days=11)))
    task.cancel()
    assert clock.offset == dt.timedelta(days=11)
    assert len(seen) == 11 * 24


async def test_a_sleeping_timer_holds_one_heap_entry_and_one_callback() -> None:
    """A timer polling the clock at wall speed does not grow the clock's memory (one entry per sleep)."""
    clock = SimClock(ORIGIN)
    clock_polls = asyncio.create_task(clock.sleep_until(clock.now() + dt.timedelta(hours=1)))
    await asyncio.sleep(1.2)  # two or three polls
    assert len(clock._waiters) == 1
    clock_polls.cancel()
    seen: list[dt.datetime] = []
    task = asyncio.create_task(_periodic(clock, dt.timedelta(minutes=30), dt.timedelta(minutes=30), seen))
    await asyncio.sleep(0)
    await clock.jump(dt.timedelta(days=2))
    assert len(seen) == 96
    assert clock._watched == {task}  # one done-callback for the task, not one per wake
    task.cancel()
    for _ in range(3):  # the cancellation, then its done-callbacks
        await asyncio.sleep(0)
    assert not clock._watched


@pytest.mark.parametrize("wall", [1_000.0, 1_000.0004999, 1_000.9996, 1_234.5678915, 99_999.999999])
@pytest.mark.parametrize("rate", [1.0, 3.0, 3600.0])
def test_now_ms_is_now_in_whole_milliseconds(monkeypatch: pytest.MonkeyPatch, wall: float, rate: float) -> None:
    """No wall clock in the logic: the integer ``now_ms`` (read per message) says what ``now`` says."""
    monkeypatch.setattr("node.clock.time.time", lambda: wall)
    clock = SimClock(dt.datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC), rate=rate, wall_origin=999.0)
    for _ in range(3):
        assert clock.now_ms() == (clock.now() - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
        clock.advance(dt.timedelta(days=1, microseconds=1_501))
