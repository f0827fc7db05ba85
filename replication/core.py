"""The replication core: every decision the replication daemon makes, sans I/O.

The node agent (``node/agent.py``) only wires this to aiomqtt and aiosqlite: it feeds in
local operations, incoming envelopes and timer ticks, and carries out what comes back
(writes to make, messages to send). The property tests (``tests/replication/test_core.py``)
drive these same functions with random operations, drops, duplicates, reorders, partitions,
crashes and clock jumps. Newcomers' two questions are answered here:

* What happens when a message arrives twice? ``Screen.check``: MQTT QoS 1 may deliver a
  message more than once by design, so a repeated id is counted as a duplicate (logged at
  debug) and changes nothing; merging is idempotent anyway (``decide``). Envelopes older than
  the tombstone retention are stale (only their deletions are kept); forged or altered ones
  never get here (``replication.envelope`` refuses them).
* Which stores replicate deletes? ``node.catalog.store_policy`` (the data), as read by
  ``admissible`` here: a record arrives from the bus only if its store's policy replicates it.

Merge rule (R-REPL-8 with R-REPL-9): per (store, name) a node keeps the newest tombstone and
at most one entry. Between two certificates of one name, the higher ``rank`` wins: the validity
start first (a later start wins, R-REPL-8), then the version. An entry lives only while its
version is newer than the tombstone (a deletion removes every copy written before it, R-REPL-9).
A put may carry the latest deletion of its name its writer knows (``Record.replaces``): a node
replacing its *own* certificate (a back-dated CA-signed tomcat, R-REPL-5) deletes its previous
copy that way, in the same record, so the new one need not start later; the deletion is kept as
a tombstone (on 10.5 too, where it is not an administrator's deletion and so is not in digests,
but travels with every state transfer of the entry). The rank is a total order and tombstones
only grow, so every node that has received the same records holds the same state; the order of
arrival can matter on the way (a put dominated by a later-starting one is not kept, so a
deletion of the later one does not bring it back), and anti-entropy repairs the rest.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol, TypeVar

from replication.hlc import Version
from replication.records import Record, digests_of


class Rank(NamedTuple):
    """The order between two certificates of one name (R-REPL-8): higher wins."""

    start_ms: int
    version: Version


def rank_of(rec: Record) -> Rank:
    return Rank(rec.start_ms, rec.version)


def tombstone_of(rec: Record) -> Record:
    """The deletion a record makes: itself for a tombstone, its ``replaces`` for a put."""
    if rec.der is None:
        return rec
    assert rec.replaces is not None
    return Record(rec.store, rec.name, rec.replaces, None, rec.replaces.node)


@dataclass
class Slot:
    """What a node holds for one (store, name), kept in memory so merges need no database reads."""

    entry: Version | None = None
    entry_sha: str | None = None
    tombstone: Version | None = None
    entry_rank: Rank | None = None
    entry_replaces: Version | None = None  # the deletion the held entry carries: it lasts as long as the entry

    def hold(self, rec: Record) -> None:
        """The slot now holds ``rec`` (a put) as its entry."""
        self.entry, self.entry_sha, self.entry_rank, self.entry_replaces = (
            rec.version,
            rec.sha256,
            rank_of(rec),
            rec.replaces,
        )

    def drop(self) -> None:
        """The slot's entry is gone."""
        self.entry, self.entry_sha, self.entry_rank, self.entry_replaces = None, None, None, None

    @property
    def floor(self) -> Version | None:
        """The latest deletion this node knows of the name: its tombstone, or the one its entry carries
        (which outlives the tombstone's retention: a superseded copy older than the retention must
        not come back from a node that missed the superseding put, R-REPL-5)."""
        known = [v for v in (self.tombstone, self.entry_replaces) if v is not None]
        return max(known) if known else None


@dataclass(frozen=True)
class Decision:
    """What merging one record into a slot does: write the entry, keep the tombstone, drop the entry."""

    put_entry: bool = False
    put_tombstone: bool = False
    delete_entry: bool = False

    @property
    def changes(self) -> bool:
        return self.put_entry or self.put_tombstone or self.delete_entry


NOTHING = Decision()
PUT_ENTRY = Decision(put_entry=True)


def entry_survives(entry: Version, tombstone: Version) -> bool:
    """An entry outlives a tombstone only if it was written after the deletion (R-REPL-9)."""
    return entry > tombstone


def decide(slot: Slot | None, rec: Record, cutoff_ms: int) -> Decision:
    """Merge one record (from a peer, a state transfer or a rejoin) into what a node holds.

    ``cutoff_ms``: tombstones older than this are past the retention; such a deletion still
    removes what it covers but is not kept (peers may have forgotten it already).
    """
    slot = slot or Slot()
    if rec.der is None:
        kills = slot.entry is not None and not entry_survives(slot.entry, rec.version)
        if rec.version.ms < cutoff_ms:
            return Decision(delete_entry=True) if kills else NOTHING
        if slot.tombstone is not None and rec.version <= slot.tombstone:
            return NOTHING
        return Decision(put_tombstone=True, delete_entry=kills)
    if rec.replaces is not None:  # the deletion it carries first, then the put itself
        deletion = decide(slot, tombstone_of(rec), cutoff_ms)
        then = decide(after(slot, tombstone_of(rec), deletion), replace(rec, replaces=None), cutoff_ms)
        return Decision(
            put_entry=then.put_entry, put_tombstone=deletion.put_tombstone, delete_entry=deletion.delete_entry
        )
    floor = slot.floor
    if floor is not None and not entry_survives(rec.version, floor):
        return NOTHING  # written before the deletion: never back (R-REPL-9)
    if slot.entry is not None and slot.entry_rank is not None and rank_of(rec) <= slot.entry_rank:
        return NOTHING  # the held certificate starts later, or is the same or newer (R-REPL-8)
    return PUT_ENTRY


def after(slot: Slot | None, rec: Record, decision: Decision) -> Slot:
    """The slot once ``decision`` is carried out (what the store's index holds after the writes)."""
    new = Slot() if slot is None else replace(slot)
    if decision.put_tombstone:
        new.tombstone = tombstone_of(rec).version
    if decision.delete_entry:
        new.drop()
    if decision.put_entry:
        new.hold(rec)
    return new


def plan_merge(
    index: Mapping[tuple[str, str], Slot], records: Iterable[Record], cutoff_ms: int
) -> list[tuple[Record, Decision]]:
    """The writes that merging a batch of records makes (in order; several may touch one name)."""
    overlay: dict[tuple[str, str], Slot] = {}
    plan: list[tuple[Record, Decision]] = []
    records = list(records)
    last = len(records) - 1
    for i, incoming in enumerate(records):
        slot = overlay.get(incoming.key) or index.get(incoming.key)
        decision = decide(slot, incoming, cutoff_ms)
        rec = keep_floor(slot, incoming) if decision.put_entry else incoming
        if decision.changes:
            plan.append((rec, decision))
            if i < last:  # (what a later record of the batch meets; a change message has one)
                overlay[rec.key] = after(slot, rec, decision)
    return plan


def versions_kept(
    index: Mapping[tuple[str, str], Slot], records: Iterable[Record], plan: Iterable[tuple[Record, Decision]]
) -> bool:
    """Whether a node's store, after carrying out ``plan`` on ``index``, still holds every version
    the node has seen in doing so: each record's version is stored (as an entry or a tombstone),
    and no entry it displaces is newer than what it stores (R-REPL-8 may replace a newer version
    by an older one that starts later; a deletion past the retention removes without a tombstone).
    Then a node restarting reads them back from its store, and its clock, which must stay ahead of
    every version it has seen, needs no separate note of them. (Tombstones and entries a node
    forgets otherwise, past the retention, are older than its own clock's time by then.)"""
    plan = list(plan)
    kept = {rec.version for rec, d in plan if d.put_entry} | {
        tombstone_of(rec).version for rec, d in plan if d.put_tombstone
    }
    if not kept or not all(rec.version in kept for rec in records):
        return False
    top = max(kept)
    for rec, d in plan:
        slot = index.get(rec.key)
        if slot is not None and slot.entry is not None and (d.put_entry or d.delete_entry) and slot.entry > top:
            return False
    return True


def keep_floor(slot: Slot | None, rec: Record) -> Record:
    """A put that displaces a held entry by rank (R-REPL-8) keeps the deletion that entry carried:
    a node's knowledge of deletions only grows, so a copy that deletion removed (a node's replaced
    certificate, past the tombstone retention) cannot come back through it (R-REPL-9). The put is
    newer than that deletion (``decide`` checked it against ``Slot.floor``), so ``replaces`` stays
    older than the put. The record is written and sent so: it survives restarts and state transfers."""
    if slot is None or slot.entry is None or slot.entry_replaces is None:
        return rec
    if rec.replaces is not None and rec.replaces >= slot.entry_replaces:
        return rec
    return replace(rec, replaces=slot.entry_replaces)


def expired_tombstones(index: Mapping[tuple[str, str], Slot], cutoff_ms: int) -> list[tuple[str, str]]:
    """Tombstones past the retention, to forget (on the resync timer and at start): every node
    forgets them at the same simulated time, so digests agree again without them."""
    return [key for key, slot in index.items() if slot.tombstone is not None and slot.tombstone.ms < cutoff_ms]


def earliest_tombstone_ms(index: Mapping[tuple[str, str], Slot]) -> int | float:
    """The simulated ms of the oldest tombstone held (infinity when none): nothing expires before it."""
    return min((slot.tombstone.ms for slot in index.values() if slot.tombstone is not None), default=float("inf"))


def local_floor(slot: Slot | None, *, supersedes: bool) -> Version | None:
    """The deletion a local put carries (``Record.replaces``): the latest one of its name this node
    knows and, when the node replaces its own certificate (``supersedes``), its previous copy."""
    floor = None if slot is None else slot.floor
    if supersedes and slot is not None and slot.entry is not None and (floor is None or slot.entry > floor):
        floor = slot.entry
    return floor


def local_put(slot: Slot | None, rec: Record, *, supersedes: bool, cutoff_ms: int) -> tuple[Record, Decision]:
    """A put made on this node (an upload the operation's planner allowed, an installation, a
    superseding CA-signed identity): the record to write and send, with the deletion it carries
    (``local_floor``), and the writes it makes. It is always written on its own node (the direct
    path's same-name check, R-REPL-8, ran before); with ``supersedes`` it deletes the old copy."""
    rec = replace(rec, replaces=local_floor(slot, supersedes=supersedes))
    deletion = decide(slot, rec, cutoff_ms)
    held = slot is not None and slot.entry is not None
    return rec, Decision(put_entry=True, put_tombstone=deletion.put_tombstone, delete_entry=held)


def local_delete(policy: TombstonePolicy, rec: Record) -> tuple[bool, bool]:
    """A deletion made on this node (``rec`` the tombstone): (keep the tombstone, send it). Where
    deletions are local (R-REPL-7, and every store on 10.5, R-REPL-9) nothing is kept or sent."""
    return policy.tombstone, policy.tombstone and policy.replicate_delete


def with_floor(rec: Record, slot: Slot | None) -> Record:
    """A held entry as sent in a state transfer: with the latest deletion of its name this node holds
    (on 10.5 tombstones are not sent on their own, so a superseded copy could otherwise come back)."""
    floor = None if slot is None else slot.floor
    if rec.der is None or floor is None:
        return rec
    if rec.replaces is not None and rec.replaces >= floor:
        return rec
    return replace(rec, replaces=floor) if floor < rec.version else rec


# --- long absences -----------------------------------------------------------------------------


def away_too_long(now_ms: int, last_contact_ms: int, retention_ms: int) -> bool:
    """A node away longer than the tombstone retention may hold entries whose deletion it can no
    longer learn (peers forgot the tombstones): it must take a peer's state, not spread its own."""
    return now_ms - last_contact_ms > retention_ms


def stale_on_rejoin(
    index: Mapping[tuple[str, str], Slot], stores: Iterable[str], offered: Iterable[tuple[str, str]], before_ms: int
) -> list[tuple[tuple[str, str], bool, bool]]:
    """Rejoining after a long absence, given a peer's state of ``stores``: what this node learned
    before it went away (``before_ms``) and the peer does not hold is dropped; what it wrote since
    is kept (acknowledged changes are never lost). Returns (key, drop the entry, drop the tombstone)."""
    wanted, known = set(stores), set(offered)
    drops = []
    for key, slot in index.items():
        if key[0] not in wanted or key in known:
            continue
        entry = slot.entry is not None and slot.entry.ms <= before_ms
        tombstone = slot.tombstone is not None and slot.tombstone.ms <= before_ms
        if entry or tombstone:
            drops.append((key, entry, tombstone))
    return drops


# --- locality -------------------------------------------------------------------------------


class Policy(Protocol):
    """What replication does with one store (``node.catalog.StorePolicy`` is the data)."""

    @property
    def replicate_add(self) -> bool: ...

    @property
    def replicate_delete(self) -> bool: ...


class TombstonePolicy(Policy, Protocol):
    @property
    def tombstone(self) -> bool: ...


def admissible(rec: Record, stores: Iterable[str], policies: Mapping[str, Policy]) -> str | None:
    """Why a record from the bus must be ignored, or None. Locality (R-REPL-2, R-REPL-7): only
    what the store's policy replicates may arrive; a store this node lacks is skipped silently."""
    if rec.store not in stores:
        return ""
    if rec.replaces is not None and (rec.der is None or rec.replaces >= rec.version):
        return "bad-replaces"  # a deletion carried by a put is older than the put (never from the wire unchecked)
    if not replicated(rec.store, tombstone=rec.der is None, policies=policies):
        return "locality"
    return None


def replicated(rec_store: str, *, tombstone: bool, policies: Mapping[str, Policy]) -> bool:
    """Whether a held entry (or tombstone) travels between nodes (in changes and state transfers).

    A tombstone travels where deletions replicate, and also where only adds do (10.5): there an
    administrator's deletion leaves no tombstone (it is local, R-REPL-9), so the only ones a node
    holds are deletions that puts carried (a node superseding its own certificate); they must
    reach a node that holds an older copy even after the put carrying them is gone again."""
    policy = policies[rec_store]
    return policy.replicate_delete or policy.replicate_add if tombstone else policy.replicate_add


def digests(
    index: Mapping[tuple[str, str], Slot], stores: Iterable[str], policies: Mapping[str, Policy]
) -> dict[str, str]:
    """Per replicated store, a digest of the replicated view (equal digests, equal stores)."""
    mine = {s: "" for s in stores if policies[s].replicate_add or policies[s].replicate_delete}
    items: list[tuple[str, str, Version, str | None]] = []
    for (store, name), slot in index.items():
        if store not in mine:
            continue
        if slot.entry is not None and policies[store].replicate_add:
            items.append((store, name, slot.entry, slot.entry_sha))
        if slot.tombstone is not None and policies[store].replicate_delete:
            items.append((store, name, slot.tombstone, None))
    mine.update(digests_of(items))
    return mine


# --- anti-entropy -----------------------------------------------------------------------------
#
# O(N) by construction (issue 10): every node broadcasts one digest (per-store hashes) on
# (re)connect, heal and its resync timer, but a differing digest is answered by one peer only,
# the sender's *partner*: the first online node by name other than the sender (the hub, which in
# turn has the second node as its partner). Partners then exchange what differs entry by entry:
#
#   A --digest (broadcast)--> everyone; only partner(A) = H (or A's own partner) acts:
#   H --summary------------> A   per differing store: name -> tags of what H holds
#   A --state + want-------> H   the records H lacks or holds older, and the names A lacks
#   H --state--------------> A   the wanted records (never answered: no ping-pong)
#
# so two nodes that differ by one entry move that entry, not their stores. Both end with the
# merge of both sides (``decide`` is a join). The hub re-broadcasts its digest once after a
# reconciliation changed it, so what it learned from one node reaches those it reconciled before.
# A rejoining node (away longer than the retention) takes its partner's whole view of the
# differing stores instead (``_adopt_state`` drops what it must no longer hold), and answers none.

MAX_STATE_HOPS = 2  # a rejoining peer's state is marked with it: never answered


def next_resync_ms(now_ms: int, interval_ms: int, origin_ms: int) -> int:
    """When a node's next periodic digest round is due (R-REPL-6): the next moment after ``now_ms``
    that is a whole number of intervals past the lab clock's origin, whenever the node started. Every
    node of a lab then resyncs at the same simulated moments, so a clock jump wakes them all in one
    step; counted from each node's own start, the rounds of nodes started over more than
    ``node.clock.STEP_GRANULARITY`` fell into separate steps (a simulated year took twice the steps
    after a slow lab start)."""
    if interval_ms <= 0:
        raise ValueError("the resync interval must be positive")
    return origin_ms + ((now_ms - origin_ms) // interval_ms + 1) * interval_ms


def differing(mine: Mapping[str, str], theirs: Mapping[str, str], among: Iterable[str] | None = None) -> list[str]:
    """Stores both nodes replicate whose digests differ."""
    stores = mine if among is None else [s for s in among if s in mine]
    return [s for s in stores if s in theirs and mine[s] != theirs[s]]


def partner(node: str, online: Iterable[str]) -> str | None:
    """The one peer that answers ``node``'s digests: the first online node by name other than itself."""
    return min((n for n in online if n != node), default=None)


class DigestAnswer(NamedTuple):
    """What to send the sender of a digest: ``"summary"`` (start an entry-level exchange) or
    ``"state"`` (a rejoining peer: our whole view of ``stores``, possibly none, so it knows it is in sync)."""

    kind: str
    stores: list[str]


def answer_digest(
    mine: Mapping[str, str],
    theirs: Mapping[str, str],
    *,
    me: str,
    sender: str,
    online: Iterable[str],
    rejoining: bool,
    peer_rejoining: bool,
) -> DigestAnswer | None:
    """Whether (and how) this node answers a peer's digest: only partners answer (one reply per
    digest, not N-1), a rejoining node answers nothing (it takes state), a rejoining peer gets our
    view from its partner alone."""
    if rejoining:
        return None
    online = set(online) | {me, sender}
    stores = differing(mine, theirs)
    if peer_rejoining:
        return DigestAnswer("state", stores) if partner(sender, online) == me else None
    if stores and (partner(sender, online) == me or partner(me, online) == sender):
        return DigestAnswer("summary", stores)
    return None


def partners(me: str, sender: str, online: Iterable[str]) -> bool:
    """Whether ``me`` and ``sender`` reconcile with each other (either is the other's partner)."""
    online = set(online) | {me, sender}
    return partner(sender, online) == me or partner(me, online) == sender


Summary = dict[str, dict[str, list[str]]]


def slot_tags(store: str, slot: Slot, policies: Mapping[str, Policy]) -> list[str]:
    """What a node holds for one (store, name), as compared between partners: the version (and
    certificate hash) of its entry and the version of its tombstone, where the store replicates them."""
    tags = []
    if slot.entry is not None and policies[store].replicate_add:
        tags.append(f"E{slot.entry}:{slot.entry_sha}")
    if slot.tombstone is not None and replicated(store, tombstone=True, policies=policies):
        tags.append(f"T{slot.tombstone}")  # (on 10.5: deletions puts carried, see ``replicated``)
    return tags


def summary(index: Mapping[tuple[str, str], Slot], stores: Iterable[str], policies: Mapping[str, Policy]) -> Summary:
    """Per store in ``stores``, per name, the tags of what this node holds (a few dozen bytes an entry)."""
    wanted = set(stores)
    out: Summary = {s: {} for s in wanted}
    for (store, name), slot in index.items():
        if store in wanted:
            tags = slot_tags(store, slot, policies)
            if tags:
                out[store][name] = tags
    return out


def reconcile(
    index: Mapping[tuple[str, str], Slot],
    theirs: Mapping[str, Mapping[str, Iterable[str]]],
    policies: Mapping[str, Policy],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Compare a partner's summary with what we hold: (keys whose records to send it, keys to ask it
    for). Only names whose tags differ are listed; the merge on each side decides what wins."""
    send: list[tuple[str, str]] = []
    want: list[tuple[str, str]] = []
    held_by_store: dict[str, dict[str, set[str]]] = {s: {} for s in theirs if s in policies}
    for (store, name), slot in index.items():
        if store in held_by_store:
            held_by_store[store][name] = set(slot_tags(store, slot, policies))
    for store, mine in held_by_store.items():
        theirs_store = {name: set(tags) for name, tags in theirs[store].items()}
        for name in sorted(mine.keys() | theirs_store.keys()):
            held, other = mine.get(name, set()), theirs_store.get(name, set())
            if held - other:
                send.append((store, name))
            if other - held:
                want.append((store, name))
    return send, want


# --- screening ------------------------------------------------------------------------------

SEEN_MEMORY = 20_000  # envelope ids remembered to recognise a second delivery
DUPLICATES_TOLERATED = 3  # copies of one id beyond the first that QoS 1 redelivery (plus a flaky link) explains


R = TypeVar("R")


def keep_from_stale(records: Iterable[R], is_deletion: Callable[[R], bool]) -> list[R]:
    """What an envelope screened "stale" may still apply: its deletions only. An upload in it could
    bring back a certificate whose deletion peers have already forgotten; a deletion only removes
    older versions, and a clock jump can make a message sent just before it look this old."""
    return [r for r in records if is_deletion(r)]


def repeat_verdict(copies_before: int) -> str:
    """A message id seen ``copies_before`` times already arrives again: "duplicate" while QoS 1
    redelivery explains it (normal: counted, logged at debug), "replay" beyond (refused, warning)."""
    return "duplicate" if copies_before <= DUPLICATES_TOLERATED else "replay"


class Screen:
    """Duplicate, replay and freshness screening of incoming replication envelopes (control requests
    have their own, persisted, screening).

    ``check`` answers:
    - "fresh": first delivery, apply it;
    - "duplicate": MQTT QoS 1 may deliver a message again (redelivery after a reconnect, a flaky
      link): normal, counted, logged at debug, changes nothing;
    - "replay": the same id again and again, more than redelivery explains: someone resends a
      captured envelope; refused and logged (it would change nothing either: merging is idempotent);
    - "stale": sent longer ago than the tombstone retention: only its deletions may be applied (an
      upload in it could bring back a certificate whose deletion peers have forgotten).
    """

    def __init__(self, retention_ms: int, memory: int = SEEN_MEMORY) -> None:
        self.retention_ms = retention_ms
        self.memory = memory
        self._seen: collections.OrderedDict[str, int] = collections.OrderedDict()

    def check(self, msg_id: str, sent_ms: int, now_ms: int) -> str:
        copies = self._seen.get(msg_id)
        if copies is not None:
            self._seen[msg_id] = copies + 1
            return repeat_verdict(copies)
        self._seen[msg_id] = 1
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        if sent_ms < now_ms - self.retention_ms:
            return "stale"
        return "fresh"


# --- control requests -------------------------------------------------------------------------

CONTROL_WINDOW_MS = 86_400_000  # simulated ms a control request stays valid (clients resend every second)
CONTROL_KEEP_MS = 2 * CONTROL_WINDOW_MS  # a node remembers handled request ids longer than any valid resend


def control_copy(copies_after_answer: int) -> str:
    """A control request whose id this node answered arrives again (``copies_after_answer`` copies
    since the answer, this one included): the client's resend or a QoS 1 duplicate gets the same
    answer again ("duplicate"); beyond what redelivery explains it is a "replay": refused, logged.
    (Copies while the request still runs are the client's resends, always duplicates.)"""
    return repeat_verdict(copies_after_answer)


def control_fresh(sent_ms: int, now_ms: int, window_ms: int = CONTROL_WINDOW_MS) -> bool:
    """Whether a control request was sent within the window around this node's clock. Together
    with the ids a node keeps for ``CONTROL_KEEP_MS`` (in its database), a captured request can
    never run twice: replayed within the window its id is known, later it is stale."""
    return now_ms - window_ms <= sent_ms <= now_ms + window_ms
