"""The certificate-operation scenarios of issue 3 are shipped, parse, and name the rules they prove."""

from __future__ import annotations

import pytest

from cluster.scenario import load_scenario
from scenarios import shipped

CERTOPS = {
    "third-party-ca-tomcat": {"R-OP-CSR-1", "R-OP-UPLOAD-3", "R-OP-UPLOAD-4", "R-KU-1", "R-REPL-5", "R-UNIT-1"},
    "multi-server-san": {"R-OP-CSR-1", "R-OP-UPLOAD-3", "R-REPL-5"},
    "regenerate-and-restart": {"R-OP-REGEN-1", "R-SVC-1", "R-REPL-5", "R-OP-ECDSA"},
    "capf-root-to-callmanager-trust": {"R-OP-CSR-1", "R-OP-UPLOAD-3", "R-REPL-4", "R-REPL-2", "R-SVC-1"},
    "authz-key-regen": {"R-OP-AUTHZ"},
    "troubleshoot-remote-node": {"R-TS-1", "R-REPL-5", "R-REPL-6"},
}


@pytest.mark.parametrize("name", sorted(CERTOPS))
def test_certops_scenario_is_shipped_and_names_its_rules(name: str) -> None:
    """Issue 3's contract: each scenario exists, its description names the rules, its steps prove them."""
    scenario = load_scenario(shipped()[name])
    named = {s.rule for s in scenario.steps if s.rule}
    assert CERTOPS[name] <= named, CERTOPS[name] - named
    for rule in CERTOPS[name]:
        assert rule in scenario.description, rule
