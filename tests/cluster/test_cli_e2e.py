"""The certsim command line, run as a user runs it: real processes, a background lab, JSON output."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.labca import LabCA
from node.catalog import KeyAlgo
from node.clock import SimClock
from scenarios import shipped_dir
from tests.cluster.doors.test_hostile_text import _bad_uploads, _hostile, _pem_of
from tests.conftest import stock_home

DEMO_LAB = shipped_dir() / "labs" / "demo.yaml"


def certsim(
    *args: str, home: Path, check: bool = True, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    stock_home(home)
    env = {**os.environ, "CERTSIM_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env,
        capture_output=True,
        timeout=timeout,
        check=False,
        input=stdin.decode() if stdin is not None else None,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"certsim {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def running_lab(tmp_path: Path, broker_url: str | None) -> Iterator[Path]:
    """The demo lab, up in the background under a private CERTSIM_HOME; brought down afterwards."""
    home = tmp_path / "home"
    args = ["lab", "up", str(DEMO_LAB)] + (["--broker", broker_url] if broker_url else [])
    up = certsim(*args, home=home)
    assert "cucm-pub" in up.stdout and "connected" in up.stdout
    try:
        yield home
    finally:
        certsim("lab", "down", home=home, check=False)


def https_get(listener: dict[str, Any], path: str) -> Any:
    """GET a certmgr REST path from a node's HTTPS front door (the lab's default OS administrator)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://{listener['host']}:{listener['port']}/platformcom/api/v1/certmgr/config/{path}"
    auth = base64.b64encode(b"admin:certsim-admin").decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, context=ctx, timeout=30) as response:
        return json.loads(response.read())


def test_lab_hosts_prints_etc_hosts_lines(tmp_path: Path) -> None:
    """lab hosts: one /etc/hosts line per node (address, FQDN, short name), from a lab file."""
    out = certsim("lab", "hosts", str(DEMO_LAB), home=tmp_path).stdout.splitlines()
    assert out == [
        "# certsim lab demo",
        "127.0.0.11  cucm-pub.lab.example cucm-pub",
        "127.0.0.12  cucm-sub1.lab.example cucm-sub1",
        "127.0.0.13  cucm-sub2.lab.example cucm-sub2",
        "127.0.0.14  imp-pub.lab.example imp-pub",
    ]
    missing = certsim("lab", "hosts", home=tmp_path, check=False)
    assert missing.returncode != 0 and "no lab is running" in missing.stderr


def node_run_cmd(node: str, broker_url: str) -> list[str]:
    """The command line that runs one node of the demo lab in its own process."""
    return [
        sys.executable,
        "-m",
        "cluster.cli",
        "node",
        "run",
        "--lab-file",
        str(DEMO_LAB),
        "--node",
        node,
        "--broker",
        broker_url,
    ]


def test_help_explains_every_verb(tmp_path: Path) -> None:
    """certsim --help lists every verb, and each verb has its own help."""
    out = certsim("--help", home=tmp_path).stdout
    for verb in ("demo", "run", "lab", "cert", "node", "scenarios"):
        assert verb in out
    for sub in (
        ("lab", "--help"),
        ("cert", "--help"),
        ("cert", "upload", "--help"),
        ("node", "run", "--help"),
    ):
        assert "Usage:" in certsim(*sub, home=tmp_path).stdout


def test_run_exit_codes_and_json(tmp_path: Path) -> None:
    """run: exit 0 valid, 1 when an expectation fails, 2 when the scenario cannot be decided."""
    good = certsim("run", "capf-trust-local", "--json", "--results", str(tmp_path / "r1"), home=tmp_path)
    assert json.loads(good.stdout)["verdict"] == "valid"

    failing = tmp_path / "failing.yaml"
    failing.write_text(
        f"scenario: failing\nlab: {DEMO_LAB}\nsteps:\n"
        "  - ca: {create: LocalOnly}\n"
        "  - upload: {node: cucm-pub, store: CAPF-trust, cert: LocalOnly}\n"
        "  - expect: {rule: R-REPL-2, store: CAPF-trust, nodes: all, has: LocalOnly}\n"
    )
    bad = certsim("run", str(failing), "--results", str(tmp_path / "r2"), home=tmp_path, check=False)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    results = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert results["verdict"] == "invalid"
    assert "cucm-sub1 lacks CAPF-trust/LocalOnly" in results["failures"][0]["detail"]

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        f"scenario: broken\nlab: {DEMO_LAB}\nsteps:\n  - upload: {{node: cucm-nine, store: tomcat-trust, raw: x}}\n"
    )
    undecided = certsim("run", str(broken), home=tmp_path, check=False)
    assert undecided.returncode == 2
    assert "unknown node 'cucm-nine'" in undecided.stderr


def test_lab_status_cert_verbs_and_down(running_lab: Path, tmp_path: Path) -> None:
    """lab status and cert list/upload/download/delete against a background lab, tables and --json."""
    home = running_lab
    status = json.loads(certsim("lab", "status", "--json", home=home).stdout)
    assert set(status["nodes"]) == {"cucm-pub", "cucm-sub1", "cucm-sub2", "imp-pub"}
    assert all(n["connected"] for n in status["nodes"].values())
    assert status["nodes"]["imp-pub"]["stores"]["tomcat-trust"] == 8
    doors = status["front_doors"]  # lab up opened every node's SSH and HTTPS front doors (cluster.doors.frontdoors)
    assert set(doors) == set(status["nodes"])
    assert doors["cucm-pub"]["https"]["host"] == doors["cucm-pub"]["ssh"]["host"] == "127.0.0.11"
    assert "certsim-admin" not in json.dumps(doors)  # the OS administrator's password is never shown
    table = certsim("lab", "status", home=home).stdout
    assert "front doors of demo" in table and f"{doors['imp-pub']['https']['address']}" in table
    assert https_get(doors["cucm-pub"]["https"], "identity/certificate?service=tomcat")[0]["service"] == "tomcat"

    ca = LabCA(SimClock(dt.datetime.now(dt.UTC)))
    root = ca.create_ca("CliRootCA")
    pem = tmp_path / "root.pem"
    pem.write_bytes(root.pem())
    up = json.loads(
        certsim(
            "cert", "upload", "--node", "cucm-sub2", "--store", "tomcat-trust", str(pem), "--json", home=home
        ).stdout
    )
    assert up["added"] == ["CliRootCA"]
    assert up["replicated"] == ["tomcat-trust/CliRootCA"]

    async def wait_replicated() -> None:
        for _ in range(100):
            rows = json.loads(
                certsim("cert", "list", "--node", "imp-pub", "--cn", "CliRoot", "--json", home=home).stdout
            )
            if rows:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("CliRootCA never reached imp-pub")

    asyncio.run(wait_replicated())
    table = certsim("cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust", home=home).stdout
    assert "CliRootCA" in table

    der = tmp_path / "dl.der"
    certsim(
        "cert",
        "download",
        "--node",
        "imp-pub",
        "--store",
        "tomcat-trust",
        "CliRootCA",
        "--format",
        "der",
        "-o",
        str(der),
        home=home,
    )
    assert der.read_bytes() == root.der()

    refused = certsim(
        "cert",
        "delete",
        "--node",
        "cucm-pub",
        "--store",
        "tomcat",
        "cucm-pub.lab.example",
        home=home,
        check=False,
    )
    assert refused.returncode == 1
    assert "cannot be deleted" in refused.stderr and "Traceback" not in refused.stderr
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    refused = certsim(
        "cert",
        "upload",
        "--node",
        "cucm-pub",
        "--store",
        "tomcat-trust",
        str(garbage),
        home=home,
        check=False,
    )
    assert refused.returncode == 1 and "not a certificate" in refused.stderr

    deleted = certsim(
        "cert", "delete", "--node", "cucm-sub1", "--store", "tomcat-trust", "CliRootCA.pem", home=home
    ).stdout
    assert "from every node" in deleted

    # issue 14 on the CLI door: hostile certificate text escaped in the upload, table and JSON output;
    # the expired upload's warning printed; a chain whose issuers loop refused on one line, nothing changed
    hostile = tmp_path / "hostile.pem"
    hostile.write_text(_pem_of(_hostile("cli", dt.datetime.now(dt.UTC), starts=-400, days=30)))
    up_text = certsim("cert", "upload", "--node", "cucm-pub", "--store", "tomcat-trust", str(hostile), home=home)
    assert "warning: " in up_text.stdout and "expired on" in up_text.stdout, up_text.stdout
    listed = certsim("cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust", home=home).stdout
    listed_json = certsim("cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust", "--json", home=home).stdout
    for shown in (up_text.stdout, listed, listed_json):
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown, shown
        assert not re.search(r"^forged: line", shown, re.MULTILINE), shown
    assert "evil\\x1b[2J" in listed and "evil\\\\x1b[2J" in listed_json
    loop = tmp_path / "loop.pem"
    loop.write_text(_bad_uploads()["issuers loop"])
    before = listed_json
    refused = certsim(
        "cert", "upload", "--node", "cucm-pub", "--store", "tomcat-trust", str(loop), home=home, check=False
    )
    assert refused.returncode == 1 and "issuers loop" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert (
        certsim("cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust", "--json", home=home).stdout == before
    )

    down = certsim("lab", "down", home=home)
    assert "stopped" in down.stdout
    assert not list((home / "labs" / "demo" / "doors").glob("*.json"))  # the doors closed with the lab
    again = certsim("lab", "status", home=home, check=False)
    assert again.returncode != 0 and "no lab is running" in again.stderr


def _wait_for(predicate, what: str, tries: int = 100) -> None:  # type: ignore[no-untyped-def]
    import time

    for _ in range(tries):
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.slow
@pytest.mark.both_brokers
def test_fault_verbs_on_a_running_lab(running_lab: Path, tmp_path: Path, broker_url: str | None) -> None:
    """certsim fault: partition and heal (R-REPL-6 catch-up), crash and restart, broker restart."""
    home = running_lab
    ca = LabCA(SimClock(dt.datetime.now(dt.UTC)))
    pem = tmp_path / "p.pem"
    pem.write_bytes(ca.create_ca("PartitionCA").pem())

    def names(node: str) -> set[str]:
        rows = json.loads(
            certsim("cert", "list", "--node", node, "--store", "tomcat-trust", "--json", home=home).stdout
        )
        return {r["name"] for r in rows}

    assert "cucm-sub2" in certsim("fault", "partition", "cucm-sub2", home=home).stdout
    certsim("cert", "upload", "--node", "cucm-pub", "--store", "tomcat-trust", str(pem), home=home)
    _wait_for(lambda: "PartitionCA" in names("imp-pub"), "upload reaches imp-pub")
    assert "PartitionCA" not in names("cucm-sub2")
    certsim("fault", "heal", home=home)
    _wait_for(lambda: "PartitionCA" in names("cucm-sub2"), "healed node catches up")

    certsim("fault", "crash", "cucm-sub1", home=home)
    status = json.loads(certsim("lab", "status", "--json", home=home).stdout)
    assert status["nodes"]["cucm-sub1"] is None
    certsim("fault", "restart", "cucm-sub1", home=home)
    assert json.loads(certsim("lab", "status", "--json", home=home).stdout)["nodes"]["cucm-sub1"]["connected"]

    def all_connected() -> bool:
        # right after a broker restart a call may find the broker not yet accepting (amqtt resets the
        # first connections under load): that is a moment of the fault, not its outcome; a traceback
        # would still fail the test
        status = certsim("lab", "status", "--json", home=home, check=False)
        if status.returncode != 0:
            assert "Traceback" not in status.stderr, status.stderr
            assert "cannot reach the broker" in status.stderr, status.stderr
            return False
        nodes = json.loads(status.stdout)["nodes"].values()
        return all(n and n["connected"] for n in nodes)

    restart = certsim("fault", "broker-restart", "--down", "0.5", home=home, check=False)
    if broker_url is None:
        assert restart.returncode == 0, restart.stderr
        _wait_for(all_connected, "every node reconnects after the broker restart", tries=60)
    else:
        assert restart.returncode == 1 and "external" in restart.stderr
    bad = certsim("fault", "crash", "cucm-nine", home=home, check=False)
    assert bad.returncode == 1 and "unknown node 'cucm-nine'" in bad.stderr


@pytest.mark.slow
def test_lab_spans_processes_and_a_sigkilled_node_keeps_what_it_acknowledged(
    tmp_path: Path, broker_url: str | None
) -> None:
    """node run: one node in its own process joins a lab whose other nodes run in the background lab, and
    serves its front doors from there. Nothing lost: killed with SIGKILL right after acknowledging uploads,
    restarted, it still has them and the cluster converges on them; SIGTERM then stops it cleanly."""
    if broker_url is None:
        pytest.skip("a node in another process needs an external broker URL (the embedded one lives in the lab)")
    import signal

    home = tmp_path / "home"
    certsim("lab", "up", str(DEMO_LAB), "--broker", broker_url, "--skip", "cucm-sub2", home=home)
    env = {**os.environ, "CERTSIM_HOME": str(home)}
    cmd = node_run_cmd("cucm-sub2", broker_url)
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def converged() -> bool:
            nodes = json.loads(certsim("lab", "status", "--json", home=home).stdout)["nodes"]
            return all(
                nodes[n] is not None and nodes[n]["stores"]["tomcat-trust"] == 8 for n in ("cucm-pub", "cucm-sub2")
            )

        _wait_for(converged, "cucm-sub2 joins and converges", tries=150)
        status = json.loads(certsim("lab", "status", "--json", home=home).stdout)
        assert status["nodes"]["cucm-sub2"]["connected"] is True
        # the node's front doors run in its own process, next to its agent
        doors = status["front_doors"]
        assert set(doors) == {"cucm-pub", "cucm-sub1", "cucm-sub2", "imp-pub"}
        assert doors["cucm-sub2"]["https"]["host"] == "127.0.0.13"
        assert https_get(doors["cucm-sub2"]["https"], "snapshot/server")["server"] == "cucm-sub2.lab.example"

        ca = LabCA(SimClock(dt.datetime.now(dt.UTC)))
        uploaded = []
        for i in range(5):
            pem = tmp_path / f"k{i}.pem"
            pem.write_bytes(ca.create_ca(f"KillCA{i}", key_algo=KeyAlgo.EC, key_size=256).pem())
            certsim("cert", "upload", "--node", "cucm-sub2", "--store", "tomcat-trust", str(pem), home=home)
            uploaded.append(f"KillCA{i}")
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=10)
        node = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def everywhere() -> bool:
            for name in ("cucm-pub", "cucm-sub2", "imp-pub"):
                listed = certsim("cert", "list", "--node", name, "--cn", "KillCA", "--json", home=home, check=False)
                if listed.returncode != 0 or {r["name"] for r in json.loads(listed.stdout)} != set(uploaded):
                    return False
            return True

        _wait_for(everywhere, "acknowledged uploads survive SIGKILL and reach every node", tries=150)
    finally:
        node.terminate()
        node.wait(timeout=30)
        certsim("lab", "down", home=home, check=False)
    assert node.returncode == 0, node.stderr.read().decode() if node.stderr else ""
