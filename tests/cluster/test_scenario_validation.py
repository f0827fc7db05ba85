"""Scenario files are checked whole before a lab starts: types, ranges, and every name a step uses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cluster.scenario import ScenarioError, parse_scenario

LAB: dict[str, Any] = {
    "lab": "demo",
    "security_password": "cisco-lab-secret",
    "nodes": [{"name": "cucm-pub", "role": "cucm"}, {"name": "cucm-sub1", "role": "cucm"}],
}
ROOT = {"ca": {"create": "Root"}}


def scenario(*steps: Any) -> dict[str, Any]:
    return {"scenario": "t", "lab": copy.deepcopy(LAB), "steps": list(steps)}


def test_a_good_scenario_parses() -> None:
    s = parse_scenario(
        scenario(
            ROOT,
            {"ca": {"issue": "leaf", "issuer": "Root", "key_type": "EC", "key_size": 384, "days": 30}},
            {"upload": {"node": "cucm-pub", "store": "tomcat-trust", "cert": "Root"}},
            {"wait": {"seconds": 0.5}},
            {"expect": {"store": "tomcat-trust", "has": ["Root", "tomcat@cucm-sub1"], "count": 2}},
        )
    )
    assert [st.kind for st in s.steps] == ["ca", "ca", "upload", "wait", "expect"]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"wait": {"seconds": "1e12"}}], r"steps\[1\]\.wait\.seconds: must be a number of seconds from 0 to 3600"),
        ([{"wait": {"seconds": 1e12}}], r"steps\[1\]\.wait\.seconds: must be a number of seconds from 0 to 3600"),
        ([{"wait": {"seconds": -1}}], r"steps\[1\]\.wait\.seconds: must be a number"),
        ([{"wait": {"seconds": True}}], r"steps\[1\]\.wait\.seconds: must be a number"),
        ([ROOT, {"expect": {"store": "tomcat-trust", "count": -1}}], r"steps\[2\]\.expect\.count: must be a whole"),
        ([ROOT, {"expect": {"store": "tomcat-trust", "count": "2"}}], r"steps\[2\]\.expect\.count: must be a whole"),
        ([{"ca": {"create": "R", "key_type": "DSA"}}], r"steps\[1\]\.ca\.key_type: must be RSA or EC \(got 'DSA'\)"),
        ([{"ca": {"create": "R", "key_size": 512}}], r"steps\[1\]\.ca\.key_size: a RSA key has 1024, 2048"),
        ([{"ca": {"create": "R", "days": -5}}], r"steps\[1\]\.ca\.days: must be a whole number of days"),
        ([{"ca": {"create": ["R"]}}], r"steps\[1\]\.ca\.create: must be a name"),
        ([{"expect": {"store": "tomcat-trsut", "has": "x"}}], r"steps\[1\]\.expect\.store: unknown store or unit"),
        ([{"upload": {"node": "cucm-pub", "store": "tomcat-trsut", "pem": "x"}}], r"upload\.store: unknown store"),
        ([{"upload": {"node": "cucm-pub", "store": "tomcat-trust", "pem": ["x"]}}], r"upload\.pem: must be text"),
        ([{"upload": {"node": "cucm-pbu", "store": "tomcat-trust", "pem": "x"}}], r"unknown node 'cucm-pbu'"),
        ([{"upload": {"node": "cucm-pub", "store": "tomcat-trust", "cert": "Nope"}}], r"upload\.cert: unknown cert"),
        ([{"ca": {"issue": "leaf", "issuer": "Nope"}}], r"steps\[1\]\.ca\.issuer: unknown certificate 'Nope'"),
        ([ROOT, {"expect": {"store": "tomcat-trust", "lacks": "Rot"}}], r"expect\.lacks: unknown certificate 'Rot'"),
        ([{"expect": {"store": "tomcat-trust", "has": "tomcatt@cucm-pub"}}], r"unknown unit 'tomcatt'"),
        ([{"expect": {"store": "cup-trust", "count": 0}}], r"expect\.store: no node of this lab has 'cup-trust'"),
        ([{"expect": {"store": "cup-trust", "node": "cucm-pub", "count": 0}}], r"'cucm-pub' has no 'cup-trust'"),
        ([{"regen": {"node": "cucm-pub", "unit": "tomcatt"}}], r"steps\[1\]\.regen\.unit: unknown unit 'tomcatt'"),
        (
            [{"burst": {"node": "cucm-pub", "store": "tomcat-trust", "count": "many", "issuer": "R", "as": "b"}}],
            r"burst: a value has the wrong type",
        ),
        ([{"revoke": {"cert": "Ghost"}}], r"steps\[1\]\.revoke\.cert: unknown certificate 'Ghost'"),
        ([{"sign": {"csr_of": {"node": "cucm-pub", "unit": "tomcat"}, "issuer": "X", "as": "y"}}], r"sign\.issuer"),
        ([{"wait": "converged", "rule": ["R-1"]}], r"steps\[1\]\.rule: must be text"),
        (["wait"], r"steps\[1\]: must be a mapping"),
    ],
)
def test_bad_steps_are_refused_with_the_field_path(steps: list[Any], message: str) -> None:
    """Wrong types, negative or huge numbers, unknown key types and unknown names: refused at load time."""
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario(scenario(*steps))
    assert "\n" not in str(info.value)


def test_names_defined_by_sign_and_later_steps() -> None:
    """A name made by a sign step may be used after it, not before."""
    sign = {"sign": {"csr_of": {"node": "cucm-pub", "unit": "tomcat"}, "issuer": "Root", "as": "t"}}
    use = {"upload_identity": {"node": "cucm-pub", "unit": "tomcat", "cert": "t"}}
    parse_scenario(scenario(ROOT, sign, use))
    with pytest.raises(ScenarioError, match=r"steps\[2\]\.upload_identity\.cert: unknown certificate 't'"):
        parse_scenario(scenario(ROOT, use, sign))


def test_settle_timeout_range() -> None:
    raw = scenario({"wait": "converged"})
    raw["settle_timeout"] = 1e9
    with pytest.raises(ScenarioError, match="settle_timeout: must be a number of seconds"):
        parse_scenario(raw)
