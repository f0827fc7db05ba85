"""replication.records: last-writer-wins with tombstones converges, never resurrects (R-REPL-6, R-REPL-9)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.hlc import Version
from replication.records import Record, entry_survives, put_wins, store_digests, tombstone_wins

V1 = Version(100, 0, "a")
V2 = Version(100, 1, "a")
V3 = Version(200, 0, "b")


def put(
    version: Version, der: bytes = b"\x30\x03abc", store: str = "tomcat-trust", name: str = "Lab_Root_CA"
) -> Record:
    return Record(store=store, name=name, version=version, der=der, origin=version.node)


def tomb(version: Version, store: str = "tomcat-trust", name: str = "Lab_Root_CA") -> Record:
    return Record(store=store, name=name, version=version, der=None, origin=version.node)


# --- the three rules -------------------------------------------------------------------------


def test_put_wins() -> None:
    assert put_wins(V1, None, None)
    assert put_wins(V2, V1, None)
    assert not put_wins(V1, V2, None)
    assert not put_wins(V1, V1, None)  # the same record again changes nothing
    assert put_wins(V3, V1, V2)
    assert not put_wins(V2, None, V3)
    assert not put_wins(V2, None, V2)


def test_repl9_put_older_than_a_tombstone_loses() -> None:
    """R-REPL-9: a copy made before the deletion cannot bring the certificate back."""
    assert not put_wins(V1, None, V2)
    assert not put_wins(V2, V1, V3)


def test_tombstone_wins() -> None:
    assert tombstone_wins(V1, None)
    assert tombstone_wins(V2, V1)
    assert not tombstone_wins(V1, V2)
    assert not tombstone_wins(V1, V1)


def test_entry_survives_only_a_newer_upload() -> None:
    """R-REPL-9: only a re-upload made after the deletion outlives the tombstone."""
    assert entry_survives(V3, V2)
    assert not entry_survives(V2, V2)
    assert not entry_survives(V1, V2)


# --- Record ----------------------------------------------------------------------------------


def test_record_properties() -> None:
    r = put(V1)
    assert r.is_tombstone is False
    assert r.key == ("tomcat-trust", "Lab_Root_CA")
    assert tomb(V1).is_tombstone is True


@pytest.mark.parametrize("record", [put(V3, der=bytes(range(256))), tomb(V2)], ids=["put", "tombstone"])
def test_record_json_round_trip(record: Record) -> None:
    raw = json.loads(json.dumps(record.to_json()))
    assert Record.from_json(raw) == record


def test_record_json_shape() -> None:
    assert put(V1, der=b"\x01\x02").to_json() == {
        "s": "tomcat-trust",
        "n": "Lab_Root_CA",
        "v": [100, 0, "a"],
        "d": base64.b64encode(b"\x01\x02").decode(),
        "o": "a",
    }
    assert tomb(V1).to_json()["d"] is None


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        ({"s": None}, "lacks store, name or origin"),
        ({"n": 5}, "lacks store, name or origin"),
        ({"o": None}, "lacks store, name or origin"),
        ({"d": 123}, "not base64 text"),
        ({"d": "!!not base64!!"}, "(?i)base64"),
        ({"v": [1, 2]}, "not a version"),
        ({"v": None}, "not a version"),
    ],
)
def test_record_from_json_rejects_bad_records(mutate: dict[str, object], pattern: str) -> None:
    """A malformed record raises ValueError or TypeError, both of which the agent counts as 'bad-body'."""
    raw = {**put(V1).to_json(), **mutate}
    with pytest.raises((ValueError, TypeError), match=pattern):
        Record.from_json(raw)


# --- store digests ---------------------------------------------------------------------------


def test_store_digests_ignore_order_and_split_by_store() -> None:
    records = [put(V1, name="a"), tomb(V2, name="b"), put(V3, store="CallManager-trust", name="a")]
    digests = store_digests(records)
    assert set(digests) == {"tomcat-trust", "CallManager-trust"}
    assert store_digests(list(reversed(records))) == digests
    assert all(len(d) == 32 for d in digests.values())


@pytest.mark.parametrize(
    "changed",
    [
        put(V1, name="a", der=b"\x30\x03xyz"),  # other certificate
        put(V2, name="a"),  # other version
        tomb(V1, name="a"),  # deleted instead of present
        put(V1, name="b"),  # other name
    ],
)
def test_store_digests_change_with_content(changed: Record) -> None:
    base = store_digests([put(V1, name="a")])
    assert store_digests([changed]) != base


# --- convergence: a reference merge built from the three rules --------------------------------


@dataclass
class Slot:
    entry: Version | None = None
    der: bytes | None = None
    tombstone: Version | None = None


def apply(state: dict[tuple[str, str], Slot], record: Record) -> None:
    """How a node folds one record into its view (node/agent.py apply_records), for one (store, name)."""
    slot = state.setdefault(record.key, Slot())
    if record.is_tombstone:
        if tombstone_wins(record.version, slot.tombstone):
            slot.tombstone = record.version
            if slot.entry is not None and not entry_survives(slot.entry, record.version):
                slot.entry, slot.der = None, None
    elif put_wins(record.version, slot.entry, slot.tombstone):
        slot.entry, slot.der = record.version, record.der


def merge(
    records: list[Record],
) -> dict[tuple[str, str], tuple[Version | None, bytes | None, Version | None]]:
    state: dict[tuple[str, str], Slot] = {}
    for r in records:
        apply(state, r)
    return {k: (s.entry, s.der, s.tombstone) for k, s in state.items()}


def test_repl9_late_old_copy_does_not_resurrect() -> None:
    """R-REPL-9: delete, then an old copy arrives late (resync): the certificate stays deleted."""
    state = merge([put(V1), tomb(V2), put(V1)])
    assert state[("tomcat-trust", "Lab_Root_CA")] == (None, None, V2)


def test_repl9_reupload_after_delete_survives() -> None:
    """R-REPL-9: a re-upload after the deletion is a new fact and is kept, in any order."""
    expected = (V3, b"new", V2)
    assert merge([put(V1), tomb(V2), put(V3, der=b"new")])[("tomcat-trust", "Lab_Root_CA")] == expected
    assert merge([put(V3, der=b"new"), put(V1), tomb(V2)])[("tomcat-trust", "Lab_Root_CA")] == expected


_KEYS = [("tomcat-trust", "Lab_Root_CA"), ("CallManager-trust", "Lab_Root_CA"), ("tomcat-trust", "other")]
_version_keys = st.tuples(
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=3),
    st.sampled_from(["a", "b", "c"]),
)


@st.composite
def record_sets(draw: st.DrawFn) -> list[Record]:
    """Distinct versions (a version names one write), each a put or a tombstone of one of a few keys."""
    versions = draw(st.lists(_version_keys, min_size=1, max_size=14, unique=True))
    records = []
    for ms, counter, node in versions:
        v = Version(ms, counter, node)
        store, name = draw(st.sampled_from(_KEYS))
        if draw(st.booleans()):
            records.append(tomb(v, store=store, name=name))
        else:
            records.append(put(v, der=f"{store}/{name}@{v}".encode(), store=store, name=name))
    return records


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Record], list[Record]]:
    """A record set and one delivery of it: every record at least once, some again, in any order."""
    records = draw(record_sets())
    extra = draw(st.lists(st.sampled_from(records), max_size=10))
    delivered = draw(st.permutations(records + extra))
    return records, delivered


@settings(max_examples=250, deadline=None)
@given(case=deliveries())
def test_property_merge_converges_and_never_resurrects(case: tuple[list[Record], list[Record]]) -> None:
    """R-REPL-6 and R-REPL-9: any permutation or duplication of the same records gives the same state,
    and no entry whose version is <= a tombstone's version survives."""
    records, delivered = case
    canonical = merge(sorted(records, key=lambda r: r.version))
    final = merge(delivered)
    assert final == canonical

    for key, (entry, der, tombstone) in final.items():
        puts = [r for r in records if r.key == key and not r.is_tombstone]
        tombs = [r.version for r in records if r.key == key and r.is_tombstone]
        # closed form: newest tombstone; newest put if it is newer than that tombstone
        assert tombstone == (max(tombs) if tombs else None)
        newest = max(puts, key=lambda r: r.version) if puts else None
        if newest is not None and (tombstone is None or newest.version > tombstone):
            assert (entry, der) == (newest.version, newest.der)
        else:
            assert (entry, der) == (None, None)
        # no resurrection
        if entry is not None:
            assert all(entry > t for t in tombs)

    # idempotence: delivering everything again changes nothing
    assert merge(delivered + delivered) == final


@settings(max_examples=100, deadline=None)
@given(records=record_sets())
def test_property_record_json_round_trip(records: list[Record]) -> None:
    for r in records:
        assert Record.from_json(json.loads(json.dumps(r.to_json()))) == r
