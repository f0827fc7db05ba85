"""Every shipped scenario runs and is valid; those about the bus on the embedded broker and on mosquitto."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.runs import run_scenario
from cluster.scenario import load_scenario
from scenarios import shipped

SHIPPED = sorted(shipped())


def test_the_four_foundation_scenarios_are_shipped() -> None:
    """The issue's contract: these scenario names exist."""
    assert {"quickstart", "capf-trust-local", "deletion-rules", "late-joiner"} <= set(SHIPPED)


# scenarios about the bus itself (sessions, restarts, queueing for absent nodes, partitions): both brokers.
# rogue-client runs on one: its attack on each broker is tests/replication/test_authenticity_e2e.py's
# test_rogue_client_thousand_envelopes_change_nothing (both brokers, the same forged/altered/replayed kinds).
BROKER_SCENARIOS = {
    "quickstart",
    "broker-restart",
    "late-joiner",
    "crash-during-burst",
    "partition-heal",
    "offline-past-retention",
}


def test_broker_scenarios_are_shipped() -> None:
    """The both-broker list names real scenarios (a renamed one would silently run on one broker only)."""
    assert set(SHIPPED) >= BROKER_SCENARIOS


@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in BROKER_SCENARIOS])
async def test_shipped_scenario_is_valid(name: str, broker, broker_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each shipped scenario proves its rules (named in its steps) and writes a complete results folder."""
    await check_shipped(name, broker, broker_url, tmp_path)


@pytest.mark.both_brokers
@pytest.mark.parametrize("name", sorted(BROKER_SCENARIOS))
async def test_shipped_bus_scenario_is_valid(name: str, broker, broker_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The scenarios about the bus prove their rules on the embedded broker and on mosquitto."""
    await check_shipped(name, broker, broker_url, tmp_path)


async def check_shipped(name: str, broker, broker_url: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    scenario = load_scenario(shipped()[name])
    report = await run_scenario(scenario, tmp_path / "results", broker_url=broker_url, broker_control=broker)
    failures = [f"step {s.index} {s.kind} {s.status}: {s.detail}" for s in report.result.steps if s.status != "ok"]
    assert report.result.verdict == "valid", (report.result.reason, failures)
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["verdict"] == "valid"
    assert results["exit_code"] == 0
    assert results["expectations"]["failed"] == 0
    assert results["expectations"]["held"] >= 1
    assert results["rules"], "a shipped scenario names the rules it proves"
    assert (tmp_path / "results" / "history.jsonl").stat().st_size > 0
    assert {p.stem for p in (tmp_path / "results" / "nodes").glob("*.log")} == set(scenario.lab.node_names)
