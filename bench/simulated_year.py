"""A simulated year on a 21-node lab: expiry monitor, OCSP checks and anti-entropy all running.

Starts a lab (21 nodes by default: a publisher, 15 Unified CM subscribers, 5 IM and
Presence nodes), enables the expiry monitor's e-mail on the publisher, uploads a CA that
expires on day 380 to tomcat-trust (replicated everywhere, so every node warns from day
350) and, unless ``--no-ocsp``, a CA-signed certificate with the lab OCSP responder in its
AIA, with OCSP enabled on every node. Then it advances the lab clock by ``--days`` in one
jump: every resync (1800 s), monitor run (24 h, hourly near expiry) and OCSP check due on
the way fires in order at its own simulated time. It prints the wall seconds of the jump,
simulated days per wall second, and what fired.

Run from the repository root::

    python bench/simulated_year.py                      # 21 nodes, 365 days, embedded broker
    python bench/simulated_year.py --broker mosquitto --repeat 3 --json
    python bench/simulated_year.py --phones 1000        # also a run with 1,000 phones: their cost beside it
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cluster.broker import MosquittoBroker
from cluster.lab import Lab
from cluster.labca import LabCA
from cluster.labfile import parse_lab
from node.catalog import MAX_CLUSTER_NODES


def lab_spec(nodes: int, phones: int = 0) -> Any:
    imp = min(5, max(0, nodes - 2))
    cucm = nodes - imp
    spec = [{"name": "cucm-pub", "role": "cucm", "publisher": True}]
    spec += [{"name": f"cucm-sub{i}", "role": "cucm"} for i in range(1, cucm)]
    spec += [{"name": f"imp{i}", "role": "imp"} for i in range(1, imp + 1)]
    extra = {"phones": {"count": phones}} if phones else {}
    return parse_lab({"lab": "year", "security_password": "bench-cluster-pw", "nodes": spec, **extra})


async def setup_ocsp(lab: Lab, ca: LabCA) -> Any:
    """Start the lab CA's responder and enable OCSP on every node (needs the OCSP wiring)."""
    from cluster.ocsp import OcspResponder  # noqa: PLC0415 - only with --ocsp

    responder = OcspResponder(ca, lab.clock)
    await responder.start()
    root = ca.create_ca("bench-ocsp-root", days=3650)
    leaf = ca.issue("bench-ocsp-leaf", issuer="bench-ocsp-root", days=3000, ocsp_url=responder.url)
    pem = root.pem() + leaf.pem()
    await lab.request("cucm-pub", "upload", {"store": "tomcat-trust", "data": base64.b64encode(pem).decode()})
    for node in lab.spec.node_names:
        await lab.request(node, "ocsp_set", {"enabled": True})
    return responder


async def phones_cost(lab: Lab, phase: str, costs: dict[str, Any]) -> None:
    """--phones: power the phones on (each boots from its TFTP node), later regenerate CallManager on
    the publisher so every phone resets automatically (R-PHONE-4); wall seconds of each."""
    from cluster.phones import fleet  # noqa: PLC0415 - only with --phones

    t = time.perf_counter()
    f = await fleet(lab)
    if phase == "after":
        await lab.request("cucm-pub", "regen", {"unit": "CallManager"})
        await f.settle()
    costs[f"phones_{'boot' if phase == 'before' else 'auto_reset'}_s"] = round(time.perf_counter() - t, 2)
    costs[f"phone_states_{phase}"] = f.summary()["states"]


async def one_run(args: argparse.Namespace, broker_url: str | None, phones: int = 0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="certsim-year-") as tmp:
        lab = Lab(lab_spec(args.nodes, phones), Path(tmp), broker_url=broker_url)
        costs: dict[str, Any] = {}
        t0 = time.perf_counter()
        await lab.start()
        conv = await lab.converge(timeout=120)
        if not conv.converged:
            raise SystemExit(f"lab did not converge: {conv.detail}")
        start_s = time.perf_counter() - t0
        responder = None
        try:
            ca = LabCA(lab.clock)
            expiring = ca.create_ca("bench-expires-day-380", days=380)
            data = base64.b64encode(expiring.pem()).decode()
            await lab.request("cucm-pub", "upload", {"store": "tomcat-trust", "data": data})
            await lab.request("cucm-pub", "monitor_set", {"email_enabled": True, "emails": "pki-team@lab.example"})
            if args.ocsp:
                responder = await setup_ocsp(lab, ca)
            await lab.converge(timeout=60)
            if phones:
                await phones_cost(lab, "before", costs)
            t1 = time.perf_counter()
            steps = await lab.advance(dt.timedelta(days=args.days))
            wall = time.perf_counter() - t1
            conv = await lab.converge(timeout=120)
            if phones:
                await phones_cost(lab, "after", costs)
            stats: dict[str, int] = {}
            for agent in lab.agents.values():
                for key, value in agent.stats.items():
                    stats[key] = stats.get(key, 0) + value
            alarms = 0
            for node in lab.spec.node_names:
                alarms += len(await lab.request(node, "syslog", {}))
            mails = len(lab.smtp.messages) if lab.smtp is not None else 0
            return {
                "nodes": args.nodes,
                "days": args.days,
                "lab_start_s": round(start_s, 1),
                "wall_s": round(wall, 2),
                "sim_days_per_wall_s": round(args.days / wall, 1),
                "timer_steps": steps,
                "resync_fires": stats.get("resync-timer", 0),
                "digests_sent": stats.get("digests-sent", 0),
                "monitor_runs": stats.get("monitor-runs", 0),
                "ocsp_checks": stats.get("ocsp-checks", 0),
                "alarms": alarms,
                "mails": mails,
                "converged_after": conv.converged,
                "phones": phones,
                **costs,
            }
        finally:
            if responder is not None:
                await responder.stop()
            await lab.stop()


async def main(args: argparse.Namespace) -> None:
    mosquitto = None
    broker_url = None
    if args.broker == "mosquitto":
        mosquitto = MosquittoBroker()
        await mosquitto.start()
        broker_url = mosquitto.url
    try:
        runs = []
        for i in range(args.repeat):
            run = await one_run(args, broker_url)
            runs.append(run)
            if not args.json:
                print(f"run {i + 1}: {json.dumps(run)}", file=sys.stderr)
        with_phones: list[dict[str, Any]] = []  # --phones: same runs, same broker
        for i in range(args.repeat if args.phones else 0):
            run = await one_run(args, broker_url, args.phones)
            with_phones.append(run)
            if not args.json:
                print(f"run {i + 1} with phones: {json.dumps(run)}", file=sys.stderr)
    finally:
        if mosquitto is not None:
            await mosquitto.stop()
    wall = statistics.median(r["wall_s"] for r in runs)
    summary = {
        "broker": args.broker,
        "nodes": args.nodes,
        "days": args.days,
        "ocsp": args.ocsp,
        "runs": len(runs),
        "median_wall_s": wall,
        "median_sim_days_per_wall_s": round(args.days / wall, 1),
        "goal_wall_s": 30,
        "last_run": runs[-1],
        "with_phones": with_phones[-1] if with_phones else None,
        "median_with_phones_wall_s": statistics.median(r["wall_s"] for r in with_phones) if with_phones else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    last = runs[-1]
    print(
        f"simulated {args.days} days on {args.nodes} nodes ({args.broker} broker, OCSP {'on' if args.ocsp else 'off'})"
    )
    print(f"  wall time of the jump (median of {len(runs)}): {wall:.2f} s  -> {args.days / wall:.1f} sim days / wall s")
    print(f"  goal: under 30 s -> {'met' if wall < 30 else 'NOT met'} ({wall / 30:.2f} of the budget)")
    print(
        f"  fired: {last['timer_steps']} timer steps, {last['resync_fires']} resyncs "
        f"({last['digests_sent']} digest broadcasts), {last['monitor_runs']} monitor runs, "
        f"{last['ocsp_checks']} OCSP checks; {last['alarms']} alarms, {last['mails']} mails"
    )
    print(f"  lab start (not timed): {last['lab_start_s']} s; converged after the jump: {last['converged_after']}")
    if with_phones:
        pw = statistics.median(r["wall_s"] for r in with_phones)
        boot = statistics.median(r["phones_boot_s"] for r in with_phones)
        auto = statistics.median(r["phones_auto_reset_s"] for r in with_phones)
        ph = with_phones[-1]
        n = len(with_phones)
        print(f"  with {args.phones} phones: jump {pw:.2f} s ({pw / wall:.2f}x the run without phones, medians of {n})")
        print(
            f"    power-on of every phone {boot:.2f} s -> {ph['phone_states_before']}; "
            f"CallManager regenerated, automatic reset {auto:.2f} s -> {ph['phone_states_after']} (medians of {n})"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=MAX_CLUSTER_NODES, help="lab size (default: %(default)s)")
    p.add_argument("--days", type=int, default=365, help="simulated days to advance (default: %(default)s)")
    p.add_argument("--broker", choices=("embedded", "mosquitto"), default="embedded")
    p.add_argument("--no-ocsp", dest="ocsp", action="store_false", help="leave OCSP off")
    p.add_argument("--repeat", type=int, default=1, help="runs; the median is reported (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON summary")
    p.add_argument("--phones", type=int, default=0, help="also run with this many phones and print their cost")
    args = p.parse_args(argv)
    if not 2 <= args.nodes <= MAX_CLUSTER_NODES:
        p.error(f"--nodes must be between 2 and {MAX_CLUSTER_NODES}")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
