"""certsim clock / monitor / syslog / mails on a running lab, as a user runs them (real processes)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from cluster.labca import LabCA
from node.clock import SimClock
from tests.cluster.test_cli_e2e import DEMO_LAB, certsim, node_run_cmd


def _wait(predicate, what: str, tries: int = 150) -> None:  # type: ignore[no-untyped-def]
    for _ in range(tries):
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def _json(*args: str, home: Path) -> object:
    return json.loads(certsim(*args, "--json", home=home).stdout)


@pytest.mark.slow
def test_clock_advance_fires_the_monitor_on_a_node_in_another_process(tmp_path: Path, broker_url: str | None) -> None:
    """R-TIME, R-MON-2, R-MON-3: `certsim clock advance` moves the whole lab, including a node run as its
    own process (the clock travels on the bus); that node's monitor warns at its simulated times and its
    mail reaches the lab's SMTP sink; the jump survives a lab restart."""
    if broker_url is None:
        pytest.skip("a node in another process needs an external broker URL (the embedded one lives in the lab)")
    home = tmp_path / "home"
    certsim("lab", "up", str(DEMO_LAB), "--broker", broker_url, "--skip", "cucm-sub2", home=home)
    node = subprocess.Popen(
        node_run_cmd("cucm-sub2", broker_url),
        env={**os.environ, "CERTSIM_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: _json("lab", "status", home=home)["nodes"]["cucm-sub2"] is not None, "cucm-sub2 up")  # type: ignore[index]
        ca = LabCA(SimClock(dt.datetime.now(dt.UTC)))
        pem = tmp_path / "soon.pem"
        pem.write_bytes(ca.create_ca("ExpiresSoon", days=5).pem())
        certsim("cert", "upload", "--node", "cucm-pub", "--store", "tomcat-trust", str(pem), home=home)
        shown = _json(
            "monitor", "set", "--node", "cucm-sub2", "--email", "on", "--emails", "pki@lab.example", home=home
        )
        assert shown["settings"]["email_enabled"] is True  # type: ignore[index]
        assert shown["smtp"]  # type: ignore[index]  # the running lab's sink, learned from running.json

        before = _json("clock", "show", home=home)
        advanced = _json("clock", "advance", "3d", home=home)
        assert advanced["timer_steps"] > 100  # type: ignore[index]  # resyncs every 30 min, monitor daily
        after = _json("clock", "show", home=home)
        assert after["offset_s"] - before["offset_s"] == pytest.approx(3 * 86400)  # type: ignore[index]

        def warned() -> bool:
            lines = _json("syslog", "--node", "cucm-sub2", "--grep", "ExpiresSoon", home=home)
            return isinstance(lines, list) and len(lines) == 3

        _wait(warned, "three daily alarms on cucm-sub2")
        mails = _json("mails", home=home)["mails"]  # type: ignore[index]
        from_sub2 = [m for m in mails if "on cucm-sub2" in m["subject"]]
        assert len(from_sub2) == 3
        assert all(m["to"] == ["pki@lab.example"] for m in from_sub2)
        text = certsim("syslog", "--node", "cucm-sub2", home=home).stdout
        assert "%UC_CERT-0-CertExpired: %[Message=Certificate expiration Notification." in text
    finally:
        node.terminate()
        node.wait(timeout=30)
        certsim("lab", "down", home=home, check=False)

    certsim("lab", "up", str(DEMO_LAB), "--broker", broker_url, home=home)
    try:
        restarted = _json("clock", "show", home=home)
        assert restarted["offset_s"] >= 3 * 86400  # type: ignore[index]  # clock.json kept the jump
    finally:
        certsim("lab", "down", home=home, check=False)


def test_clock_and_monitor_verbs_explain_bad_input(tmp_path: Path) -> None:
    """Bad durations and settings get a clear error; without a running lab the verbs say so."""
    home = tmp_path / "home"
    proc = certsim("clock", "advance", "3d", home=home, check=False)
    assert proc.returncode != 0
    assert "running" in proc.stderr
    proc = certsim("monitor", "set", "--node", "cucm-pub", home=home, check=False)
    assert proc.returncode == 2
    assert "at least one setting" in proc.stderr
    proc = certsim("monitor", "set", "--node", "cucm-pub", "--start-days", "99999", home=home, check=False)
    assert proc.returncode == 2
