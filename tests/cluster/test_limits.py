"""File descriptors: the budget per node and per process, and a clear refusal when ulimit -n is too low."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from cluster.lab import Lab
from cluster.limits import FDS_PROCESS, ensure_fd_limit, fds_needed
from node.errors import Unavailable
from tests.conftest import small_lab


def test_budget_per_node_and_per_process() -> None:
    """5 per node, +1 with the broker in the process, +4 with front doors, plus the process's own."""
    assert fds_needed(10, embedded_broker=False, front_doors=False).needed == FDS_PROCESS + 50
    assert fds_needed(10, embedded_broker=True, front_doors=False).needed == FDS_PROCESS + 60
    assert fds_needed(10, embedded_broker=True, front_doors=True).needed == FDS_PROCESS + 100
    assert fds_needed(1000, embedded_broker=False, front_doors=False).needed == FDS_PROCESS + 5000


async def test_a_running_lab_stays_inside_its_budget(tmp_path: Path, broker_url: str | None) -> None:
    """The per-node figure is measured, not guessed: a started lab opens no more than the budget says."""
    spec = small_lab(nodes=3, imp=1)
    before = len(os.listdir("/proc/self/fd"))
    lab = Lab(spec, tmp_path / "lab", broker_url=broker_url)
    try:
        await lab.start()
        opened = len(os.listdir("/proc/self/fd")) - before
    finally:
        await lab.stop()
    budget = fds_needed(4, embedded_broker=broker_url is None, front_doors=False)
    assert 4 * 4 <= opened <= budget.needed, (opened, budget)


def run_limited(code: str, soft: int, hard: int, cwd: Path) -> subprocess.CompletedProcess[str]:
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, "CERTSIM_HOME": str(cwd / "home")},
    )


def test_soft_limit_is_raised_within_the_hard_one(tmp_path: Path) -> None:
    """A soft limit below the need is raised when the hard limit allows it; nothing is refused."""
    proc = run_limited(
        """
        from cluster.limits import ensure_fd_limit, fds_needed
        print(ensure_fd_limit(fds_needed(100, embedded_broker=True, front_doors=False)))
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        """,
        soft=80,
        hard=4096,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(FDS_PROCESS + 600)] * 2


def test_too_low_a_hard_limit_is_refused_before_anything_starts(tmp_path: Path) -> None:
    """A 21-node lab with front doors under ulimit -n 150: one clear error naming the number it needs;
    no broker, node database or lab process is started."""
    lab_file = tmp_path / "big.yaml"
    nodes = [{"name": f"cucm{i:02d}", "role": "cucm"} for i in range(1, 22)]
    lab_file.write_text(
        yaml.safe_dump({"lab": "big", "security_password": "big-lab-password", "nodes": nodes}), encoding="utf-8"
    )
    proc = run_limited(
        f"""
        from cluster.cli import main
        main(["lab", "up", {str(lab_file)!r}, "--lab-dir", {str(tmp_path / "labdir")!r}])
        """,
        soft=150,
        hard=150,
        cwd=tmp_path,
    )
    needed = fds_needed(21, embedded_broker=True, front_doors=True).needed
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"needs about {needed} file descriptors" in proc.stderr
    assert "ulimit -n" in proc.stderr and "150" in proc.stderr
    assert not (tmp_path / "labdir").exists(), "refused before the lab directory was touched"


def test_the_check_refuses_in_process_too() -> None:
    """ensure_fd_limit itself refuses when even the hard limit is too low (the path Lab.start takes)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return  # nothing can be too much for an unlimited process; the subprocess test covers the refusal
    budget = fds_needed(hard, embedded_broker=True, front_doors=True)
    with pytest.raises(Unavailable, match=f"needs about {budget.needed} file descriptors"):
        ensure_fd_limit(budget)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_class_up_refuses_a_classroom_too_big_for_the_limit_before_anything_starts(tmp_path: Path) -> None:
    """class up --clusters 30 of the demo template (120 nodes with front doors, embedded broker) under
    ulimit -n 150: the same clear error with the number needed; no lab directory or process is made."""
    demo = Path(__file__).resolve().parents[2] / "scenarios" / "labs" / "demo.yaml"
    proc = run_limited(
        f"""
        from cluster.cli import main
        main(["class", "up", "--clusters", "30", "--template", {str(demo)!r}])
        """,
        soft=150,
        hard=150,
        cwd=tmp_path,
    )
    needed = fds_needed(120, embedded_broker=True, front_doors=True).needed
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"needs about {needed} file descriptors" in proc.stderr
    assert f"ulimit -n {needed}" in proc.stderr and "allows 150" in proc.stderr
    assert not (tmp_path / "home" / "labs").exists(), "refused before any lab directory was made"
