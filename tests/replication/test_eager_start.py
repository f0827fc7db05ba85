"""replication.transport._start_eagerly: a coroutine runs at once up to its first wait, then on as a
task, with its outcome, its cancellation and its context kept (Bus.publish puts a message on the
wire this way, not at the loop's next turn)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from replication.transport import _start_eagerly

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="caller")


async def test_it_runs_at_once_up_to_its_first_wait_and_returns_its_result() -> None:
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def work() -> int:
        steps.append("before")
        await gate
        steps.append("after")
        return 7

    started = _start_eagerly(work(), "t")
    assert steps == ["before"], "the first step did not run at the call"
    gate.set_result(None)
    assert await started == 7
    assert steps == ["before", "after"]


async def test_a_coroutine_that_never_waits_or_fails_at_once_gives_a_done_future() -> None:
    async def done() -> str:
        return "ok"

    async def fails() -> None:
        raise ValueError("at once")

    finished = _start_eagerly(done(), "t")
    assert finished.done() and finished.result() == "ok"
    failed = _start_eagerly(fails(), "t")
    assert failed.done()
    with pytest.raises(ValueError, match="at once"):
        failed.result()


async def test_an_error_after_the_first_wait_reaches_the_awaiter() -> None:
    async def later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    with pytest.raises(KeyError, match="later"):
        await _start_eagerly(later(), "t")


async def test_a_cancellation_reaches_the_coroutine_where_it_waits() -> None:
    cleaned = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    started = _start_eagerly(waits(), "t")
    await asyncio.sleep(0)  # the task has taken over
    started.cancel()
    with pytest.raises(asyncio.CancelledError):
        await started
    assert cleaned.is_set()


async def test_cancelled_before_the_task_took_over_the_coroutine_still_cleans_up() -> None:
    """A publish cancelled in the same loop turn it started in (the connection was lost at once):
    the coroutine, stopped at its first wait, is cancelled there, so its clean-up runs."""
    cleaned = asyncio.Event()
    inner_cancelled = asyncio.Event()

    inner = asyncio.ensure_future(asyncio.Event().wait())

    async def waits() -> None:
        try:
            await inner
        except asyncio.CancelledError:
            inner_cancelled.set()
            raise
        finally:
            cleaned.set()

    started = _start_eagerly(waits(), "t")
    started.cancel()  # before its first step
    with pytest.raises(asyncio.CancelledError):
        await started
    await asyncio.wait_for(cleaned.wait(), 5)
    assert inner_cancelled.is_set(), "the coroutine did not meet the cancellation at its await"
    assert inner.cancelled(), "what it waited for was not cancelled, as a task's cancel would"


async def test_its_context_is_its_own_across_the_wait() -> None:
    seen: list[str] = []

    async def marks() -> None:
        MARK.set("inside")
        await asyncio.sleep(0)
        seen.append(MARK.get())

    await _start_eagerly(marks(), "t")
    assert seen == ["inside"], "the task lost what the first step set"
    assert MARK.get() == "caller", "the first step leaked into the caller's context"
