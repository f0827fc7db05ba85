"""A node's SQLite database (in the shared database thread, node.dbthread): identities, trust entries,
tombstones, outbox, metadata.

A change and the message that announces it are written in one transaction; the message is
published afterwards and removed from the outbox only once the broker acknowledged it, so
an acknowledged change survives a crash of the node (DESIGN.md property 4).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import itertools
import logging
import sqlite3
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from node.certs import validity_start_ms
from node.dbthread import WAL_CHECKPOINT_BYTES, DbThread, db_thread
from replication.core import Slot
from replication.hlc import Version
from replication.records import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity (
    unit TEXT PRIMARY KEY, cert_der BLOB NOT NULL, key_pem BLOB NOT NULL,
    source TEXT NOT NULL, updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entry (
    store TEXT NOT NULL, name TEXT NOT NULL, cert_der BLOB NOT NULL,
    v_ms INTEGER NOT NULL, v_counter INTEGER NOT NULL, v_node TEXT NOT NULL, origin TEXT NOT NULL,
    PRIMARY KEY (store, name)
);
CREATE TABLE IF NOT EXISTS tombstone (
    store TEXT NOT NULL, name TEXT NOT NULL,
    v_ms INTEGER NOT NULL, v_counter INTEGER NOT NULL, v_node TEXT NOT NULL, origin TEXT NOT NULL,
    PRIMARY KEY (store, name)
);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS csr (
    unit TEXT PRIMARY KEY, csr_pem BLOB NOT NULL, key_pem BLOB NOT NULL,
    multi_server INTEGER NOT NULL, nodes TEXT NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS service (
    name TEXT PRIMARY KEY, state TEXT NOT NULL, loaded TEXT NOT NULL, started_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS loaded_cert (sha256 TEXT PRIMARY KEY, cert_der BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS setting (name TEXT PRIMARY KEY, value TEXT NOT NULL, version TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS authz_key (
    kind TEXT PRIMARY KEY, material BLOB NOT NULL, version TEXT NOT NULL, retired BLOB
);
CREATE TABLE IF NOT EXISTS peer (name TEXT PRIMARY KEY, fqdn TEXT NOT NULL, role TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS control_request (id TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS syslog (
    id INTEGER PRIMARY KEY AUTOINCREMENT, sim_ms INTEGER NOT NULL, app TEXT NOT NULL, text TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Identity:
    unit: str
    cert_der: bytes
    key_pem: bytes
    source: str  # "self-signed" or "ca-signed"


# The control request (id, simulated ms) the current task runs: every transaction it commits records
# the id with its writes, so a request that changed something is known after any restart or crash.
CONTROL_REQUEST: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "certsim_control_request", default=None
)
T = TypeVar("T")
Statement = tuple[str, tuple[object, ...]]  # SQL and its parameters
WAL_KEEP_BYTES = WAL_CHECKPOINT_BYTES // 4
CHECKPOINT_CHECK_EVERY = 64  # commits between two looks at a node's write-ahead log size
REQUESTS_REMEMBERED = 4096  # handled control ids answered from memory (a bigger table is asked beyond them)
OUTBOX_IN_MEMORY = 256  # oldest unsent messages a node keeps in memory too (the table holds them all)
OUTBOX_DELETE_DELAY_S = 0.2  # a sent message's row goes with the node's next commit, or this much later
OUTBOX_DELETE_BATCH = 256  # ... or at once when this many wait
TOMBSTONE_COLUMNS = "store, name, v_ms, v_counter, v_node, origin"
ENTRY_COLUMNS = "store, name, cert_der, v_ms, v_counter, v_node, origin, start_ms, e_ms, e_counter, e_node"
MIGRATIONS = {  # columns added after the first release, so an older lab directory opens as it is
    "start_ms": "ALTER TABLE entry ADD COLUMN start_ms INTEGER NOT NULL DEFAULT -1",
    "e_ms": "ALTER TABLE entry ADD COLUMN e_ms INTEGER",
    "e_counter": "ALTER TABLE entry ADD COLUMN e_counter INTEGER",
    "e_node": "ALTER TABLE entry ADD COLUMN e_node TEXT",
}


def _retrieve(done: asyncio.Future[bool]) -> None:
    """A failed checkpoint (a busy database) is retried at the next look; never an unretrieved error."""
    if not done.cancelled():
        done.exception()


def _connect(path: Path) -> sqlite3.Connection:
    """Open (and make or migrate) a node's database; runs in the database thread."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, which is our fault model
        conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run beside the shared thread (DbThread.checkpoint)
        conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")  # a checkpointed WAL shrinks back below the mark
        conn.executescript(SCHEMA)
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(entry)")}
        for column, ddl in MIGRATIONS.items():
            if column not in columns:
                conn.execute(ddl)
    except BaseException:
        conn.close()
        raise
    return conn


def _record(row: tuple[object, ...], *, tombstone: bool) -> Record:
    if tombstone:
        store, name, ms, counter, node, origin = row
        return Record(str(store), str(name), Version(int(str(ms)), int(str(counter)), str(node)), None, str(origin))
    store, name, der, ms, counter, node, origin, start, e_ms, e_counter, e_node = row
    data = bytes(cast(bytes, der))
    start_ms = int(str(start))
    version = Version(int(str(ms)), int(str(counter)), str(node))
    replaces = None if e_ms is None else Version(int(str(e_ms)), int(str(e_counter)), str(e_node))
    return Record(
        store=str(store),
        name=str(name),
        version=version,
        der=data,
        origin=str(origin),
        start_ms=validity_start_ms(data) if start_ms < 0 else start_ms,
        replaces=replaces if replaces is not None and replaces < version else None,  # (older files: an epoch)
    )


class NodeStore:
    """One node's database. All writes go through ``transaction()``, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None  # made, used and closed in the database thread only
        self._thread: DbThread | None = None
        self._lock = asyncio.Lock()
        # which transaction the running task belongs to: set by ``transaction()`` in its task's context,
        # so tasks it starts inside (``gather``, ``wait_for``) belong to it too, and nothing else does
        self._tx_serial = 0
        self._tx_of_context: contextvars.ContextVar[int] = contextvars.ContextVar(f"certsim-tx-{id(self)}", default=0)
        self._pending: list[Statement] | None = None  # that transaction's writes not yet sent to SQLite
        self._sent = False  # part of it was sent (a read inside it flushed the writes before it)
        # the control_request table (id -> simulated ms seen), mirrored; complete unless it outgrew the bound
        self._requests: dict[str, int] = {}
        self._requests_complete = False
        # the oldest rows of the outbox table (up to OUTBOX_IN_MEMORY), mirrored; and how many newer
        # committed rows only the table holds (a long partition queues more than is worth keeping in memory)
        self._outbox: collections.deque[tuple[int, str, bytes]] = collections.deque()
        self._outbox_beyond = 0
        self._outbox_next = 1  # the id of the next outbox row
        # rows of messages the broker acknowledged, out of the mirror already, their DELETE not yet written:
        # it goes with the node's next commit (``transaction``), or a moment later on its own
        self._acked: list[int] = []
        self._acked_timer: asyncio.TimerHandle | None = None
        self._acked_task: asyncio.Task[None] | None = None
        self._on_commit: list[Callable[[], None]] = []  # mirror updates of the open transaction's writes
        self.outbox_committed: Callable[[], None] | None = None  # called when a committed message awaits sending
        self._outbox_queued = 0  # messages committed to the outbox so far (a transaction compares)
        # commits counted towards the next look at the write-ahead log; each node starts at its own
        # point of the cycle, so nodes that write in step (all applying the same changes) do not
        # check, nor checkpoint, in the same turn
        self._commits = zlib.crc32(str(path).encode()) % CHECKPOINT_CHECK_EVERY
        self.checkpointing: asyncio.Future[bool] | None = None  # the WAL checkpoint in flight, if any
        self.index: dict[tuple[str, str], Slot] = {}  # mirrors the entry and tombstone tables
        self.generation = 0  # bumped on every change of entries, tombstones or identities (cheap "changed since?")

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        thread = db_thread()
        await thread.acquire()
        try:
            self._conn = await thread.call(functools.partial(_connect, self.path))
        except BaseException:
            await thread.release()
            raise
        self._thread = thread
        await self._reload_index()
        await self._load_mirrors()

    def _slot(self, store: str, name: str) -> Slot:
        self.generation += 1
        return self.index.setdefault((store, name), Slot())

    def max_version(self) -> Version | None:
        """The newest version held (entries and tombstones), so a restarted clock never goes back."""
        versions = [v for s in self.index.values() for v in (s.entry, s.tombstone) if v is not None]
        return max(versions) if versions else None

    async def close(self, *, abandon: bool = False) -> None:
        """Close the database; the shared thread ends with the last database of its loop, also
        when this close itself fails. Sent messages' rows still waiting are deleted first, unless
        ``abandon`` (a crash: they are sent again at the next start, a duplicate the peers ignore)."""
        if self._acked_timer is not None:
            self._acked_timer.cancel()
            self._acked_timer = None
        if self._acked_task is not None:  # (cancelled inside the thread, its delete may still land)
            self._acked_task.cancel()
            await asyncio.wait({self._acked_task})
        if self._acked and not abandon and self._conn is not None:
            with contextlib.suppress(Exception):  # (not deleted: sent again at the next start)
                await self._delete_acked()
        conn, self._conn = self._conn, None
        thread, self._thread = self._thread, None
        if thread is None or conn is None:
            return
        try:
            await thread.call(conn.close)
        finally:
            await thread.release()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        conn, thread = self._conn, self._thread
        if conn is None or thread is None:
            raise RuntimeError(f"database {self.path} is not open")
        return thread.call(functools.partial(fn, conn))

    async def _run(
        self, statements: list[Statement], query: Statement | None = None, *, one: bool = False
    ) -> list[tuple[Any, ...]]:
        """Run ``statements``, then ``query``, in the database thread as ONE call.

        Each call into the thread is a hop (a thread wake-up and an event-loop wake-up, about
        0.2 ms here); a transaction sent as one call costs one hop instead of one per statement,
        and the calls of many nodes in one loop turn share a hop (``node.dbthread``).
        """

        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            for sql, args in statements:
                conn.execute(sql, args)
            if query is None:
                return []
            cur = conn.execute(*query)
            rows = cur.fetchmany(1) if one else cur.fetchall()
            return [tuple(r) for r in rows]

        return await self._call(work)

    def _after_commit(self) -> None:
        """Every ``CHECKPOINT_CHECK_EVERY`` commits, have the write-ahead log checkpointed if it grew."""
        self._commits += 1
        if self._commits % CHECKPOINT_CHECK_EVERY or self._thread is None:
            return
        if self.checkpointing is None or self.checkpointing.done():
            self.checkpointing = self._thread.checkpoint(self.path)
            self.checkpointing.add_done_callback(_retrieve)

    def _in_transaction(self) -> bool:
        return self._pending is not None and self._tx_of_context.get() == self._tx_serial

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[NodeStore]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; serialised per node.

        Writes inside are queued and sent with the COMMIT in one call (a read inside the
        transaction sends what is queued first, so it sees the transaction's own writes).
        The in-memory index is restored from the database after a rollback.
        """
        async with self._lock:
            queued_before = self._outbox_queued
            self._tx_serial += 1
            self._tx_of_context.set(self._tx_serial)
            self._pending, self._sent = [("BEGIN IMMEDIATE", ())], False
            self._on_commit = []
            generation = self.generation
            try:
                yield self
                request = CONTROL_REQUEST.get()
                if request is not None:
                    self._pending.append(("INSERT OR IGNORE INTO control_request(id, seen_ms) VALUES (?, ?)", request))
                    self._on_commit.append(functools.partial(self._remember_request, *request))
                if self._acked:  # sent messages' rows, deleted by this commit
                    ids, delete = self._acked_delete()
                    self._pending.append(delete)
                    self._on_commit.append(functools.partial(self._forget_acked, ids))
                if len(self._pending) == 2 and not self._sent:  # one write: SQLite's autocommit is as atomic
                    statements = self._pending[1:]  # and skips two statements (each a GIL hand-off in the thread)
                else:
                    statements = [*self._pending, ("COMMIT", ())]
                self._pending, self._sent = [], True
                await self._run(statements)
                for action in self._on_commit:
                    action()
                self._after_commit()
            except BaseException:
                sent, self._pending = self._sent, None  # nothing queued may run after a failure
                if sent:  # part of it reached SQLite (a failed COMMIT leaves the transaction open too)
                    await self._rollback()
                    # a call cancelled while in the thread still ran: its COMMIT may have landed
                    await self._load_mirrors()
                if self.generation != generation:  # only a transaction that wrote moved the index
                    await self._reload_index()
                raise
            finally:
                self._pending, self._sent, self._on_commit = None, False, []
            queued = self._outbox_queued != queued_before
        if queued:
            # It committed a message to send: one loop turn lets the publisher (woken by
            # ``outbox_committed``) put it on the wire before the caller goes on with its answer; the
            # cluster waits for the change, the caller's client for the answer that comes after it.
            # (A cancellation here comes after the commit, which stands.)
            await asyncio.sleep(0)

    async def _rollback(self) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

        await self._call(work)

    async def execute(
        self, sql: str, args: tuple[object, ...] = (), *, committed: Callable[[], None] | None = None
    ) -> None:
        """A write: queued in the caller's open transaction, or else run on its own (serialised).
        ``committed`` runs once the write is committed (never when it is rolled back)."""
        if self._in_transaction():
            assert self._pending is not None
            self._pending.append((sql, args))
            if committed is not None:
                self._on_commit.append(committed)
            return
        async with self._lock:
            try:
                await self._run([(sql, args)])
            except BaseException:
                if committed is not None:  # (cancelled while in the thread, the write may have landed)
                    await self._load_mirrors()
                raise
        if committed is not None:
            committed()

    async def fetchall(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """A read; it waits for another task's open transaction to end, so it never sees its
        uncommitted rows (one shared connection); inside the caller's own transaction it runs at
        once, after the writes queued so far."""
        return await self._query((sql, args), one=False)

    async def fetchone(self, sql: str, args: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        rows = await self._query((sql, args), one=True)
        return rows[0] if rows else None

    async def _query(self, query: Statement, *, one: bool) -> list[tuple[Any, ...]]:
        if self._in_transaction():
            assert self._pending is not None
            statements, self._pending = self._pending, []
            self._sent = self._sent or bool(statements)
            return await self._run(statements, query, one=one)
        async with self._lock:
            return await self._run([], query, one=one)

    async def _reload_index(self) -> None:
        """Rebuild the index from the database (at open, and after a rollback, under the lock);
        it replaces the old one only once complete, and always counts as a change."""
        index: dict[tuple[str, str], Slot] = {}
        for row in await self._run([], (f"SELECT {ENTRY_COLUMNS} FROM entry", ())):  # noqa: S608 - constant
            rec = _record(row, tombstone=False)
            index.setdefault(rec.key, Slot()).hold(rec)
        for row in await self._run([], (f"SELECT {TOMBSTONE_COLUMNS} FROM tombstone", ())):  # noqa: S608 - constant
            rec = _record(row, tombstone=True)
            index.setdefault(rec.key, Slot()).tombstone = rec.version
        self.index = index
        self.generation += 1

    # -- metadata -------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self.fetchone("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- identities -----------------------------------------------------------------------

    async def identities(self) -> dict[str, Identity]:
        rows = await self.fetchall("SELECT unit, cert_der, key_pem, source FROM identity")
        return {str(r[0]): Identity(str(r[0]), bytes(r[1]), bytes(r[2]), str(r[3])) for r in rows}

    async def put_identity(self, ident: Identity, now_ms: int) -> None:
        self.generation += 1
        await self.execute(
            "INSERT OR REPLACE INTO identity(unit, cert_der, key_pem, source, updated_ms) VALUES (?,?,?,?,?)",
            (ident.unit, ident.cert_der, ident.key_pem, ident.source, now_ms),
        )

    # -- trust entries and tombstones -----------------------------------------------------

    async def get_entry(self, store: str, name: str) -> Record | None:
        if self._in_transaction() and ((slot := self.index.get((store, name))) is None or slot.entry is None):
            return None  # the index says so (it holds the committed rows and this transaction's own)
        row = await self.fetchone(
            f"SELECT {ENTRY_COLUMNS} FROM entry WHERE store=? AND name=?",  # noqa: S608 - constant columns
            (store, name),
        )
        return None if row is None else _record(row, tombstone=False)

    async def get_tombstone(self, store: str, name: str) -> Record | None:
        row = await self.fetchone(
            f"SELECT {TOMBSTONE_COLUMNS} FROM tombstone WHERE store=? AND name=?",  # noqa: S608 - constant columns
            (store, name),
        )
        return None if row is None else _record(row, tombstone=True)

    async def entries(self, store: str | None = None) -> list[Record]:
        sql = f"SELECT {ENTRY_COLUMNS} FROM entry"  # noqa: S608 - constant columns
        args: tuple[str, ...] = ()
        if store is not None:
            sql += " WHERE store=?"
            args = (store,)
        rows = await self.fetchall(sql + " ORDER BY store, name", args)
        return [_record(r, tombstone=False) for r in rows]

    async def tombstones(self) -> list[Record]:
        rows = await self.fetchall(
            f"SELECT {TOMBSTONE_COLUMNS} FROM tombstone ORDER BY store, name"  # noqa: S608 - constant columns
        )
        return [_record(r, tombstone=True) for r in rows]

    async def store_counts(self) -> dict[str, int]:
        rows = await self.fetchall("SELECT store, COUNT(*) FROM entry GROUP BY store")
        return {str(r[0]): int(r[1]) for r in rows}

    async def put_entry(self, rec: Record) -> None:
        assert rec.der is not None
        v = rec.version
        e = rec.replaces
        await self.execute(
            f"INSERT OR REPLACE INTO entry({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant
            (
                *(rec.store, rec.name, rec.der, v.ms, v.counter, v.node, rec.origin, rec.start_ms),
                *((None, None, None) if e is None else (e.ms, e.counter, e.node)),
            ),
        )
        self._slot(rec.store, rec.name).hold(rec)

    async def delete_entry(self, store: str, name: str) -> None:
        await self.execute("DELETE FROM entry WHERE store=? AND name=?", (store, name))
        self._slot(store, name).drop()

    async def put_tombstone(self, rec: Record) -> None:
        v = rec.version
        await self.execute(
            f"INSERT OR REPLACE INTO tombstone({TOMBSTONE_COLUMNS}) VALUES (?,?,?,?,?,?)",  # noqa: S608 - constant
            (rec.store, rec.name, v.ms, v.counter, v.node, rec.origin),
        )
        self._slot(rec.store, rec.name).tombstone = v

    async def drop_tombstone(self, store: str, name: str) -> None:
        """Forget a deletion (retention expired, or a rejoining node adopting a peer's state)."""
        await self.execute("DELETE FROM tombstone WHERE store=? AND name=?", (store, name))
        self._slot(store, name).tombstone = None

    # -- control requests handled ----------------------------------------------------------

    async def _load_mirrors(self) -> None:
        """Read the control ids and the outbox into memory (at open, and after a failed write): a
        request's replay check and the publisher's next message then cost no database call (each
        one a thread hop on the request's critical path). The tables decide; the mirrors change
        only once a write is committed. Called with the lock held, or before anyone else can use
        the store."""
        rows = await self._run(
            [], ("SELECT id, seen_ms FROM control_request ORDER BY seen_ms DESC LIMIT ?", (REQUESTS_REMEMBERED + 1,))
        )
        self._requests = {str(r[0]): int(r[1]) for r in reversed(rows[:REQUESTS_REMEMBERED])}
        self._requests_complete = len(rows) <= REQUESTS_REMEMBERED
        await self._delete_acked()  # (the table counts and lists only what is still to send)
        rows = await self._run([], ("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM outbox", ()))
        count, top = int(rows[0][0]), int(rows[0][1])
        rows = await self._run([], ("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name='outbox'", ()))
        self._outbox_next = max(self._outbox_next, 1 + max(int(rows[0][0]) if rows else 0, top))
        await self._load_outbox(count)

    async def _load_outbox(self, count: int) -> None:
        await self._delete_acked()
        rows = await self._run([], ("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (OUTBOX_IN_MEMORY,)))
        self._outbox = collections.deque((int(r[0]), str(r[1]), bytes(r[2])) for r in rows)
        self._outbox_beyond = max(0, count - len(self._outbox))

    def _remember_request(self, request_id: str, seen_ms: int) -> None:
        self._requests.setdefault(request_id, seen_ms)  # (INSERT OR IGNORE: the first sighting stays)
        while len(self._requests) > REQUESTS_REMEMBERED:  # bounded: beyond it, ask the table
            del self._requests[next(iter(self._requests))]
            self._requests_complete = False

    async def control_handled(self, request_id: str) -> bool:
        if request_id in self._requests:
            return True
        if self._requests_complete:  # the mirror holds the whole table
            return False
        return await self.fetchone("SELECT 1 FROM control_request WHERE id=?", (request_id,)) is not None

    async def note_control_request(self, request_id: str, seen_ms: int) -> None:
        """Remember a handled control request that committed nothing (it failed, was refused or
        only read): a copy replayed later, even after a restart, is refused as well."""
        await self.execute(
            "INSERT OR IGNORE INTO control_request(id, seen_ms) VALUES (?, ?)",
            (request_id, seen_ms),
            committed=functools.partial(self._remember_request, request_id, seen_ms),
        )

    async def forget_control_requests(self, before_ms: int) -> None:
        def forget() -> None:
            self._requests = {k: ms for k, ms in self._requests.items() if ms >= before_ms}

        await self.execute("DELETE FROM control_request WHERE seen_ms < ?", (before_ms,), committed=forget)

    # -- outbox ---------------------------------------------------------------------------

    async def outbox_add(self, topic: str, payload: bytes) -> None:
        row = (self._outbox_next, topic, payload)
        self._outbox_next += 1  # (a rolled-back row leaves a gap; the order is all that counts)
        await self.execute(
            "INSERT INTO outbox(id, topic, payload) VALUES (?, ?, ?)",
            row,
            committed=functools.partial(self._queued, row),
        )

    def _queued(self, row: tuple[int, str, bytes]) -> None:
        self._outbox_queued += 1
        if self._outbox_beyond or len(self._outbox) >= OUTBOX_IN_MEMORY:
            self._outbox_beyond += 1  # the table alone holds it; read when the ones before are sent
        else:
            self._outbox.append(row)
        if self.outbox_committed is not None:
            self.outbox_committed()

    @property
    def outbox_waiting(self) -> bool:
        """Committed messages are waiting to be sent (no database call)."""
        return bool(self._outbox) or self._outbox_beyond > 0

    async def outbox_peek(self, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """The oldest committed messages not yet acknowledged by the broker (from memory; the table
        is read only when more were queued than memory keeps)."""
        if not self._outbox and self._outbox_beyond:
            async with self._lock:  # (no commit moves the table meanwhile)
                if not self._outbox and self._outbox_beyond:
                    await self._load_outbox(self._outbox_beyond)
        return list(itertools.islice(self._outbox, limit))

    async def outbox_remove(self, ids: list[int]) -> None:
        """The broker acknowledged these messages: out of the mirror at once; their rows are deleted
        with the node's next commit, or ``OUTBOX_DELETE_DELAY_S`` later. A call of its own here came
        while the other nodes of the process committed the same change, and went before their batch
        of the database thread or held it up (one delete, slowed by the busy event loop). A crash
        meanwhile sends them again at the next start: a duplicate, which the peers count and ignore."""
        if not ids:
            return
        gone = set(ids)
        while self._outbox and self._outbox[0][0] in gone:  # (the usual case: the oldest were sent)
            gone.discard(self._outbox.popleft()[0])
        if gone:
            self._outbox = collections.deque(row for row in self._outbox if row[0] not in gone)
        self._acked.extend(ids)
        if len(self._acked) >= OUTBOX_DELETE_BATCH:
            async with self._lock:
                await self._delete_acked()
        else:
            self._delete_acked_later()

    def _delete_acked_later(self) -> None:
        """Delete the acknowledged rows ``OUTBOX_DELETE_DELAY_S`` from now, unless already due or deleting."""
        if self._acked and self._conn is not None and self._acked_timer is None and self._acked_task is None:
            self._acked_timer = asyncio.get_running_loop().call_later(OUTBOX_DELETE_DELAY_S, self._acked_due)

    def _acked_delete(self) -> tuple[list[int], Statement]:
        ids = self._acked[:OUTBOX_DELETE_BATCH]
        marks = ",".join("?" * len(ids))  # placeholders only: the ids are bound
        return ids, (f"DELETE FROM outbox WHERE id IN ({marks})", tuple(ids))  # noqa: S608

    def _forget_acked(self, ids: list[int]) -> None:
        done = set(ids)
        self._acked = [i for i in self._acked if i not in done]

    async def _delete_acked(self) -> None:
        """Delete the acknowledged rows now (called with the lock held, or before anyone uses the store)."""
        while self._acked:
            ids, delete = self._acked_delete()
            await self._run([delete])
            self._forget_acked(ids)

    def _acked_due(self) -> None:
        self._acked_timer = None
        if self._acked and self._conn is not None:
            self._acked_task = asyncio.get_running_loop().create_task(self._delete_acked_soon(), name="outbox-delete")

    async def _delete_acked_soon(self) -> None:
        try:
            async with self._lock:
                if self._conn is not None:
                    await self._delete_acked()
        except Exception:  # (the next commit, or the next look, tries again)
            logging.getLogger("certsim.store").warning("outbox rows not deleted yet", exc_info=True)
        finally:
            self._acked_task = None
        self._delete_acked_later()

    async def outbox_count(self) -> int:
        return len(self._outbox) + self._outbox_beyond
