"""Every check kind can fail (issue 14): one lab, each check given an expectation that is false, so
each step's verdict is ``failed`` (a check that cannot fail would pass here). The list covers every
check of the step-kind table (``cluster.scenario.kinds``) and every ``expect:`` form; a test below
makes sure a new check kind cannot be added without a line here."""

from __future__ import annotations

from pathlib import Path

from cluster.runs import run_scenario
from cluster.scenario import parse_scenario
from cluster.scenario.kinds import EXPECT_KEYS, EXTRA_STEPS

LAB = {
    "lab": "checks",
    "security_password": "cisco-lab-secret",
    "front_doors": {"ssh_port": 0, "https_port": 0},
    "nodes": [{"name": "cucm1", "role": "cucm"}, {"name": "cucm2", "role": "cucm"}],
    "phones": {"count": 2},
}
BURST = {"burst": {"node": "cucm1", "store": "tomcat-trust", "count": 2, "issuer": "Root", "as": "b"}}
FALSE_CHECKS = [
    {"expect": {"store": "tomcat-trust", "has": "Root"}},
    {"expect": {"store": "tomcat-trust", "node": "cucm1", "count": 99}},
    {"expect_identity": {"node": "cucm1", "unit": "tomcat", "source": "ca-signed"}},
    {"expect_service": {"service": "Cisco Tomcat", "node": "cucm1", "restart_pending": True}},
    {"expect_csr": {"node": "cucm1", "unit": "tomcat", "present": True}},
    {"expect_rejected": {"at_least": 5}},
    {"rest": {"node": "cucm1", "path": "snapshot/server", "expect": {"status": 404}}},
    {"ssh": {"node": "cucm1", "command": "show cert list own", "expect": {"contains": "no such text"}}},
    {"expect": {"store": "tomcat-trust", "node": "cucm1", "lacks": "tomcat@cucm2"}},
    {"expect": {"phones": "all", "state": "registered", "count": 99}},
    {"expect": {"link": {"kind": "tomcat", "from": "cucm1", "to": "cucm2"}, "ok": False}},
    {"check_remote": {"node": "cucm1", "peer": "cucm2", "expect": "fails"}},
    {"expect_acknowledged": {"burst": "b", "store": "CallManager-trust", "nodes": ["cucm1"]}},
    {"expect_ocsp": {"cert": "Root", "status": "revoked", "node": "cucm1", "within": 0}},
    {"expect_monitor": {"node": "cucm1", "cadence": "1h"}},
    {"expect_alarms": {"node": "cucm1", "cert": "Root", "count": 3}},
    {"expect_mails": {"node": "cucm1", "cert": "Root", "count": 3}},
]


async def test_each_check_kind_fails_when_its_expectation_is_false(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "scenario": "checks-fail",
            "lab": LAB,
            "steps": [{"ca": {"create": "Root", "key_type": "EC"}}, BURST, *FALSE_CHECKS],
        }
    )
    report = await run_scenario(scenario, tmp_path / "results")
    statuses = {(s.kind, s.index): s.status for s in report.result.steps}
    expected = {(next(iter(step)), i): "failed" for i, step in enumerate(FALSE_CHECKS, start=3)}
    assert {k: statuses.get(k) for k in expected} == expected, [
        (s.kind, s.status, s.detail) for s in report.result.steps
    ]
    assert report.result.verdict == "invalid"


def test_the_list_has_every_check_kind() -> None:
    """A check kind added to the table without a false case above would go untested: refuse that."""
    listed = {next(iter(step)) for step in FALSE_CHECKS}
    listed |= {
        f"expect_{key}" for step in FALSE_CHECKS if "expect" in step for key in EXPECT_KEYS if key in step["expect"]
    }
    checks = {name for name, kind in EXTRA_STEPS.items() if kind.check} | {"expect"}
    assert checks - listed == set()
