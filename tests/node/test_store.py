"""node.store and node.dbthread: every node's database on one shared thread, one call per transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from cluster.labca import LabCA
from node import dbthread
from node import store as store_module
from node.clock import SimClock
from node.dbthread import CHECKPOINT_NICE, db_thread
from node.store import CHECKPOINT_CHECK_EVERY, CONTROL_REQUEST, NodeStore
from replication.hlc import Version
from replication.records import Record


@functools.cache
def shared_cert_der() -> bytes:
    """One CA certificate from the lab CA (its RSA key comes from the tests' key deck)."""
    return LabCA(SimClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))).create_ca("StoreTest").der()


def _record(i: int, der: bytes) -> Record:
    return Record("tomcat-trust", f"cert-{i}", Version(1_000 + i, 0, "n"), der, "n", 1)


async def _open(tmp_path: Path, count: int) -> list[NodeStore]:
    stores = [NodeStore(tmp_path / f"node{i}" / "node.sqlite") for i in range(count)]
    for store in stores:
        await store.open()
    return stores


async def test_many_databases_share_one_thread_and_one_call_per_loop_turn(tmp_path: Path) -> None:
    """Issue 11 item 2: ten nodes' databases run on one thread; ten transactions committed in the
    same loop turn reach it as one call (one thread wake-up), and each is committed."""
    stores = await _open(tmp_path, 10)
    thread = db_thread()
    try:
        assert thread.users == 10 and len(thread.threads()) == 1
        der = shared_cert_der()
        before = thread.batches

        async def put(i: int, store: NodeStore) -> None:
            async with store.transaction():
                await store.put_entry(_record(i, der))
                await store.set_meta("hlc", str(i))

        await asyncio.gather(*(put(i, s) for i, s in enumerate(stores)))
        assert thread.batches - before == 1, thread.batches - before
        for i, store in enumerate(stores):
            held = await store.get_entry("tomcat-trust", f"cert-{i}")
            assert held is not None and held.der == der
    finally:
        for store in stores:
            await store.close()
    assert not thread.running and thread.users == 0


async def test_the_thread_is_idle_only_when_no_call_waits_or_runs(tmp_path: Path) -> None:
    """``DbThread.idle`` (what the latency benchmark waits for before a raw message): false while a
    call is queued and while it runs in the thread, true once its result is delivered."""
    stores = await _open(tmp_path, 1)
    thread = db_thread()
    release = threading.Event()
    try:
        assert thread.idle
        running = thread.call(lambda: release.wait(10))
        assert not thread.idle  # queued
        for _ in range(1000):  # handed to the thread
            if not thread._batch:
                break
            await asyncio.sleep(0)
        assert not thread._batch
        assert not thread.idle, "a call running in the thread does not count"
        release.set()
        assert await running is True
        assert thread.idle
    finally:
        release.set()
        for store in stores:
            await store.close()


async def test_one_nodes_failure_in_a_shared_call_is_that_nodes_alone(tmp_path: Path) -> None:
    """A failing transaction in a batch raises for its node, is rolled back there, and the others commit."""
    good, bad = await _open(tmp_path, 2)
    der = shared_cert_der()
    try:

        async def broken() -> None:
            async with bad.transaction():
                await bad.put_entry(_record(1, der))
                await bad.execute("INSERT INTO no_such_table VALUES (1)")

        async def fine() -> None:
            async with good.transaction():
                await good.put_entry(_record(2, der))

        results = await asyncio.gather(broken(), fine(), return_exceptions=True)
        assert isinstance(results[0], sqlite3.OperationalError) and "no_such_table" in str(results[0])
        assert results[1] is None
        assert await bad.get_entry("tomcat-trust", "cert-1") is None
        assert ("tomcat-trust", "cert-1") not in bad.index  # the index follows the rollback
        assert await good.get_entry("tomcat-trust", "cert-2") is not None
    finally:
        await good.close()
        await bad.close()


async def test_a_read_inside_a_transaction_sees_its_own_queued_writes(tmp_path: Path) -> None:
    """Writes are queued until COMMIT; a read in the same transaction sends them first."""
    (store,) = await _open(tmp_path, 1)
    der = shared_cert_der()
    try:
        async with store.transaction():
            await store.put_entry(_record(7, der))
            held = await store.get_entry("tomcat-trust", "cert-7")
            assert held is not None
            await store.set_meta("after-read", "1")
        assert await store.get_meta("after-read") == "1"
    finally:
        await store.close()


async def test_committed_work_survives_a_reopen_and_the_thread_comes_back(tmp_path: Path) -> None:
    """The thread ends with the last database and starts again with the next; what was committed is on disk."""
    (store,) = await _open(tmp_path, 1)
    async with store.transaction():
        await store.set_meta("kept", "yes")
    await store.close()
    assert not db_thread().running
    again = NodeStore(store.path)
    await again.open()
    try:
        assert await again.get_meta("kept") == "yes"
    finally:
        await again.close()


async def test_a_closed_database_says_so(tmp_path: Path) -> None:
    (store,) = await _open(tmp_path, 1)
    await store.close()
    with pytest.raises(RuntimeError, match="is not open"):
        await store.get_meta("x")


async def test_the_write_ahead_log_is_checkpointed_beside_the_shared_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Automatic checkpoints are off on the shared thread (one node's checkpoint stalled every node);
    once a node's WAL is past the threshold, a PASSIVE checkpoint on a thread of its own copies it into
    the database file, and the node kept writing meanwhile."""
    monkeypatch.setattr("node.dbthread.WAL_CHECKPOINT_BYTES", 64 << 10)
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    der = shared_cert_der()
    size_before = store.path.stat().st_size
    try:
        for i in range(CHECKPOINT_CHECK_EVERY * 2):
            async with store.transaction():
                await store.put_entry(_record(i, der))
        assert store.checkpointing is not None
        assert await store.checkpointing is True
        assert thread.checkpoints >= 1
        assert store.path.stat().st_size > size_before + (64 << 10)  # the pages are in the database file now
        assert len(await store.entries("tomcat-trust")) == CHECKPOINT_CHECK_EVERY * 2
    finally:
        await store.close()


async def _grow_wal(store: NodeStore, count: int, start: int = 0) -> None:
    der = shared_cert_der()
    for i in range(start, start + count):
        async with store.transaction():
            await store.put_entry(_record(i, der))


async def test_a_due_checkpoint_waits_for_a_quiet_moment_of_the_database_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-ahead log past the mark is checkpointed at the first quiet moment (no database call for
    CHECKPOINT_QUIET_S), not while the nodes are writing: a checkpoint slowed the writes that met it
    (most of a replication's slowest uploads). Nor while ``held`` (work the thread does not see)."""
    monkeypatch.setattr("node.dbthread.WAL_CHECKPOINT_BYTES", 64 << 10)
    monkeypatch.setattr("node.dbthread.WAL_FORCE_BYTES", 1 << 30)
    # a quiet moment far longer than the pauses below, so a loaded machine's late wake-up is no quiet moment
    monkeypatch.setattr("node.dbthread.CHECKPOINT_QUIET_S", 0.2)
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    try:
        await _grow_wal(store, CHECKPOINT_CHECK_EVERY * 2)
        assert store.checkpointing is not None and not store.checkpointing.done()
        for i in range(80):  # busy: a write every 10 ms, for longer than the quiet moment several times
            await _grow_wal(store, 1, start=10_000 + i)
            await asyncio.sleep(0.01)
        assert not store.checkpointing.done() and thread.checkpoints == 0
        with thread.held():
            await asyncio.sleep(dbthread.CHECKPOINT_QUIET_S * 4)
            assert not store.checkpointing.done() and thread.checkpoints == 0
        assert await asyncio.wait_for(store.checkpointing, 10) is True  # quiet now
        assert thread.checkpoints == 1 and thread.checkpoints_forced == 0
    finally:
        await store.close()


async def test_a_log_past_the_force_mark_is_checkpointed_while_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lab that never goes quiet still has its logs copied: past WAL_FORCE_BYTES at once."""
    monkeypatch.setattr("node.dbthread.WAL_CHECKPOINT_BYTES", 64 << 10)
    monkeypatch.setattr("node.dbthread.WAL_FORCE_BYTES", 128 << 10)
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    try:
        with thread.held():  # never quiet
            await _grow_wal(store, CHECKPOINT_CHECK_EVERY * 3)
            assert store.checkpointing is not None
            assert await asyncio.wait_for(store.checkpointing, 10) is True
        assert thread.checkpoints_forced >= 1
    finally:
        await store.close()


async def test_a_log_waiting_for_quiet_keeps_no_other_log_from_its_forced_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread serves every node's log: a node whose log waits for a quiet moment does not keep
    another's, past the force mark, from being copied (a lab that never goes quiet stays bounded)."""
    monkeypatch.setattr("node.dbthread.WAL_CHECKPOINT_BYTES", 64 << 10)
    monkeypatch.setattr("node.dbthread.WAL_FORCE_BYTES", 4 << 20)  # (about 340 commits here)
    waiting, growing = await _open(tmp_path, 2)
    thread = db_thread()
    try:
        with thread.held():  # never quiet
            await _grow_wal(waiting, CHECKPOINT_CHECK_EVERY * 2)  # past the mark, below the force mark
            first = waiting.checkpointing
            assert first is not None and not first.done()
            await _grow_wal(growing, CHECKPOINT_CHECK_EVERY * 3)
            assert growing.checkpointing is not None
            while growing.checkpointing is not None and not growing.checkpointing.done():
                await _grow_wal(growing, CHECKPOINT_CHECK_EVERY, start=100_000 + thread.calls)
                await asyncio.sleep(dbthread.CHECKPOINT_QUIET_S / 5)
                assert thread.calls < 20_000, "the forced checkpoint never came"
            assert growing.checkpointing is not None and await growing.checkpointing is True
            assert thread.checkpoints_forced >= 1 and not first.done()  # the other log still waits
    finally:
        for store in (waiting, growing):
            await store.close()


async def test_a_checkpoint_waiting_for_quiet_does_not_hold_the_thread_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the last database ends a checkpoint still waiting for a quiet moment (no hang at exit),
    also when the log outlives the close (a user has the database open in the sqlite3 shell)."""
    monkeypatch.setattr("node.dbthread.WAL_CHECKPOINT_BYTES", 64 << 10)
    monkeypatch.setattr("node.dbthread.WAL_FORCE_BYTES", 1 << 30)
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    user = sqlite3.connect(store.path)
    try:
        user.execute("SELECT COUNT(*) FROM entry").fetchall()  # (its reading keeps the log in place)
        with thread.held():
            await _grow_wal(store, CHECKPOINT_CHECK_EVERY * 2)
            waiting = store.checkpointing
            assert waiting is not None and not waiting.done()
            await store.close()
            assert store.path.with_name(store.path.name + "-wal").exists()
            assert await asyncio.wait_for(waiting, 5) is False  # it gave up (a hang here would hang the exit)
    finally:
        user.close()
    assert thread.checkpoints == 0


async def test_the_checkpoint_thread_runs_at_a_lower_priority(tmp_path: Path) -> None:
    """A checkpoint copies megabytes, often for many nodes at once: its thread yields the CPU to the
    event loop and the broker (it weighed on a replication's p99 over long runs)."""
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    try:
        await thread.checkpoint(store.path)  # (starts the thread)
        executor = thread._checkpoints._executor
        assert executor is not None
        nice = await asyncio.wrap_future(
            executor.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        )
    finally:
        await store.close()
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert nice >= CHECKPOINT_NICE and nice >= own


async def test_nodes_look_at_their_write_ahead_logs_at_different_commits(tmp_path: Path) -> None:
    """Nodes of a lab commit in step (each applies the same changes); each starts at its own point of
    the look-every-CHECKPOINT_CHECK_EVERY-commits cycle, so their checkpoints do not all come in the
    same turn."""
    offsets = {NodeStore(tmp_path / f"node{i:02d}" / "node.sqlite")._commits for i in range(21)}
    assert len(offsets) > 10
    assert all(0 <= o < CHECKPOINT_CHECK_EVERY for o in offsets)


# --- second reader's reproducers (failures inside a transaction), kept as regression tests ---------


class Boom(Exception):
    pass


async def _in_transaction(store: NodeStore) -> bool:
    return bool(await store._call(lambda conn: conn.in_transaction))


async def test_a_body_failing_after_a_write_leaves_nothing_behind(tmp_path: Path) -> None:
    """A failure after a queued write: nothing of it reaches SQLite, the connection is not left inside
    a transaction, the index forgets the write, and the next transaction works."""
    (store,) = await _open(tmp_path, 1)
    try:

        async def fail_after_a_write() -> None:
            async with store.transaction():
                await store.put_entry(_record(1, shared_cert_der()))
                raise Boom

        with pytest.raises(Boom):
            await fail_after_a_write()
        assert not await _in_transaction(store)
        assert ("tomcat-trust", "cert-1") not in store.index
        assert await store.get_entry("tomcat-trust", "cert-1") is None
        async with store.transaction():
            await store.set_meta("next", "1")
        assert await store.get_meta("next") == "1"
    finally:
        await store.close()


async def test_a_body_failing_after_a_read_commits_no_half(tmp_path: Path) -> None:
    """A read sends the writes queued before it; a failure after more writes rolls all of it back:
    none of the transaction is on disk after a reopen."""
    (store,) = await _open(tmp_path, 1)
    der = shared_cert_der()

    async def fail_after_a_read() -> None:
        async with store.transaction():
            await store.put_entry(_record(1, der))
            assert await store.get_entry("tomcat-trust", "cert-1") is not None
            await store.put_entry(_record(2, der))
            await store.set_meta("half", "committed")
            raise Boom

    with pytest.raises(Boom):
        await fail_after_a_read()
    await store.close()
    again = NodeStore(store.path)
    await again.open()
    try:
        assert await again.get_entry("tomcat-trust", "cert-1") is None
        assert await again.get_entry("tomcat-trust", "cert-2") is None
        assert await again.get_meta("half") is None
    finally:
        await again.close()


async def test_a_cancelled_transaction_leaves_the_connection_clean(tmp_path: Path) -> None:
    (store,) = await _open(tmp_path, 1)
    started = asyncio.Event()

    async def body() -> None:
        async with store.transaction():
            await store.put_entry(_record(3, shared_cert_der()))
            started.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(body())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        assert not await _in_transaction(store)
        assert await store.get_entry("tomcat-trust", "cert-3") is None
    finally:
        await store.close()


async def test_a_task_started_inside_a_transaction_writes_into_it(tmp_path: Path) -> None:
    """``wait_for``/``gather`` run their awaitable in a new task (Python 3.11): a write through one, inside
    a transaction, joins that transaction instead of waiting for its lock forever."""
    (store,) = await _open(tmp_path, 1)
    try:
        async with store.transaction():
            await asyncio.wait_for(store.set_meta("k", "v"), 5)
            await asyncio.gather(store.set_meta("g", "w"))
        assert await store.get_meta("k") == "v" and await store.get_meta("g") == "w"
    finally:
        await store.close()


async def test_a_rollback_counts_as_a_change_of_the_index(tmp_path: Path) -> None:
    """A plan made while another task's uncommitted write was in the index must not be reused once that
    write is rolled back (``apply_records`` re-plans when the generation moved), even when the
    database it reloads from is empty."""
    (store,) = await _open(tmp_path, 1)
    seen: dict[str, object] = {}
    try:

        async def failing() -> None:
            async with store.transaction():
                await store.put_entry(_record(9, shared_cert_der()))
                await store.execute("INSERT INTO no_such_table VALUES (1)")  # fails at COMMIT

        async def planner() -> None:
            await asyncio.sleep(0)  # the other transaction awaits its COMMIT: its write is in the index
            seen["generation"], seen["had_it"] = store.generation, ("tomcat-trust", "cert-9") in store.index
            async with store.transaction():
                seen["generation_inside"] = store.generation
                seen["has_it_inside"] = ("tomcat-trust", "cert-9") in store.index

        results = await asyncio.gather(failing(), planner(), return_exceptions=True)
        assert isinstance(results[0], sqlite3.OperationalError)
        assert seen["had_it"] and not seen["has_it_inside"]
        assert seen["generation_inside"] != seen["generation"]
    finally:
        await store.close()


async def test_the_outbox_mirror_holds_committed_messages_only_and_survives_a_reopen(tmp_path: Path) -> None:
    """DESIGN property 4 (nothing acknowledged is lost): the publisher reads the outbox from memory,
    but only what was committed; a rolled-back message never shows, an unsent one is back after a
    reopen (a crash) in its order, and ids keep growing past removed rows."""
    (store,) = await _open(tmp_path, 1)
    woken: list[int] = []
    store.outbox_committed = lambda: woken.append(1)
    try:
        async with store.transaction():
            await store.outbox_add("t/repl", b"first")
            assert await store.outbox_peek() == []  # not committed yet

        async def add_then_fail() -> None:
            async with store.transaction():
                await store.outbox_add("t/repl", b"rolled-back")
                raise Boom

        with pytest.raises(Boom):
            await add_then_fail()
        await store.outbox_add("t/node/b", b"second")  # outside a transaction: on its own
        assert [p for _i, _t, p in await store.outbox_peek()] == [b"first", b"second"]
        assert len(woken) == 2 and await store.outbox_count() == 2
        first_id = (await store.outbox_peek())[0][0]
        await store.outbox_remove([first_id])
        assert [p for _i, _t, p in await store.outbox_peek()] == [b"second"]
        await store.outbox_add("t/repl", b"third")
    finally:
        await store.close()
    reopened = NodeStore(store.path)
    await reopened.open()
    try:
        rows = await reopened.outbox_peek()
        assert [(t, p) for _i, t, p in rows] == [("t/node/b", b"second"), ("t/repl", b"third")]
        assert rows[0][0] < rows[1][0]
        await reopened.outbox_remove([rows[1][0]])  # (not the oldest: the mirror drops it all the same)
        await reopened.outbox_add("t/repl", b"fourth")
        ids = [i for i, _t, _p in await reopened.outbox_peek()]
        assert ids[-1] > rows[1][0] > first_id and [p for *_x, p in await reopened.outbox_peek()] == [
            b"second",
            b"fourth",
        ]
    finally:
        await reopened.close()


async def test_control_ids_are_answered_from_memory_and_the_table_still_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 item 5: a handled control id is known after a reopen; an id noted inside a transaction
    that rolls back is not; when the table outgrows the in-memory bound the table is asked."""
    (store,) = await _open(tmp_path, 1)
    try:
        await store.note_control_request("done-1", 10)

        async def note_then_fail() -> None:
            async with store.transaction():
                await store.note_control_request("rolled-back", 11)
                raise Boom

        with pytest.raises(Boom):
            await note_then_fail()
        assert await store.control_handled("done-1")
        assert not await store.control_handled("rolled-back")
        await store.forget_control_requests(before_ms=11)
        assert not await store.control_handled("done-1")
        for i in range(3):
            await store.note_control_request(f"kept-{i}", 20 + i)
    finally:
        await store.close()
    monkeypatch.setattr("node.store.REQUESTS_REMEMBERED", 2)  # the table holds 3: the mirror is partial
    reopened = NodeStore(store.path)
    await reopened.open()
    try:
        assert all([await reopened.control_handled(f"kept-{i}") for i in range(3)])  # kept-0 from the table
        assert not await reopened.control_handled("never-seen")
    finally:
        await reopened.close()


async def test_inside_a_transaction_an_entry_the_index_lacks_is_not_read(tmp_path: Path) -> None:
    """R-REPL-8's same-name check reads the held entry: inside the transaction, a name the index does not
    hold costs no database call; a held one is read (with the transaction's own writes)."""
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    try:
        async with store.transaction():
            await store.put_entry(_record(1, shared_cert_der()))
        async with store.transaction():
            calls = thread.calls
            assert await store.get_entry("tomcat-trust", "cert-2") is None
            assert thread.calls == calls
            held = await store.get_entry("tomcat-trust", "cert-1")
            assert held is not None and held.version == _record(1, b"").version and thread.calls == calls + 1
            await store.delete_entry("tomcat-trust", "cert-1")
            assert await store.get_entry("tomcat-trust", "cert-1") is None
        assert await store.get_entry("tomcat-trust", "cert-1") is None  # (outside: read from the table)
    finally:
        await store.close()


async def _outbox_ids(store: NodeStore) -> list[int]:
    return [int(r[0]) for r in await store.fetchall("SELECT id FROM outbox ORDER BY id")]


async def test_a_sent_message_row_goes_with_the_next_commit_or_soon_after(tmp_path: Path) -> None:
    """A row the broker acknowledged leaves the mirror at once and the table with the node's next
    commit (no database call of its own: one came while the other nodes committed the same change,
    and held their batch up), or OUTBOX_DELETE_DELAY_S later when no commit comes."""
    (store,) = await _open(tmp_path, 1)
    thread = db_thread()
    try:
        for payload in (b"first", b"second"):
            async with store.transaction():
                await store.outbox_add("t/repl", payload)
        first, second = (i for i, _t, _p in await store.outbox_peek())
        calls = thread.calls
        await store.outbox_remove([first])
        assert thread.calls == calls  # no call of its own
        assert [i for i, _t, _p in await store.outbox_peek()] == [second]  # out of the mirror at once
        assert await _outbox_ids(store) == [first, second]  # the table still has it
        calls = thread.calls
        async with store.transaction():
            await store.put_entry(_record(1, shared_cert_der()))
        assert thread.calls == calls + 1  # the commit took the delete along
        assert await _outbox_ids(store) == [second]
        await store.outbox_remove([second])
        for _ in range(200):  # (reads only: no commit comes) until deleted on its own, 0.2 s from now
            if not await _outbox_ids(store):
                break
            await asyncio.sleep(store_module.OUTBOX_DELETE_DELAY_S / 4)
        assert await _outbox_ids(store) == []  # no commit came: deleted on its own
    finally:
        await store.close()


async def test_sent_rows_are_deleted_at_a_stop_and_sent_again_after_a_crash(tmp_path: Path) -> None:
    """DESIGN property 4 (nothing lost): a clean close deletes the rows still waiting; a crash
    (``abandon``) leaves them, and the restarted node sends those messages again (a duplicate its
    peers count and ignore), never loses one."""
    for abandon in (False, True):
        path = tmp_path / f"abandon-{abandon}" / "node.sqlite"
        store = NodeStore(path)
        await store.open()
        try:
            async with store.transaction():
                await store.outbox_add("t/repl", b"sent")
            await store.outbox_add("t/repl", b"unsent")
            await store.outbox_remove([(await store.outbox_peek())[0][0]])
        finally:
            await store.close(abandon=abandon)
        again = NodeStore(path)
        await again.open()
        try:
            expected = [b"sent", b"unsent"] if abandon else [b"unsent"]
            assert [p for *_x, p in await again.outbox_peek()] == expected
        finally:
            await again.close()


async def test_a_failed_write_does_not_bring_a_sent_message_back(tmp_path: Path) -> None:
    """A failed transaction reloads the outbox mirror from the table: a row sent but not yet deleted
    is deleted first, not queued to send again."""
    (store,) = await _open(tmp_path, 1)
    try:
        for payload in (b"sent", b"waiting"):
            async with store.transaction():
                await store.outbox_add("t/repl", payload)
        await store.outbox_remove([(await store.outbox_peek())[0][0]])

        async def write_read_fail() -> None:
            async with store.transaction():
                await store.put_entry(_record(1, shared_cert_der()))
                await store.fetchall("SELECT 1")  # sends the write: the failure needs a rollback
                raise Boom

        with pytest.raises(Boom):
            await write_read_fail()
        assert [p for *_x, p in await store.outbox_peek()] == [b"waiting"]
        assert len(await _outbox_ids(store)) == 1
    finally:
        await store.close()


async def test_many_sent_rows_are_deleted_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory bounded: OUTBOX_DELETE_BATCH rows waiting are deleted at once, commit or not."""
    monkeypatch.setattr("node.store.OUTBOX_DELETE_BATCH", 3)
    monkeypatch.setattr("node.store.OUTBOX_DELETE_DELAY_S", 3600.0)
    (store,) = await _open(tmp_path, 1)
    try:
        for i in range(4):
            async with store.transaction():
                await store.outbox_add("t/repl", f"m{i}".encode())
        ids = [i for i, _t, _p in await store.outbox_peek()]
        await store.outbox_remove(ids[:2])
        assert len(await _outbox_ids(store)) == 4
        await store.outbox_remove(ids[2:3])
        assert await _outbox_ids(store) == ids[3:]
    finally:
        await store.close()


async def test_an_outbox_longer_than_memory_keeps_its_order_and_its_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing lost, memory bounded: beyond OUTBOX_IN_MEMORY the table alone holds the newer messages;
    the publisher still gets every one, oldest first, and the count covers them all."""
    monkeypatch.setattr("node.store.OUTBOX_IN_MEMORY", 2)
    (store,) = await _open(tmp_path, 1)
    try:
        for i in range(5):
            async with store.transaction():
                await store.outbox_add("t/repl", f"m{i}".encode())
        assert await store.outbox_count() == 5 and store.outbox_waiting
        sent: list[bytes] = []
        while rows := await store.outbox_peek():
            assert len(rows) <= 2
            sent.extend(p for _i, _t, p in rows)
            await store.outbox_remove([i for i, _t, _p in rows])
            if len(sent) == 2:  # one more while the table holds the rest
                await store.outbox_add("t/repl", b"m5")
        assert sent == [f"m{i}".encode() for i in range(6)]
        assert await store.outbox_count() == 0 and not store.outbox_waiting
    finally:
        await store.close()


async def test_a_failed_one_statement_write_changes_no_mirror(tmp_path: Path) -> None:
    """Bad write, nothing changed: a one-statement transaction (sent alone, as SQLite's autocommit)
    that fails leaves the outbox mirror as the table is, and the next message still goes."""
    (store,) = await _open(tmp_path, 1)
    try:
        await store.outbox_add("t/repl", b"first")
        store._outbox_next -= 1  # the next insert collides with the first row's id

        async def add() -> None:
            async with store.transaction():
                await store.outbox_add("t/repl", b"collides")

        with pytest.raises(sqlite3.IntegrityError):
            await add()
        assert [p for *_x, p in await store.outbox_peek()] == [b"first"]
        await add()  # (ids moved past the table's)
        assert [p for *_x, p in await store.outbox_peek()] == [b"first", b"collides"]
    finally:
        await store.close()


async def test_a_commit_cancelled_in_the_thread_still_shows_in_the_mirrors(tmp_path: Path) -> None:
    """Nothing lost: a caller cancelled while its COMMIT is in the database thread does not stop it;
    the mirrors are read again, so the committed message is sent and the control id is known."""
    (store,) = await _open(tmp_path, 1)
    try:

        async def commit_one() -> None:
            token = CONTROL_REQUEST.set(("req-cancelled", 5))
            try:
                async with store.transaction():
                    await store.outbox_add("t/repl", b"landed")
            finally:
                CONTROL_REQUEST.reset(token)

        task = asyncio.create_task(commit_one())
        await asyncio.sleep(0)  # it now waits for its COMMIT, queued for the thread
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [p for *_x, p in await store.outbox_peek()] == [b"landed"]
        assert await store.control_handled("req-cancelled")
    finally:
        await store.close()


async def test_a_control_id_committed_alone_is_known_after_a_reopen(tmp_path: Path) -> None:
    """Issue 10 item 5: a request whose transaction wrote nothing else commits its id alone (one
    statement); the id is answered from memory, and from the table after a reopen."""
    (store,) = await _open(tmp_path, 1)
    token = CONTROL_REQUEST.set(("req-alone", 7))
    try:
        async with store.transaction():
            pass
    finally:
        CONTROL_REQUEST.reset(token)
    try:
        assert await store.control_handled("req-alone")
    finally:
        await store.close()
    reopened = NodeStore(store.path)
    await reopened.open()
    try:
        assert await reopened.control_handled("req-alone") and not await reopened.control_handled("req-other")
    finally:
        await reopened.close()
