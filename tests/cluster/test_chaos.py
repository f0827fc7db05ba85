"""Seeded chaos: schedules replay from their seed, and 20 seeds per broker keep every property."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.chaos import FAULTS, ChaosConfig, run_chaos, schedule, summarize


def test_the_same_seed_gives_the_same_schedule() -> None:
    """Reproducibility: the schedule is a function of the seed (and the code)."""
    cfg = ChaosConfig(seed=42, nodes=5, ops=40)
    assert schedule(cfg) == schedule(ChaosConfig(seed=42, nodes=5, ops=40))
    assert schedule(cfg) != schedule(ChaosConfig(seed=43, nodes=5, ops=40))


def test_schedules_inject_every_fault_kind_and_end_healed() -> None:
    """Over a few seeds every enabled fault occurs; every crash is restarted and every partition healed."""
    kinds: set[str] = set()
    for seed in range(1, 11):
        actions = schedule(ChaosConfig(seed=seed, nodes=4, ops=40))
        kinds |= {a.kind for a in actions}
        crashed = [a.node for a in actions if a.kind == "crash"]
        restarted = [a.node for a in actions if a.kind == "restart"]
        assert sorted(crashed) == sorted(restarted)
        assert sum(a.kind == "partition" for a in actions) >= sum(a.kind == "heal" for a in actions)
    assert {"crash", "partition", "broker", "faults", "upload", "delete"} <= kinds


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        ChaosConfig(seed=1, faults=("meteor",))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 21))
@pytest.mark.both_brokers
async def test_chaos_seed_keeps_every_property(seed: int, broker, broker_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Convergence, locality, no resurrection (R-REPL-9), nothing lost, under crashes, partitions,
    broker restarts, duplication, delay and reordering."""
    cfg = ChaosConfig(seed=seed, nodes=4, ops=30, faults=FAULTS)
    report = await run_chaos(cfg, tmp_path, broker_url="mosquitto" if broker is not None else None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["seed"] == seed
    assert report.verdict == "valid", (results["violations"], results["notes"])
    assert report.counts["lost"] == report.counts["resurrected"] == report.counts["divergent"] == 0
    assert report.counts["acknowledged"] > 0
    summary = summarize([report])
    assert summary["convergence_s"]["p50"] is not None


async def test_release_10_5_resurrects_and_says_so(tmp_path: Path) -> None:
    """R-REPL-9: under 10.5 deletions come back; the checker counts them as the profile's behaviour."""
    reports = [
        await run_chaos(ChaosConfig(seed=s, nodes=3, ops=25, faults=(), release="10.5"), tmp_path / str(s))
        for s in (1, 2)
    ]
    assert all(r.verdict == "valid" for r in reports)
    assert sum(r.counts["resurrected"] for r in reports) > 0
