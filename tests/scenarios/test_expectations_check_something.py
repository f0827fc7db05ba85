"""Expectations record what they checked, fail when they should, and never pass having checked nothing."""

from __future__ import annotations

from pathlib import Path

from cluster.runs import run_scenario
from cluster.scenario import parse_scenario

LAB = {
    "lab": "expect",
    "security_password": "cisco-lab-secret",
    "front_doors": {"enabled": False},
    "nodes": [{"name": "cucm1", "role": "cucm"}, {"name": "cucm2", "role": "cucm"}, {"name": "imp1", "role": "imp"}],
}


async def test_expect_records_checks_fails_and_refuses_to_check_nothing(tmp_path: Path) -> None:
    """R-REPL-1: an expect step lists the nodes and entries it looked at; has/lacks/count each make it fail;
    an expect whose store no running node holds is an error (verdict unknown, exit 2), never valid."""
    scenario = parse_scenario(
        {
            "scenario": "expect-checks",
            "lab": LAB,
            "steps": [
                {"ca": {"create": "Root", "key_type": "EC"}},
                {"ca": {"create": "Other", "key_type": "EC"}},
                {"upload": {"node": "cucm1", "store": "tomcat-trust", "cert": "Root"}},
                {"expect": {"store": "tomcat-trust", "has": "Root"}},
                {"expect": {"store": "tomcat-trust", "has": "Other"}},
                {"expect": {"store": "tomcat-trust", "lacks": "Root"}},
                {"expect": {"store": "tomcat-trust", "node": "cucm2", "count": 99}},
                {"stop": "imp1"},
                {"expect": {"store": "cup-trust", "count": 0}},
                {"expect": {"store": "tomcat-trust", "has": "Root"}},
            ],
        }
    )
    report = await run_scenario(scenario, tmp_path / "results")
    steps = report.result.steps
    assert [s.status for s in steps] == ["ok", "ok", "ok", "ok", "failed", "failed", "failed", "ok", "error"]
    assert steps[3].result["nodes"] == ["cucm1", "cucm2", "imp1"]
    assert steps[3].result["entries"] >= 3  # Root on each node, at least (and their own identities)
    assert "entries checked" in steps[3].detail
    assert "cucm1 lacks tomcat-trust/" in steps[4].detail
    assert "still holds" in steps[5].detail
    assert "holds" in steps[6].detail and "expected 99" in steps[6].detail
    assert "would check nothing" in steps[8].detail
    assert report.result.verdict == "unknown"
    assert report.result.exit_code == 2
