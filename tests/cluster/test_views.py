"""Tables for people: what `certsim cert list` shows."""

from __future__ import annotations

from rich.console import Console

from cluster.views import cert_table

ROW = {
    "store": "tomcat-trust",
    "name": "corp-leaf",
    "usage": "trust",
    "key_type": "RSA",
    "key_bits": 2048,
    "issuer_cn": "corp-root",
    "not_after": "2027-01-01T00:00:00Z",
    "origin": "cucm-pub",
}


def _render(rows: list[dict[str, object]]) -> str:
    console = Console(width=200, record=True)
    console.print(cert_table(rows, "cucm-pub"))
    return console.export_text()


def test_cert_list_shows_the_ocsp_status_only_when_a_node_checks() -> None:
    """R-OCSP-3: listings show good / revoked / unknown; without OCSP there is no such column."""
    assert "OCSP" not in _render([{**ROW, "ocsp": None}])
    shown = _render([{**ROW, "ocsp": "revoked"}, {**ROW, "name": "other", "ocsp": None}])
    assert "OCSP" in shown
    assert "revoked" in shown
