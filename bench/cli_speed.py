"""How long a ``certsim`` invocation takes, as a user types it: ``--version``, ``--help``, and
``cert list`` / ``lab status`` against a running lab; next to a bare ``python -c pass`` measured in the
same run (the interpreter's own start, which no CLI can beat).

Starts the demo lab in the background (``certsim lab up``, embedded broker) under a private
``$CERTSIM_HOME``, runs each command ``--runs`` times and prints the median, p90 and min wall time of
each, plus its ratio to the bare interpreter; then brings the lab down.

Run from the repository root::

    python bench/cli_speed.py               # 15 runs each
    python bench/cli_speed.py --runs 30 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO_LAB = Path(__file__).resolve().parent.parent / "scenarios" / "labs" / "demo.yaml"
TARGETS_S = {"--version": 0.2, "--help": 0.2, "cert list": 0.4}  # the targets, medians on this machine


def certsim_argv() -> list[str]:
    """The installed ``certsim`` script next to this interpreter (what a user runs), else ``-m cluster.cli``."""
    script = Path(sys.executable).with_name("certsim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall times of ``runs`` runs, after one unmeasured run (it compiles and caches bytecode)."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        if i:
            times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cli = certsim_argv()
    with tempfile.TemporaryDirectory(prefix="certsim-cli-bench-") as home:
        env = {**os.environ, "CERTSIM_HOME": home, "COLUMNS": "160", "CERTSIM_KEYPOOL_TARGET": "0"}
        if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:  # as users run it: with compiled bytecode
            env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / f"certsim-pycache-{os.getuid()}"))
        subprocess.run([*cli, "lab", "up", str(DEMO_LAB)], env=env, check=True, capture_output=True)
        try:
            series = {
                "python -c pass": timed([sys.executable, "-c", "pass"], env, args.runs),
                "--version": timed([*cli, "--version"], env, args.runs),
                "--help": timed([*cli, "--help"], env, args.runs),
                "cert list": timed(
                    [*cli, "cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust"], env, args.runs
                ),
                "cert list --json": timed([*cli, "cert", "list", "--node", "cucm-pub", "--json"], env, args.runs),
                "lab status": timed([*cli, "lab", "status"], env, args.runs),
            }
        finally:
            subprocess.run([*cli, "lab", "down"], env=env, check=False, capture_output=True)
    base = statistics.median(series["python -c pass"])
    rows = {
        name: {
            "median_s": round(statistics.median(t), 3),
            "p90_s": round(statistics.quantiles(t, n=10)[-1], 3),
            "min_s": round(min(t), 3),
            "x_python": round(statistics.median(t) / base, 1),
            "target_s": TARGETS_S.get(name),
        }
        for name, t in series.items()
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "cli": cli, "results": rows}, indent=2))
        return
    print(f"{args.runs} runs each, {' '.join(cli)}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':<18} {'median':>8} {'p90':>8} {'min':>8} {'x python':>9}  target")
    for name, r in rows.items():
        target = f"< {r['target_s']} s" if r["target_s"] else ""
        print(f"{name:<18} {r['median_s']:>7.3f}s {r['p90_s']:>7.3f}s {r['min_s']:>7.3f}s {r['x_python']:>9}  {target}")


if __name__ == "__main__":
    main()
