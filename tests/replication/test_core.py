"""replication.core: the merge (R-REPL-8 with R-REPL-9), screening and anti-entropy decisions.

The stateful property test drives the production code (``decide``/``plan_merge``, ``local_put``,
``local_delete``, ``Screen``/``keep_from_stale``, ``digests``, ``answer_digest``/``summary``/
``reconcile``, ``admissible``, ``with_floor``, and ``node.ops.plan_trust_upload`` for the upload
rule) with a simulated cluster on real certificates: random uploads (to replicated and to local
stores), superseding puts and deletions on random nodes; dropped, duplicated, reordered and
replayed messages, stale envelopes, partitions, crashes (with and without downtime) and clock
jumps, also past the tombstone retention. The simulation only carries messages and keeps each
node's records; the oracle (``check_end_state``) comes from the test's own history of operations.
Run counts: ``CERTSIM_CORE_EXAMPLES`` examples (300 by default) of up to 40 steps each.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hashlib
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from node import ops
from node.catalog import RELEASES, Role, StorePolicy, store_policy
from node.certs import validity_start_ms
from node.errors import Refused
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


def test_versions_kept_only_when_every_version_is_stored() -> None:
    """HLC durability: a node may skip noting its clock only when the plan stores every version it saw
    (a restart reads them back); not when the merge refuses a record, stores a put only as its
    deletion, or displaces a newer entry by an older one that starts later (R-REPL-8)."""
    key = ("tomcat-trust", "Lab_Root_CA")
    assert core.versions_kept({}, [put(V1), tomb(V2)], plan_merge({}, [put(V1), tomb(V2)], 0))
    held = {key: slot_of(put(V1, start=5))}
    refused = put(V3, start=1)  # newer version, earlier start: R-REPL-8 keeps the held one
    assert plan_merge(held, [refused], 0) == []
    assert not core.versions_kept(held, [refused], [])
    only_deletion = put(V3, start=1, replaces=V1)  # its deletion is older than the held put: kept, the put is not
    held = {key: slot_of(put(V2, start=5))}
    plan = plan_merge(held, [only_deletion], 0)
    assert [d for _r, d in plan] == [Decision(put_tombstone=True)]
    assert not core.versions_kept(held, [only_deletion], plan)
    held = {key: slot_of(put(V3, start=1))}
    later_start = put(V2, start=5)  # older version, later start: it displaces the newer V3
    plan = plan_merge(held, [later_start], 0)
    assert [d for _r, d in plan] == [Decision(put_entry=True)]
    assert not core.versions_kept(held, [later_start], plan)
    assert core.versions_kept({key: slot_of(put(V1, start=1))}, [later_start], plan)  # displacing an older one


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


def test_control_copies_beyond_redelivery_are_a_replay() -> None:
    """Item 7 of issue 10: a resent or redelivered control request is answered again; copies of an
    answered request beyond what QoS 1 redelivery explains are a replay."""
    verdicts = [core.control_copy(n) for n in range(1, core.DUPLICATES_TOLERATED + 2)]
    assert verdicts == ["duplicate"] * core.DUPLICATES_TOLERATED + ["replay"]


def test_a_stale_envelope_keeps_only_its_deletions() -> None:
    """R-REPL-9: an upload in a stale envelope could bring back what peers forgot the deletion of."""
    records = [put(V1), tomb(V2), put(V3)]
    assert core.keep_from_stale(records, lambda r: r.der is None) == [tomb(V2)]


def test_local_put_carries_the_known_deletion_and_replaces_what_is_held() -> None:
    """R-REPL-8/R-REPL-5: a local put is always written; it carries the deletion its node knows, and
    the node's own old copy when it supersedes it."""
    rec, decision = core.local_put(slot_of(put(V1, start=5)), put(V3, start=3), supersedes=True, cutoff_ms=0)
    assert rec.replaces == V1 and decision == Decision(put_entry=True, put_tombstone=True, delete_entry=True)
    rec, decision = core.local_put(slot_of(tomb(V2)), put(V3), supersedes=False, cutoff_ms=0)
    assert rec.replaces == V2 and decision == Decision(put_entry=True)


def test_local_delete_keeps_and_sends_per_policy() -> None:
    """R-REPL-3, R-REPL-7, R-REPL-9: which deletions leave a tombstone and travel."""
    deletion = tomb(V1)
    assert core.local_delete(store_policy("tomcat-trust", RELEASES["15"]), deletion) == (True, True)
    assert core.local_delete(store_policy("tomcat-trust", RELEASES["10.5"]), deletion) == (False, False)
    assert core.local_delete(store_policy("ipsec-trust", RELEASES["15"]), deletion) == (False, False)
    assert core.local_delete(store_policy("CAPF-trust", RELEASES["15"]), deletion) == (True, True)


def test_a_node_away_longer_than_the_retention_rejoins() -> None:
    """R-REPL-9 with tombstone retention: beyond it a node takes a peer's state instead of spreading its own."""
    assert core.away_too_long(now_ms=10_001, last_contact_ms=0, retention_ms=10_000)
    assert not core.away_too_long(now_ms=10_000, last_contact_ms=0, retention_ms=10_000)


def test_rejoin_drops_what_was_learned_before_leaving_and_the_peer_lacks() -> None:
    """R-REPL-9: a rejoining node drops entries and tombstones from before its absence that the peer's
    state does not hold, keeps what the peer holds, and keeps what it wrote since."""
    old, mine_since = Version(100, 0, "a"), Version(900, 0, "a")
    index = {
        ("tomcat-trust", "gone"): Slot(entry=old),
        ("tomcat-trust", "deleted"): Slot(tombstone=old),
        ("tomcat-trust", "offered"): Slot(entry=old),
        ("tomcat-trust", "new"): Slot(entry=mine_since),
        ("CAPF-trust", "other-store"): Slot(entry=old),
    }
    drops = core.stale_on_rejoin(index, ["tomcat-trust"], [("tomcat-trust", "offered")], before_ms=500)
    assert drops == [(("tomcat-trust", "gone"), True, False), (("tomcat-trust", "deleted"), False, True)]


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


def test_resync_rounds_fall_on_the_interval_grid_of_the_lab_clock() -> None:
    """R-REPL-6: the next round is a whole number of intervals past the lab clock's origin, strictly
    later than now, so nodes that started at different moments of one interval share every round."""
    half_hour = 1_800_000
    origin = 1_767_225_612_345  # a lab clock that started at no round time
    assert core.next_resync_ms(origin, half_hour, origin) == origin + half_hour
    assert core.next_resync_ms(origin + half_hour - 1, half_hour, origin) == origin + half_hour
    assert core.next_resync_ms(origin + half_hour, half_hour, origin) == origin + 2 * half_hour  # never "now"
    started = [origin + 3 * half_hour + offset for offset in (0, 1, 2_500, 9_999, half_hour - 1)]
    assert {core.next_resync_ms(ms, half_hour, origin) for ms in started} == {origin + 4 * half_hour}
    for ms in started:
        due = core.next_resync_ms(ms, half_hour, origin)
        assert ms < due <= ms + half_hour and (due - origin) % half_hour == 0
    with pytest.raises(ValueError, match="positive"):
        core.next_resync_ms(origin, 0, origin)


def test_locality_refuses_what_the_policy_keeps_local() -> None:
    """R-REPL-2: a CAPF-trust upload arriving from the bus is refused; its deletion is accepted (R-REPL-3)."""
    policies = {s: store_policy(s, RELEASES["15"]) for s in ("CAPF-trust", "tomcat-trust")}
    capf = Record("CAPF-trust", "x", V1, b"c", "a")
    assert core.admissible(capf, policies, policies) == "locality"
    assert core.admissible(Record("CAPF-trust", "x", V1, None, "a"), policies, policies) is None
    assert core.admissible(Record("ipsec-trust", "x", V1, b"c", "a"), policies, policies) == ""
    legacy = {s: store_policy(s, RELEASES["10.5"]) for s in ("tomcat-trust", "ipsec-trust")}
    # 10.5: the only tombstones are deletions puts carried; they travel where adds do (R-REPL-9, R-REPL-5)
    assert core.admissible(Record("tomcat-trust", "x", V1, None, "a"), legacy, legacy) is None
    assert core.admissible(Record("ipsec-trust", "x", V1, None, "a"), legacy, legacy) == "locality"


# --- the simulated cluster ----------------------------------------------------------------------
#
# Every decision comes from production code: the upload rule (``node.ops.plan_trust_upload``, which
# refuses an earlier-starting same-name certificate, R-REPL-8), local puts and deletions
# (``core.local_put``/``core.local_delete``), screening (``core.Screen``, ``core.keep_from_stale``),
# locality (``core.admissible``), the merge (``core.plan_merge``), anti-entropy (``core.digests``,
# ``answer_digest``/``answer_state``, ``with_floor``) and tombstone expiry. Records cross the
# simulated bus as JSON (``Record.to_json``) and their validity start is read back from the
# certificate, as ``NodeAgent._admit`` does. The oracle (``check_end_state``) is computed from the
# test's own history of operations, never from the core's ranking.

STORES = ("tomcat-trust", "CallManager-trust", "CAPF-trust", "ipsec-trust")
UPLOAD_STORES = ("tomcat-trust", "CAPF-trust", "ipsec-trust")
NAMES = ("A", "B")  # B is a CA: uploaded to CAPF-trust it is also placed in CallManager-trust (R-REPL-4)
STARTS = (1, 2, 3)  # validity starts, days after CERT_EPOCH: same-name conflicts
CERT_EPOCH = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
_KEY = ec.generate_private_key(ec.SECP256R1())
START_OF: dict[bytes, int] = {}  # the test's own record of each certificate's validity start (ms)


@functools.cache
def cert_der(name: str, start_day: int, tag: str = "") -> bytes:
    """A real certificate named ``name`` valid from ``start_day`` days after CERT_EPOCH (one per tag)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = CERT_EPOCH + dt.timedelta(days=start_day)
    serial = int.from_bytes(hashlib.sha256(f"{name}/{start_day}/{tag}".encode()).digest()[:8], "big") | 1
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(_KEY.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=name == "B", path_length=None), critical=True)
        .sign(_KEY, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    START_OF[der] = int(start.timestamp() * 1000)
    return der


@dataclass
class Message:
    kind: str  # change | digest | summary | state
    sender: str
    to: str | None
    msg_id: str
    sent_ms: int
    records: list[dict[str, object]] = field(default_factory=list)  # as on the wire (Record.to_json)
    digests: dict[str, str] = field(default_factory=dict)
    stores: list[str] = field(default_factory=list)
    hops: int = 0
    summary: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    want: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Op:
    """One acknowledged operation, as the test saw it: the oracle's input."""

    kind: str  # put | delete
    node: str
    rec: Record
    start_ms: int = 0  # of the certificate put (the test's own record, START_OF)
    deletes: Version | None = None  # a superseding put: the version of the node's own copy it replaced


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
        self.crashed = False  # down: nothing in or out; restarts (memory lost) when it comes back
        self.partitioned_at = 0
        self.saved_hlc = ZERO

    def restart(self) -> None:
        """A crash: memory (screen, clock) is lost, the database is not (the clock's last version is
        saved with every write, as node/agent.py keeps it in the node's meta table)."""
        versions = [r.version for r in (*self.entries.values(), *self.tombs.values())]
        self.hlc = HybridClock(self.name, lambda: self.cluster.now_ms, max([*versions, self.saved_hlc]))
        self.screen = Screen(self.cluster.retention_ms)

    def write(self, rec: Record, decision: Decision) -> None:
        """Carry out one decision (what node/agent.py does with aiosqlite)."""
        if decision.put_tombstone:
            self.tombs[rec.key] = core.tombstone_of(rec)
        if decision.delete_entry:
            self.entries.pop(rec.key, None)
        if decision.put_entry:
            held = self.entries.get(rec.key)
            assert held is None or (START_OF[rec.der or b""], rec.version) > (
                START_OF[held.der or b""],
                held.version,
            ), f"R-REPL-8: {rec} replaced the later-starting (or newer) {held}"
            self.entries[rec.key] = rec
        self.index[rec.key] = core.after(self.index.get(rec.key), rec, decision)
        self.saved_hlc = self.hlc.last

    def own_tomcat(self) -> set[str]:
        """Names of the tomcat-trust entries this node wrote itself (what it may supersede, R-REPL-5)."""
        return {n for (s, n), rec in self.entries.items() if s == "tomcat-trust" and rec.origin == self.name}

    # local operations (the direct path: the production planner, then the core's local write)

    def upload(self, store: str, der: bytes) -> list[Record]:
        existing = {key: rec.der for key, rec in self.entries.items() if rec.der is not None}
        uploaded = [x509.load_der_x509_certificate(der)]
        try:
            plan = ops.plan_trust_upload(Role.CUCM, store, uploaded, existing, self.cluster.now)
        except Refused:
            return []  # R-REPL-8 on the direct path
        return self.commit(plan.puts)

    def commit(self, puts: Iterable[ops.Put]) -> list[Record]:
        """Local puts in one transaction with their change message (node/agent.py ``_write_changes``)."""
        written, outgoing = [], []
        for p in puts:
            new = Record(p.store, p.name, self.hlc.tick(), p.der, self.name, validity_start_ms(p.der))
            rec, decision = core.local_put(
                self.index.get(new.key), new, supersedes=p.supersedes, cutoff_ms=self.cluster.cutoff_ms
            )
            self.write(rec, decision)
            written.append(rec)
            if self.cluster.policies[p.store].replicate_add:
                outgoing.append(rec)
        if outgoing:
            self.cluster.send(self, "change", records=outgoing)
        return written

    def delete(self, store: str, name: str) -> Record | None:
        if (store, name) not in self.entries:
            return None
        remove = ops.plan_trust_delete(Role.CUCM, store, name, {n for s, n in self.entries if s == store})
        rec = Record(remove.store, remove.name, self.hlc.tick(), None, self.name)
        keep, send = core.local_delete(self.cluster.policies[store], rec)
        self.write(rec, Decision(put_tombstone=keep, delete_entry=True))
        if send:
            self.cluster.send(self, "change", records=[rec])
        return rec

    # incoming messages (what node/agent.py's handlers do)

    def receive(self, msg: Message) -> None:
        screened = self.screen.check(msg.msg_id, msg.sent_ms, self.cluster.now_ms)
        if screened in ("duplicate", "replay"):
            self.cluster.screened[screened] += 1
            return
        raw = msg.records
        if screened == "stale":
            self.cluster.screened["stale"] += 1
            if msg.kind not in ("change", "state"):
                return
            raw = core.keep_from_stale(raw, lambda r: r.get("d") is None)
        records = [Record.from_json(r) for r in raw]
        records = [r if r.der is None else replace(r, start_ms=validity_start_ms(r.der)) for r in records]
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

    def view(self, stores: Iterable[str]) -> list[Record]:
        policies = self.cluster.policies
        entries = [r for r in self.entries.values() if r.store in stores and policies[r.store].replicate_add]
        return [core.with_floor(r, self.index.get(r.key)) for r in entries] + [
            r
            for r in self.tombs.values()
            if r.store in stores and core.replicated(r.store, tombstone=True, policies=policies)
        ]

    def send_records(self, to: str, keys: list[tuple[str, str]], want: list[tuple[str, str]]) -> None:
        wanted = set(keys)
        records = [r for r in self.view(STORES) if r.key in wanted]
        self.cluster.send(self, "state", to=to, records=records, want=want)


class Cluster:
    def __init__(self, release: str, nodes: int) -> None:
        profile = RELEASES[release]
        self.policies: dict[str, StorePolicy] = {s: store_policy(s, profile) for s in STORES}
        self.retention_ms = profile.tombstone_retention_s * 1000
        self.now_ms = int(CERT_EPOCH.timestamp() * 1000) + 31 * DAY_MS
        self.nodes = {f"n{i}": SimNode(f"n{i}", self) for i in range(nodes)}
        self.in_flight: list[tuple[str, Message]] = []
        self.held_back: dict[str, list[Message]] = {}  # outgoing messages of a partitioned node
        self.log: list[Message] = []  # the latest messages published: what an attacker could capture
        self.captured: list[Message] = []  # the first changes and state transfers, replayed much later
        self.ids = itertools.count()
        self.screened: collections.Counter[str] = collections.Counter()
        self.rebroadcast: set[str] = set()

    @property
    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.now_ms / 1000, dt.UTC)

    @property
    def cutoff_ms(self) -> int:
        return self.now_ms - self.retention_ms

    def send(self, node: SimNode, kind: str, to: str | None = None, **fields: Any) -> None:
        if "records" in fields:
            fields["records"] = [r.to_json() for r in fields["records"]]
        msg = Message(kind, node.name, to, f"m{next(self.ids)}", self.now_ms, **fields)
        if node.partitioned:
            if kind == "change":  # durable (outbox): published after the heal; the rest is lost
                self.held_back.setdefault(node.name, []).append(msg)
            return
        self.publish(msg)

    def publish(self, msg: Message) -> None:
        self.log = [*self.log[-199:], msg]
        if msg.kind != "digest" and len(self.captured) < 50:
            self.captured.append(msg)
        for name, peer in self.nodes.items():
            if name != msg.sender and (msg.to is None or msg.to == name) and not peer.partitioned:
                self.in_flight.append((name, msg))

    def heal(self, name: str) -> None:
        node = self.nodes[name]
        node.partitioned = False
        if node.crashed:
            node.crashed = False
            node.restart()
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
        self.downs = 0

    @initialize(release=st.sampled_from(["15", "10.5"]), nodes=st.integers(2, 4))
    def setup(self, release: str, nodes: int) -> None:
        self.cluster = Cluster(release, nodes)

    def _node(self, data: st.DataObject) -> SimNode:
        return self.cluster.nodes[data.draw(st.sampled_from(sorted(self.cluster.nodes)))]

    @rule(
        data=st.data(), store=st.sampled_from(UPLOAD_STORES), name=st.sampled_from(NAMES), day=st.sampled_from(STARTS)
    )
    def upload(self, data: st.DataObject, store: str, name: str, day: int) -> None:
        """An administrator's upload (CAPF-trust and ipsec-trust keep uploads on their node, R-REPL-2/7)."""
        node = self._node(data)
        if node.crashed:
            return
        for rec in node.upload(store, cert_der(name, day)):
            self.ops.append(Op("put", node.name, rec, START_OF[rec.der or b""]))

    @rule(data=st.data(), name=st.sampled_from(NAMES), day=st.sampled_from(STARTS))
    def supersede(self, data: st.DataObject, name: str, day: int) -> None:
        """R-REPL-5: a node replaces its own tomcat-trust certificate by its successor (a CA-signed one,
        possibly back-dated: any start), deleting its old copy in the same record."""
        owners = [n for n, node in sorted(self.cluster.nodes.items()) if not node.crashed and name in node.own_tomcat()]
        if not owners:
            return
        node = self.cluster.nodes[data.draw(st.sampled_from(owners))]
        held = node.entries[("tomcat-trust", name)]
        der = cert_der(name, day, f"ca-signed by {node.name} after {held.version}")
        for rec in node.commit([ops.Put("tomcat-trust", name, der, supersedes=True)]):
            self.ops.append(Op("put", node.name, rec, START_OF[der], deletes=held.version))

    @rule(data=st.data(), store=st.sampled_from(STORES), name=st.sampled_from(NAMES))
    def delete(self, data: st.DataObject, store: str, name: str) -> None:
        node = self._node(data)
        rec = None if node.crashed else node.delete(store, name)
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

    @precondition(lambda self: bool(self.cluster.log))
    @rule(data=st.data(), copies=st.integers(1, core.DUPLICATES_TOLERATED + 2), old=st.booleans())
    def replay(self, data: st.DataObject, copies: int, old: bool) -> None:
        """A captured envelope sent again, any time later, any number of times (a replay beyond what
        QoS 1 explains, or a stale one after a clock jump): it must change nothing it should not."""
        if old and self.cluster.captured and not any(n.partitioned for n in self.cluster.nodes.values()):
            self.beyond_retention()  # captured long ago: stale now
        msg = data.draw(st.sampled_from(self.cluster.captured if old and self.cluster.captured else self.cluster.log))
        node = self._node(data)
        if node.name == msg.sender or node.partitioned or msg.to not in (None, node.name):
            return
        for _ in range(copies):
            node.receive(msg)

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

    @rule(data=st.data(), down=st.booleans())
    def crash(self, data: st.DataObject, down: bool) -> None:
        """A crash loses what was in flight to the node and its memory, never its committed writes;
        ``down``: it stays down (missing messages) until a heal restarts it and it catches up."""
        node = self._node(data)
        self.cluster.in_flight = [(n, m) for n, m in self.cluster.in_flight if n != node.name]
        if down and not node.partitioned:
            node.partitioned, node.crashed, node.partitioned_at = True, True, self.cluster.now_ms
            self.downs += 1
        elif not node.crashed:
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

    @precondition(lambda self: not any(n.partitioned for n in self.cluster.nodes.values()))
    @rule()
    def beyond_retention(self) -> None:
        """Time passes beyond the tombstone retention (daily resync timers fire): tombstones are
        forgotten, and every envelope captured before is stale from now on."""
        cluster = self.cluster
        target = cluster.now_ms + cluster.retention_ms + DAY_MS
        while cluster.now_ms < target:
            cluster.now_ms = min(target, cluster.now_ms + DAY_MS)
            cluster.anti_entropy()

    @invariant()
    def locality(self) -> None:
        check_locality(self.cluster, self.ops)

    @invariant()
    def no_resurrection(self) -> None:
        check_no_resurrection(self.cluster)

    def teardown(self) -> None:
        """Heal everything, let every message arrive, run anti-entropy: then check the end state."""
        settle(self.cluster)
        check_end_state(self.cluster, self.ops)
        screened = self.cluster.screened  # what the run exercised (--hypothesis-show-statistics)
        for what in ("duplicate", "replay", "stale"):
            event(f"{what} envelopes screened: {'yes' if screened[what] else 'no'}")
        event(f"superseding puts: {'yes' if any(o.deletes for o in self.ops) else 'no'}")
        local = any(o.kind == "put" and not self.cluster.policies[o.rec.store].replicate_add for o in self.ops)
        event(f"local-store uploads: {'yes' if local else 'no'}")
        event(f"down and restarted: {'yes' if self.downs else 'no'}")


def settle(cluster: Cluster) -> None:
    for name in sorted(cluster.nodes):
        if cluster.nodes[name].partitioned:
            cluster.heal(name)
    cluster.deliver_all()
    for _ in range(2):
        cluster.anti_entropy()


def check_locality(cluster: Cluster, ops_done: list[Op]) -> None:
    """R-REPL-2, R-REPL-7: an upload to a store that keeps uploads local (CAPF-trust, ipsec-trust)
    is never on another node."""
    for op in ops_done:
        if op.kind == "put" and not cluster.policies[op.rec.store].replicate_add:
            for node in cluster.nodes.values():
                held = node.entries.get(op.rec.key)
                assert node.name == op.node or held is None or held.version != op.rec.version, (
                    f"R-REPL-2: {op.node}'s local upload {op.rec} is on {node.name}"
                )
    for node in cluster.nodes.values():
        for rec in node.entries.values():
            if not cluster.policies[rec.store].replicate_add:
                assert rec.origin == node.name, f"R-REPL-2: {node.name} holds {rec} from elsewhere"


def check_no_resurrection(cluster: Cluster) -> None:
    """R-REPL-9: nothing older than a deletion a node knows is held."""
    for node in cluster.nodes.values():
        for key, rec in node.entries.items():
            tomb_rec = node.tombs.get(key)
            assert tomb_rec is None or rec.version > tomb_rec.version, f"R-REPL-9: {node.name} {rec} {tomb_rec}"


def _rank(op: Op) -> tuple[int, Version]:
    """R-REPL-8 as the README states it: the later validity start wins, then the newer write."""
    return (op.start_ms, op.rec.version)


def check_end_state(cluster: Cluster, ops_done: list[Op]) -> None:
    """After the heal: convergence, no resurrection, R-REPL-8 and nothing lost, from the history.

    For each name (and, for a store keeping uploads local, each node), the uploads that count are
    the ones not deleted by a deletion written after them (an administrator's deletion where the
    store keeps tombstones, or the deletion a superseding put carries). Among those the later
    validity start wins, then the newer. The held certificate must be one of them, and any that
    ranks above it must have been displaced by a certificate ranking higher still (which a deletion
    then removed: a displaced certificate does not come back when its displacer is deleted).
    """
    nodes = list(cluster.nodes.values())
    policies = cluster.policies
    # Compared: entries, and tombstones where deletions replicate (what digests cover). A deletion a
    # put carried is left out on 10.5: it travels with state transfers but is not in digests, so two
    # nodes holding the same entries may differ in it (test_regression_on_10_5_nodes_may_differ_...)
    views = {
        n.name: sorted(
            (
                replace(r, replaces=None)
                for r in n.view(STORES)
                if r.der is not None or policies[r.store].replicate_delete
            ),
            key=lambda r: (r.store, r.name, r.der is None),
        )
        for n in nodes
    }
    first = next(iter(views.values()))
    for name, view in views.items():
        assert view == first, f"{name} differs after heal: {view} != {first}"
    check_no_resurrection(cluster)
    check_locality(cluster, ops_done)
    keys = {op.rec.key for op in ops_done}
    for key in sorted(keys):
        policy = policies[key[0]]
        for node in nodes:
            puts = [o for o in ops_done if o.kind == "put" and o.rec.key == key]
            puts = [o for o in puts if policy.replicate_add or o.node == node.name]
            deletes = [o for o in ops_done if o.kind == "delete" and o.rec.key == key]
            counted = [
                o.rec.version for o in deletes if policy.tombstone or (not policy.replicate_add and o.node == node.name)
            ]
            local_only = policy.replicate_add and not policy.tombstone  # 10.5: deletions are local
            counted += [
                o.deletes
                for o in puts
                if o.deletes is not None
                # 10.5: once the replacing put is itself deleted (locally), a node that never got it may
                # still hold the replaced copy and bring it back: the documented 10.5 resurrection
                and not (local_only and any(d.rec.version > o.rec.version for d in deletes))
            ]
            floor = max(counted, default=ZERO)
            alive = [o for o in puts if o.rec.version > floor]
            dead = [o for o in puts if o.rec.version <= floor]
            held = node.entries.get(key)
            held_op = None if held is None else next((o for o in alive if o.rec.version == held.version), None)
            assert held is None or (held_op is not None and held_op.rec.der == held.der), (
                f"{node.name} holds {held}, deleted or never uploaded (R-REPL-9)"
            )
            for op in alive:
                if held_op is not None and _rank(op) <= _rank(held_op):
                    continue
                displaced = any(_rank(d) > _rank(op) for d in dead)
                # 10.5: deletions are local (R-REPL-9): one on every holder removes it for good
                local_deleted = local_only and any(d.rec.version > op.rec.version for d in deletes)
                assert displaced or local_deleted, f"R-REPL-8: {node.name} holds {held}, not the acked {op.rec}"


ReplicationMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("CERTSIM_CORE_EXAMPLES", "300")),  # CI: 300 runs; set higher to dig
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_replication_properties = pytest.mark.slow(ReplicationMachine.TestCase)


# --- the checkers fail on broken states ------------------------------------------------------------


def _settled_cluster(release: str = "15") -> tuple[Cluster, list[Op]]:
    """Three nodes after an upload of A (day 3) on n0, a local CAPF-trust upload on n1, and a
    deletion of B on n0: a correct end state the tests below break one way each."""
    cluster = Cluster(release, 3)
    n0, n1, _n2 = cluster.nodes.values()
    history = [Op("put", "n0", r, START_OF[r.der or b""]) for r in n0.upload("tomcat-trust", cert_der("A", 3))]
    history += [Op("put", "n1", r, START_OF[r.der or b""]) for r in n1.upload("CAPF-trust", cert_der("A", 1))]
    history += [Op("put", "n0", r, START_OF[r.der or b""]) for r in n0.upload("tomcat-trust", cert_der("B", 1))]
    settle(cluster)
    deletion = n0.delete("tomcat-trust", "B")
    assert deletion is not None
    history.append(Op("delete", "n0", deletion))
    settle(cluster)
    check_end_state(cluster, history)  # the unbroken state passes
    return cluster, history


def test_check_locality_fails_when_a_local_upload_reaches_another_node() -> None:
    """R-REPL-2: the locality checker refuses a CAPF-trust upload held by a second node."""
    cluster, history = _settled_cluster()
    leaked = cluster.nodes["n1"].entries[("CAPF-trust", "A")]
    cluster.nodes["n2"].entries[leaked.key] = leaked
    with pytest.raises(AssertionError, match="R-REPL-2"):
        check_locality(cluster, history)


def test_check_no_resurrection_fails_on_an_entry_older_than_its_tombstone() -> None:
    """R-REPL-9: the resurrection checker refuses an entry written before a deletion the node knows."""
    cluster, history = _settled_cluster()
    old = next(op.rec for op in history if op.kind == "put" and op.rec.name == "B")
    cluster.nodes["n2"].entries[old.key] = old
    with pytest.raises(AssertionError, match="R-REPL-9"):
        check_no_resurrection(cluster)


def test_check_end_state_fails_when_nodes_differ() -> None:
    cluster, history = _settled_cluster()
    del cluster.nodes["n2"].entries[("tomcat-trust", "A")]
    with pytest.raises(AssertionError, match="differs after heal"):
        check_end_state(cluster, history)


def test_check_end_state_fails_when_an_earlier_start_wins_everywhere() -> None:
    """R-REPL-8: every node holding the earlier-starting of two acked same-name uploads is refused,
    although the nodes agree (the oracle is the history, not the core's ranking)."""
    cluster, history = _settled_cluster()
    earlier = Record("tomcat-trust", "A", Version(cluster.now_ms + 1, 0, "n2"), cert_der("A", 1), "n2")
    history.append(Op("put", "n2", earlier, START_OF[earlier.der or b""]))
    for node in cluster.nodes.values():
        node.entries[earlier.key] = earlier
        node.index[earlier.key] = core.after(None, earlier, Decision(put_entry=True))
    with pytest.raises(AssertionError, match="R-REPL-8"):
        check_end_state(cluster, history)


def test_check_end_state_fails_when_a_deleted_certificate_is_back_everywhere() -> None:
    """R-REPL-9: a deleted certificate held again by every node (tombstones gone too) is refused."""
    cluster, history = _settled_cluster()
    old = next(op.rec for op in history if op.kind == "put" and op.rec.name == "B")
    for node in cluster.nodes.values():
        node.tombs.pop(old.key, None)
        node.entries[old.key] = old
    with pytest.raises(AssertionError, match="R-REPL-9"):
        check_end_state(cluster, history)


def test_check_end_state_fails_when_an_acked_upload_is_lost() -> None:
    """Nothing lost: an acked upload missing from every node with no deletion to explain it is refused."""
    cluster, history = _settled_cluster()
    for node in cluster.nodes.values():
        del node.entries[("tomcat-trust", "A")]
    with pytest.raises(AssertionError, match="R-REPL-8"):
        check_end_state(cluster, history)


def test_write_refuses_to_put_an_earlier_start_over_a_later_one() -> None:
    """R-REPL-8: the simulation's own check on every write fails if a merge lowered the rank."""
    cluster, _history = _settled_cluster()
    earlier = Record("tomcat-trust", "A", Version(cluster.now_ms + 1, 0, "n2"), cert_der("A", 1), "n2")
    with pytest.raises(AssertionError, match="R-REPL-8"):
        cluster.nodes["n0"].write(earlier, Decision(put_entry=True))


# --- situations of issue 10 and shrunk counterexamples ----------------------------------------------


def holds(node: SimNode, name: str = "A", store: str = "tomcat-trust") -> bytes | None:
    rec = node.entries.get((store, name))
    return None if rec is None else rec.der


def supersede(node: SimNode, der: bytes, name: str = "A") -> Record:
    """R-REPL-5: the node's own certificate replaced by its successor (node/agent_certops.py)."""
    (rec,) = node.commit([ops.Put("tomcat-trust", name, der, supersedes=True)])
    return rec


@pytest.mark.parametrize("release", ["15", "10.5"])
def test_repl8_partitioned_subscriber_uploads_an_earlier_same_name_certificate(release: str) -> None:
    """R-REPL-8, situation (a) of issue 10: a partitioned subscriber uploads a same-name certificate
    that starts earlier than the publisher's; after the heal every node holds the later-starting one."""
    cluster = Cluster(release, 3)
    pub, sub, other = cluster.nodes.values()
    sub.partitioned = True
    (later,) = pub.upload("tomcat-trust", cert_der("A", 5))
    (earlier,) = sub.upload("tomcat-trust", cert_der("A", 2))
    assert earlier.version > later.version  # the earlier-starting one was written last
    cluster.deliver_all()
    cluster.heal(sub.name)
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in (pub, sub, other):
        assert holds(node) == cert_der("A", 5), node.name


def test_repl8_on_10_5_a_local_delete_then_earlier_upload_does_not_win() -> None:
    """R-REPL-8, situation (b): on 10.5 a local delete followed by an earlier-starting upload of the
    same name must not push it over the later one; the deleting node gets the later one back (R-REPL-9
    10.5 resurrection), every node ends with the later-starting certificate."""
    cluster = Cluster("10.5", 3)
    a, b, c = cluster.nodes.values()
    assert a.upload("tomcat-trust", cert_der("A", 5))
    cluster.deliver_all()
    assert a.delete("tomcat-trust", "A") is not None
    assert a.upload("tomcat-trust", cert_der("A", 2))  # nothing held here: accepted
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in (a, b, c):
        assert holds(node) == cert_der("A", 5), node.name


def test_regression_a_missed_deletion_is_repaired_before_its_tombstone_expires() -> None:
    """R-REPL-9, shrunk from the stateful test: a deletion lost in transit, then a month of simulated
    time. The resync timers repair it long before the retention ends, so the purge resurrects nothing."""
    cluster = Cluster("15", 3)
    n0, _n1, _n2 = cluster.nodes.values()
    assert n0.upload("tomcat-trust", cert_der("B", 1))
    cluster.deliver_all()
    assert n0.delete("tomcat-trust", "B") is not None
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
    assert a.upload("tomcat-trust", cert_der("A", 5))
    cluster.deliver_all()
    b.partitioned = True
    supersede(a, cert_der("A", 3, "ca-signed"))
    assert b.upload("tomcat-trust", cert_der("A", 9, "admin"))
    cluster.deliver_all()
    cluster.heal(b.name)
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert holds(node) == cert_der("A", 9, "admin"), node.name


def test_repl8_on_10_5_a_local_delete_of_a_superseding_put_then_a_later_upload_wins() -> None:
    """R-REPL-8 on 10.5 (review of issue 10, epoch105): n1 deletes n0's superseding (day 3) copy
    locally, then uploads a day-9 certificate of the name: every node ends with the day-9 one."""
    cluster = Cluster("10.5", 3)
    a, b, _c = cluster.nodes.values()
    assert a.upload("tomcat-trust", cert_der("A", 5))
    cluster.deliver_all()
    supersede(a, cert_der("A", 3, "ca-signed"))
    cluster.deliver_all()
    assert all(holds(n) == cert_der("A", 3, "ca-signed") for n in cluster.nodes.values())
    assert b.delete("tomcat-trust", "A") is not None  # 10.5: local only
    assert b.upload("tomcat-trust", cert_der("A", 9, "admin"))
    cluster.deliver_all()
    cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert holds(node) == cert_der("A", 9, "admin"), node.name


@pytest.mark.parametrize("release", ["15", "10.5"])
def test_a_superseded_copy_never_comes_back_by_state_transfer(release: str) -> None:
    """R-REPL-5 with R-REPL-9: a node that missed the superseding put and still holds the old
    (later-starting) copy takes the new one by anti-entropy, and the old copy does not return."""
    cluster = Cluster(release, 3)
    a, b, _c = cluster.nodes.values()
    assert a.upload("tomcat-trust", cert_der("A", 5))
    cluster.deliver_all()
    supersede(a, cert_der("A", 3, "ca-signed"))
    cluster.in_flight = [(n, m) for n, m in cluster.in_flight if n != b.name]  # lost on its way to b
    cluster.deliver_all()
    for _ in range(2):
        cluster.anti_entropy()
    for node in cluster.nodes.values():
        assert holds(node) == cert_der("A", 3, "ca-signed"), node.name


def test_regression_on_10_5_nodes_may_differ_in_carried_deletions_only() -> None:
    """R-REPL-8 on 10.5, shrunk from the stateful test: n1 supersedes its B (the message to n0 is
    lost), n0 deletes B locally and uploads it again, newer: both hold n0's copy; only n1 knows the
    deletion its superseding put carried (10.5 keeps no administrator's tombstones to compare)."""
    cluster = Cluster("10.5", 2)
    n0, n1 = cluster.nodes.values()
    history = [Op("put", "n1", r, START_OF[r.der or b""]) for r in n1.upload("tomcat-trust", cert_der("B", 1))]
    cluster.deliver_all()
    old = n1.entries[("tomcat-trust", "B")]
    successor = supersede(n1, cert_der("B", 1, "ca-signed"), name="B")
    history.append(Op("put", "n1", successor, START_OF[successor.der or b""], deletes=old.version))
    cluster.in_flight.clear()  # lost on its way to n0
    deletion = n0.delete("tomcat-trust", "B")
    assert deletion is not None
    history.append(Op("delete", "n0", deletion))
    history += [Op("put", "n0", r, START_OF[r.der or b""]) for r in n0.upload("tomcat-trust", cert_der("B", 1))]
    settle(cluster)
    # the same entry; n1's keeps the deletion its displaced successor carried (core.keep_floor)
    assert n0.entries[("tomcat-trust", "B")] == replace(n1.entries[("tomcat-trust", "B")], replaces=None)
    assert n1.entries[("tomcat-trust", "B")].replaces == old.version
    assert n0.entries[("tomcat-trust", "B")].origin == "n0"
    assert ("tomcat-trust", "B") in n1.tombs and ("tomcat-trust", "B") not in n0.tombs
    check_end_state(cluster, history)


def test_regression_a_local_deletion_before_a_crash_is_not_overtaken_by_a_reused_version() -> None:
    """R-REPL-7, shrunk from the stateful test: an ipsec-trust upload, its (local, tombstone-less)
    deletion, a crash, the same upload again. The new put must get a version above the deletion's:
    the clock's last version is saved with every write (node/agent.py keeps it in the meta table)."""
    cluster = Cluster("15", 2)
    n0 = cluster.nodes["n0"]
    (first,) = n0.upload("ipsec-trust", cert_der("A", 1))
    deletion = n0.delete("ipsec-trust", "A")
    assert deletion is not None and ("ipsec-trust", "A") not in n0.tombs
    n0.restart()
    (again,) = n0.upload("ipsec-trust", cert_der("A", 1))
    assert again.version > deletion.version > first.version
    history = [Op("put", "n0", first, START_OF[first.der or b""]), Op("delete", "n0", deletion)]
    history.append(Op("put", "n0", again, START_OF[again.der or b""]))
    settle(cluster)
    check_end_state(cluster, history)


def test_regression_on_10_5_a_carried_deletion_reaches_a_node_after_its_put_is_gone() -> None:
    """R-REPL-8/R-REPL-9 on 10.5, shrunk from the stateful test: n0 holds n1's A (day 1), uploads a
    day-2 one while n1 is cut off, supersedes it by a day-1 CA-signed one (deleting everything of A up
    to its day-2 copy), then deletes that locally. n1 still holds its day-1 copy, which n0's carried
    deletion covers: the deletion reaches n1 by state transfer, and both nodes end without A."""
    cluster = Cluster("10.5", 2)
    n0, n1 = cluster.nodes.values()
    history = [Op("put", "n1", r, START_OF[r.der or b""]) for r in n1.upload("tomcat-trust", cert_der("A", 1))]
    cluster.deliver_all()
    n1.partitioned = True
    history += [Op("put", "n0", r, START_OF[r.der or b""]) for r in n0.upload("tomcat-trust", cert_der("A", 2))]
    own = n0.entries[("tomcat-trust", "A")]
    successor = supersede(n0, cert_der("A", 1, "ca-signed"))
    history.append(Op("put", "n0", successor, START_OF[successor.der or b""], deletes=own.version))
    cluster.heal(n1.name)
    deletion = n0.delete("tomcat-trust", "A")
    assert deletion is not None
    history.append(Op("delete", "n0", deletion))
    settle(cluster)
    assert holds(n0) is None and holds(n1) is None
    check_end_state(cluster, history)


def replaced_past_retention(cluster: Cluster, first_day: int, successor_day: int) -> tuple[list[Op], Record, Record]:
    """The setting of the regressions below: n0 uploads A (``first_day``), every node gets it, time passes
    the tombstone retention, and n0 replaces it by a CA-signed one (``successor_day``) whose change is lost.
    Returns the history, the replaced copy and its successor."""
    n0 = cluster.nodes["n0"]
    history = [Op("put", "n0", r, START_OF[r.der or b""]) for r in n0.upload("tomcat-trust", cert_der("A", first_day))]
    cluster.deliver_all()
    cluster.now_ms += cluster.retention_ms + DAY_MS
    replaced = n0.entries[("tomcat-trust", "A")]
    successor = supersede(n0, cert_der("A", successor_day, "ca-signed"))
    history.append(Op("put", "n0", successor, START_OF[successor.der or b""], deletes=replaced.version))
    cluster.in_flight.clear()  # lost on its way to every other node
    return history, replaced, successor


def test_regression_a_superseded_copy_older_than_the_retention_does_not_come_back() -> None:
    """R-REPL-5 with R-REPL-9, shrunk from the stateful test: n0's tomcat (day 2) is older than the
    tombstone retention when n0 supersedes it by a CA-signed day-1 one; the change to n1 is lost. The
    deletion the put carries is too old to keep as a tombstone, but it lasts as long as the entry
    carrying it, so n1's state (the day-2 copy, later start) does not push it back on n0."""
    cluster = Cluster("15", 2)
    n0, n1 = cluster.nodes.values()
    history, _own, _successor = replaced_past_retention(cluster, 2, 1)
    n1.send_records(n0.name, [("tomcat-trust", "A")], [])  # n1 offers its (old) copy first
    settle(cluster)
    assert holds(n0) == holds(n1) == cert_der("A", 1, "ca-signed")
    check_end_state(cluster, history)


def test_regression_on_10_5_a_displacing_put_keeps_the_deletion_the_displaced_entry_carried() -> None:
    """R-REPL-8 with R-REPL-9 and R-REPL-5, found by a second reader (10.5): n0 supersedes its day-5
    certificate X (older than the retention) by a day-3 one, P; the change is lost. n1 deletes X
    locally (10.5: no tombstone) and uploads a day-4 one, Q, which displaces P on n0 by its later
    start. The deletion of X that P carried must outlive P there, or n2's X (day 5, the latest start)
    comes back on every node through anti-entropy."""
    cluster = Cluster("10.5", 3)
    n0, n1, _n2 = cluster.nodes.values()
    history, x, _p = replaced_past_retention(cluster, 5, 3)
    history.append(Op("delete", "n1", n1.delete("tomcat-trust", "A")))
    history += [Op("put", "n1", r, START_OF[r.der or b""]) for r in n1.upload("tomcat-trust", cert_der("A", 4))]
    cluster.deliver_all()
    assert n0.index[("tomcat-trust", "A")].floor == x.version  # Q holds there, and still carries X's deletion
    settle(cluster)
    assert all(holds(node) == cert_der("A", 4) for node in cluster.nodes.values())
    check_end_state(cluster, history)


def test_regression_on_10_5_a_replaced_copy_may_come_back_once_its_replacement_is_deleted() -> None:
    """R-REPL-9 on 10.5 (deletions are local), shrunk from the stateful test: n0 replaces its X (older
    than the retention) by P; the change to n1 is lost; n0 deletes P locally. n1 still holds X, its
    only live copy, and anti-entropy brings it back to n0: the 10.5 resurrection the product shows
    (scenarios/release-10.5-resurrection.yaml); nodes agree."""
    cluster = Cluster("10.5", 2)
    n0, n1 = cluster.nodes.values()
    history, x, _p = replaced_past_retention(cluster, 1, 1)
    history.append(Op("delete", "n0", n0.delete("tomcat-trust", "A")))
    settle(cluster)
    assert holds(n0) == holds(n1) == x.der
    check_end_state(cluster, history)
