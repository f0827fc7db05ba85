"""A burst with ``crash_after`` always crashes its node, even when fewer uploads were acknowledged
than asked (uploads refused, or timed out on a loaded machine): the next ``start`` step must find
the node down, not "already running" (seen in CI under load in crash-during-burst)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.runs import run_scenario
from cluster.scenario import ScenarioError, parse_scenario

LAB = {
    "lab": "burst",
    "security_password": "cisco-lab-secret",
    "nodes": [{"name": "cucm1", "role": "cucm"}, {"name": "cucm2", "role": "cucm"}],
}
BURST = {"node": "cucm1", "store": "tomcat-trust", "count": 2, "issuer": "Root", "as": "b"}


async def test_a_burst_crashes_its_node_even_when_too_few_uploads_were_acknowledged(tmp_path: Path) -> None:
    """The burst goes to an IM&P store a Unified CM node lacks, so no upload is acknowledged;
    the node is crashed all the same and the start step brings it back (and R-REPL-5 holds on it); an
    expect_acknowledged over that burst would check nothing, so it is an error, not VALID."""
    scenario = parse_scenario(
        {
            "scenario": "burst-late-crash",
            "lab": LAB,
            "steps": [
                {"ca": {"create": "Root", "key_type": "EC"}},
                {"burst": {**BURST, "store": "cup-xmpp-trust", "crash_after": 2}},
                {"start": "cucm1"},
                {"wait": "converged"},
                {"expect": {"store": "tomcat-trust", "node": "cucm1", "has": "tomcat@cucm2"}, "rule": "R-REPL-5"},
                {"expect_acknowledged": {"burst": "b", "store": "tomcat-trust", "nodes": "all"}, "rule": "R-REPL-1"},
            ],
        }
    )
    report = await run_scenario(scenario, tmp_path / "results")
    steps = report.result.steps
    assert [s.status for s in steps] == ["ok", "ok", "ok", "ok", "ok", "error"], [(s.kind, s.detail) for s in steps]
    assert "crashed after the burst: only 0 of 2" in str(steps[1].detail), steps[1].detail
    # a check over a burst with nothing acknowledged would check nothing: an error, never VALID (issue 14)
    assert "checks nothing" in str(steps[5].detail), steps[5].detail
    assert report.result.verdict != "valid"


def test_crash_after_beyond_the_count_is_refused_at_load() -> None:
    with pytest.raises(ScenarioError, match=r"crash_after must be 1\.\.count"):
        parse_scenario(
            {
                "scenario": "x",
                "lab": LAB,
                "steps": [{"ca": {"create": "Root"}}, {"burst": {**BURST, "crash_after": 3}}],
            }
        )
