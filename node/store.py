"""A node's SQLite database (aiosqlite): identities, trust entries, tombstones, outbox, metadata.

A change and the message that announces it are written in one transaction; the message is
published afterwards and removed from the outbox only once the broker acknowledged it, so
an acknowledged change survives a crash of the node (DESIGN.md property 4).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiosqlite
from cryptography import x509

from replication.core import Slot, rank_of
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
ENTRY_COLUMNS = "store, name, cert_der, v_ms, v_counter, v_node, origin, start_ms, e_ms, e_counter, e_node"
MIGRATIONS = {  # columns added after the first release, so an older lab directory opens as it is
    "start_ms": "ALTER TABLE entry ADD COLUMN start_ms INTEGER NOT NULL DEFAULT -1",
    "e_ms": "ALTER TABLE entry ADD COLUMN e_ms INTEGER",
    "e_counter": "ALTER TABLE entry ADD COLUMN e_counter INTEGER",
    "e_node": "ALTER TABLE entry ADD COLUMN e_node TEXT",
}


def validity_start_ms(der: bytes) -> int:
    """A certificate's validity start in ms (R-REPL-8 orders same-name entries by it); 0 if unreadable."""
    try:
        return int(x509.load_der_x509_certificate(der).not_valid_before_utc.timestamp() * 1000)
    except ValueError:
        return 0


def _record(row: aiosqlite.Row | tuple[object, ...], *, tombstone: bool) -> Record:
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
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[object] | None = None  # the task whose transaction is open
        self.index: dict[tuple[str, str], Slot] = {}  # mirrors the entry and tombstone tables
        self.generation = 0  # bumped on every change of entries, tombstones or identities (cheap "changed since?")

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pending = aiosqlite.connect(self.path, isolation_level=None)
        # aiosqlite's worker thread is not a daemon: one connection left open by a failed shutdown
        # would keep the whole process from exiting. Every close below is still explicit.
        pending._thread.daemon = True
        db = await pending
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes, which is our fault model
        await db.executescript(SCHEMA)
        async with db.execute("PRAGMA table_info(entry)") as cur:
            columns = {str(row[1]) for row in await cur.fetchall()}
        for column, ddl in MIGRATIONS.items():
            if column not in columns:
                await db.execute(ddl)
        self._db = db
        await self._reload_index()

    def _slot(self, store: str, name: str) -> Slot:
        self.generation += 1
        return self.index.setdefault((store, name), Slot())

    def max_version(self) -> Version | None:
        """The newest version held (entries and tombstones), so a restarted clock never goes back."""
        versions = [v for s in self.index.values() for v in (s.entry, s.tombstone) if v is not None]
        return max(versions) if versions else None

    async def close(self) -> None:
        """Close the connection; aiosqlite ends its worker thread even when the close itself fails."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"database {self.path} is not open")
        return self._db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[NodeStore]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; serialised per node.

        The in-memory index is restored from the database after a rollback.
        """
        async with self._lock:
            self._owner = asyncio.current_task()
            generation = self.generation
            try:
                await self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    await self.db.execute("ROLLBACK")
                    if self.generation != generation:  # only a transaction that wrote moved the index
                        await self._reload_index()
                    raise
                request = CONTROL_REQUEST.get()
                if request is not None:
                    await self.db.execute("INSERT OR IGNORE INTO control_request(id, seen_ms) VALUES (?, ?)", request)
                await self.db.execute("COMMIT")
            finally:
                self._owner = None

    @asynccontextmanager
    async def _committed(self) -> AsyncIterator[None]:
        """Reads wait for an open transaction of another task to end, so they never see its
        uncommitted rows (one shared connection); inside the caller's own transaction they run at once."""
        if self._owner is not None and self._owner is asyncio.current_task():
            yield
            return
        async with self._lock:
            yield

    async def _fetchall(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._committed(), self.db.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def _fetchone(self, sql: str, args: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
        async with self._committed(), self.db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return None if row is None else tuple(row)

    async def _reload_index(self) -> None:
        self.index = {}
        for rec in await self.entries():
            assert rec.der is not None
            slot = self._slot(rec.store, rec.name)
            slot.entry, slot.entry_sha = rec.version, hashlib.sha256(rec.der).hexdigest()
            slot.entry_rank = rank_of(rec)
        for rec in await self.tombstones():
            self._slot(rec.store, rec.name).tombstone = rec.version

    # -- metadata -------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM meta WHERE key=?", (key,))
        return None if row is None else str(row[0])

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- identities -----------------------------------------------------------------------

    async def identities(self) -> dict[str, Identity]:
        rows = await self._fetchall("SELECT unit, cert_der, key_pem, source FROM identity")
        return {str(r[0]): Identity(str(r[0]), bytes(r[1]), bytes(r[2]), str(r[3])) for r in rows}

    async def put_identity(self, ident: Identity, now_ms: int) -> None:
        self.generation += 1
        await self.db.execute(
            "INSERT OR REPLACE INTO identity(unit, cert_der, key_pem, source, updated_ms) VALUES (?,?,?,?,?)",
            (ident.unit, ident.cert_der, ident.key_pem, ident.source, now_ms),
        )

    # -- trust entries and tombstones -----------------------------------------------------

    async def get_entry(self, store: str, name: str) -> Record | None:
        row = await self._fetchone(
            f"SELECT {ENTRY_COLUMNS} FROM entry WHERE store=? AND name=?",  # noqa: S608 - constant columns
            (store, name),
        )
        return None if row is None else _record(row, tombstone=False)

    async def get_tombstone(self, store: str, name: str) -> Record | None:
        row = await self._fetchone(
            "SELECT store, name, v_ms, v_counter, v_node, origin FROM tombstone WHERE store=? AND name=?", (store, name)
        )
        return None if row is None else _record(row, tombstone=True)

    async def entries(self, store: str | None = None) -> list[Record]:
        sql = f"SELECT {ENTRY_COLUMNS} FROM entry"  # noqa: S608 - constant columns
        args: tuple[str, ...] = ()
        if store is not None:
            sql += " WHERE store=?"
            args = (store,)
        rows = await self._fetchall(sql + " ORDER BY store, name", args)
        return [_record(r, tombstone=False) for r in rows]

    async def tombstones(self) -> list[Record]:
        rows = await self._fetchall(
            "SELECT store, name, v_ms, v_counter, v_node, origin FROM tombstone ORDER BY store, name"
        )
        return [_record(r, tombstone=True) for r in rows]

    async def store_counts(self) -> dict[str, int]:
        rows = await self._fetchall("SELECT store, COUNT(*) FROM entry GROUP BY store")
        return {str(r[0]): int(r[1]) for r in rows}

    async def put_entry(self, rec: Record) -> None:
        assert rec.der is not None
        v = rec.version
        e = rec.replaces
        await self.db.execute(
            f"INSERT OR REPLACE INTO entry({ENTRY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608 - constant
            (
                *(rec.store, rec.name, rec.der, v.ms, v.counter, v.node, rec.origin, rec.start_ms),
                *((None, None, None) if e is None else (e.ms, e.counter, e.node)),
            ),
        )
        slot = self._slot(rec.store, rec.name)
        slot.entry, slot.entry_sha = v, hashlib.sha256(rec.der).hexdigest()
        slot.entry_rank = rank_of(rec)

    async def delete_entry(self, store: str, name: str) -> None:
        await self.db.execute("DELETE FROM entry WHERE store=? AND name=?", (store, name))
        slot = self._slot(store, name)
        slot.entry, slot.entry_sha, slot.entry_rank = None, None, None

    async def put_tombstone(self, rec: Record) -> None:
        v = rec.version
        await self.db.execute(
            "INSERT OR REPLACE INTO tombstone(store, name, v_ms, v_counter, v_node, origin) VALUES (?,?,?,?,?,?)",
            (rec.store, rec.name, v.ms, v.counter, v.node, rec.origin),
        )
        self._slot(rec.store, rec.name).tombstone = v

    async def drop_tombstone(self, store: str, name: str) -> None:
        """Forget a deletion (retention expired, or a rejoining node adopting a peer's state)."""
        await self.db.execute("DELETE FROM tombstone WHERE store=? AND name=?", (store, name))
        self._slot(store, name).tombstone = None

    # -- control requests handled ----------------------------------------------------------

    async def control_handled(self, request_id: str) -> bool:
        return await self._fetchone("SELECT 1 FROM control_request WHERE id=?", (request_id,)) is not None

    async def forget_control_requests(self, before_ms: int) -> None:
        async with self._lock:
            await self.db.execute("DELETE FROM control_request WHERE seen_ms < ?", (before_ms,))

    # -- outbox ---------------------------------------------------------------------------

    async def outbox_add(self, topic: str, payload: bytes) -> None:
        await self.db.execute("INSERT INTO outbox(topic, payload) VALUES (?, ?)", (topic, payload))

    async def outbox_peek(self, limit: int = 100) -> list[tuple[int, str, bytes]]:
        rows = await self._fetchall("SELECT id, topic, payload FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def outbox_remove(self, ids: list[int]) -> None:
        if ids:
            async with self._lock:
                await self.db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])

    async def outbox_count(self) -> int:
        row = await self._fetchone("SELECT COUNT(*) FROM outbox")
        return 0 if row is None else int(row[0])
