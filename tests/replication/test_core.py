"""replication.core: the merge (R-REPL-8 with R-REPL-9), screening and anti-entropy decisions.

The stateful property test drives the production core (``decide``/``plan_merge``, ``Screen``,
``digests``, ``answer_digest``/``summary``/``reconcile``, ``admissible``, ``local_floor``, ``with_floor``)
with a simulated
cluster: random uploads and deletions on random nodes, dropped, duplicated and reordered
messages, partitions, crashes and clock jumps. The simulation only carries messages and keeps
each node's records; every decision comes from the core.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node.catalog import RELEASES, StorePolicy, store_policy
from replication import core
from replication.core import NOTHING, Decision, Rank, Screen, Slot, decide, plan_merge, rank_of
from replication.hlc import ZERO, HybridClock, Version
from replication.records import Record

V1 = Version(100, 0, "a")
V2 = Version(100, 1, "a")
V3 = Version(200, 0, "b")
DAY_MS = 86_400_000


def put(version: Version, *, start: int = 0, der: bytes | None = None, replaces: Version | None = None) -> Record:
    der = der if der is not None else f"cert@{start}".encode()
    return Record("tomcat-trust", "Lab_Root_CA", version, der, version.node, start, replaces)


def tomb(version: Version) -> Record:
    return Record("tomcat-trust", "Lab_Root_CA", version, None, version.node)


def slot_of(*records: Record) -> Slot:
    slot = Slot()
    for rec in records:
        slot = core.after(slot, rec, decide(slot, rec, 0))
    return slot


# --- the merge rule, case by case ---------------------------------------------------------------


def test_put_into_an_empty_slot_is_written() -> None:
    assert decide(None, put(V1), 0) == Decision(put_entry=True)


def test_the_same_record_again_changes_nothing() -> None:
    """Idempotence: a second delivery of the same record is not a write."""
    assert decide(slot_of(put(V1)), put(V1), 0) is NOTHING
    assert decide(slot_of(tomb(V2)), tomb(V2), 0) is NOTHING


def test_repl8_a_later_start_wins_over_a_newer_version() -> None:
    """R-REPL-8: between same-name certificates the later validity start wins, whatever the versions."""
    later_start_older_version = put(V1, start=2 * DAY_MS)
    earlier_start_newer_version = put(V3, start=DAY_MS)
    assert decide(slot_of(later_start_older_version), earlier_start_newer_version, 0) is NOTHING
    assert decide(slot_of(earlier_start_newer_version), later_start_older_version, 0) == Decision(put_entry=True)


def test_repl8_same_start_falls_back_to_the_version() -> None:
    assert decide(slot_of(put(V1, start=5)), put(V2, start=5, der=b"other"), 0) == Decision(put_entry=True)
    assert decide(slot_of(put(V2, start=5)), put(V1, start=5, der=b"other"), 0) is NOTHING


def test_a_superseding_put_deletes_its_own_old_copy_then_competes_by_start() -> None:
    """R-REPL-5 with R-REPL-8: a node replacing its own certificate (a CA-signed tomcat back-dated by
    the CA) deletes its previous copy in the same record; any other copy still wins by a later start."""
    self_signed = put(V1, start=10 * DAY_MS)
    ca_signed = put(V3, start=9 * DAY_MS, replaces=V1)
    assert decide(slot_of(self_signed), ca_signed, 0) == Decision(put_entry=True, put_tombstone=True, delete_entry=True)
    assert decide(slot_of(ca_signed), self_signed, 0) is NOTHING  # the old copy never comes back
    admin_later = put(V2, start=11 * DAY_MS, der=b"admin")  # written after V1: not covered by the deletion
    assert decide(slot_of(admin_later), ca_signed, 0) == Decision(put_tombstone=True)
    assert decide(slot_of(ca_signed), admin_later, 0) == Decision(put_entry=True)
    assert core.local_floor(slot_of(self_signed), supersedes=True) == V1
    assert core.local_floor(slot_of(self_signed), supersedes=False) is None
    assert core.local_floor(None, supersedes=True) is None


def test_a_carried_deletion_must_be_older_than_its_put() -> None:
    """R-REPL-8: nothing from the wire can pin a certificate: a put whose carried deletion is not older
    than itself is refused (the old epoch could be set to anything)."""
    policies = {"tomcat-trust": store_policy("tomcat-trust", RELEASES["15"])}
    assert core.admissible(put(V1, replaces=V3), policies, policies) == "bad-replaces"
    assert core.admissible(put(V1, replaces=V1), policies, policies) == "bad-replaces"
    assert core.admissible(put(V3, replaces=V1), policies, policies) is None


def test_with_floor_sends_the_deletion_with_the_entry() -> None:
    """10.5 sends no tombstones: a state transfer carries the superseding deletion in the entry."""
    ca_signed = put(V3, start=9 * DAY_MS, replaces=V1)
    slot = slot_of(put(V1, start=10 * DAY_MS), ca_signed)
    assert core.with_floor(replace(ca_signed, replaces=None), slot).replaces == V1
    assert core.with_floor(put(V1), Slot(tombstone=V2)).replaces is None  # covered: never sent anyway


def test_repl9_a_copy_written_before_the_deletion_never_comes_back() -> None:
    """R-REPL-9: a tombstone removes every copy older than it, whatever its start (no resurrection)."""
    assert decide(slot_of(tomb(V2)), put(V1, start=99 * DAY_MS), 0) is NOTHING
    assert decide(slot_of(put(V1)), tomb(V2), 0) == Decision(put_tombstone=True, delete_entry=True)
    assert decide(slot_of(tomb(V2)), tomb(V1), 0) is NOTHING


def test_repl9_a_reupload_after_the_deletion_survives_in_any_order() -> None:
    reupload = put(V3, start=0)
    assert decide(slot_of(tomb(V2)), reupload, 0) == Decision(put_entry=True)
    assert decide(slot_of(reupload), tomb(V2), 0) == Decision(put_tombstone=True)


def test_a_deletion_past_the_retention_removes_what_it_covers_but_is_not_kept() -> None:
    """Tombstone retention: a purged deletion must not come back from every peer."""
    old = tomb(Version(10, 0, "a"))
    assert decide(slot_of(put(Version(5, 0, "b"))), old, cutoff_ms=50) == Decision(delete_entry=True)
    assert decide(None, old, cutoff_ms=50) is NOTHING


def test_plan_merge_folds_a_batch_in_order() -> None:
    plan = plan_merge({}, [put(V1), tomb(V2), put(V1), put(V3, start=1)], 0)
    assert [(r.version, d) for r, d in plan] == [
        (V1, Decision(put_entry=True)),
        (V2, Decision(put_tombstone=True, delete_entry=True)),
        (V3, Decision(put_entry=True)),
    ]


def test_rank_orders_start_then_version() -> None:
    assert rank_of(put(V1, start=9)) == Rank(9, V1)
    assert Rank(10**12, V1) > Rank(5, V3) > Rank(5, V2)


# --- screening ------------------------------------------------------------------------------------


def test_duplicates_are_normal_and_many_copies_are_a_replay() -> None:
    """Duplicate QoS 1 deliveries are not attacks; an id sent again and again is a replay."""
    screen = Screen(retention_ms=1000)
    assert screen.check("m1", 500, 600) == "fresh"
    verdicts = [screen.check("m1", 500, 600) for _ in range(core.DUPLICATES_TOLERATED + 2)]
    assert verdicts[: core.DUPLICATES_TOLERATED] == ["duplicate"] * core.DUPLICATES_TOLERATED
    assert verdicts[-1] == "replay"


def test_envelopes_older_than_the_retention_are_stale() -> None:
    screen = Screen(retention_ms=1000)
    assert screen.check("old", 100, 2000) == "stale"
    assert screen.check("new", 1500, 2000) == "fresh"


def test_screen_memory_is_bounded() -> None:
    screen = Screen(retention_ms=10**9, memory=3)
    for i in range(5):
        screen.check(f"m{i}", 0, 0)
    assert screen.check("m0", 0, 0) == "fresh"  # forgotten: merging it again is harmless (idempotent)
    assert screen.check("m4", 0, 0) == "duplicate"


# --- anti-entropy decisions -----------------------------------------------------------------------


def test_anti_entropy_answers_only_differing_stores() -> None:
    """R-REPL-6: a digest exchange moves the stores that differ, not all of them, and only the
    sender's partner answers it (one answer per digest, issue 10)."""
    mine = {"tomcat-trust": "a", "CallManager-trust": "b"}
    theirs = {"tomcat-trust": "a", "CallManager-trust": "x"}
    online = ["n1", "n2", "n3", "n4"]

    def answer(me: str, sender: str, **flags: bool) -> core.DigestAnswer | None:
        kw = {"rejoining": False, "peer_rejoining": False, **flags}
        return core.answer_digest(mine, theirs, me=me, sender=sender, online=online, **kw)

    assert answer("n1", "n3") == ("summary", ["CallManager-trust"])  # the hub answers everyone
    assert answer("n3", "n1") == ("summary", ["CallManager-trust"])  # everyone answers the hub
    assert answer("n2", "n1") == ("summary", ["CallManager-trust"])
    assert answer("n2", "n3") is None  # neither is the other's partner: the hub answers
    assert (
        core.answer_digest(mine, mine, me="n1", sender="n3", online=online, rejoining=False, peer_rejoining=False)
        is None
    )
    assert answer("n1", "n3", rejoining=True) is None
    assert answer("n1", "n3", peer_rejoining=True) == ("state", ["CallManager-trust"])
    assert answer("n2", "n3", peer_rejoining=True) is None  # one peer answers a rejoining node
    assert answer("n2", "n1", peer_rejoining=True) == ("state", ["CallManager-trust"])  # the hub's partner
    assert [core.partner(n, online) for n in online] == ["n2", "n1", "n1", "n1"]


def test_a_one_entry_difference_moves_that_entry() -> None:
    """R-REPL-6 (issue 10): partners differing by one entry exchange that entry, not their stores."""
    policies = {s: store_policy(s, RELEASES["15"]) for s in ("tomcat-trust",)}
    shared = {("tomcat-trust", f"c{i}"): Slot(Version(i, 0, "a"), f"sha{i}", None, None) for i in range(50)}
    mine = dict(shared)
    theirs = dict(shared)
    mine[("tomcat-trust", "extra")] = Slot(Version(99, 0, "a"), "shaX", None, None)
    theirs[("tomcat-trust", "c7")] = Slot(Version(7, 0, "a"), "sha7", Version(98, 0, "b"), None)
    summary = core.summary(theirs, ["tomcat-trust"], policies)
    send, want = core.reconcile(mine, summary, policies)
    assert send == [("tomcat-trust", "extra")]
    assert want == [("tomcat-trust", "c7")]  # their tombstone of c7 we lack
    assert core.reconcile(shared, core.summary(shared, ["tomcat-trust"], policies), policies) == ([], [])


def test_locality_refuses_what_the_policy_keeps_local() -> None:
    """R-REPL-2: a CAPF-trust upload arriving from the bus is refused; its deletion is accepted (R-REPL-3)."""
    policies = {s: store_policy(s, RELEASES["15"]) for s in ("CAPF-trust", "tomcat-trust")}
    capf = Record("CAPF-trust", "x", V1, b"c", "a")
    assert core.admissible(capf, policies, policies) == "locality"
    assert core.admissible(Record("CAPF-trust", "x", V1, None, "a"), policies, policies) is None
    assert core.admissible(Record("ipsec-trust", "x", V1, b"c", "a"), policies, policies) == ""


# --- the simulated cluster ----------------------------------------------------------------------

STORES = ("tomcat-trust", "CAPF-trust", "ipsec-trust")
NAMES = ("A", "B")
CERTS = {  # a few certificates per name with their validity starts (in days): same-name conflicts
    name: [(f"{name}-{start}".encode(), start * DAY_MS) for start in (1, 2, 3)] for name in NAMES
}


@dataclass
class Message:
    kind: str  # change | digest | summary | state
    sender: str
    to: str | None
    msg_id: str
    sent_ms: int
    records: list[Record] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)
    hops: int = 0
    summary: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    want: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Op:
    kind: str  # put | delete
    node: str
    rec: Record


class SimNode:
    """One node: its durable records (entries and tombstones) and what the core decides for it."""

    def __init__(self, name: str, cluster: Cluster) -> None:
        self.name = name
        self.cluster = cluster
        self.index: dict[tuple[str, str], Slot] = {}
        self.entries: dict[tuple[str, str], Record] = {}
        self.tombs: dict[tuple[str, str], Record] = {}
        self.hlc = HybridClock(name, lambda: cluster.now_ms)
        self.screen = Screen(cluster.retention_ms)
        self.partitioned = False
        self.partitioned_at = 0

    def restart(self) -> None:
        """A crash: memory (screen, clock) is lost, the database is not."""
        versions = [r.version for r in (*self.entries.values(), *self.tombs.values())]
        self.hlc = HybridClock(self.name, lambda: self.cluster.now_ms, max(versions, default=ZERO))
        self.screen = Screen(self.cluster.retention_ms)

    def write(self, rec: Record, decision: Decision) -> None:
        """Carry out one decision (what node/agent.py does with aiosqlite)."""
        if decision.put_tombstone:
            self.tombs[rec.key] = core.tombstone_of(rec)
        if decision.delete_entry:
            self.entries.pop(rec.key, None)
        if decision.put_entry:
            held = self.entries.get(rec.key)
            assert held is None or rank_of(rec) > rank_of(held), f"R-REPL-8: {rec} replaced {held}"
            self.entries[rec.key] = rec
        self.index[rec.key] = core.after(self.index.get(rec.key), rec, decision)

    # local operations (the direct path: plan, then write)

    def upload(self, store: str, name: str, der: bytes, start_ms: int) -> Record | None:
        held = self.entries.get((store, name))
        if held is not None and held.der != der and start_ms <= held.start_ms:
            return None  # R-REPL-8 on the direct path: refused
        if held is not None and held.der == der:
            return None  # unchanged
        return self.put(store, name, der, start_ms, supersedes=False)

    def put(self, store: str, name: str, der: bytes, start_ms: int, *, supersedes: bool) -> Record:
        """A local write (node/agent.py ``_write_changes``): the put carries the deletion of its own
        old copy when it supersedes it."""
        slot = self.index.get((store, name))
        rec = Record(
            store, name, self.hlc.tick(), der, self.name, start_ms, core.local_floor(slot, supersedes=supersedes)
        )
        decision = decide(slot, rec, self.cluster.cutoff_ms)
        self.write(rec, Decision(put_entry=True, put_tombstone=decision.put_tombstone, delete_entry=True))
        if self.cluster.policies[store].replicate_add:
            self.cluster.send(self, "change", records=[rec])
        return rec

    def delete(self, store: str, name: str) -> Record | None:
        if (store, name) not in self.entries:
            return None
        policy = self.cluster.policies[store]
        rec = Record(store, name, self.hlc.tick(), None, self.name)
        self.entries.pop((store, name))
        slot = self.index.setdefault((store, name), Slot())
        slot.entry = slot.entry_sha = slot.entry_rank = None
        if policy.tombstone:
            self.write(rec, Decision(put_tombstone=True))
            if policy.replicate_delete:
                self.cluster.send(self, "change", records=[rec])
        return rec

    # incoming messages (what node/agent.py's handlers do)

    def receive(self, msg: Message) -> None:
        screened = self.screen.check(msg.msg_id, msg.sent_ms, self.cluster.now_ms)
        if screened in ("duplicate", "replay"):
            self.cluster.duplicates += 1
            return
        records = msg.records if screened == "fresh" else [r for r in msg.records if r.der is None]
        accepted = [r for r in records if core.admissible(r, STORES, self.cluster.policies) is None]
        for rec in accepted:
            self.hlc.observe(rec.version)
        plan = plan_merge(self.index, accepted, self.cluster.cutoff_ms)
        for rec, decision in plan:
            self.write(rec, decision)
        policies, online = self.cluster.policies, list(self.cluster.nodes)
        if msg.kind == "digest":
            answer = core.answer_digest(
                self.digests(),
                msg.digests,
                me=self.name,
                sender=msg.sender,
                online=online,
                rejoining=False,
                peer_rejoining=False,
            )
            if answer is not None:
                summary = core.summary(self.index, answer.stores, policies)
                self.cluster.send(self, "summary", to=msg.sender, summary=summary)
        elif msg.kind == "summary":
            send, want = core.reconcile(self.index, msg.summary, policies)
            if send or want:
                self.send_records(msg.sender, send, want)
        elif msg.kind == "state":
            if msg.want:
                self.send_records(msg.sender, msg.want, [])
            if plan and core.partner(msg.sender, online) == self.name:
                self.cluster.rebroadcast.add(self.name)  # the hub tells its new digest after the burst

    def digests(self) -> dict[str, str]:
        return core.digests(self.index, STORES, self.cluster.policies)

    def purge(self) -> None:
        for key in core.expired_tombstones(self.index, self.cluster.cutoff_ms):
            del self.tombs[key]
            self.index[key].tombstone = None

    def view(self, stores: list[str]) -> list[Record]:
        policies = self.cluster.policies
        entries = [r for r in self.entries.values() if r.store in stores and policies[r.store].replicate_add]
        return [core.with_floor(r, self.index.get(r.key)) for r in entries] + [
            r for r in self.tombs.values() if r.store in stores and policies[r.store].replicate_delete
        ]

    def send_records(self, to: str, keys: list[tuple[str, str]], want: list[tuple[str, str]]) -> None:
        wanted = set(keys)
        records = [r for r in self.view(list(STORES)) if r.key in wanted]
        self.cluster.send(self, "state", to=to, records=records, want=want)


class Cluster:
    def __init__(self, release: str, nodes: int) -> None:
        profile = RELEASES[release]
        self.policies: dict[str, StorePolicy] = {s: store_policy(s, profile) for s in STORES}
        self.retention_ms = profile.tombstone_retention_s * 1000
        self.now_ms = 1_767_225_600_000
        self.nodes = {f"n{i}": SimNode(f"n{i}", self) for i in range(nodes)}
        self.in_flight: list[tuple[str, Message]] = []
        self.held_back: dict[str, list[Message]] = {}  # outgoing messages of a partitioned node
        self.ids = itertools.count()
        self.duplicates = 0
        self.rebroadcast: set[str] = set()

    @property
    def cutoff_ms(self) -> int:
        return self.now_ms - self.retention_ms

    def send(self, node: SimNode, kind: str, to: str | None = None, **fields: object) -> None:
        msg = Message(kind, node.name, to, f"m{next(self.ids)}", self.now_ms, **fields)  # type: ignore[arg-type]
        if node.partitioned:
            if kind == "change":  # durable (outbox): published after the heal; the rest is lost
                self.held_back.setdefault(node.name, []).append(msg)
            return
        self.publish(msg)

    def publish(self, msg: Message) -> None:
        for name, peer in self.nodes.items():
            if name != msg.sender and (msg.to is None or msg.to == name) and not peer.partitioned:
                self.in_flight.append((name, msg))

    def heal(self, name: str) -> None:
        node = self.nodes[name]
        node.partitioned = False
        for msg in self.held_back.pop(name, []):
            self.publish(msg)
        self.send(node, "digest", digests=node.digests())

    def deliver_all(self, limit: int = 20_000) -> None:
        for _ in range(limit):
            if not self.in_flight and self.rebroadcast:
                for name in sorted(self.rebroadcast):
                    self.send(self.nodes[name], "digest", digests=self.nodes[name].digests())
                self.rebroadcast.clear()
            if not self.in_flight:
                return
            name, msg = self.in_flight.pop(0)
            self.nodes[name].receive(msg)
        raise AssertionError("messages never stopped flowing")

    def anti_entropy(self) -> None:
        """R-REPL-6: the resync timer on every node: forget expired tombstones, broadcast the digest;
        answers flow until quiet."""
        for node in self.nodes.values():
            node.purge()
        for node in self.nodes.values():
            self.send(node, "digest", digests=node.digests())
            self.deliver_all()


class ReplicationMachine(RuleBasedStateMachine):
    """Random operations and faults on a simulated cluster driven by the production core."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster("15", 3)
        self.ops: list[Op] = []

    @initialize(release=st.sampled_from(["15", "10.5"]), nodes=st.integers(2, 4))
    def setup(self, release: str, nodes: int) -> None:
        self.cluster = Cluster(release, nodes)

    def _node(self, data: st.DataObject) -> SimNode:
        return self.cluster.nodes[data.draw(st.sampled_from(sorted(self.cluster.nodes)))]

    @rule(data=st.data(), store=st.sampled_from(STORES), name=st.sampled_from(NAMES), which=st.integers(0, 2))
    def upload(self, data: st.DataObject, store: str, name: str, which: int) -> None:
        node = self._node(data)
        der, start = CERTS[name][which]
        rec = node.upload(store, name, der, start)
        if rec is not None:
            self.ops.append(Op("put", node.name, rec))

    @rule(data=st.data(), store=st.sampled_from(STORES), name=st.sampled_from(NAMES))
    def delete(self, data: st.DataObject, store: str, name: str) -> None:
        node = self._node(data)
        rec = node.delete(store, name)
        if rec is not None:
            self.ops.append(Op("delete", node.name, rec))

    @precondition(lambda self: bool(self.cluster.in_flight))
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        """Deliver any in-flight message (reordering), sometimes twice (QoS 1 duplicates)."""
        index = data.draw(st.integers(0, len(self.cluster.in_flight) - 1))
        name, msg = self.cluster.in_flight.pop(index)
        self.cluster.nodes[name].receive(msg)
        if data.draw(st.booleans()):
            self.cluster.nodes[name].receive(msg)

    @precondition(lambda self: bool(self.cluster.in_flight))
    @rule(data=st.data())
    def drop_one(self, data: st.DataObject) -> None:
        self.cluster.in_flight.pop(data.draw(st.integers(0, len(self.cluster.in_flight) - 1)))

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        node = self._node(data)
        if not node.partitioned:
            node.partitioned, node.partitioned_at = True, self.cluster.now_ms
        self.cluster.in_flight = [(n, m) for n, m in self.cluster.in_flight if n != node.name]

    @rule(data=st.data())
    def heal(self, data: st.DataObject) -> None:
        node = self._node(data)
        if node.partitioned:
            self.cluster.heal(node.name)

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A crash loses what was in flight to the node and its memory, never its committed writes."""
        node = self._node(data)
        self.cluster.in_flight = [(n, m) for n, m in self.cluster.in_flight if n != node.name]
        node.restart()

    @rule(days=st.integers(0, 12), hours=st.integers(0, 23))
    def clock_jump(self, days: int, hours: int) -> None:
        """The clock jumps; the resync timers due inside the jump fire in order (as in a lab, one
        anti-entropy round a simulated day is plenty), forgetting expired tombstones. A partitioned
        node stays away less than the tombstone retention (beyond it, it rejoins: node/agent.py)."""
        cluster = self.cluster
        target = cluster.now_ms + days * DAY_MS + hours * 3_600_000
        away = [n.partitioned_at for n in cluster.nodes.values() if n.partitioned]
        if away:
            target = min(target, min(away) + cluster.retention_ms // 2)
        while cluster.now_ms < target:
            cluster.now_ms = min(target, cluster.now_ms + DAY_MS)
            cluster.anti_entropy()

    @invariant()
    def locality(self) -> None:
        """R-REPL-2, R-REPL-7: an upload to a store that keeps uploads local is only on its node."""
        for node in self.cluster.nodes.values():
            for rec in node.entries.values():
                if not self.cluster.policies[rec.store].replicate_add:
                    assert rec.origin == node.name, (node.name, rec)

    @invariant()
    def no_resurrection(self) -> None:
        """R-REPL-9: where deletions replicate, nothing older than a deletion a node knows is held."""
        for node in self.cluster.nodes.values():
            for key, rec in node.entries.items():
                tomb_rec = node.tombs.get(key)
                assert tomb_rec is None or rec.version > tomb_rec.version, (node.name, rec, tomb_rec)

    def teardown(self) -> None:
        """Heal everything, let every message arrive, run anti-entropy: then check the end state."""
        cluster = self.cluster
        for name in sorted(cluster.nodes):
            if cluster.nodes[name].partitioned:
                cluster.heal(name)
        cluster.deliver_all()
        for _ in range(2):
            cluster.anti_entropy()
        check_end_state(cluster, self.ops)


def check_end_state(cluster: Cluster, ops: list[Op]) -> None:
    """Convergence, no resurrection, R-REPL-8 ordering and nothing lost, after the heal."""
    nodes = list(cluster.nodes.values())
    policies = cluster.policies
    views = {n.name: sorted(n.view(list(STORES)), key=lambda r: (r.store, r.name, r.der is None)) for n in nodes}
    first = next(iter(views.values()))
    for name, view in views.items():
        assert view == first, f"{name} differs after heal: {view} != {first}"
    for op in ops:
        if op.kind == "delete" and policies[op.rec.store].replicate_delete:
            for node in nodes:  # no resurrection, on every node: nothing written before an acked deletion
                held = node.entries.get(op.rec.key)
                assert held is None or held.version > op.rec.version, (node.name, held, op)
    for op in ops:
        if op.kind != "put":
            continue
        rec = op.rec
        deletes = [o.rec.version for o in ops if o.kind == "delete" and o.rec.key == rec.key]
        targets = nodes if policies[rec.store].replicate_add else [cluster.nodes[op.node]]
        for node in targets:
            held = node.entries.get(rec.key)
            if not deletes:  # R-REPL-8: with no deletion, every node holds the best-ranked put of the name
                assert held is not None and rank_of(held) >= rank_of(rec), f"{node.name}: {held} below {rec}"
                continue
            if held is not None and rank_of(held) >= rank_of(rec):
                continue  # held, or outranked by a later-starting (or superseding) certificate
            # nothing lost: only a deletion explains its absence: one made after it, or one of a
            # certificate that outranked it (an upload refused by R-REPL-8 stays refused: README)
            later_delete = any(v > rec.version for v in deletes)
            outranked = any(o.kind == "put" and o.rec.key == rec.key and rank_of(o.rec) > rank_of(rec) for o in ops)
            local_delete = not policies[rec.store].tombstone
            assert later_delete or outranked or local_delete, f"{node.name} lost the acked {rec} (holds {held})"


ReplicationMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CERTSIM_CORE_EXAMPLES", "300")),  # CI: 300 runs; set higher to dig
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_replication_properties = pytest.mark.slow(ReplicationMachine.TestCase)


@pytest.mark.parametrize("release", ["15", "10.5"])
def test_repl8_partitioned_subscriber_uploads_an_earlier_same_name_certificate(release: str) -> None:
    """R-REPL-8, situation (a) of issue 10: a partitioned subscriber uploads a same-name certificate
    that starts earlier than the publisher's; after the heal every node holds the later-starting one."""
    cluster = Cluster(release, 3)
    pub, sub, other = cluster.nodes.values()
    sub.partitioned = True
    later = pub.upload("tomcat-trust", "A", b"A-later", 5 * DAY_MS)
    earlier = sub.upload("tomcat-trust", "A", b"A-earlier", 2 * DAY_MS)
    assert later is not None and earlier is not None
    assert earlier.version > later.version  # the earlier-starting one was written last
    cluster.deliver_all()
    cluster.heal(sub.name)
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in (pub, sub, other):
        assert node.entries[("tomcat-trust", "A")].der == b"A-later", node.name


def test_repl8_on_10_5_a_local_delete_then_earlier_upload_does_not_win() -> None:
    """R-REPL-8, situation (b): on 10.5 a local delete followed by an earlier-starting upload of the
    same name must not push it over the later one; the deleting node gets the later one back (R-REPL-9
    10.5 resurrection), every node ends with the later-starting certificate."""
    cluster = Cluster("10.5", 3)
    a, b, c = cluster.nodes.values()
    assert a.upload("tomcat-trust", "A", b"A-later", 5 * DAY_MS) is not None
    cluster.deliver_all()
    assert a.delete("tomcat-trust", "A") is not None
    assert a.upload("tomcat-trust", "A", b"A-earlier", 2 * DAY_MS) is not None  # nothing held here: accepted
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in (a, b, c):
        assert node.entries[("tomcat-trust", "A")].der == b"A-later", node.name


def test_regression_a_missed_deletion_is_repaired_before_its_tombstone_expires() -> None:
    """Shrunk from the stateful test: a deletion lost in transit, then a month of simulated time.
    The resync timers repair it long before the retention ends, so the purge resurrects nothing."""
    cluster = Cluster("15", 3)
    n0, _n1, _n2 = cluster.nodes.values()
    assert n0.upload("tomcat-trust", "B", b"B-1", DAY_MS) is not None
    cluster.deliver_all()
    deletion = n0.delete("tomcat-trust", "B")
    assert deletion is not None
    cluster.in_flight.clear()  # the deletion is lost on its way to every peer
    for _ in range(31):
        cluster.now_ms += DAY_MS
        cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert ("tomcat-trust", "B") not in node.entries, node.name
        assert ("tomcat-trust", "B") not in node.tombs, node.name  # forgotten everywhere, together


@pytest.mark.parametrize("release", ["15", "10.5"])
def test_repl8_a_superseding_put_does_not_beat_a_later_start_made_during_a_partition(release: str) -> None:
    """R-REPL-8 with R-REPL-5 (review of issue 10, epoch_repro): n0 replaces its own tomcat by a
    CA-signed one that starts earlier (day 3) while a partitioned n1 uploads a same-name certificate
    starting day 9; after the heal every node holds the day-9 one, whatever the delivery order."""
    cluster = Cluster(release, 3)
    a, b, _c = cluster.nodes.values()
    assert a.upload("tomcat-trust", "A", b"A-selfsigned-day5", 5 * DAY_MS) is not None
    cluster.deliver_all()
    b.partitioned = True
    a.put("tomcat-trust", "A", b"A-casigned-day3", 3 * DAY_MS, supersedes=True)
    assert b.upload("tomcat-trust", "A", b"A-admin-day9", 9 * DAY_MS) is not None
    cluster.deliver_all()
    cluster.heal(b.name)
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert node.entries[("tomcat-trust", "A")].der == b"A-admin-day9", node.name


def test_repl8_on_10_5_a_local_delete_of_a_superseding_put_then_a_later_upload_wins() -> None:
    """R-REPL-8 on 10.5 (review of issue 10, epoch105): n1 deletes n0's superseding (day 3) copy
    locally, then uploads a day-9 certificate of the name: every node ends with the day-9 one."""
    cluster = Cluster("10.5", 3)
    a, b, _c = cluster.nodes.values()
    assert a.upload("tomcat-trust", "A", b"A-selfsigned-day5", 5 * DAY_MS) is not None
    cluster.deliver_all()
    a.put("tomcat-trust", "A", b"A-casigned-day3", 3 * DAY_MS, supersedes=True)
    cluster.deliver_all()
    assert all(n.entries[("tomcat-trust", "A")].der == b"A-casigned-day3" for n in cluster.nodes.values())
    assert b.delete("tomcat-trust", "A") is not None  # 10.5: local only
    assert b.upload("tomcat-trust", "A", b"A-admin-day9", 9 * DAY_MS) is not None
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert node.entries[("tomcat-trust", "A")].der == b"A-admin-day9", node.name


@pytest.mark.parametrize("release", ["15", "10.5"])
def test_a_superseded_copy_never_comes_back_by_state_transfer(release: str) -> None:
    """R-REPL-5 with R-REPL-9: a node that missed the superseding put and still holds the old
    (later-starting) copy takes the new one by anti-entropy, and the old copy does not return."""
    cluster = Cluster(release, 3)
    a, b, _c = cluster.nodes.values()
    assert a.upload("tomcat-trust", "A", b"A-selfsigned-day5", 5 * DAY_MS) is not None
    cluster.deliver_all()
    a.put("tomcat-trust", "A", b"A-casigned-day3", 3 * DAY_MS, supersedes=True)
    cluster.in_flight = [(n, m) for n, m in cluster.in_flight if n != b.name]  # lost on its way to b
    cluster.deliver_all()
    for _ in range(2):
        cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert node.entries[("tomcat-trust", "A")].der == b"A-casigned-day3", node.name
