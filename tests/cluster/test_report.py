"""cluster.report: the run's report.html is rendered from the results data alone (pure), escapes what it shows,
highlights trust-matrix differences and draws replication messages between node lanes."""

from __future__ import annotations

from typing import Any

from cluster.report import chaos_results, failure_where, render_report, swimlane, trust_matrix


def results(verdict: str = "invalid") -> dict[str, Any]:
    failed = {
        "index": 2,
        "kind": "expect",
        "status": "failed",
        "sim": "2027-01-01T00:00:00Z",
        "rule": "R-REPL-1",
        "detail": "tomcat-trust lacks <b>evil</b> on n2",
        "result": {"node": "n2", "store": "tomcat-trust"},
    }
    ok = {**failed, "index": 1, "status": "ok", "detail": "uploaded", "result": None}
    return {
        "scenario": "s",
        "description": "",
        "verdict": verdict,
        "exit_code": 1,
        "reason": "",
        "lab": "t",
        "release": "15",
        "nodes": ["n1", "n2"],
        "broker": "embedded",
        "wall_seconds": 1.0,
        "sim_start": "a",
        "sim_end": "b",
        "expectations": {"total": 2, "held": 1, "failed": 1},
        "rules": ["R-REPL-1"],
        "failures": [failed],
        "steps": [ok, failed],
    }


def row(store: str, name: str) -> dict[str, Any]:
    return {"store": store, "name": name, "usage": "trust"}


def test_trust_matrix_marks_certificates_not_held_everywhere() -> None:
    """R-REPL-1 view: a replicated store's certificate missing on one node is a difference; node-local
    stores are not in the matrix."""
    m = trust_matrix(
        {
            "n1": [row("tomcat-trust", "A"), row("tomcat-trust", "B"), row("ipsec-trust", "L")],
            "n2": [row("tomcat-trust", "A")],
            "n3": None,  # did not answer
        }
    )
    assert m.nodes == ("n1", "n2", "n3")
    assert [(r.name, r.held) for r in m.rows] == [("A", (True, True, False)), ("B", (True, False, False))]
    assert m.differences == 2
    assert trust_matrix({"n1": [row("tomcat-trust", "A")], "n2": [row("tomcat-trust", "A")]}).differences == 0


def test_swimlane_draws_messages_from_sender_to_receiver() -> None:
    """Each applied envelope is an arrow from its sender's lane to the receiver's; state transfers pair
    their state-out with the state-in; read-only operations are left out."""
    events = [
        {"event": "op", "node": "n1", "op": "upload", "ok": True},
        {"event": "op", "node": "n1", "op": "list", "ok": True},
        {"event": "apply", "node": "n2", "sender": "n1", "msg": "m1", "records": 1, "changed": 1},
        {"event": "state-out", "node": "n2", "to": "n1", "records": 3},
        {"event": "op", "node": "n2", "op": "delete", "ok": False, "error": {"message": "no"}},
        {"event": "state-in", "node": "n1", "sender": "n2", "records": 3},
    ]
    lane = swimlane(events, ["n1", "n2"])
    assert lane.rows == 5  # the list op is not drawn
    assert [(a.lane_from, a.lane_to, a.kind) for a in lane.arrows] == [(0, 1, "apply"), (1, 0, "state")]
    state = lane.arrows[1]
    assert (state.row_from, state.row_to) == (3, 5)
    assert [m.kind for m in lane.marks if m.label == "delete"] == ["fail"]


def test_report_is_self_contained_and_escapes_what_it_shows() -> None:
    """The report names the verdict, the failure's rule, node and store, and never lets a certificate name
    or a detail become markup; it loads nothing from the network."""
    html = render_report(
        results(),
        [{"event": "apply", "node": "n2", "sender": "n1", "msg": "m", "records": 1, "changed": 1}],
        {"n1": [row("tomcat-trust", "<img src=x onerror=alert(1)>")], "n2": []},
    )
    assert 'id="verdict">INVALID<' in html
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<td>n2</td>" in html and "<td>tomcat-trust</td>" in html and "R-REPL-1" in html
    assert 'class="differs"' in html and "<svg" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    assert "<script" not in html


def test_a_failure_names_its_node_and_store_from_its_detail() -> None:
    """A failed expectation without a structured result still shows the node and store its detail names."""
    step = {"detail": "cucm-sub1 still holds tomcat-trust/certsim_Root", "result": None}
    assert failure_where(step, ["cucm-pub", "cucm-sub1"]) == (["cucm-sub1"], ["tomcat-trust"])
    assert failure_where({"detail": "timed out", "result": None}, ["cucm-pub"]) == ([], [])


def test_a_chaos_run_reports_its_violations_with_node_and_store() -> None:
    """A chaos run's results (cluster.chaos) become a report: each checker violation is a failure with its
    property's rule (R-REPL-9 for a resurrection), node and store; the schedule is the list of steps."""
    payload = {
        "seed": 7,
        "config": {"nodes": 2, "ops": 3, "faults": ["crash"], "release": "10.5"},
        "verdict": "invalid",
        "violations": [
            {"prop": "resurrection", "node": "node02", "store": "tomcat-trust", "entry": "X", "detail": "back"}
        ],
        "notes": [],
        "schedule": [{"index": 0, "kind": "crash", "node": "node01", "args": {}}],
        "counts": {},
        "wall_seconds": 1.0,
    }
    results = chaos_results(payload)
    assert results["nodes"] == ["node01", "node02"] and results["rules"] == ["R-REPL-9"]
    html = render_report(results, [{"event": "chaos", "node": "node01", "kind": "crash", "args": {}}], {})
    assert 'id="verdict">INVALID<' in html and "<td>node02</td>" in html and "<td>tomcat-trust</td>" in html
    assert ">crash</text>" in html  # the fault on node01's lane
