"""`certsim lab ui` as a user runs it: against a lab started by `certsim lab up`, it prints its loopback
address, serves the login page there, and the lab process writes the history its live feed reads."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scenarios import shipped_dir
from tests.conftest import stock_home

DEMO_LAB = shipped_dir() / "labs" / "demo.yaml"


def certsim(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    stock_home(home)
    env = {**os.environ, "CERTSIM_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], env=env, capture_output=True, timeout=180, check=False, text=True
    )
    assert proc.returncode == 0, f"certsim {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
    return proc


def test_lab_ui_prints_its_address_and_serves_the_login_page(tmp_path: Path) -> None:
    """certsim lab ui: loopback HTTPS on its own port, printed at start; no page without logging in."""
    home = tmp_path / "home"
    certsim("lab", "up", str(DEMO_LAB), home=home)
    ui = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "lab", "ui"],
        env={**os.environ, "CERTSIM_HOME": str(home), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert ui.stdout is not None
        line = ui.stdout.readline()
        match = re.search(r"https://127\.0\.0\.1:(\d+)/lab", line)
        assert match, line
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(match.group(0), context=ctx, timeout=30) as page:
            assert page.url.endswith("/lab/login")  # redirected: no page without a session
            assert "Log in with the lab's OS administrator." in page.read().decode()
        history = home / "labs" / "demo" / "history.jsonl"
        deadline = time.monotonic() + 10
        while '"install"' not in (history.read_text() if history.exists() else "") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert '"install"' in history.read_text()  # lab up records what the live feed shows
    finally:
        ui.terminate()
        ui.wait(10)
        certsim("lab", "down", home=home)
