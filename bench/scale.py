"""Labs of 21, 200 and 1,000 nodes on mosquitto: memory, cold and warm start, convergence, and the latency
of a tomcat-trust upload reaching every node of its cluster next to a raw MQTT fan-out in the same run.

Each size is one multi-cluster lab file (clusters of at most 20 Unified CM nodes, 21 for the 21-node
size; front doors off) started the way a user starts it, ``certsim lab up FILE --broker URL --workers W``,
under a private ``$CERTSIM_HOME`` whose key pool is filled first (timed apart: that is the "ahead").

Per size it prints:

* **start**: cold (fresh lab directory: every node installs, from the key pool) and warm (the same
  directory again; with ``--warm-runs N``, the median of N such starts), wall seconds from ``lab up`` until
  every cluster answers; **converged** is the time
  from ``lab up`` until every node of every cluster reports the same replicated-store digests and an
  empty outbox;
* **RSS** of every lab process (``/proc/PID/status`` VmRSS) and per node;
* **upload**: p50/p99 ms from sending a tomcat-trust upload to the publisher of the first cluster until
  every other node of that cluster applied it (the ``apply`` events of the cluster's ``history.jsonl``,
  wall clock of this machine), next to **raw**: a QoS 1 message of the same size published to as many
  aiomqtt subscribers on the same broker, in the same run.

Run from the repository root::

    python bench/scale.py                          # 21, 200, 1000 nodes; workers = cores
    python bench/scale.py --sizes 21,200 --uploads 50 --json
    python bench/scale.py --sizes 21 --warm-runs 9       # the 21-node warm-start target: a median
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from cluster import running as rl
from cluster.broker import MosquittoBroker
from cluster.classroom import CLASS_STATE, cluster_dir
from cluster.keys import rsa_keys_to_install
from cluster.labca import LabCA
from cluster.labdir import HISTORY_FILE
from cluster.labfile import parse_clusters
from node.keypool import KeyPool
from replication.transport import BrokerAddress

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
TARGETS = (
    "targets: 1,000 nodes under 1 GiB in total and converged within 60 s; 200-node upload p99 under 80 ms; "
    "21 nodes cold under 5 s, warm under 1 s (here through `certsim lab up`: process start and imports included)"
)


def lab_mapping(nodes: int) -> dict[str, Any]:
    """``nodes`` nodes in clusters of 20 (one cluster of 21 for 21): c01, c02 .."""
    sizes = [nodes] if nodes <= 21 else [20] * (nodes // 20) + ([nodes % 20] if nodes % 20 else [])
    clusters = [
        {
            "cluster": f"c{i:02d}",
            "security_password": f"bench-cluster-{i:02d}-secret",
            "nodes": [{"name": f"n{j:02d}", "role": "cucm"} for j in range(1, size + 1)],
        }
        for i, size in enumerate(sizes, start=1)
    ]
    return {"lab": f"scale{nodes}", "front_doors": {"enabled": False}, "clusters": clusters}


def certsim(*args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"certsim {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def wait_converged(lab_dir: Path, names: tuple[str, ...], limit_s: float) -> None:
    """Until every node of every cluster answers with one digest per cluster and nothing queued."""
    deadline = time.monotonic() + limit_s
    pending = set(names)
    gate = asyncio.Semaphore(8)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"not converged within {limit_s:g} s: {sorted(pending)[:5]}")

        async def check(name: str) -> str | None:
            running = rl.read_running(cluster_dir(lab_dir, name))
            if running is None:
                return name
            async with rl.connect(running) as client:
                st = await rl.statuses(client, timeout=10)
            if any(s is None or s["outbox"] for s in st.values()):
                return name
            if len({json.dumps(s["digests"], sort_keys=True) for s in st.values() if s is not None}) != 1:
                return name
            return None

        async def bounded(name: str, limit: asyncio.Semaphore) -> str | None:
            async with limit:
                return await check(name)

        pending = {n for n in await asyncio.gather(*(bounded(n, gate) for n in sorted(pending))) if n is not None}
        if pending:
            await asyncio.sleep(0.5)


def count_applies(history: Path, offset: int, origin: str) -> tuple[int, list[float], int]:
    """apply / state-in events of ``origin``'s changes written since ``offset``: (count, wall times, new offset)."""
    with history.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    walls = []
    for line in data[:end].splitlines():
        event = json.loads(line)
        if (
            event.get("event") in ("apply", "state-in")
            and event.get("sender") == origin
            and int(event.get("changed") or 0)
        ):
            walls.append(float(event["wall"]))
    return len(walls), walls, offset + end


async def upload_latency(lab_dir: Path, cluster: str, uploads: int, warmup: int) -> tuple[list[float], int]:
    """Seconds from sending each upload until the cluster's other nodes applied it; and its envelope size."""
    running = rl.read_running(cluster_dir(lab_dir, cluster))
    assert running is not None
    history = cluster_dir(lab_dir, cluster) / HISTORY_FILE
    nodes = running.spec.node_names
    origin = nodes[0]
    ca = LabCA(running.state.clock(running.lab_dir))
    root = ca.create_ca("ScaleRoot")
    pems = [ca.issue(f"Scale{i:04d}", issuer="ScaleRoot", cn=f"scale {i}").pem() for i in range(uploads + warmup)]
    del root
    results: list[float] = []
    async with rl.connect(running) as client:
        offset = history.stat().st_size
        for i, pem in enumerate(pems):
            t0 = time.time()
            await client.request(origin, "upload", {"store": "tomcat-trust", "data": base64.b64encode(pem).decode()})
            seen: list[float] = []
            deadline = time.monotonic() + 30
            while len(seen) < len(nodes) - 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"upload {i}: {len(nodes) - 1 - len(seen)} node(s) did not apply it in 30 s")
                _, walls, offset = count_applies(history, offset, origin)
                seen += walls
                if len(seen) < len(nodes) - 1:
                    await asyncio.sleep(0.002)
            if i >= warmup:
                results.append(max(seen) - t0)
    return results, len(pems[0]) * 4 // 3 + 600  # base64 body plus the envelope's fields


async def raw_fanout(address: BrokerAddress, subscribers: int, size: int, iterations: int) -> list[float]:
    """A QoS 1 message of ``size`` bytes to ``subscribers`` QoS 1 subscribers, one at a time."""
    run = secrets.token_hex(4)
    topic = f"certsim-bench/{run}/fanout"
    got: set[int] = set()
    state: dict[str, Any] = {"seq": -1, "last": 0.0, "done": asyncio.Event()}

    def client(name: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            address.host, address.port, identifier=f"scale-{run}-{name}", socket_options=NODELAY, timeout=10
        )

    async def reader(index: int, c: aiomqtt.Client) -> None:
        async for message in c.messages:
            body = message.payload
            ours = isinstance(body, bytes | bytearray) and int.from_bytes(body[:8], "big") == state["seq"]
            if ours and index not in got:
                got.add(index)
                state["last"] = time.perf_counter()
                if len(got) == subscribers:
                    state["done"].set()

    results = []
    async with contextlib.AsyncExitStack() as stack:
        subs = [await stack.enter_async_context(client(f"s{i}")) for i in range(subscribers)]
        for s in subs:
            await s.subscribe(topic, qos=1)
        tasks = [asyncio.create_task(reader(i, s)) for i, s in enumerate(subs)]
        pub = await stack.enter_async_context(client("pub"))
        pub.pending_calls_threshold = 1_000_000
        try:
            for seq in range(iterations):
                got.clear()
                state["seq"], state["done"] = seq, asyncio.Event()
                t0 = time.perf_counter()
                await pub.publish(topic, seq.to_bytes(8, "big") + b"x" * max(size - 8, 0), qos=1)
                await asyncio.wait_for(state["done"].wait(), 15)
                results.append(state["last"] - t0)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await t
    return results


def pct(values: list[float], q: int) -> float:
    ms = sorted(v * 1000 for v in values)
    if len(ms) < 2:
        return ms[0] if ms else float("nan")
    return statistics.quantiles(ms, n=100, method="inclusive")[q - 1]


async def one_size(
    nodes: int, broker: MosquittoBroker, workers: int, uploads: int, home: Path, warm_runs: int = 1
) -> dict[str, Any]:
    raw = lab_mapping(nodes)
    multi = parse_clusters(raw, "bench")
    lab_file = home / f"scale{nodes}.yaml"
    lab_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    lab_dir = home / "labs" / multi.name
    env = {**os.environ, "CERTSIM_HOME": str(home), "CERTSIM_KEYPOOL_TARGET": "0", "COLUMNS": "200"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run it: with compiled bytecode
    pool = KeyPool(home / "keypool")
    need = sum(rsa_keys_to_install(c) for c in multi.clusters)
    t = time.perf_counter()
    pool.fill(need)
    fill_s = time.perf_counter() - t
    workers = min(workers, len(multi.clusters))  # a process without a cluster would only add its base
    result: dict[str, Any] = {"nodes": nodes, "clusters": len(multi.clusters), "workers": workers}
    result["key_pool_fill_s"] = round(fill_s, 1)
    up = ["lab", "up", str(lab_file), "--broker", broker.url, "--workers", str(workers), "--timeout", "900"]
    warm: list[tuple[float, float]] = []
    for phase in ("cold", *["warm"] * warm_runs):
        t0 = time.perf_counter()
        certsim(*up, env=env)
        started = time.perf_counter() - t0
        await wait_converged(lab_dir, multi.names, 900)
        converged = time.perf_counter() - t0
        if phase == "warm":
            warm.append((started, converged))
            started, converged = (statistics.median(t) for t in zip(*warm, strict=True))
        result[f"{phase}_start_s"] = round(started, 2)
        result[f"{phase}_converged_s"] = round(converged, 2)
        pids = json.loads((lab_dir / CLASS_STATE).read_text())["workers"]
        if phase == "cold":
            rss = {pid: rss_kib(pid) for pid in pids}
            result["rss_mib_per_process"] = [round(v / 1024, 1) for v in rss.values()]
            result["rss_mib_total"] = round(sum(rss.values()) / 1024, 1)
            result["rss_kib_per_node"] = round(sum(rss.values()) / nodes)
            lat, size = await upload_latency(lab_dir, multi.names[0], uploads, warmup=3)
            fan = await raw_fanout(BrokerAddress.parse(broker.url), len(multi.clusters[0].nodes) - 1, size, uploads)
            result["upload_ms"] = {"p50": round(pct(lat, 50), 2), "p99": round(pct(lat, 99), 2)}
            result["raw_fanout_ms"] = {"p50": round(pct(fan, 50), 2), "p99": round(pct(fan, 99), 2)}
            result["upload_over_raw_p50"] = round(pct(lat, 50) / pct(fan, 50), 1)
            result["upload_over_raw_p99"] = round(pct(lat, 99) / pct(fan, 99), 1)
        certsim("class", "down", "--lab", multi.name, env=env)
    return result


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    broker = MosquittoBroker()
    await broker.start()
    out = []
    try:
        for size in args.sizes:
            with tempfile.TemporaryDirectory(prefix=f"certsim-scale-{size}-") as home:
                out.append(await one_size(size, broker, args.workers, args.uploads, Path(home), args.warm_runs))
                if not args.json:
                    print_row(out[-1])
    finally:
        await broker.stop()
    return out


def print_row(r: dict[str, Any]) -> None:
    print(
        f"{r['nodes']:>5} nodes ({r['clusters']} clusters, {r['workers']} processes): "
        f"RSS {r['rss_mib_total']} MiB total {r['rss_mib_per_process']}, {r['rss_kib_per_node']} KiB/node; "
        f"cold start {r['cold_start_s']} s (converged {r['cold_converged_s']} s), "
        f"warm start {r['warm_start_s']} s (converged {r['warm_converged_s']} s); "
        f"upload p50/p99 {r['upload_ms']['p50']}/{r['upload_ms']['p99']} ms vs raw fan-out "
        f"{r['raw_fanout_ms']['p50']}/{r['raw_fanout_ms']['p99']} ms (x{r['upload_over_raw_p50']} at p50, "
        f"x{r['upload_over_raw_p99']} at p99); "
        f"key pool filled ahead in {r['key_pool_fill_s']} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[21, 200, 1000])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument(
        "--warm-runs", type=int, default=1, help="warm starts per size; their median is printed (e.g. 9 for 21 nodes)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(TARGETS)


if __name__ == "__main__":
    main()
