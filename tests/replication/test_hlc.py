"""replication.hlc: versions are totally ordered and a node's clock never issues a stale one."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.hlc import ZERO, HybridClock, Version


class FakePhysical:
    """A settable physical clock in simulated milliseconds."""

    def __init__(self, ms: int = 0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def clock(node: str = "a", ms: int = 0, last: Version = ZERO) -> tuple[HybridClock, FakePhysical]:
    phys = FakePhysical(ms)
    return HybridClock(node, phys, last), phys


# --- Version ---------------------------------------------------------------------------------


def test_version_order_is_ms_then_counter_then_node() -> None:
    assert Version(1, 9, "z") < Version(2, 0, "a")
    assert Version(2, 0, "z") < Version(2, 1, "a")
    assert Version(2, 1, "a") < Version(2, 1, "b")
    assert Version(0, 0, "a") > ZERO


def test_version_json_round_trip() -> None:
    v = Version(1_767_225_600_000, 3, "cucm-pub")
    assert json.loads(json.dumps(v.to_json())) == [1_767_225_600_000, 3, "cucm-pub"]
    assert Version.from_json(json.loads(json.dumps(v.to_json()))) == v
    assert Version.from_json((1, 2, "x")) == Version(1, 2, "x")


@pytest.mark.parametrize(
    "raw",
    [None, "1.2@a", [1, 2], [1, 2, "a", 4], ["1", 2, "a"], [1, 2.0, "a"], [1, 2, 3], {"ms": 1}],
)
def test_version_from_json_rejects_bad_shapes(raw: object) -> None:
    with pytest.raises(ValueError, match="not a version"):
        Version.from_json(raw)


def test_version_str() -> None:
    assert str(Version(5, 2, "n1")) == "5.2@n1"


# --- ticks -----------------------------------------------------------------------------------


def test_tick_follows_the_physical_clock() -> None:
    hlc, phys = clock("a", 100)
    assert hlc.tick() == Version(100, 0, "a")
    phys.ms = 250
    assert hlc.tick() == Version(250, 0, "a")
    assert hlc.last == Version(250, 0, "a")


def test_tick_with_a_standing_clock_counts() -> None:
    """R-REPL-6: versions stay strictly ordered even when the simulated clock stands still."""
    hlc, _ = clock("a", 100)
    assert [hlc.tick() for _ in range(3)] == [
        Version(100, 0, "a"),
        Version(100, 1, "a"),
        Version(100, 2, "a"),
    ]


def test_tick_with_a_clock_going_back_stays_ahead() -> None:
    hlc, phys = clock("a", 500)
    first = hlc.tick()
    phys.ms = 10
    second = hlc.tick()
    assert second > first
    assert second == Version(500, 1, "a")


def test_resumed_clock_stays_ahead_of_its_last_version() -> None:
    """A node restarted with its persisted last version never reissues an older one."""
    last = Version(1000, 7, "a")
    hlc, _ = clock("a", 5, last=last)
    assert hlc.last == last
    assert hlc.tick() == Version(1000, 8, "a")


def test_observe_future_version() -> None:
    hlc, _ = clock("a", 100)
    seen = Version(900, 4, "b")
    hlc.observe(seen)
    nxt = hlc.tick()
    assert nxt > seen
    assert nxt.ms == 900
    assert nxt.node == "a"


def test_observe_same_ms_takes_the_larger_counter() -> None:
    hlc, _ = clock("a", 100)
    hlc.tick()
    hlc.tick()  # (100, 1)
    hlc.observe(Version(100, 5, "b"))
    assert hlc.tick() > Version(100, 5, "b")


def test_observe_past_version_keeps_local_order() -> None:
    hlc, _ = clock("a", 100)
    before = hlc.tick()
    hlc.observe(Version(3, 0, "b"))
    assert hlc.tick() > before


def test_observe_when_physical_is_ahead_resets_counter() -> None:
    hlc, phys = clock("a", 100)
    hlc.tick()
    phys.ms = 2000
    hlc.observe(Version(1500, 9, "b"))
    assert hlc.last == Version(2000, 0, "a")
    assert hlc.tick() == Version(2000, 1, "a")


# --- properties ------------------------------------------------------------------------------

_versions = st.builds(
    Version,
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=5),
    st.sampled_from(["a", "b", "z"]),
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(min_value=0, max_value=40)),
        st.tuples(st.just("observe"), st.integers(min_value=0, max_value=40), _versions),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_ops, node=st.sampled_from(["a", "m", "zz"]), start=_versions)
def test_property_ticks_strictly_increase_and_outrank_everything_seen(
    ops: list[tuple[object, ...]], node: str, start: Version
) -> None:
    """HLC: ticks strictly increase even when the physical clock stands still or goes back, and after
    observe(v) the next tick is > v (a peer's change is never outranked by an older local one)."""
    hlc, phys = clock(node, 0, last=Version(start.ms, start.counter, node))
    floor = hlc.last  # every tick must outrank every earlier tick and every version observed so far
    for op in ops:
        phys.ms = int(op[1])  # type: ignore[call-overload]
        if op[0] == "tick":
            v = hlc.tick()
            assert v.node == node
            assert v > floor
            assert hlc.last == v
            floor = v
        else:
            seen = op[2]
            assert isinstance(seen, Version)
            hlc.observe(seen)
            floor = max(floor, seen)


@settings(max_examples=100, deadline=None)
@given(physical=st.lists(st.integers(min_value=0, max_value=10), min_size=2, max_size=50))
def test_property_ticks_never_repeat(physical: list[int]) -> None:
    hlc, phys = clock("a")
    issued = []
    for ms in physical:
        phys.ms = ms
        issued.append(hlc.tick())
    assert issued == sorted(issued)
    assert len(set(issued)) == len(issued)


def test_hybrid_clock_accepts_any_callable() -> None:
    source: Callable[[], int] = iter([10, 10, 5]).__next__
    hlc = HybridClock("n", source)
    assert [hlc.tick() for _ in range(3)] == [Version(10, 0, "n"), Version(10, 1, "n"), Version(10, 2, "n")]
