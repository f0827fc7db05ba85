"""Every name a scenario step uses is checked when the file is loaded, before any lab starts (issue 14):
a misspelled node, store, unit or lab CA name in any step kind is a ScenarioError of one line that
names the field's path (``steps[3].upload.store``), and ``certsim run`` answers it with exit code 2.

The corpus is the shipped scenarios: each name they use is misspelled in turn, and the production
parser must refuse every copy. Kinds the shipped files do not use have their own cases below."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster import userfiles
from cluster.scenario import ScenarioError, load_scenario, parse_scenario, step_kinds
from node.catalog import STORES, UNITS
from scenarios import shipped

_DEFINES = {"ca": ("create", "issue"), "sign": ("as",), "ocsp_responder": ("as",)}


def _strings(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, [*path, k])
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, [*path, i])
    elif isinstance(value, str):
        yield path, value


def _misspelled(value: str, nodes: set[str], cas: set[str]) -> str | None:
    """A misspelling of ``value`` if it is a name a step uses (node, store, unit, unit@node, lab CA)."""
    if value in nodes or value in STORES or value in UNITS or value in cas:
        return value + "x"
    if "@" in value and value.split("@", 1)[0] in UNITS and value.split("@", 1)[1] in nodes:
        return "x" + value  # an unknown unit of a known node
    return None


def _misspellings(path: Path) -> Iterator[tuple[int, str, list[Any], str]]:
    """(step index, kind, field path, misspelled value) for every name the file's steps use."""
    raw = userfiles.load_yaml_file(path, "scenario")
    nodes = set(load_scenario(path).lab.node_names)
    cas: set[str] = set()
    for i, step in enumerate(raw["steps"], start=1):
        kind = next(k for k in step if k in step_kinds())
        args = step[kind]
        for where, value in _strings(args, []):
            if kind == "rest" and where[:1] == ["json"] and "pem" not in where:
                continue  # a request body is what the door is sent (unknown services on purpose)
            if where and where[-1] in ("as", "create", "issue"):
                continue  # a name being defined, not used
            bad = _misspelled(value, nodes, cas)
            if bad is not None:
                yield i, kind, where, bad
        if isinstance(args, dict):
            cas.update(str(args[k]) for k in _DEFINES.get(kind, ()) if k in args)


def _refusal(raw: dict[str, Any], path: Path, index: int, kind: str, where: list[Any], bad: str) -> str | None:
    """What is wrong with the parser's answer to ``raw`` with one name misspelled (None: refused well)."""
    raw = copy.deepcopy(raw)
    if where:
        target = raw["steps"][index - 1][kind]
        for key in where[:-1]:
            target = target[key]
        target[where[-1]] = bad
    else:
        raw["steps"][index - 1][kind] = bad
    try:
        parse_scenario(raw, path)
    except ScenarioError as exc:
        message = str(exc)
    else:
        return "accepted"
    field = str(where[-1]) if where and isinstance(where[-1], str) else ""
    if "\n" in message or f"steps[{index}].{kind}" not in message:
        return message
    if field and field != "pem" and not re.search(rf"steps\[{index}\]\.{kind}\.(\S+\.)?{re.escape(field)}\b", message):
        return message
    return None


@pytest.mark.parametrize("path", list(shipped().values()), ids=list(shipped()))
def test_every_name_a_shipped_step_uses_is_checked_at_load_time(path: Path) -> None:
    """A misspelled name anywhere in a step: refused at load time, one line naming the step and the field."""
    raw = userfiles.load_yaml_file(path, "scenario")
    if isinstance(raw.get("lab"), str):
        raw["lab"] = str((path.parent / raw["lab"]).resolve())
    cases = list(_misspellings(path))
    wrong = {
        f"steps[{i}].{kind}.{'.'.join(map(str, where))} = {bad!r}": problem
        for i, kind, where, bad in cases
        if (problem := _refusal(raw, path, i, kind, where, bad)) is not None
    }
    assert cases or path.stem in ("broker-restart",), "the corpus found no name to misspell"
    assert not wrong, wrong


LAB: dict[str, Any] = {
    "lab": "names",
    "security_password": "cisco-lab-secret",
    "nodes": [{"name": "cucm-pub"}, {"name": "cucm-sub1"}, {"name": "imp-pub", "role": "imp"}],
}
PHONES_LAB = {**LAB, "phones": {"count": 2}}
ROOT = {"ca": {"create": "Root"}}


@pytest.mark.parametrize(
    ("steps", "message", "lab"),
    [
        ([{"resync": "cucm-pbu"}], r"steps\[1\]\.resync: unknown node 'cucm-pbu'", LAB),
        ([{"crash": "cucm-pbu"}], r"steps\[1\]\.crash: unknown node 'cucm-pbu'", LAB),
        ([{"list": {"node": "cucm-pub", "store": "tomcat-trsut"}}], r"steps\[1\]\.list\.store: unknown", LAB),
        ([{"list": {"node": "cucm-pbu"}}], r"steps\[1\]\.list\.node: unknown node", LAB),
        (
            [{"link": {"kind": "ldap", "from": "cucm-pub", "to": "ldap-nope"}}],
            r"steps\[1\]\.link\.to: unknown certificate 'ldap-nope'",
            LAB,
        ),
        (
            [ROOT, {"link": {"kind": "sip", "from": "cucm-pub", "to": "cucm-sub1", "trusts": ["Rot"]}}],
            r"steps\[2\]\.link\.trusts: unknown certificate 'Rot'",
            LAB,
        ),
        (
            [{"link": {"kind": "tomcat", "from": "cucm-pbu", "to": "cucm-sub1"}}],
            r"steps\[1\]\.link\.from: unknown node 'cucm-pbu'",
            LAB,
        ),
        (
            [{"expect": {"link": {"kind": "sip", "from": "cucm-pub", "to": "gw"}, "ok": True}}],
            r"steps\[1\]\.expect\.link\.to: unknown certificate 'gw'",
            LAB,
        ),
        (
            [{"expect": {"phones": {"node": "cucm-pbu"}, "state": "registered"}}],
            r"steps\[1\]\.expect\.node: unknown node 'cucm-pbu'",
            PHONES_LAB,
        ),
        (
            [{"expect": {"phones": ["SEP000000000000"], "state": "registered"}}],
            r"steps\[1\]\.expect: phones are .* \(unknown: \['SEP000000000000'\]\)",
            PHONES_LAB,
        ),
        (
            [{"trust_identity": {"from": "cucm-pub", "unit": "CAPF", "node": "cucm-sub1", "store": "CAPF-trsut"}}],
            r"steps\[1\]\.trust_identity\.store: unknown trust store",
            LAB,
        ),
        (
            [{"trust_identity": {"from": "cucm-pub", "unit": "CAPFF", "node": "cucm-sub1", "store": "CAPF-trust"}}],
            r"steps\[1\]\.trust_identity\.unit: unknown unit",
            LAB,
        ),
        (
            [{"backup": {"restore": "b", "nodes": ["cucm-pbu"]}}],
            r"steps\[1\]\.backup\.nodes: unknown node 'cucm-pbu'",
            LAB,
        ),
        (
            [ROOT, {"burst": {"node": "cucm-pub", "store": "tomcat-trsut", "count": 2, "issuer": "Root", "as": "b"}}],
            r"steps\[2\]\.burst\.store: unknown trust store",
            LAB,
        ),
        (
            [{"expect_acknowledged": {"burst": "b", "store": "tomcat-trsut"}}],
            r"steps\[1\]\.expect_acknowledged\.store: unknown trust store",
            LAB,
        ),
        (
            [ROOT, {"expect_ocsp": {"cert": "Root", "status": "good", "node": "cucm-pub", "store": "tomcat-trsut"}}],
            r"steps\[2\]\.expect_ocsp\.store: unknown store or unit",
            LAB,
        ),
        (
            [{"exchange": {"from": "cucm-pub", "to": "cucm-sub1", "unit": "tomcat-ECDSAA"}}],
            r"steps\[1\]\.exchange\.unit: unknown unit 'tomcat-ECDSAA'",
            LAB,
        ),
        (
            [
                {
                    "expect_service": {
                        "service": "Cisco Tomcat",
                        "node": "cucm-pub",
                        "serves": {"unit": "tomcatt", "of": "current"},
                    }
                }
            ],
            r"steps\[1\]\.expect_service\.serves\.unit: unknown unit 'tomcatt'",
            LAB,
        ),
        (
            [{"ssh": {"node": "cucm-pub", "command": "set cert import trust tomcat", "input": [{"pem": "Nope"}]}}],
            r"steps\[1\]\.ssh\.input\[0\]\.pem: unknown certificate 'Nope'",
            LAB,
        ),
        (
            [{"rest": {"node": "cucm-pub", "path": "trust", "json": {"certificates": [{"pem": "Nope"}]}}}],
            r"steps\[1\]\.rest\.json\.certificates\[0\]\.pem: unknown certificate 'Nope'",
            LAB,
        ),
        (
            [{"rest": {"node": "cucm-pub", "path": "trust", "expect": {"has_cert": "tomcatt@cucm-pub"}}}],
            r"steps\[1\]\.rest\.expect\.has_cert: unknown unit 'tomcatt'",
            LAB,
        ),
        (
            [{"rest": {"node": "cucm-pub", "path": "x", "expect": {"served": "tomcat@cucm-pbu"}}}],
            r"steps\[1\]\.rest\.expect\.served: unknown node 'cucm-pbu'",
            LAB,
        ),
    ],
)
def test_names_in_step_kinds_the_shipped_files_do_not_cover(steps: list[Any], message: str, lab: Any) -> None:
    """Unknown node, store, unit and lab CA names in every step kind: refused at load time naming the field."""
    with pytest.raises(ScenarioError, match=message) as info:
        parse_scenario({"scenario": "t", "lab": copy.deepcopy(lab), "steps": steps})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("steps", "message", "lab"),
    [
        ([{"expect": {"phones": "all", "state": "registered"}}], r"expect\.phones: the lab has no phones", LAB),
        ([ROOT, {"expect": {"store": "tomcat-trust", "has": []}}], r"expect\.has: names no certificate", LAB),
        ([ROOT, {"expect": {"store": "tomcat-trust", "lacks": []}}], r"expect\.lacks: names no certificate", LAB),
        ([{"expect_identity": {"unit": "tomcat"}}], r"expect_identity: name the node\(s\) to check", LAB),
        ([{"expect_service": {"service": "Cisco Tomcat"}}], r"expect_service: name the node\(s\) to check", LAB),
        ([ROOT, {"expect_alarms": {"node": "cucm-pub", "cert": "Root"}}], r"expect_alarms: give count, first", LAB),
        ([ROOT, {"expect_mails": {"node": "cucm-pub", "cert": "Root"}}], r"expect_mails: give count, first", LAB),
    ],
)
def test_an_expectation_that_would_check_nothing_is_refused_at_load_time(
    steps: list[Any], message: str, lab: Any
) -> None:
    """An expectation must be able to fail: one that would look at no node, phone or entry is an error."""
    with pytest.raises(ScenarioError, match=message):
        parse_scenario({"scenario": "t", "lab": copy.deepcopy(lab), "steps": steps})


def test_certsim_run_of_a_misspelled_store_is_exit_2_and_one_line(tmp_path: Path) -> None:
    """``certsim run``: an unknown store in step 3 is exit code 2, one line naming steps[3].upload.store."""
    path = tmp_path / "typo.yaml"
    steps = [ROOT, {"wait": "converged"}, {"upload": {"node": "cucm-pub", "store": "tomcat-trsut", "cert": "Root"}}]
    path.write_text(yaml.safe_dump({"scenario": "typo", "lab": LAB, "steps": steps}), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "run", str(path), "--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "steps[3].upload.store: unknown store or unit 'tomcat-trsut'" in lines[0]
    assert not (tmp_path / "results").exists()  # refused before any lab started
