"""Every check kind can fail (issue 14): one lab, each check given an expectation that is false, so
each step's verdict is ``failed`` (a check that cannot fail would pass here)."""

from __future__ import annotations

from pathlib import Path

from cluster.runs import run_scenario
from cluster.scenario import parse_scenario

LAB = {
    "lab": "checks",
    "security_password": "cisco-lab-secret",
    "front_doors": {"ssh_port": 0, "https_port": 0},
    "nodes": [{"name": "cucm1", "role": "cucm"}, {"name": "cucm2", "role": "cucm"}],
}
FALSE_CHECKS = [
    {"expect": {"store": "tomcat-trust", "has": "Root"}},
    {"expect": {"store": "tomcat-trust", "node": "cucm1", "count": 99}},
    {"expect_identity": {"node": "cucm1", "unit": "tomcat", "source": "ca-signed"}},
    {"expect_service": {"service": "Cisco Tomcat", "node": "cucm1", "restart_pending": True}},
    {"expect_csr": {"node": "cucm1", "unit": "tomcat", "present": True}},
    {"expect_rejected": {"at_least": 5}},
    {"rest": {"node": "cucm1", "path": "snapshot/server", "expect": {"status": 404}}},
    {"ssh": {"node": "cucm1", "command": "show cert list own", "expect": {"contains": "no such text"}}},
]


async def test_each_check_kind_fails_when_its_expectation_is_false(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {"scenario": "checks-fail", "lab": LAB, "steps": [{"ca": {"create": "Root", "key_type": "EC"}}, *FALSE_CHECKS]}
    )
    report = await run_scenario(scenario, tmp_path / "results")
    statuses = {(s.kind, s.index): s.status for s in report.result.steps}
    expected = {(next(iter(step)), i): "failed" for i, step in enumerate(FALSE_CHECKS, start=2)}
    assert {k: statuses.get(k) for k in expected} == expected, [
        (s.kind, s.status, s.detail) for s in report.result.steps
    ]
    assert report.result.verdict == "invalid"
