"""Seeded chaos: schedules replay from their seed, and 20 seeds per broker (one job each) keep every property."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.chaos import FAULTS, ChaosConfig, run_chaos, run_seeds, schedule, summarize
from tests.cluster.test_cli_e2e import certsim


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
@pytest.mark.both_brokers
async def test_twenty_seeds_keep_every_property(broker, broker_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Convergence, locality, no resurrection (R-REPL-9), nothing lost, under crashes, partitions,
    broker restarts, duplication, delay and reordering: seeds 1..20, run side by side as one job
    (what ``certsim chaos --seeds 1-20 --jobs 5`` does), each seed with its own lab and broker."""
    cfgs = [ChaosConfig(seed=seed, nodes=4, ops=30, faults=FAULTS) for seed in range(1, 21)]
    reports = await run_seeds(cfgs, tmp_path, broker_url="mosquitto" if broker is not None else None, jobs=5)
    assert [r.seed for r in reports] == list(range(1, 21))
    for report in reports:
        results = json.loads((tmp_path / f"seed-{report.seed}" / "results.json").read_text())
        assert results["seed"] == report.seed
        assert report.verdict == "valid", (report.seed, results["violations"], results["notes"])
        assert report.counts["lost"] == report.counts["resurrected"] == report.counts["divergent"] == 0
        assert report.counts["acknowledged"] > 0
    summary = summarize(reports)
    assert summary["verdicts"] == {"valid": 20}
    assert summary["convergence_s"]["p50"] is not None
    assert {"crash", "partition", "broker", "faults"} <= set(summary["faults"])


async def test_release_10_5_resurrects_and_says_so(tmp_path: Path) -> None:
    """R-REPL-9: under 10.5 deletions come back; the checker counts them as the profile's behaviour."""
    reports = [
        await run_chaos(ChaosConfig(seed=s, nodes=3, ops=25, faults=(), release="10.5"), tmp_path / str(s))
        for s in (1, 2)
    ]
    assert all(r.verdict == "valid" for r in reports)
    assert sum(r.counts["resurrected"] for r in reports) > 0


def test_chaos_cli_runs_seeds_side_by_side_and_refuses_bad_ranges(tmp_path: Path) -> None:
    """certsim chaos --seeds A-B --jobs N: every seed's results folder, the summary, exit 0 when all are
    valid; a range it cannot read is exit 2 with the reason, before anything runs."""
    out = tmp_path / "out"
    proc = certsim(
        "chaos",
        "--seeds",
        "3-4",
        "--jobs",
        "2",
        "--nodes",
        "2",
        "--ops",
        "6",
        "--json",
        "--results",
        str(out),
        home=tmp_path / "home",
    )
    shown = json.loads(proc.stdout)
    assert shown["summary"]["seeds"] == [3, 4] and shown["summary"]["verdicts"] == {"valid": 2}
    assert shown["runs"] == [(out / "seed-3").as_posix(), (out / "seed-4").as_posix()]
    assert json.loads((out / "seed-4" / "results.json").read_text())["verdict"] == "valid"
    for bad in ("9-3", "one-two"):
        refused = certsim("chaos", "--seeds", bad, "--results", str(tmp_path / bad), home=tmp_path, check=False)
        assert refused.returncode == 2 and "--seeds" in refused.stderr
        assert not (tmp_path / bad).exists()
