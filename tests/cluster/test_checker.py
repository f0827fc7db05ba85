"""The checker itself: it must report each kind of violation it exists to find."""

from __future__ import annotations

from cluster.checker import Held, Op, check
from node.catalog import RELEASES, Role
from replication.hlc import Version

R15 = RELEASES["15"]
R105 = RELEASES["10.5"]
ROLES = {"a": Role.CUCM, "b": Role.CUCM, "c": Role.IMP}


def v(ms: int, node: str = "a") -> Version:
    return Version(ms, 0, node)


def held(store: str, name: str, version: Version, sha: str = "s1", origin: str = "a") -> Held:
    return Held(store, name, version, sha, origin)


def test_a_clean_run_is_valid() -> None:
    """Convergence, locality, no resurrection, nothing lost: all hold."""
    x = held("tomcat-trust", "X", v(10))
    state = {"a": [x], "b": [x], "c": [x]}
    verdict = check(state, ROLES, [Op("upload", "a", "tomcat-trust", "X", v(10))], R15)
    assert verdict.verdict == "valid", verdict.violations
    assert verdict.counts["lost"] == verdict.counts["resurrected"] == verdict.counts["divergent"] == 0


def test_divergence_is_reported() -> None:
    """Property 1 (convergence): nodes that disagree on a replicated store are named."""
    state = {"a": [held("tomcat-trust", "X", v(10))], "b": [], "c": [held("tomcat-trust", "X", v(10))]}
    verdict = check(state, ROLES, [], R15)
    assert verdict.verdict == "invalid"
    assert verdict.counts["divergent"] == 1
    assert any(x.prop == "convergence" and x.node == "b" and x.entry == "X" for x in verdict.violations)


def test_a_capf_trust_upload_on_another_node_breaks_locality() -> None:
    """R-REPL-2 (locality): a CAPF-trust entry on a node that did not upload it is a violation."""
    state = {"a": [held("CAPF-trust", "C", v(5))], "b": [held("CAPF-trust", "C", v(5))], "c": []}
    verdict = check(state, ROLES, [Op("upload", "a", "CAPF-trust", "C", v(5))], R15)
    assert [(x.prop, x.node) for x in verdict.violations] == [("locality", "b")]


def test_resurrection_is_a_failure_by_default() -> None:
    """R-REPL-9: an entry held in a version older than an acknowledged deletion has come back."""
    x = held("tomcat-trust", "X", v(10))
    ops = [Op("upload", "a", "tomcat-trust", "X", v(10)), Op("delete", "b", "tomcat-trust", "X", v(20, "b"))]
    verdict = check({"a": [x], "b": [], "c": []}, ROLES, ops, R15)
    assert verdict.counts["resurrected"] == 1
    assert any(x.prop == "resurrection" and x.node == "a" for x in verdict.violations)


def test_resurrection_is_expected_under_release_10_5() -> None:
    """R-REPL-9: under the 10.5 profile a deletion is local and the resync brings it back, as the product did."""
    x = held("tomcat-trust", "X", v(10))
    ops = [Op("upload", "a", "tomcat-trust", "X", v(10)), Op("delete", "b", "tomcat-trust", "X", v(20, "b"))]
    verdict = check({"a": [x], "b": [x], "c": [x]}, ROLES, ops, R105)
    assert verdict.verdict == "valid"
    assert verdict.counts["resurrected"] == 1
    assert "expected behaviour" in verdict.notes[0]


def test_a_lost_upload_is_reported() -> None:
    """Property 4 (nothing lost): an acknowledged upload missing on a node that must hold it."""
    state = {"a": [], "b": [], "c": []}
    verdict = check(state, ROLES, [Op("upload", "a", "tomcat-trust", "X", v(10))], R15)
    assert verdict.counts["lost"] == 3
    assert {x.node for x in verdict.violations if x.prop == "lost"} == {"a", "b", "c"}


def test_absence_after_an_unacknowledged_deletion_is_not_a_loss() -> None:
    """A deletion that timed out may have happened: absence of that name is not a loss."""
    state = {"a": [], "b": [], "c": []}
    verdict = check(
        state, ROLES, [Op("upload", "a", "tomcat-trust", "X", v(10))], R15, maybe_deleted=[("tomcat-trust", "X")]
    )
    assert verdict.verdict == "valid"


def test_a_newer_operation_supersedes_an_older_one() -> None:
    """Last writer wins: a later deletion makes absence correct; a later upload makes the newer copy correct."""
    x2 = held("tomcat-trust", "X", v(30, "c"), sha="s2", origin="c")
    ops = [
        Op("upload", "a", "tomcat-trust", "X", v(10)),
        Op("delete", "b", "tomcat-trust", "X", v(20, "b")),
        Op("upload", "c", "tomcat-trust", "X", v(30, "c")),
    ]
    verdict = check({"a": [x2], "b": [x2], "c": [x2]}, ROLES, ops, R15)
    assert verdict.verdict == "valid", verdict.violations


def test_capf_trust_deletion_reaches_every_node() -> None:
    """R-REPL-3: a CAPF-trust deletion removes older local copies on every node."""
    ops = [
        Op("upload", "a", "CAPF-trust", "C", v(5)),
        Op("upload", "b", "CAPF-trust", "C", v(6, "b")),
        Op("delete", "a", "CAPF-trust", "C", v(9)),
    ]
    stale = held("CAPF-trust", "C", v(6, "b"), origin="b")
    verdict = check({"a": [], "b": [stale], "c": []}, ROLES, ops, R15)
    assert [(x.prop, x.node) for x in verdict.violations] == [("resurrection", "b")]


def test_not_converged_without_violations_is_unknown() -> None:
    """A run that never converged cannot be called valid."""
    verdict = check({"a": [], "b": [], "c": []}, ROLES, [], R15, converged=False)
    assert verdict.verdict == "unknown"
