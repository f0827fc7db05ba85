"""One database thread per event loop (so one per process), shared by every node's SQLite database.

aiosqlite runs the thread and its queue: a connection to an in-memory database is the thread's
handle, and every node's ``sqlite3`` connection is made, used and closed in that thread only
(``node.store``). Calls made within one turn of the event loop reach the thread as ONE batch, so
twenty nodes of a process applying the same change cost one thread wake-up and one event-loop
wake-up instead of twenty, and a process hosting a thousand nodes runs one database thread, not a
thousand (issue 11 item 2).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite

WAL_CHECKPOINT_BYTES = 4 << 20  # SQLite's own default threshold (1000 pages of 4 KiB): checkpointed when quiet
WAL_FORCE_BYTES = 2 * WAL_CHECKPOINT_BYTES  # checkpointed at once, quiet or not: a busy lab's logs stay bounded
CHECKPOINT_QUIET_S = 0.05  # no database call for this long: a quiet moment, when a due checkpoint runs
CHECKPOINT_NICE = 10  # the checkpoint thread's niceness: the nodes' own work (and the broker's) goes first

_THREADS: dict[asyncio.AbstractEventLoop, DbThread] = {}


def db_thread() -> DbThread:
    """The database thread of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    thread = _THREADS.get(loop)
    if thread is None:
        thread = _THREADS[loop] = DbThread(loop)
    return thread


class DbThread:
    """The shared thread: ``acquire`` before a database is opened, ``release`` after it is closed;
    the thread ends when the last database of its loop is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._hub: aiosqlite.Connection | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self.batches = 0  # thread calls made (each one wake-up of the thread and of the loop)
        self.calls = 0  # database calls they carried
        self._in_flight = 0  # batches handed to the thread and not yet delivered
        self._last_busy = time.monotonic()  # when a batch last went to the thread or came back
        self._holds = 0  # ``held`` blocks open: work of the process this thread does not see
        self._checkpoints = Checkpoints(self.quiet_for)

    @property
    def checkpoints(self) -> int:
        """WAL checkpoints run (beside the shared thread)."""
        return self._checkpoints.ran

    @property
    def checkpoints_forced(self) -> int:
        """Of which at a log past ``WAL_FORCE_BYTES``, not at a quiet moment."""
        return self._checkpoints.forced

    @property
    def running(self) -> bool:
        return self._hub is not None

    @property
    def idle(self) -> bool:
        """No call waiting for the thread or running in it."""
        return not self._batch and self._in_flight == 0

    @property
    def users(self) -> int:
        """Databases open on this thread."""
        return self._users

    def threads(self) -> list[Any]:
        """The OS thread behind it (for tests that check it ends)."""
        return [] if self._hub is None else [self._hub._thread]

    async def acquire(self) -> None:
        async with self._lock:
            if self._hub is None:
                pending = aiosqlite.connect(":memory:")
                # aiosqlite's thread is not a daemon: a database left open by a failed shutdown would
                # keep the whole process from exiting. Every close is still explicit.
                pending._thread.daemon = True
                self._hub = await pending
            self._users += 1

    async def release(self) -> None:
        async with self._lock:
            self._users -= 1
            if self._users <= 0:
                self._users = 0
                hub, self._hub = self._hub, None
                if _THREADS.get(self._loop) is self:
                    del _THREADS[self._loop]
                self._checkpoints.stop()  # the logs still waiting for a quiet moment give up
                if hub is not None:
                    await hub.close()  # after every call queued before it

    def call(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` in the thread with the other calls of this loop turn; its result or exception."""
        if self._hub is None:
            raise RuntimeError("the database thread is not running (no database is open)")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._batch.append((fn, future))
        if len(self._batch) == 1:
            self._loop.call_soon(self._flush)
        return future

    def checkpoint(self, path: Path) -> asyncio.Future[bool]:
        """Copy ``path``'s write-ahead log into the database once it holds ``WAL_CHECKPOINT_BYTES``, on a
        thread of its own with a connection of its own (PASSIVE: it never blocks the node's writes), at
        the next quiet moment of this thread (no call for ``CHECKPOINT_QUIET_S``), or at once when the
        log has reached ``WAL_FORCE_BYTES`` (``Checkpoints``).

        The nodes' connections run with automatic checkpoints off: on the shared thread one node's
        checkpoint (copying 4 MiB, two fsyncs) would stall every node of the process, and it did
        (it was the p99 of a replication). Beside it, a checkpoint still slowed the writes that met it
        (10-15 ms each, most of a replication's slowest uploads in the bench), hence the quiet moment.
        True when a checkpoint ran.
        """
        return asyncio.wrap_future(self._checkpoints.add(path), loop=self._loop)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """No checkpoint at a quiet moment inside this block: the process is busy with work this thread
        does not see (a benchmark's raw MQTT traffic). A log past ``WAL_FORCE_BYTES`` is still copied."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1

    def quiet_for(self, now: float) -> float:
        """Seconds since the last call went to the thread or came back (0 while one is in it, or while
        ``held``). Read from the checkpoint thread too: a heuristic, racy by a batch at most."""
        return 0.0 if self._in_flight or self._batch or self._holds else max(0.0, now - self._last_busy)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        self._last_busy = time.monotonic()
        self.batches += 1
        self.calls += len(batch)
        hub = self._hub
        if hub is None:
            _fail(batch, RuntimeError("the database thread stopped"))
            return

        def run() -> list[tuple[Any, BaseException | None]]:
            results: list[tuple[Any, BaseException | None]] = []
            for fn, _future in batch:
                try:
                    results.append((fn(), None))
                except Exception as exc:  # one node's failure is that node's answer, not the batch's
                    results.append((None, exc))
            return results

        # Handed to aiosqlite's thread as its private ``Connection._execute`` does (the version is pinned),
        # without the task that call would need: the thread sets ``done`` from the loop's side and the
        # batch is delivered in that same callback (one event-loop turn fewer per batch).
        if not hub._running or hub._connection is None:
            _fail(batch, RuntimeError("the database thread stopped"))
            return
        done: asyncio.Future[list[tuple[Any, BaseException | None]]] = self._loop.create_future()
        done.add_done_callback(functools.partial(_deliver, batch))
        done.add_done_callback(self._delivered)
        self._in_flight += 1
        hub._tx.put_nowait((done, run))

    def _delivered(self, _done: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        self._last_busy = time.monotonic()


class Checkpoints:
    """The write-ahead logs due for a checkpoint, served by one lower-priority thread beside the shared
    one: a log below ``WAL_CHECKPOINT_BYTES`` is left alone, one past ``WAL_FORCE_BYTES`` is copied at
    once, any other waits for a quiet moment (``quiet_for`` reaching ``CHECKPOINT_QUIET_S``). One
    thread serves them all, each look going over every waiting log, so a log past the force mark is
    never kept behind one that waits for quiet."""

    def __init__(self, quiet_for: Callable[[float], float]) -> None:
        self._quiet_for = quiet_for
        self._lock = threading.Lock()  # the table below is shared with the checkpoint thread
        self._due: dict[Path, concurrent.futures.Future[bool]] = {}
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._serving = False
        self._generation = 0  # a stop ends the serving loop of the generation before it
        self.ran = 0
        self.forced = 0

    def add(self, path: Path) -> concurrent.futures.Future[bool]:
        """``path`` is due for a look; the future says whether a checkpoint ran (one per log at a time)."""
        with self._lock:
            future = self._due.get(path)
            if future is None:
                future = self._due[path] = concurrent.futures.Future()
            if not self._serving:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        1, thread_name_prefix="certsim-checkpoint", initializer=_in_the_background
                    )
                self._serving = True
                self._executor.submit(self._serve, self._generation)
        return future

    def stop(self) -> None:
        """Every waiting log gives up (False); the thread ends after the checkpoint it may be running."""
        with self._lock:
            self._generation += 1
            self._serving = False
            due, self._due = self._due, {}
            executor, self._executor = self._executor, None
        for future in due.values():
            _settle(future, False)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _serve(self, generation: int) -> None:
        """The checkpoint thread's loop: look at every due log, sleep a little while some still wait."""
        while True:
            with self._lock:
                if generation != self._generation:
                    return
                due = list(self._due.items())
                if not due:
                    self._serving = False
                    return
            waiting = False
            for path, future in due:
                if generation != self._generation:
                    return
                try:
                    outcome = self._look(path)
                except Exception as exc:  # (a busy or vanished database: the node's next look tries again)
                    self._done(path, future, exc)
                    continue
                if outcome is None:
                    waiting = True
                else:
                    self._done(path, future, outcome)
            if waiting:
                time.sleep(CHECKPOINT_QUIET_S / 2)

    def _look(self, path: Path) -> bool | None:
        """True: checkpointed; False: nothing to do; None: due, waiting for a quiet moment."""
        try:
            size = path.with_name(path.name + "-wal").stat().st_size
        except FileNotFoundError:
            return False
        if size < WAL_CHECKPOINT_BYTES:
            return False
        if size >= WAL_FORCE_BYTES:
            _checkpoint(path)
            self.forced += 1
        elif self._quiet_for(time.monotonic()) >= CHECKPOINT_QUIET_S:
            _checkpoint(path)
        else:
            return None
        self.ran += 1
        return True

    def _done(self, path: Path, future: concurrent.futures.Future[bool], outcome: bool | Exception) -> None:
        with self._lock:
            if self._due.get(path) is future:
                del self._due[path]
        _settle(future, outcome)


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=1.0)  # (never creates one)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def _settle(future: concurrent.futures.Future[bool], outcome: bool | Exception) -> None:
    """(A stop and the checkpoint thread may both settle one future: the first wins.)"""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _in_the_background() -> None:
    """Lower the calling thread's CPU priority (Linux: the niceness of one thread). A checkpoint copies
    megabytes and often comes for many nodes at once; at normal priority it took the CPU the event
    loop and the broker needed (a replication's p99 over 1,000 uploads). Elsewhere a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        me = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, me, max(CHECKPOINT_NICE, os.getpriority(os.PRIO_PROCESS, me)))


def _deliver(batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]], done: asyncio.Future[Any]) -> None:
    if done.cancelled():
        _fail(batch, RuntimeError("the database thread call was cancelled"))
        return
    if (exc := done.exception()) is not None:
        _fail(batch, exc)
        return
    for (_fn, future), (result, error) in zip(batch, done.result(), strict=True):
        if future.done():  # its caller was cancelled meanwhile (the work itself was done)
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _fail(batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]], exc: BaseException) -> None:
    for _fn, future in batch:
        if not future.done():
            future.set_exception(exc)
