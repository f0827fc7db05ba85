"""replication.records: the record format and store digests (the merge rules are tested in test_core.py)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.hlc import Version
from replication.records import Record, store_digests

V1 = Version(100, 0, "a")
V2 = Version(100, 1, "a")
V3 = Version(200, 0, "b")


def put(
    version: Version, der: bytes = b"\x30\x03abc", store: str = "tomcat-trust", name: str = "Lab_Root_CA"
) -> Record:
    return Record(store=store, name=name, version=version, der=der, origin=version.node)


def tomb(version: Version, store: str = "tomcat-trust", name: str = "Lab_Root_CA") -> Record:
    return Record(store=store, name=name, version=version, der=None, origin=version.node)


# --- Record ----------------------------------------------------------------------------------


def test_record_properties() -> None:
    r = put(V1)
    assert r.is_tombstone is False
    assert r.key == ("tomcat-trust", "Lab_Root_CA")
    assert tomb(V1).is_tombstone is True


def test_the_nodes_of_a_process_share_one_started_copy_of_a_record() -> None:
    """R-REPL-8 needs each record's validity start; every receiving node of a process sets it on the
    record they share, and gets the same copy (made once, its digest too): equal to a fresh record
    with that start; another start makes another copy; the record itself stays as it was."""
    shared = Record.from_json(put(V1).to_json())
    first = shared.with_start(1_700_000_000_000)
    assert first == Record(shared.store, shared.name, V1, shared.der, shared.origin, 1_700_000_000_000)
    assert first.sha256 == shared.sha256
    assert shared.with_start(1_700_000_000_000) is first
    assert first.with_start(1_700_000_000_000) is first
    other = shared.with_start(1_600_000_000_000)
    assert other is not first and other.start_ms == 1_600_000_000_000
    assert shared.start_ms == 0 and shared == Record.from_json(put(V1).to_json())


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


def test_a_carried_deletion_travels_with_its_put() -> None:
    """R-REPL-8/R-REPL-5: the deletion a put carries (``replaces``) survives the wire; a plain put has none."""
    carried = Record("tomcat-trust", "Lab_Root_CA", V3, b"\x30\x03abc", "b", replaces=V1)
    assert carried.to_json()["r"] == [100, 0, "a"]
    assert Record.from_json(json.loads(json.dumps(carried.to_json()))) == carried
    assert "r" not in put(V1).to_json()
    with pytest.raises((ValueError, TypeError)):
        Record.from_json({**carried.to_json(), "r": [1]})


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


# --- JSON round trip of many records ---------------------------------------------------------

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


@settings(max_examples=100, deadline=None)
@given(records=record_sets())
def test_property_record_json_round_trip(records: list[Record]) -> None:
    for r in records:
        assert Record.from_json(json.loads(json.dumps(r.to_json()))) == r
