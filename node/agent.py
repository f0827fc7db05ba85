"""The node agent: one simulated server's asyncio daemon.

It owns the node's database, installs its identity certificates on first start, answers
administrative requests that arrive over the bus, and runs the replication daemon: local
changes go out through the outbox; remote records are merged by the rules in
``replication.records``; digests exchanged on every (re)connect and every resync interval
repair whatever was missed (anti-entropy, R-REPL-6).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime as dt
import json
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cryptography import x509

from node import certs, ops
from node import extension as extension_api
from node.catalog import (
    DEFAULT_RSA_KEY_SIZE,
    IDENTITY_VALIDITY_DAYS,
    PEER_TRUST_UNITS,
    STORES,
    UNITS,
    KeyAlgo,
    ReleaseProfile,
    Role,
    StorePolicy,
    Usage,
    store_policy,
    stores_for,
    units_for,
)
from node.certs import validity_start_ms
from node.clock import Clock
from node.errors import BadInput, CertsimError, NotFound
from node.extension import Extension, MessageHandler, OpHandler, TimerFactory
from node.logs import node_logger
from node.store import CONTROL_REQUEST, Identity, NodeStore
from replication import core
from replication.envelope import Envelope, EnvelopeError, open_secret, open_shared, seal_secret
from replication.hlc import HybridClock, Version
from replication.records import Record, records_from_json
from replication.topics import Topics
from replication.transport import BrokerAddress, Bus, NotConnected

Observer = Callable[[dict[str, Any]], None]
T = TypeVar("T")
BARRIER_MEMORY = 256
CONNECT_DIGEST_DELAY_S = (0.02, 0.2)  # wall seconds: transport pacing, not simulated time
REBROADCAST_DELAY_S = 0.1  # wall seconds the hub gathers reconciliations before telling its new digest
REQUEST_MEMORY = 512  # answers kept so a resent request is answered, not run twice
PRESENCE_TIMEOUT_S = 2.0  # wall seconds the offline flag may take at stop; the broker's will covers a miss
STORE_STEP_TIMEOUT_S = 5.0  # wall seconds the last database write at stop may take
TASK_CANCEL_TIMEOUT_S = 5.0  # wall seconds cancelled tasks get to unwind at stop
MAX_EPHEMERAL = 5_000  # (at least 2) queued digests, state transfers and barriers; beyond it the oldest is dropped
MAX_CONTROL_TASKS = 256  # control requests running at once; beyond it a request waits for its resend
TIMER_RESTART_MAX_S = 5.0  # wall seconds between restarts of a failing timer, at most
REJECT_LOG_EVERY = 100  # after the first few, log one rejected envelope in this many per reason


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to know about itself and its lab."""

    lab: str
    name: str
    role: Role
    publisher: bool
    fqdn: str
    db_path: Path
    topics: Topics
    release: ReleaseProfile
    subject: certs.SubjectFields = certs.SubjectFields()  # noqa: RUF009 - frozen, so one shared default is safe
    rsa_key_size: int = DEFAULT_RSA_KEY_SIZE
    smtp: str | None = None  # "host:port" of the mail server the expiry monitor sends to (R-MON-3)


class NodeAgent:
    """A running node. ``start`` returns once the node is installed and its bus task is running."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        clock: Clock,
        broker: BrokerAddress,
        secret: bytes,
        log_sink: Any = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.broker = broker
        self._secret = secret
        self._observer = observer
        self.store = NodeStore(config.db_path)
        self.stores = {s.name for s in stores_for(config.role)}
        self.policies: dict[str, StorePolicy] = {s: store_policy(s, config.release) for s in STORES}
        sim_now = lambda: certs.iso_ms(self.clock.now_ms())  # noqa: E731 - the log's simulated-time stamp
        self.log = node_logger(log_sink, sim_now, node=config.name, cluster=config.lab)
        self.hlc = HybridClock(config.name, clock.now_ms)
        self.bus = Bus(
            broker,
            client_id=f"{config.topics.root}/{config.name}".replace("/", ":"),
            subscriptions=[
                config.topics.repl,
                config.topics.node_all(config.name),
                config.topics.clock,
                config.topics.presence_all,
            ],
            sync_topics=[config.topics.repl, config.topics.node(config.name)],
            on_message=self._on_message,
            on_connect=self._on_connect,
            on_heal=self._on_heal,
            will=(config.topics.presence(config.name), b"offline"),
        )
        self._wake = asyncio.Event()
        self.store.outbox_committed = self._wake.set  # the publisher sends a change as soon as it is committed
        self._ephemeral: collections.deque[tuple[str, bytes, asyncio.Future[None] | None]] = collections.deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._control_tasks: set[asyncio.Task[None]] = set()
        self.barriers: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        self._answers: collections.OrderedDict[str, asyncio.Future[dict[str, Any]]] = collections.OrderedDict()
        self._answer_copies: dict[str, int] = {}  # copies of an answered request received since its answer
        self.screen = core.Screen(config.release.tombstone_retention_s * 1000)  # duplicates, staleness
        self.last_contact_ms = 0
        self.last_written: dict[str, Version] = {}  # versions given by the latest local change, for results
        self.rejoining = False
        self.stale_before_ms = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self.running = False
        self._jitter = random.Random(config.name)  # noqa: S311 - reproducible pacing per node, not security
        self.peer_digests: dict[str, dict[str, str]] = {}  # each peer's latest digest heard
        self._peers_heard = 0  # bumped whenever peer_digests changes (the resync tick caches on it)
        self._redundant_cache: tuple[tuple[int, int, int], bool] | None = None
        self._tomb_floor: tuple[int, int | float] | None = None  # (store generation, earliest tombstone ms)
        self.online: set[str] = {config.name}  # nodes whose presence says online: who answers whose digest
        self._rebroadcast: asyncio.Task[None] | None = None  # the hub's digest after a reconciliation changed it
        self._ext_digests: dict[str, str] = {}  # extensions' own digests (x:<name>), as last computed
        self._ext_generation = -1  # the store generation they were computed at
        self._forget_requests_due_ms = 0  # next time handled control-request ids past their keep are dropped
        self._broadcast_generation = -1
        self._digest_cache: tuple[int, dict[str, str]] | None = None
        self._presence_prefix = config.topics.presence("")
        self._clock_topic = config.topics.clock  # (compared with every message's topic)
        self._saved_contact_ms = -1
        self.listeners: list[Observer] = []  # in-process watchers of node events (front doors, monitors)

    # ---------------------------------------------------------------------------------------
    # lifecycle

    async def start(self) -> None:
        await self.store.open()
        try:
            raw = await self.store.get_meta("hlc")
            known = [v for v in (self.store.max_version(), Version.from_json(_json_list(raw)) if raw else None) if v]
            if known:  # never issue a version below one already held, even if the last meta write was lost
                self.hlc = HybridClock(self.name, self.clock.now_ms, max(known))
            if await self.store.get_meta("installed") != "1":
                await self._install()
        except BaseException:
            await self.store.close()  # aiosqlite's thread would otherwise keep the process alive
            raise
        now_ms = self.clock.now_ms()
        contact = await self.store.get_meta("last_contact_ms")
        self.last_contact_ms = int(contact) if contact else now_ms
        self._check_stale(now_ms)
        await self._purge_tombstones()
        self.running = True
        self.bus.start()
        self._tasks = [
            asyncio.create_task(self._publisher(), name=f"publisher:{self.name}"),
            asyncio.create_task(self._resync_timer(), name=f"resync:{self.name}"),
            *(
                asyncio.create_task(self._supervised(label, timer), name=f"{label}:{self.name}")
                for label, timer in _timers().items()
            ),
        ]
        self.log.info("node-started", role=self.config.role.value, publisher=self.config.publisher)

    async def _supervised(self, label: str, timer: TimerFactory) -> None:
        """Run an extension's timer from start to stop: one that raises is logged and started again
        (after a short pause), never silently gone."""
        failures = 0
        while self.running:
            try:
                await timer(self)
            except Exception:
                failures += 1
                self.stats[f"timer-restarts:{label}"] += 1
                self.log.exception("timer-failed", timer=label, failures=failures)
                await asyncio.sleep(min(TIMER_RESTART_MAX_S, 0.05 * 2**failures))
            else:
                return  # a timer that ends on its own is done

    async def stop(self) -> None:
        """Clean shutdown: mark offline, disconnect, close the database.

        Total: each step that fails is logged and the next one still runs, and the database is
        closed whatever happened before (its worker thread would otherwise keep the process alive).
        """
        if not self.running:
            return
        self.running = False
        try:
            await self._step("presence", self._publish_offline(), PRESENCE_TIMEOUT_S)
            await self._step("tasks", self._cancel_tasks(), None)
            await self._step("bus", self.bus.stop(), None)
            contact = self.store.set_meta("last_contact_ms", str(self.last_contact_ms))
            await self._step("contact", contact, STORE_STEP_TIMEOUT_S)
        finally:
            await self._close_store()
        self.log.info("node-stopped")

    async def _publish_offline(self) -> None:
        await self.bus.publish(self.config.topics.presence(self.name), b"offline", retain=True)

    async def _step(self, label: str, step: Coroutine[Any, Any, None], timeout: float | None) -> None:
        """One step of a shutdown: a failure or a timeout is logged, never raised into the stop."""
        try:
            await asyncio.wait_for(step, timeout)
        except Exception as exc:  # TimeoutError included
            level = self.log.debug if isinstance(exc, NotConnected) else self.log.warning
            level("stop-step-failed", step=label, error=repr(exc)[:300])

    async def _close_store(self, *, abandon: bool = False) -> None:
        try:
            await self.store.close(abandon=abandon)
        except Exception as exc:
            self.log.warning("store-close-failed", error=repr(exc)[:300])

    async def _cancel_tasks(self) -> None:
        tasks = [*self._tasks, *self._control_tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=TASK_CANCEL_TIMEOUT_S)
        for task in tasks:
            if not task.done():
                self.log.warning("task-did-not-stop", task=task.get_name())
            elif not task.cancelled() and task.exception() is not None:
                self.log.warning("task-had-failed", task=task.get_name(), error=repr(task.exception())[:300])

    async def crash(self) -> None:
        """Die abruptly: no offline flag, no DISCONNECT (the broker sends our will), tasks killed
        wherever they are, the database closed with any open transaction lost."""
        if not self.running:
            return
        self.running = False
        try:
            await self._step("bus", self.bus.abort(), None)
            await self._step("tasks", self._cancel_tasks(), None)
        finally:
            await self._close_store(abandon=True)
        self.log.warning("node-crashed")
        self._emit("crash")

    # ---------------------------------------------------------------------------------------
    # long absences: tombstone retention and rejoining

    def _check_stale(self, now_ms: int) -> None:
        """A node away longer than the tombstone retention may hold entries whose deletion it can no
        longer learn (the tombstones are gone): it must take a peer's state, not spread its own."""
        retention_ms = self.config.release.tombstone_retention_s * 1000
        self.rejoining = core.away_too_long(now_ms, self.last_contact_ms, retention_ms)
        if self.rejoining:
            self.stale_before_ms = self.last_contact_ms
            self.log.warning("rejoining", away_days=round((now_ms - self.last_contact_ms) / 86_400_000, 1))
            self._emit("rejoin", last_contact_ms=self.last_contact_ms)

    async def _purge_tombstones(self) -> None:
        """Forget deletions older than the retention period (DESIGN.md: tombstones with a retention).
        The index is scanned once per store change, not at every resync tick (a year has 17,520)."""
        cutoff = self._tombstone_cutoff_ms()
        generation = self.store.generation
        if self._tomb_floor is None or self._tomb_floor[0] != generation:
            self._tomb_floor = (generation, core.earliest_tombstone_ms(self.store.index))
        if self._tomb_floor[1] >= cutoff:
            return  # no tombstone is old enough yet
        old = core.expired_tombstones(self.store.index, cutoff)
        if old:
            async with self.store.transaction():
                for store, name in old:
                    await self.store.drop_tombstone(store, name)
            self.log.info("tombstones-purged", count=len(old))

    def _tombstone_cutoff_ms(self) -> int:
        """Tombstones older than this are forgotten (and refused when they arrive again)."""
        return self.clock.now_ms() - self.config.release.tombstone_retention_s * 1000

    async def _adopt_state(self, stores: list[str], records: list[Record]) -> int:
        """Rejoin after a long absence: drop what this node learned before it went away and the
        peer does not hold; keep what it wrote since (acknowledged changes are never lost)."""
        offered = [r.key for r in records]
        stale = core.stale_on_rejoin(self.store.index, stores, offered, self.stale_before_ms)
        if stale:
            async with self.store.transaction():  # planned again inside: the index may have moved meanwhile
                stale = core.stale_on_rejoin(self.store.index, stores, offered, self.stale_before_ms)
                for (store, name), entry, tombstone in stale:
                    if entry:
                        await self.store.delete_entry(store, name)
                    if tombstone:
                        await self.store.drop_tombstone(store, name)
            self.log.warning("stale-entries-dropped", count=len(stale), stores=stores)
        return len(stale)

    # ---------------------------------------------------------------------------------------
    # installation (first start only)

    async def _install(self) -> None:
        """Generate the node's self-signed identities and announce its tomcat certificates (R-REPL-5)."""
        now = self.clock.now()
        units = units_for(self.config.role, publisher=self.config.publisher)

        async def make(unit_name: str) -> Identity:
            unit = UNITS[unit_name]
            size = 256 if unit.key_algo is KeyAlgo.EC else self.config.rsa_key_size
            key = await asyncio.to_thread(certs.new_private_key, unit.key_algo, size)
            cert = certs.self_signed_identity(
                unit, self.config.fqdn, key, now, self.config.subject, validity_days=IDENTITY_VALIDITY_DAYS
            )
            return Identity(unit_name, certs.der_of(cert), certs.key_pem(key), "self-signed")

        identities = await asyncio.gather(*(make(u.name) for u in units))
        puts = [
            ops.Put(
                PEER_TRUST_UNITS[i.unit],
                certs.entry_name(x509.load_der_x509_certificate(i.cert_der)),
                i.cert_der,
            )
            for i in identities
            if i.unit in PEER_TRUST_UNITS
        ]
        async with self.store.transaction():
            for ident in identities:
                await self.store.put_identity(ident, self.clock.now_ms())
            await self._write_changes(puts, [])
            await self.store.set_meta("installed", "1")
            await self.store.set_meta("installed_at", certs.iso(now))
        self.log.info("node-installed", units=[u.name for u in units])
        self._emit("install", units=[u.name for u in units])

    # ---------------------------------------------------------------------------------------
    # local changes: one transaction for the change and its outgoing message

    async def _write_changes(self, puts: Iterable[ops.Put], removes: Iterable[ops.Remove]) -> list[Record]:
        """Apply local changes inside an open transaction; queue the replicated part in the outbox."""
        outgoing: list[Record] = []
        self.last_written = {}
        for put in puts:
            rec, decision = core.local_put(
                self.store.index.get((put.store, put.name)),
                Record(put.store, put.name, self.hlc.tick(), put.der, self.name, validity_start_ms(put.der)),
                supersedes=put.supersedes,
                cutoff_ms=self._tombstone_cutoff_ms(),
            )
            if decision.put_tombstone:  # the deletion it carries (its own old copy, when it supersedes)
                await self.store.put_tombstone(core.tombstone_of(rec))
            await self.store.put_entry(rec)  # (replaces a held entry: delete_entry is implied)
            self.last_written[f"{put.store}/{put.name}"] = rec.version
            if self.policies[put.store].replicate_add:
                outgoing.append(rec)
        for remove in removes:
            await self.store.delete_entry(remove.store, remove.name)
            tomb = Record(remove.store, remove.name, self.hlc.tick(), None, self.name)
            self.last_written[f"{remove.store}/{remove.name}"] = tomb.version
            keep, send = core.local_delete(self.policies[remove.store], tomb)
            if keep:
                await self.store.put_tombstone(tomb)
            if send:
                outgoing.append(tomb)
        if outgoing:
            env = self._envelope("change", {"records": [r.to_json() for r in outgoing]})
            await self.store.outbox_add(self.config.topics.repl, env.seal(self._secret))
        await self.store.set_meta("hlc", _json_dump(self.hlc.last.to_json()))
        self._wake.set()
        return outgoing

    def _envelope(self, kind: str, body: dict[str, Any], to: str | None = None) -> Envelope:
        return Envelope(kind=kind, sender=self.name, body=body, to=to, sent_ms=self.clock.now_ms())

    async def _publisher(self) -> None:
        """Drain the outbox (durable, in order), then ephemeral messages; retry across reconnects."""
        while True:
            self._wake.clear()
            try:
                rows = await self.store.outbox_peek()
                for row_id, topic, payload in rows:
                    await self.bus.publish(topic, payload)
                    await self.store.outbox_remove([row_id])
                    self.stats["published"] += 1
                if rows:
                    continue
                while self._ephemeral and not self.store.outbox_waiting:  # a change committed meanwhile goes first
                    topic, payload, done = self._ephemeral[0]
                    await self.bus.publish(topic, payload)
                    self._ephemeral.popleft()
                    self.stats["published"] += 1
                    if done is not None and not done.done():
                        done.set_result(None)
            except NotConnected:
                await asyncio.sleep(0.05)  # the bus may not have noticed the loss yet
                await self.bus.wait_connected(timeout=5)
                continue
            except Exception:  # the publisher must outlive any single failure
                self.log.exception("publisher-failed")
                await asyncio.sleep(0.1)
                continue
            await self._wake.wait()

    @property
    def sending(self) -> bool:
        """Messages are queued or being published (the lab waits for them after a clock step)."""
        return bool(self._ephemeral) or self._wake.is_set()

    @property
    def busy(self) -> bool:
        """Anything in flight: a control request running, a message received and not yet handled,
        one queued or being published, a committed change not yet sent (benchmarks wait for quiet)."""
        return bool(self._control_tasks) or self.sending or self.store.outbox_waiting or self.bus.inbox_waiting > 0

    def _send(self, topic: str, env: Envelope) -> asyncio.Future[None]:
        """Queue a non-durable message (digests, state transfers, barriers) after the outbox."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if len(self._ephemeral) >= MAX_EPHEMERAL:  # bounded: a long-cut link must not grow memory forever
            _topic, _payload, dropped = self._ephemeral[1]  # the oldest not being published right now
            del self._ephemeral[1]
            if dropped is not None and not dropped.done():
                dropped.set_exception(NotConnected(f"{self.name}: outgoing queue full, message dropped"))
                dropped.exception()  # retrieved: nobody may be waiting for a digest or a state transfer
            self.stats["ephemeral-dropped"] += 1
            if self.stats["ephemeral-dropped"] == 1 or self.stats["ephemeral-dropped"] % REJECT_LOG_EVERY == 0:
                self.log.warning("outgoing-queue-full", bound=MAX_EPHEMERAL, dropped=self.stats["ephemeral-dropped"])
        self._ephemeral.append((topic, env.seal(self._secret), done))
        self.stats[f"sent:{env.kind}"] += 1
        self._wake.set()
        return done

    # ---------------------------------------------------------------------------------------
    # incoming messages

    async def _on_connect(self) -> None:
        await self.bus.publish(self.config.topics.presence(self.name), b"online", retain=True)
        self.log.info("bus-connected", broker=self.broker.url, connects=self.bus.connects)
        if not self.rejoining:  # a long partition is a long absence too
            self._check_stale(self.clock.now_ms())
        self._spawn(self._digest_after_connect(), f"connect-digest:{self.name}")

    async def _on_heal(self) -> None:
        """The replication link is back: repair what was missed, as after a reconnect."""
        self.log.info("partition-healed")
        if not self.rejoining:
            self._check_stale(self.clock.now_ms())
        await self._broadcast_digest("heal")

    async def _digest_after_connect(self) -> None:
        """Anti-entropy on (re)connect, after a short random pause.

        When a whole lab starts (or a broker comes back) every node connects at once; the pause
        lets the change messages of the others arrive first, so most digests already agree and
        far fewer full state transfers are needed.
        """
        await asyncio.sleep(self._jitter.uniform(*CONNECT_DIGEST_DELAY_S))
        await self._broadcast_digest("connect")

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.startswith(self._presence_prefix):
            # a peer went away: what it last told us no longer counts (anti-entropy must not skip
            # for its sake); the flag is not sealed, so a forged one can only cause extra digests
            peer = topic[len(self._presence_prefix) :]
            if payload != b"online":
                self.peer_digests.pop(peer, None)
                self._peers_heard += 1
                self.online.discard(peer)
            elif peer:
                self.online.add(peer)
            return
        try:
            env = open_shared(payload, self._secret)
        except EnvelopeError as exc:
            self._reject(exc.reason, topic)
            return
        if env.sender == self.name or (env.to is not None and env.to != self.name):
            return
        if topic == self._clock_topic:
            self._follow_clock(env)
            return
        if env.kind != "ctl":  # control requests are resent on purpose and deduplicated by id
            now_ms = self.clock.now_ms()
            screened = self.screen.check(env.msg_id, env.sent_ms, now_ms)
            if screened == "duplicate":  # QoS 1 may deliver twice by design: normal, changes nothing
                self.stats["duplicates"] += 1
                self.log.debug("duplicate-delivery", kind=env.kind, sender=env.sender, msg=env.msg_id)
                return
            if screened == "replay":
                self._reject("replay", topic, detail=f"{env.kind} {env.msg_id} from {env.sender}")
                return
            if screened == "stale":
                self._reject("stale", topic, detail=f"{env.kind} sent {env.sent_ms} from {env.sender}")
                if env.kind not in ("change", "state"):
                    return
                kept = core.keep_from_stale(
                    env.body.get("records", []), lambda r: isinstance(r, dict) and r.get("d") is None
                )
                if not kept:
                    return
                env = Envelope(
                    env.kind, env.sender, {**env.body, "records": kept, "stale": True}, env.to, env.sent_ms, env.msg_id
                )
            self.last_contact_ms = max(self.last_contact_ms, min(env.sent_ms, now_ms))
        handler = self._handlers.get(env.kind)
        if handler is None:
            self._reject("unknown-kind", topic)
            return
        self.stats[_RECEIVED[env.kind]] += 1  # (a known kind: its counter's name is made once)
        self.stats["received"] += 1
        try:
            await handler(self, env)
        except (ValueError, KeyError, TypeError) as exc:
            self._reject("bad-body", topic, detail=str(exc))

    def _follow_clock(self, env: Envelope) -> None:
        """The lab clock jumped in another process: jump ours too, firing our due timers in order."""
        follow = getattr(self.clock, "follow", None)
        offset = env.body.get("offset_ms")
        if follow is None or isinstance(offset, bool) or not isinstance(offset, int):
            return

        async def catch_up() -> None:
            steps = await follow(dt.timedelta(milliseconds=offset))
            if steps:
                self.log.info("clock-followed", offset_ms=offset, steps=steps)

        self._spawn(catch_up(), f"clock:{self.name}")

    def _reject(self, reason: str, topic: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        count = self.rejected[reason]
        if count <= 3 or count % REJECT_LOG_EVERY == 0:
            self.log.warning("envelope-rejected", reason=reason, topic=topic, count=count, detail=detail[:200])

    async def _handle_change(self, env: Envelope) -> None:
        records = records_from_json(env.body["records"])
        changed = await self.apply_records(records, env.sender)
        self._emit("apply", sender=env.sender, msg=env.msg_id, records=len(records), changed=changed)

    async def _handle_barrier(self, env: Envelope) -> None:
        token = str(env.body["token"])
        self.barriers.setdefault(token, set()).add(env.sender)
        self.barriers.move_to_end(token)
        while len(self.barriers) > BARRIER_MEMORY:
            self.barriers.popitem(last=False)

    async def _handle_digest(self, env: Envelope) -> None:
        """A peer's digest: only its partner answers (``core.answer_digest``), with a summary of the
        differing stores (entry-level exchange), or a rejoining peer with its whole view."""
        theirs = _digest_map(env.body["digests"])
        self.peer_digests[env.sender] = theirs
        self._peers_heard += 1
        mine = self.digests()
        if self.rejoining and not core.differing(mine, theirs):
            self._rejoined(env.sender)
        answer = core.answer_digest(
            mine,
            theirs,
            me=self.name,
            sender=env.sender,
            online=self.online,
            rejoining=self.rejoining,
            peer_rejoining=bool(env.body.get("rejoining")),
        )
        if answer is not None and answer.kind == "state":
            await self._send_state(env.sender, answer.stores, mine, hops=core.MAX_STATE_HOPS)
        elif answer is not None:
            body = {"stores": answer.stores, "summary": core.summary(self.store.index, answer.stores, self.policies)}
            self._send(self.config.topics.node(env.sender), self._envelope("summary", body, to=env.sender))
            self.stats["summaries-sent"] += 1
        answer_x = core.partners(self.name, env.sender, self.online)
        await self._extension_anti_entropy(env.sender, env.body.get("x"), answer=answer_x)

    async def _handle_summary(self, env: Envelope) -> None:
        """A partner's summary of the stores where our digests differ: send it exactly the records it
        lacks (or holds older) and ask for the ones we lack, in one message."""
        if self.rejoining:
            return  # a rejoining node takes its partner's view, it offers none
        raw = env.body["summary"]
        if not isinstance(raw, dict):
            raise TypeError("summary is not a mapping")
        theirs = {
            str(store): {str(n): [str(t) for t in tags] for n, tags in names.items() if isinstance(tags, list)}
            for store, names in raw.items()
            if isinstance(names, dict) and store in self.stores
        }
        send, want = core.reconcile(self.store.index, theirs, self.policies)
        if send or want:
            await self._send_records(env.sender, send, want=want)

    async def _send_records(self, to: str, keys: list[tuple[str, str]], *, want: list[tuple[str, str]]) -> None:
        """A state transfer of just these entries (and tombstones), asking for ``want`` in return."""
        wanted = set(keys)
        stores = sorted({s for s, _ in keys})
        records = [r for r in await self.replicated_view(stores) if r.key in wanted]
        body = {"stores": stores, "records": [r.to_json() for r in records], "want": [list(k) for k in want]}
        self._send(self.config.topics.node(to), self._envelope("state", body, to=to))
        self.stats["states-sent"] += 1
        self._emit("state-out", to=to, stores=stores, records=len(records))

    async def _handle_state(self, env: Envelope) -> None:
        records = [Record.from_json(r) for r in env.body["records"]]
        if env.body.get("stale"):  # only its deletions were kept: apply them, nothing else
            await self.apply_records(records, env.sender)
            return
        if self.rejoining:
            if env.body.get("hops") != core.MAX_STATE_HOPS:
                return  # only a partner's whole view may replace what a rejoining node holds
            dropped = await self._adopt_state([str(s) for s in env.body["stores"]], records)
            changed = await self.apply_records(records, env.sender)
            self._emit("state-adopted", sender=env.sender, records=len(records), dropped=dropped, changed=changed)
            self._rejoined(env.sender)
            return
        changed = await self.apply_records(records, env.sender)
        self._emit("state-in", sender=env.sender, records=len(records), changed=changed)
        want = [(str(k[0]), str(k[1])) for k in env.body.get("want") or [] if isinstance(k, list) and len(k) == 2]
        if want:
            await self._send_records(env.sender, want, want=[])
        if changed and core.partner(env.sender, self.online) == self.name:
            self._rebroadcast_soon()

    def _rebroadcast_soon(self) -> None:
        """The hub learned something in a reconciliation: tell everyone its digest once the burst is over,
        so nodes it reconciled with earlier catch up (one broadcast per burst, not per message)."""
        if self._rebroadcast is not None and not self._rebroadcast.done():
            return

        async def later() -> None:
            await asyncio.sleep(REBROADCAST_DELAY_S)
            if self.store.generation != self._broadcast_generation:
                await self._broadcast_digest("reconciled")

        self._rebroadcast = asyncio.create_task(later(), name=f"rebroadcast:{self.name}")
        self._control_tasks.add(self._rebroadcast)
        self._rebroadcast.add_done_callback(self._control_tasks.discard)

    async def _handle_control(self, env: Envelope) -> None:
        """Run a request once; a resent copy (same id) gets the same answer again, never a second run.

        Exactly once across restarts: a request must be fresh (``core.control_fresh``), and the id
        of every request that changed something is committed with its writes; a copy arriving
        after a restart is refused as a replay, changes nothing, and is logged.
        """
        answer = self._answers.get(env.msg_id)
        if answer is not None:
            self._control_again(env, answer)
            return
        if len(self._control_tasks) >= MAX_CONTROL_TASKS:  # bounded: unanswered, the client resends later
            self.stats["control-busy"] += 1
            self.log.warning("control-queue-full", bound=MAX_CONTROL_TASKS, op=str(env.body.get("op")))
            return
        answer = asyncio.get_running_loop().create_future()
        self._answers[env.msg_id] = answer
        self._answer_copies.pop(env.msg_id, None)
        while len(self._answers) > REQUEST_MEMORY:
            self._answer_copies.pop(self._answers.popitem(last=False)[0], None)
        if not core.control_fresh(env.sent_ms, self.clock.now_ms()):
            self._reject("stale", self.config.topics.ctl(self.name), detail=f"ctl {env.msg_id} from {env.sender}")
            self._spawn(self._refuse(env, answer, "it was sent too long ago (stale)", note=True), f"refuse:{self.name}")
            return
        self._spawn(self._answer_once(env, answer), f"control:{self.name}:{env.body.get('op')}")

    def _control_again(self, env: Envelope, answer: asyncio.Future[dict[str, Any]]) -> None:
        """A control request this node has (or is) answering arrives again: the client's resend or
        a QoS 1 duplicate gets the same answer (debug); beyond that it is a replay (refused, warning)."""
        if answer.done():
            self._answer_copies[env.msg_id] = copies = self._answer_copies.get(env.msg_id, 0) + 1
            if core.control_copy(copies) == "replay":
                self._reject("replay", self.config.topics.ctl(self.name), detail=f"ctl {env.msg_id} from {env.sender}")
                refused = asyncio.get_running_loop().create_future()
                self._spawn(self._refuse(env, refused, "it was already handled (replayed)"), f"refuse:{self.name}")
                return
        self.stats["duplicates"] += 1
        self.log.debug("duplicate-delivery", kind=env.kind, sender=env.sender, msg=env.msg_id)
        if answer.done():
            self._spawn(self._reply(env, answer.result()), f"reply:{self.name}")

    async def _answer_once(self, env: Envelope, answer: asyncio.Future[dict[str, Any]]) -> None:
        if await self.store.control_handled(env.msg_id):
            self._reject("replay", self.config.topics.ctl(self.name), detail=f"ctl {env.msg_id} from {env.sender}")
            await self._refuse(env, answer, "it was already handled (replayed)")
            return
        CONTROL_REQUEST.set((env.msg_id, self.clock.now_ms()))  # this task only: its commits record the id
        await self._answer(env, answer)

    async def _refuse(
        self, env: Envelope, answer: asyncio.Future[dict[str, Any]], why: str, *, note: bool = False
    ) -> None:
        """Answer "refused"; with ``note`` the id is persisted first, so a copy is refused after a restart too."""
        message = f"request {env.msg_id} refused: {why}; nothing was changed"
        body: dict[str, Any] = {"req": env.msg_id, "ok": False, "error": {"code": "refused", "message": message}}
        if note:
            await self._note_handled(env.msg_id)
        answer.set_result(body)
        await self._reply(env, body)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._control_tasks.add(task)
        task.add_done_callback(self._control_tasks.discard)

    _handlers: ClassVar[dict[str, MessageHandler]] = {
        "change": _handle_change,
        "barrier": _handle_barrier,
        "digest": _handle_digest,
        "state": _handle_state,
        "summary": _handle_summary,
        "ctl": _handle_control,
    }

    async def commit(
        self,
        puts: Iterable[ops.Put] = (),
        removes: Iterable[ops.Remove] = (),
        messages: Iterable[tuple[str | None, str, dict[str, Any]]] = (),
        extra: Callable[[NodeStore], Awaitable[None]] | None = None,
    ) -> list[Record]:
        """Apply local changes in one transaction with their outgoing messages (durable, in order).

        ``messages`` are (recipient node or None for everyone, kind, body); ``extra`` runs inside
        the same transaction for writes of other tables (identities, CSRs, settings).
        """
        async with self.store.transaction():
            if extra is not None:
                await extra(self.store)
            replicated = await self._write_changes(puts, removes)
            for to, kind, body in messages:
                topic = self.config.topics.repl if to is None else self.config.topics.node(to)
                await self.store.outbox_add(topic, self._envelope(kind, body, to=to).seal(self._secret))
        self._wake.set()
        return replicated

    def seal_secret(self, plaintext: bytes, context: str) -> str:
        """Private key material for a message body: encrypted for cluster members (AEAD), not only MAC'd."""
        return seal_secret(self._secret, plaintext, context)

    def open_secret(self, text: object, context: str, *, from_bus: bool = True) -> bytes:
        """The inverse of ``seal_secret``; raises ``ValueError`` when it does not decrypt (logged as a
        rejected message when it came from the bus; a user's file, e.g. a backup, is the caller's error)."""
        try:
            return open_secret(self._secret, text, context)
        except EnvelopeError as exc:
            if from_bus:
                self._reject("secret", context)
            raise ValueError(str(exc)) from None

    def send(self, to: str | None, kind: str, body: dict[str, Any]) -> asyncio.Future[None]:
        """Queue a non-durable message to one node (or everyone) after the outbox."""
        topic = self.config.topics.repl if to is None else self.config.topics.node(to)
        return self._send(topic, self._envelope(kind, body, to=to))

    async def apply_records(self, records: list[Record], sender: str) -> int:
        """Merge records from a peer by the core's rule (``replication.core.decide``); returns how
        many entries changed on this node. Idempotent.

        Decisions read the in-memory index, so a message that changes nothing (a duplicate, an
        old version, a state transfer of what the node already has) costs no database work.
        """
        accepted = [r for r in (self._admit(r, sender) for r in records) if r is not None]
        for rec in accepted:
            self.hlc.observe(rec.version)
        cutoff_ms = self._tombstone_cutoff_ms()
        plan, generation = core.plan_merge(self.store.index, accepted, cutoff_ms), self.store.generation
        if not plan:
            return 0
        changed = 0
        async with self.store.transaction():
            if self.store.generation != generation or self._tombstone_cutoff_ms() != cutoff_ms:
                # the index (or the clock) moved while this waited for the transaction: plan again
                cutoff_ms = self._tombstone_cutoff_ms()
                plan = core.plan_merge(self.store.index, accepted, cutoff_ms)
            note_clock = not core.versions_kept(self.store.index, accepted, plan)  # (before the writes move it)
            for rec, decision in plan:
                if decision.put_tombstone:
                    await self.store.put_tombstone(core.tombstone_of(rec))
                if decision.delete_entry:
                    await self.store.delete_entry(rec.store, rec.name)
                    changed += 1
                if decision.put_entry:
                    await self.store.put_entry(rec)
                    changed += 1
            if note_clock:  # else a restart reads them back from the store (``start``)
                await self.store.set_meta("hlc", _json_dump(self.hlc.last.to_json()))
        if changed:  # (debug: one line per node per change; the lab's history has every apply)
            self.log.debug("records-applied", sender=sender, changed=changed, received=len(records))
        return changed

    def _admit(self, rec: Record, sender: str) -> Record | None:
        """Locality (DESIGN property 2) by the core's rule; a certificate must parse, and its
        validity start (R-REPL-8) is read from the certificate itself, never from the sender."""
        why = core.admissible(rec, self.stores, self.policies)
        if why is not None:
            if why:
                kind = "deletion" if rec.der is None else "upload"
                self._reject(why, f"{rec.store}/{rec.name}", detail=f"{kind} from {sender}")
            return None
        if rec.der is None:
            return rec
        slot = self.store.index.get(rec.key)
        if slot is not None and slot.entry == rec.version and slot.entry_sha == rec.sha256:  # the same copy again
            return rec if slot.entry_rank is None else rec.with_start(slot.entry_rank.start_ms)
        start_ms = certs.parsed_validity_start_ms(rec.der)
        if start_ms is None:
            self._reject("bad-certificate", f"{rec.store}/{rec.name}", detail=f"from {sender}")
            return None
        return rec.with_start(start_ms)

    # ---------------------------------------------------------------------------------------
    # anti-entropy

    async def replicated_view(self, stores: Iterable[str] | None = None) -> list[Record]:
        """What this node must agree on with its peers: replicated adds plus replicated deletions."""
        wanted = set(stores) if stores is not None else self.stores
        view = [
            core.with_floor(r, self.store.index.get(r.key))
            for r in await self.store.entries()
            if r.store in wanted and self.policies[r.store].replicate_add
        ]
        view += [
            r
            for r in await self.store.tombstones()
            if r.store in wanted and core.replicated(r.store, tombstone=True, policies=self.policies)
        ]
        return view

    def digests(self) -> dict[str, str]:
        """Per replicated store of this node's role, a digest of its replicated view (from memory;
        recomputed only after the stores changed)."""
        if self._digest_cache is not None and self._digest_cache[0] == self.store.generation:
            return dict(self._digest_cache[1])
        generation = self.store.generation
        mine = core.digests(self.store.index, self.stores, self.policies)
        self._digest_cache = (generation, mine)
        return dict(mine)

    def _rejoined(self, peer: str) -> None:
        self.rejoining = False
        self.log.info("rejoined", peer=peer)
        self._emit("rejoined", peer=peer)
        self._spawn(self._broadcast_digest("rejoined"), f"digest:{self.name}")

    async def _extension_digests(self) -> dict[str, str]:
        """Digests of what extensions replicate besides trust stores (``x:<extension>``); recomputed
        only after the store changed (their writes bump its generation)."""
        if self._ext_generation != self.store.generation:
            generation = self.store.generation
            self._ext_digests = {f"x:{e.name}": await e.state_digest(self) for e in EXTENSIONS if e.state_digest}
            self._ext_generation = generation
        return dict(self._ext_digests)

    async def _extension_anti_entropy(self, sender: str, theirs: object, *, answer: bool = True) -> None:
        """A peer's extension digests: where one differs from ours, send that extension's state
        and ask for the peer's (both sides end with the newer of each value). Only partners answer
        (``core.partners``), as for trust stores."""
        if not isinstance(theirs, dict):
            return
        peer = {k: v for k, v in theirs.items() if isinstance(k, str) and isinstance(v, str)}
        self.peer_digests.setdefault(sender, {}).update(peer)
        self._peers_heard += 1
        if not answer:
            return
        mine = await self._extension_digests()
        for extension in EXTENSIONS:
            key = f"x:{extension.name}"
            if extension.send_state is not None and key in peer and peer[key] != mine.get(key):
                await extension.send_state(self, sender, True)

    async def _broadcast_digest(self, reason: str) -> None:
        self.stats["digests-sent"] += 1
        self._broadcast_generation = self.store.generation
        body = {"digests": self.digests(), "rejoining": self.rejoining, "x": await self._extension_digests()}
        self._send(self.config.topics.repl, self._envelope("digest", body))
        self._emit("digest-out", reason=reason)

    async def _send_state(self, to: str, stores: list[str], mine: dict[str, str], *, hops: int) -> None:
        records = await self.replicated_view(stores)
        body = {"stores": stores, "records": [r.to_json() for r in records], "digests": mine, "hops": hops}
        self._send(self.config.topics.node(to), self._envelope("state", body, to=to))
        self.stats["states-sent"] += 1
        self._emit("state-out", to=to, stores=stores, records=len(records))

    async def _resync_timer(self) -> None:
        """Anti-entropy every resync interval of simulated time (R-REPL-6: 1800 s), at the moments
        ``core.next_resync_ms`` sets for every node of the lab alike.

        The timer always fires; its digest broadcast is skipped when it could tell nobody
        anything: nothing changed here since the last broadcast and every peer's last digest
        equals ours. A peer that missed something differs from us, so we still broadcast.
        This is what lets a simulated year of 21 nodes run in seconds.
        """
        interval = dt.timedelta(seconds=self.config.release.resync_interval_s)
        origin_ms = round(self.clock.sim_origin.timestamp() * 1000)
        first_ms = core.next_resync_ms(self.clock.now_ms(), round(interval.total_seconds() * 1000), origin_ms)
        due = dt.datetime.fromtimestamp(first_ms / 1000, dt.UTC)  # on the lab's grid, not from this start
        while True:
            await _sleep_until(self.clock, due)
            due += interval
            self.stats["resync-timer"] += 1
            try:
                await self._resync_tick()
            except Exception:  # one bad tick must not end anti-entropy for good
                self.log.exception("resync-timer-failed")

    async def _resync_tick(self) -> None:
        await self._purge_tombstones()
        now_ms = self.clock.now_ms()
        if now_ms >= self._forget_requests_due_ms:  # once per window, not every tick (a year has 17,520)
            self._forget_requests_due_ms = now_ms + core.CONTROL_WINDOW_MS
            await self.store.forget_control_requests(now_ms - core.CONTROL_KEEP_MS)
        if self.last_contact_ms != self._saved_contact_ms:
            contact = self.last_contact_ms
            async with self.store.transaction():
                await self.store.set_meta("last_contact_ms", str(contact))
            self._saved_contact_ms = contact
        await self._extension_digests()
        if self.bus.connected and not self._digest_redundant():
            await self._broadcast_digest("timer")

    def _digest_redundant(self) -> bool:
        if self.rejoining or self.store.generation != self._broadcast_generation:
            return False  # (no peer heard from yet: our last broadcast already told them everything)
        key = (self.store.generation, self._ext_generation, self._peers_heard)
        if self._redundant_cache is not None and self._redundant_cache[0] == key:
            return self._redundant_cache[1]  # nothing heard or changed since the last tick: same answer
        mine = {**self.digests(), **self._ext_digests}
        same = all(mine[s] == d for theirs in self.peer_digests.values() for s, d in theirs.items() if s in mine)
        self._redundant_cache = (key, same)
        return same

    async def resync(self) -> None:
        """Force anti-entropy now (a restart of the Intercluster Sync Agent does this, R-REPL-6)."""
        await self._broadcast_digest("forced")

    # ---------------------------------------------------------------------------------------
    # control requests

    async def _answer(self, env: Envelope, answer: asyncio.Future[dict[str, Any]]) -> None:
        op = str(env.body.get("op"))
        args = env.body.get("args") or {}
        try:
            result = await self.handle(op, args)
            body: dict[str, Any] = {"req": env.msg_id, "ok": True, "result": result}
        except CertsimError as exc:
            body = {"req": env.msg_id, "ok": False, "error": {"code": exc.code, "message": exc.message}}
        except Exception as exc:  # never let a request kill the node; report it instead
            self.log.exception("request-failed", op=op)
            body = {
                "req": env.msg_id,
                "ok": False,
                "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"},
            }
        self._emit("op", op=op, sender=env.sender, ok=body["ok"], error=body.get("error"))
        await self._note_handled(env.msg_id)  # failed or read-only: committed nothing, remembered all the same
        answer.set_result(body)
        await self._reply(env, body)

    async def _note_handled(self, request_id: str) -> None:
        """Persist a handled control request id (exactly once across restarts, issue 10 item 5),
        unless a commit of the request already did."""
        try:
            if not await self.store.control_handled(request_id):
                await self.store.note_control_request(request_id, self.clock.now_ms())
        except Exception as exc:  # (a store closing under a stop): the answer still goes out
            self.log.warning("control-id-not-saved", msg=request_id, error=f"{type(exc).__name__}: {exc}")

    async def _reply(self, env: Envelope, body: dict[str, Any]) -> None:
        """The answer, at QoS 0 as the request: a client's session is clean, so QoS 1 would bring no
        redelivery, only an acknowledgement each way; a lost answer is recovered by the client's
        resend, which this node answers again from memory (``_handle_control``)."""
        reply_to = env.body.get("reply_to")
        if isinstance(reply_to, str):
            with contextlib.suppress(NotConnected):
                sealed = self._envelope("ctl-reply", body, to=env.sender).seal(self._secret)
                await self.bus.publish(reply_to, sealed, qos=0)

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Run one administrative request; the only entry point for CLI, scenarios and tests."""
        if not isinstance(args, dict):
            raise BadInput("request arguments must be an object")
        handler = _OPS.get(op)
        if handler is None:
            raise NotFound(f"unknown operation '{op}'; known: {', '.join(sorted(_OPS))}")
        return await handler(self, args)

    async def op_ping(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {"node": self.name, "sim_time": certs.iso(self.clock.now())}

    async def op_status(self, _args: dict[str, Any]) -> dict[str, Any]:
        counts = await self.store.store_counts()
        return {
            "node": self.name,
            "role": self.config.role.value,
            "publisher": self.config.publisher,
            "fqdn": self.config.fqdn,
            "release": self.config.release.name,
            "connected": self.bus.connected,
            "stores": {s: counts.get(s, 0) for s in sorted(self.stores)},
            "identities": sorted((await self.store.identities()).keys()),
            "outbox": await self.store.outbox_count(),
            "digests": self.digests(),
            "rejected": dict(self.rejected),
            "stats": dict(self.stats),
            "sim_time": certs.iso(self.clock.now()),
        }

    async def op_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        flt = ops.ListFilter.from_args(args)
        if flt.store is not None and flt.store not in self.stores and flt.store not in UNITS:
            ops.check_store(self.config.role, flt.store)
        rows: list[dict[str, Any]] = []
        columns = {e.name: await e.listing(self) for e in EXTENSIONS if e.listing is not None}  # e.g. OCSP (R-OCSP-3)
        for unit, ident in sorted((await self.store.identities()).items()):
            desc = certs.describe(x509.load_der_x509_certificate(ident.cert_der))
            if flt.matches(unit, Usage.IDENTITY, desc):
                rows.append(
                    {
                        "store": unit,
                        "usage": Usage.IDENTITY.value,
                        "source": ident.source,
                        **desc,
                        **{column: values.get(desc["sha256"]) for column, values in columns.items()},
                    }
                )
        for rec in await self.store.entries():
            assert rec.der is not None
            desc = certs.describe(x509.load_der_x509_certificate(rec.der))
            if flt.matches(rec.store, Usage.TRUST, desc):
                desc["name"] = rec.name
                rows.append(
                    {
                        "store": rec.store,
                        "usage": Usage.TRUST.value,
                        "origin": rec.origin,
                        "version": str(rec.version),
                        **desc,
                        **{column: values.get(desc["sha256"]) for column, values in columns.items()},
                    }
                )
        return rows

    async def op_upload(self, args: dict[str, Any]) -> dict[str, Any]:
        store = str(args.get("store") or "")
        data = _b64_arg(args, "data")
        if store in UNITS:
            raise NotFound(
                f"'{store}' is an identity unit; uploading identity certificates comes with the certificate "
                f"operations (CSR and CA-signed flow); to trust a certificate upload it to '{UNITS[store].trust_store}'"
            )
        spec = ops.check_store(self.config.role, store)
        uploaded = certs.load_certificates(data)
        replicated: list[Record] = []
        async with self.store.transaction():  # the same-name check and the write, atomically (R-REPL-8)
            # only the names this upload can touch (a whole-store read grew with the store: the p99 tail)
            existing: dict[tuple[str, str], bytes] = {}
            names = {certs.entry_name(cert) for cert in uploaded}
            for target in (store, *spec.ca_also_into):
                for name in names:
                    if (held := await self.store.get_entry(target, name)) is not None:
                        existing[(target, name)] = held.der or b""
            plan = ops.plan_trust_upload(self.config.role, store, uploaded, existing, self.clock.now())
            if plan.puts:
                replicated = await self._write_changes(plan.puts, [])
        self.log.info("upload", store=store, added=plan.added, replaced=plan.replaced, unchanged=plan.unchanged)
        result: dict[str, Any] = {
            "store": store,
            "added": list(plan.added),
            "replaced": list(plan.replaced),
            "unchanged": list(plan.unchanged),
            "notes": list(plan.notes),
            "replicated": sorted({f"{r.store}/{r.name}" for r in replicated}),
            "versions": {k: v.to_json() for k, v in self.last_written.items()} if plan.puts else {},
        }
        for extension in EXTENSIONS:  # e.g. OCSP: every upload is checked, never refused for its status (R-OCSP-1)
            if extension.on_upload is not None and (extra := await extension.on_upload(self, uploaded)) is not None:
                result[extension.name] = extra
        return result

    async def op_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        store = str(args.get("store") or "")
        name = str(args.get("name") or "")
        if not name:
            raise BadInput("no certificate name given")
        async with self.store.transaction():  # the check and the deletion, atomically
            names = {r.name for r in await self.store.entries(store)} if store in STORES else set()
            remove = ops.plan_trust_delete(self.config.role, store, name, names)
            replicated = await self._write_changes([], [remove])
        self.log.info("delete", store=store, name=remove.name, replicated=bool(replicated))
        version = self.last_written[f"{store}/{remove.name}"]
        return {"store": store, "deleted": remove.name, "replicated": bool(replicated), "version": version.to_json()}

    async def op_download(self, args: dict[str, Any]) -> dict[str, Any]:
        store = str(args.get("store") or "")
        fmt = str(args.get("format") or "pem").lower()
        if fmt not in ("pem", "der"):
            raise BadInput(f"unknown format '{fmt}'; use pem or der")
        if store in UNITS:
            ident = (await self.store.identities()).get(store)
            if ident is None:
                raise NotFound(f"this node has no '{store}' identity certificate")
            der = ident.cert_der
            name = certs.entry_name(x509.load_der_x509_certificate(der))
        else:
            ops.check_store(self.config.role, store)
            name = certs.normalize_name(str(args.get("name") or ""))
            rec = await self.store.get_entry(store, name)
            if rec is None or rec.der is None:
                raise NotFound(f"no certificate named '{name}' in {store}")
            der = rec.der
        cert = x509.load_der_x509_certificate(der)
        data = der if fmt == "der" else certs.pem_of(cert).encode()
        return {
            "store": store,
            "name": name,
            "filename": f"{name}.{fmt}",
            "data": base64.b64encode(data).decode(),
        }

    async def op_digest(self, _args: dict[str, Any]) -> dict[str, Any]:
        digests = {**self.digests(), **await self._extension_digests()}
        rebroadcast = self._rebroadcast is not None and not self._rebroadcast.done()  # a digest still to come
        return {"digests": digests, "outbox": await self.store.outbox_count(), "rebroadcast": rebroadcast}

    async def op_barrier(self, args: dict[str, Any]) -> dict[str, Any]:
        token = str(args.get("token") or "")
        if not token:
            raise BadInput("barrier needs a token")
        done = self._send(self.config.topics.repl, self._envelope("barrier", {"token": token}))
        await asyncio.wait_for(done, timeout=float(args.get("timeout", 10)))
        return {"token": token}

    async def op_barrier_seen(self, args: dict[str, Any]) -> dict[str, Any]:
        token = str(args.get("token") or "")
        return {"token": token, "senders": sorted(self.barriers.get(token, set()))}

    async def op_resync(self, _args: dict[str, Any]) -> dict[str, Any]:
        await self.resync()
        return {"resync": "started"}

    def _emit(self, event: str, **fields: Any) -> None:
        if self._observer is None and not self.listeners:
            return
        line = {"event": event, "node": self.name, "sim": certs.iso_ms(self.clock.now_ms()), **fields}
        if self._observer is not None:
            self._observer(line)
        for listener in self.listeners:
            listener(line)


_RECEIVED = {kind: f"received:{kind}" for kind in NodeAgent._handlers}  # (and each extension's kind)

_OPS: dict[str, OpHandler] = {
    "ping": NodeAgent.op_ping,
    "status": NodeAgent.op_status,
    "list": NodeAgent.op_list,
    "upload": NodeAgent.op_upload,
    "delete": NodeAgent.op_delete,
    "download": NodeAgent.op_download,
    "digest": NodeAgent.op_digest,
    "barrier": NodeAgent.op_barrier,
    "barrier_seen": NodeAgent.op_barrier_seen,
    "resync": NodeAgent.op_resync,
}
_TIMERS: dict[str, TimerFactory] = {}


def _register_op(name: str, handler: OpHandler) -> None:
    """One extension's administrative request (each name once across extensions)."""
    if name in _OPS:
        raise ValueError(f"operation '{name}' is already defined")
    _OPS[name] = handler


def _register_timer(label: str, timer: TimerFactory) -> None:
    """One extension's task every node runs from start to stop; it should sleep with
    ``node.extension.sleep_until`` so clock jumps wake it in order."""
    if label in _TIMERS:
        raise ValueError(f"timer '{label}' is already defined")
    _TIMERS[label] = timer


def _register_message(kind: str, handler: MessageHandler) -> None:
    """One extension's bus message kind (sealed like every envelope) and its handler."""
    if kind in NodeAgent._handlers:
        raise ValueError(f"message kind '{kind}' is already defined")
    NodeAgent._handlers[kind] = handler
    _RECEIVED[kind] = f"received:{kind}"


def install_extension(extension: Extension) -> None:
    """Plug one extension's operations, message kinds and timers in (each name once)."""
    for name, op in extension.ops.items():
        _register_op(name, op)
    for kind, handler in extension.messages.items():
        _register_message(kind, handler)
    for label, timer in extension.timers.items():
        _register_timer(label, timer)


def _timers() -> dict[str, TimerFactory]:
    return dict(_TIMERS)


PerAgent = extension_api.PerAgent  # kept for modules written against the agent before node.extension


def _digest_map(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("digests must map store names to strings")
    return dict(raw)


def _json_dump(value: object) -> str:
    return json.dumps(value)


def _json_list(raw: str) -> object:
    return json.loads(raw)


_b64_arg = extension_api.b64_arg
_sleep_until = extension_api.sleep_until

# The extensions every node runs: one explicit table (node/extension.py says how they plug in).
from node import agent_certops, agent_drs, agent_monitor, agent_ocsp, agent_phones  # noqa: E402 - the table follows the agent

EXTENSIONS: tuple[Extension, ...] = (
    agent_certops.EXTENSION,
    agent_monitor.EXTENSION,
    agent_ocsp.EXTENSION,
    agent_phones.EXTENSION,
    agent_drs.EXTENSION,
)
for _extension in EXTENSIONS:
    install_extension(_extension)
