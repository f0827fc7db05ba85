"""The CLI package stays light to import: verbs load the lab, the bus and the scenario runner only when they run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.chaos import FAULTS
from cluster.cli import common
from cluster.cli import scenarios as cli_scenarios
from cluster.control import LAB_TARGET

HEAVY = (
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
    """certsim --help, --version and VERB --help load click and rich: no event loop, crypto, bus, HTTP or SSH."""
    code = (
        "import sys\nfrom cluster.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []", proc.stdout[-500:]
