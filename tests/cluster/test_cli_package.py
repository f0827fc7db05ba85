"""The CLI package stays light to import: verbs load the lab, the bus and the scenario runner only when they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.chaos import FAULTS
from cluster.cli import common
from cluster.cli import scenarios as cli_scenarios
from cluster.control import LAB_TARGET

HEAVY = (
    "rich",
    "aiomqtt",
    "amqtt",
    "aiohttp",
    "asyncssh",
    "aiosqlite",
    "cryptography",
    "asyncio",
    "cluster.scenario",
    "cluster.lab",
    "cluster.chaos",
)


def test_constants_spelled_in_the_cli_match_their_home() -> None:
    """The CLI repeats two constants so --help need not import their modules: they must not drift."""
    assert cli_scenarios.FAULTS == FAULTS
    assert common.LAB_TARGET == LAB_TARGET


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["cert", "list", "--help"], ["lab", "up", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    """certsim --help, --version and VERB --help load click only: no rich (it loads on the first print), event
    loop, crypto, bus, HTTP or SSH."""
    code = (
        "import sys\nfrom cluster.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []", proc.stdout[-500:]


def test_lab_status_reads_door_files_without_the_front_doors(tmp_path: Path) -> None:
    """certsim lab status shows every node's doors from doors/<node>.json: reading them loads no HTTP or SSH
    server (aiohttp and asyncssh alone cost about a second per call)."""
    doors = tmp_path / "doors"
    doors.mkdir()
    (doors / "cucm1.json").write_text(json.dumps({"node": "cucm1", "pid": os.getpid(), "ssh": {"port": 22}}))
    (doors / "gone.json").write_text(json.dumps({"node": "gone", "pid": 2**22 + 7}))
    code = (
        "import sys, json\nfrom cluster import running\n"
        f"found = running.front_doors(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "print(json.dumps(sorted(found)))\n"
        "heavy = ('aiohttp', 'asyncssh', 'node.agent', 'cluster.doors.frontdoors')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    found, loaded = proc.stdout.strip().splitlines()[-2:]
    assert json.loads(found) == ["cucm1"]  # a door file whose process is gone is not shown
    assert loaded == "[]", proc.stdout


def test_the_lab_process_loads_no_scenario_runner_http_or_ssh_before_its_nodes_start() -> None:
    """What 'lab serve' imports before its nodes start (the controller, the lab, the key pool, the broker
    wrapper) leaves out the scenario runner, aiohttp, asyncssh and amqtt: a warm 'lab up' waits for every
    import of the lab process, and those come only with a scenario, front doors, OCSP or an embedded broker."""
    code = (
        "import sys\n"
        "import cluster.cli, cluster.classroom, cluster.running, cluster.controller, cluster.lab, cluster.keys\n"
        "import cluster.broker, cluster.limits\n"
        "heavy = ('cluster.scenario', 'aiohttp', 'asyncssh', 'amqtt', 'cluster.doors.frontdoors', 'cluster.ocsp')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]


def test_lab_up_of_several_clusters_loads_no_bus_client_before_it_starts_the_lab_process() -> None:
    """What 'lab up' of a multi-cluster lab file runs before it spawns the lab process (cluster.classroom:
    validate, prepare the lab directory) loads no MQTT client, lab or spinner: the lab process waits for it."""
    code = (
        "import sys\nimport cluster.cli, cluster.cli.classroom, cluster.classroom\n"
        "heavy = ('aiomqtt', 'paho', 'cluster.running', 'cluster.control', 'cluster.lab', 'rich')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout[-500:]
