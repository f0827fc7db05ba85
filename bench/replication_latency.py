"""Replication latency of a tomcat-trust upload across a lab, against a raw aiomqtt fan-out.

Starts a broker (a private mosquitto by default) and a lab of N Unified CM nodes on it,
uploads distinct certificates to tomcat-trust on one node, one at a time, and times each
upload from the moment the control request is sent until every node holds the
certificate: the origin holds it when its request returns, every other node when it emits
its ``apply`` event (change committed). On the same broker and in the same process it times
a raw aiomqtt QoS 1 fan-out of a payload of the same size as the sealed change envelope to N
subscribers (publish sent -> acknowledged and received by all N): all uploads first, then as
many raw messages. With ``--interleave``, one raw message after each upload instead, started
once the lab has no work in flight (``quiesce``), so both series meet the same moments of a
shared, drifting machine (its raw p99 turned out noisier: see bench/README.md). ``--gap-ms`` adds
an idle pause before each timed upload and message (none by default).

Run from the repository root::

    python bench/replication_latency.py                     # 21 nodes, 200 uploads, mosquitto
    python bench/replication_latency.py --nodes 4 --uploads 50 --broker embedded --json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import gc
import json
import logging
import os
import random
import secrets
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509

from cluster.broker import EmbeddedBroker, MosquittoBroker
from cluster.keys import rsa_keys_to_install
from cluster.lab import History, Lab, QuietCollections, settle_heap
from cluster.labca import LabCA
from cluster.labfile import parse_lab
from node import certs
from node.catalog import MAX_CLUSTER_NODES, KeyAlgo
from node.dbthread import db_thread
from node.errors import CertsimError
from node.keypool import KeyPool
from replication.envelope import Envelope
from replication.hlc import Version
from replication.records import Record
from replication.transport import BrokerAddress

STORE = "tomcat-trust"
APPLY_TIMEOUT_S = 15.0
SETTLE_TIMEOUT_S = 120.0
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


# ---------------------------------------------------------------------------------------
# statistics


@dataclass(frozen=True)
class Summary:
    """Latency figures of one series, in milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    min: float
    max: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        ms = sorted(s * 1000 for s in seconds)
        if len(ms) < 2:
            only = ms[0] if ms else float("nan")
            return cls(len(ms), only, only, only, only, only)
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(len(ms), statistics.median(ms), cuts[89], cuts[98], ms[0], ms[-1])

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


BAND_RESAMPLES = 2000
BAND_SEED = 10  # the same resamples in every run: two runs' bands differ by their data only


def p99_ratio_band(certsim: Sequence[float], raw: Sequence[float], coverage: float = 0.9) -> tuple[float, float]:
    """How far the p99 ratio of these two series could move by chance: the central ``coverage`` of
    the ratios of ``BAND_RESAMPLES`` bootstrap resamples (each series drawn again, with replacement,
    at its own size). With 200 uploads a p99 is the third-largest sample, so one stray pause moves
    it; the band says whether a ratio is told apart from a target."""
    rng = random.Random(BAND_SEED)
    ratios = sorted(
        Summary.of(rng.choices(certsim, k=len(certsim))).p99 / Summary.of(rng.choices(raw, k=len(raw))).p99
        for _ in range(BAND_RESAMPLES)
    )
    tail = (1 - coverage) / 2
    return ratios[int(tail * (len(ratios) - 1))], ratios[round((1 - tail) * (len(ratios) - 1))]


# ---------------------------------------------------------------------------------------
# certsim: detect each node's application of a change without polling


class ApplyWatch(History):
    """A lab history that notes when each node applied the change of the upload in flight.

    Nodes call ``record`` synchronously from their message handler right after the change
    is committed, so ``time.perf_counter()`` here is the moment the node holds it.
    """

    def __init__(self) -> None:
        super().__init__(None)
        self.keep_in_memory = False  # 21 nodes x 200 uploads of events are not worth keeping
        self.events_seen: collections.Counter[str] = collections.Counter()
        self.repairs = 0  # state transfers that changed a node: anti-entropy had to fill a gap
        self.applied: dict[str, float] = {}
        self.origin_committed: float | None = None  # the origin's ``op`` event: its upload is committed
        self.last_event = time.perf_counter()
        self._origin: str | None = None
        self._expected: frozenset[str] = frozenset()
        self._done = asyncio.Event()

    def arm(self, origin: str, expected: Sequence[str]) -> asyncio.Event:
        self._origin = origin
        self._expected = frozenset(expected)
        self.applied = {}
        self.origin_committed = None
        self._done = asyncio.Event()
        if not self._expected:
            self._done.set()
        return self._done

    def disarm(self) -> None:
        self._origin = None
        self._expected = frozenset()

    def record(self, event: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.last_event = now
        kind = str(event.get("event"))
        self.events_seen[kind] += 1
        changed = int(event.get("changed") or 0)
        if kind == "state-in" and changed > 0:
            self.repairs += 1
        if (
            kind == "op"
            and event.get("op") == "upload"
            and self._origin is not None
            and event.get("node") == self._origin
        ):
            self.origin_committed = now
        if self._origin is None or changed <= 0:
            return
        if kind in ("apply", "state-in") and event.get("sender") == self._origin:
            node = str(event.get("node"))
            if node in self._expected and node not in self.applied:
                self.applied[node] = now
                if len(self.applied) == len(self._expected):
                    self._done.set()

    async def wait_quiet(self, quiet_s: float, limit_s: float) -> float:
        """Wait until no node has reported anything for ``quiet_s``; returns the seconds waited.

        Set-up only (this polls): right after start every node exchanges digests and full
        state transfers with every other, and a node busy with that backlog answers
        control requests late.
        """
        start = time.perf_counter()
        while time.perf_counter() - self.last_event < quiet_s:
            if time.perf_counter() - start > limit_s:
                raise RuntimeError(f"the lab was still busy {limit_s:g} s after start")
            await asyncio.sleep(0.1)
        return time.perf_counter() - start


def lab_spec_raw(nodes: int) -> dict[str, Any]:
    return {
        "lab": "bench-repl",
        "security_password": "bench-cluster-secret",
        "nodes": [{"name": f"node{i:02d}", "role": "cucm"} for i in range(1, nodes + 1)],
    }


async def make_certificates(
    lab: Lab, count: int, key_algo: KeyAlgo, pool: concurrent.futures.Executor
) -> tuple[list[bytes], float]:
    """``count`` CA-signed leaf certificates with distinct CNs, as PEM, and the seconds it took.

    Made in ``pool`` while the lab starts and settles, and awaited before anything is timed.
    """
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    ca = LabCA(lab.clock)
    ca.create_ca("bench-root", cn="certsim bench root CA")
    tag = secrets.token_hex(3)
    size = 256 if key_algo is KeyAlgo.EC else 2048

    def one(i: int) -> bytes:
        name = f"bench-{tag}-{i:04d}"
        return ca.issue(name, issuer="bench-root", cn=f"{name}.bench.example", key_algo=key_algo, key_size=size).pem()

    # keygen releases the GIL, so this uses the other core while the nodes install and settle;
    # a pool of its own keeps the nodes' own keygen (default executor) from queueing behind it
    pems = await asyncio.gather(*(loop.run_in_executor(pool, one, i) for i in range(count)))
    return list(pems), time.perf_counter() - start


def sealed_change(lab: Lab, origin: str, pem: bytes) -> bytes:
    """The envelope the origin publishes for one uploaded certificate, sealed as on the wire."""
    cert = x509.load_pem_x509_certificate(pem)
    rec = Record(STORE, certs.entry_name(cert), Version(lab.clock.now_ms(), 0, origin), certs.der_of(cert), origin)
    env = Envelope(kind="change", sender=origin, body={"records": [rec.to_json()]}, sent_ms=lab.clock.now_ms())
    return env.seal(lab.secret)


SHARED_PER_PROCESS = ("mac_open", "parse_json")  # replication.envelope.open_shared, records.records_from_json

ANTI_ENTROPY_KINDS = ("digest", "summary", "state", "certops-state")


def anti_entropy_messages(lab: Lab) -> int:
    """Messages the nodes sent besides their outbox (their own announcements and changes) and barriers."""
    return sum(a.stats[f"sent:{k}"] for a in lab.agents.values() for k in ANTI_ENTROPY_KINDS)


async def connect_digests_sent(lab: Lab) -> None:
    """Until every node has told its digest after connecting (the start-up anti-entropy has begun)."""
    deadline = time.perf_counter() + SETTLE_TIMEOUT_S
    while not all(a.stats["digests-sent"] >= 1 for a in lab.agents.values()):
        if time.perf_counter() > deadline:
            raise RuntimeError("a node never sent its connect digest")
        await asyncio.sleep(0.01)


async def settle(lab: Lab, watch: ApplyWatch) -> None:
    """Let the start-up anti-entropy burst die down, then check the lab has converged."""
    detail = ""
    for _attempt in range(3):
        await watch.wait_quiet(1.0, limit_s=SETTLE_TIMEOUT_S)
        try:
            conv = await lab.converge(timeout=60)
        except CertsimError as exc:  # a node still too busy to answer within 15 s
            detail = str(exc)
            continue
        if conv.converged:
            return
        detail = conv.detail
    raise RuntimeError(f"the lab did not converge before the run: {detail}")


async def quiesce(lab: Lab, limit_s: float = 1.0) -> bool:
    """Until no node has work in flight (the last upload's acknowledgements, the origin clearing
    its outbox, the database thread's calls), without letting the machine idle; False when the lab
    was still busy after ``limit_s`` (the report counts those)."""
    deadline = time.perf_counter() + limit_s
    thread = db_thread()
    while any(a.busy for a in lab.agents.values()) or not thread.idle:
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(0)
    return True


async def run_certsim(
    lab: Lab,
    watch: ApplyWatch,
    origin: str,
    pems: Sequence[bytes],
    warmup: int,
    between: RawFanout | None = None,
    gap_s: float = 0.0,
) -> tuple[list[float], list[float], list[float], list[float], float]:
    """Sequential uploads; returns (end-to-end, request round trip, last remote apply, replication)
    seconds and the event loop's CPU seconds per timed upload (this process hosts every node).
    Replication is the part after the origin committed the upload: from its ``op`` event until the
    last remote apply (the hop the raw fan-out is the bare transport of). With ``between``, one raw
    message follows each upload (timed by the fan-out itself, its CPU not counted here)."""
    others = [n for n in lab.spec.node_names if n != origin]
    payloads = [base64.b64encode(p).decode() for p in pems]
    total: list[float] = []
    reply: list[float] = []
    remote: list[float] = []
    replication: list[float] = []
    cpu = 0.0
    for i, data in enumerate(payloads):
        if gap_s:
            await asyncio.sleep(gap_s)
        cpu_start = time.thread_time()
        done = watch.arm(origin, others)
        t0 = time.perf_counter()
        result = await lab.request(origin, "upload", {"store": STORE, "data": data})
        t_reply = time.perf_counter()
        if not result.get("added") or not result.get("replicated"):
            raise RuntimeError(f"upload {i} was not added and replicated: {result}")
        try:
            await asyncio.wait_for(done.wait(), APPLY_TIMEOUT_S)
        except TimeoutError:
            missing = sorted(set(others) - set(watch.applied))
            raise RuntimeError(
                f"upload {i}: {len(missing)} node(s) did not apply it within {APPLY_TIMEOUT_S:g} s: {missing}"
            ) from None
        t_last = max(watch.applied.values(), default=t_reply)
        watch.disarm()
        if i >= warmup:
            total.append(max(t_reply, t_last) - t0)
            reply.append(t_reply - t0)
            remote.append(t_last - t0)
            if watch.origin_committed is None:
                raise RuntimeError(f"upload {i}: the origin reported no 'op' event for it")
            replication.append(t_last - watch.origin_committed)
            cpu += time.thread_time() - cpu_start
        if between is not None:
            if not await quiesce(lab):  # the raw message is not charged with the upload's trailing work
                between.unquiet += 1
            # (a quiet lab is no quiet process while a raw message is out: no full collection, no checkpoint)
            with QuietCollections.held(), db_thread().held():
                await between.one(i, timed=i >= warmup)
    return total, reply, remote, replication, cpu / max(1, len(payloads) - warmup)


async def measure_breakdown(lab: Lab, origin: str, pem: bytes, payload: bytes, tmp: Path) -> dict[str, float]:
    """Median microseconds of each step a receiving node takes for one change message, measured
    in isolation in this process: MAC check, JSON parsing, certificate parsing, the merge decision,
    the SQLite commit (a round trip to the database thread), one event-loop hop. (Sealing is the
    sender's, once per change.)"""
    from node.store import NodeStore  # noqa: PLC0415 - bench only
    from replication import core  # noqa: PLC0415
    from replication.envelope import open_envelope  # noqa: PLC0415

    def median_us(fn: Any, rounds: int = 300) -> float:
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1e6, 2)

    env = open_envelope(payload, lab.secret)
    raw_record = env.body["records"][0]
    rec = Record.from_json(raw_record)
    agent = lab.agents[origin]
    index = dict(agent.store.index)
    cutoff = lab.clock.now_ms() - 30 * 86_400_000
    out = {
        "mac_seal": median_us(lambda: env.seal(lab.secret)),
        "mac_open": median_us(lambda: open_envelope(payload, lab.secret)),
        "parse_json": median_us(lambda: Record.from_json(raw_record)),
        "parse_certificate": median_us(lambda: x509.load_der_x509_certificate(rec.der or b"")),
        "merge": median_us(lambda: core.plan_merge(index, [rec], cutoff)),
    }
    store = NodeStore(tmp / "breakdown.sqlite")
    await store.open()
    try:
        times = []
        for i in range(100):
            one = Record(STORE, f"bench-{i}", Version(lab.clock.now_ms(), i, "x"), rec.der, "x", rec.start_ms)
            t = time.perf_counter()
            async with store.transaction():  # as a receiving node's apply: the entry alone (its version is
                await store.put_entry(one)  # stored, so the clock needs no note: one autocommit statement)
            times.append(time.perf_counter() - t)
        out["sqlite_commit"] = round(statistics.median(times) * 1e6, 2)
    finally:
        await store.close()
    hops = []
    for _ in range(300):
        t = time.perf_counter()
        await asyncio.sleep(0)
        hops.append(time.perf_counter() - t)
    out["loop_hop"] = round(statistics.median(hops) * 1e6, 2)
    return out


async def measure_receive_path(lab: Lab, origin: str, rounds: int = 40) -> dict[str, float]:
    """The nodes' own share of a change: every node but the origin handed one sealed change message
    at once, straight into its message handler (no MQTT), as many times as ``rounds``; medians of the
    event loop's CPU and of the wall time until all applied it. Run last: it leaves the lab unconverged
    (the origin never held these)."""
    ca = LabCA(lab.clock)
    ca.create_ca("bench-receive-root", cn="certsim bench receive-path CA")
    tag = secrets.token_hex(3)
    receivers = [a for name, a in lab.agents.items() if name != origin]
    topic = receivers[0].config.topics.repl
    cpu: list[float] = []
    wall: list[float] = []
    for i in range(rounds):
        pem = ca.issue(
            f"rx-{tag}-{i}",
            issuer="bench-receive-root",
            cn=f"rx-{tag}-{i}.bench.example",
            key_algo=KeyAlgo.EC,
            key_size=256,
        ).pem()
        payload = sealed_change(lab, origin, pem)
        t, c = time.perf_counter(), time.thread_time()
        await asyncio.gather(*(agent._on_message(topic, payload) for agent in receivers))
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    for agent in receivers:
        if not any(r.name.startswith(f"rx-{tag}-") for r in await agent.store.entries(STORE)):
            raise RuntimeError(f"receive path: {agent.name} did not apply the changes handed to it")
    return {
        "receivers": len(receivers),
        "cpu_ms": round(statistics.median(cpu) * 1000, 3),
        "wall_ms": round(statistics.median(wall) * 1000, 3),
    }


# ---------------------------------------------------------------------------------------
# raw aiomqtt fan-out on the same broker


class RawFanout:
    """``subscribers`` aiomqtt clients subscribed at QoS 1 and one publisher, on the given broker:
    ``one`` publishes a payload (QoS 1) and times it until acknowledged and received by all."""

    def __init__(self, address: BrokerAddress, subscribers: int, payload: bytes, gap_s: float = 0.0) -> None:
        self.address = address
        self.gap_s = gap_s
        self.subscribers = subscribers
        self.body = payload[8:]
        self.run = secrets.token_hex(4)
        self.topic = f"certsim-bench/{self.run}/fanout"
        self.latencies: list[float] = []  # seconds of each timed message
        self.cpu = 0.0  # the event loop's CPU seconds over the timed messages
        self.unquiet = 0  # messages sent although the lab was still busy after a second (interleaved)
        self._received: set[int] = set()
        self._seq = -1
        self._last = 0.0
        self._done = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._readers: list[asyncio.Task[None]] = []
        self._pub: aiomqtt.Client | None = None

    def _client(self, name: str) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=f"bench-{self.run}-{name}",
            username="bench",  # amqtt wants a name; harmless on mosquitto
            clean_session=True,
            socket_options=NODELAY,  # as the nodes' bus sockets (replication.transport)
            keepalive=30,
            timeout=10,
        )

    async def _reader(self, index: int, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            now = time.perf_counter()
            body = message.payload
            if not isinstance(body, bytes | bytearray):
                continue
            if int.from_bytes(body[:8], "big") != self._seq or index in self._received:
                continue  # a duplicate (QoS 1) or a late copy of an earlier message
            self._received.add(index)
            self._last = now
            if len(self._received) == self.subscribers:
                self._done.set()

    async def __aenter__(self) -> RawFanout:
        try:
            subs = [await self._stack.enter_async_context(self._client(f"sub{i:02d}")) for i in range(self.subscribers)]
            for sub in subs:
                await sub.subscribe(self.topic, qos=1)
            self._readers = [
                asyncio.create_task(self._reader(i, c), name=f"raw-reader-{i}") for i, c in enumerate(subs)
            ]
            self._pub = await self._stack.enter_async_context(self._client("pub"))
            self._pub.pending_calls_threshold = 1_000_000
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        await self._stack.aclose()

    async def one(self, seq: int, *, timed: bool) -> None:
        assert self._pub is not None
        if self.gap_s:
            await asyncio.sleep(self.gap_s)
        self._received.clear()
        self._seq = seq
        self._done = asyncio.Event()
        cpu = time.thread_time()
        t0 = time.perf_counter()
        await self._pub.publish(self.topic, seq.to_bytes(8, "big") + self.body, qos=1)
        t_ack = time.perf_counter()
        try:
            await asyncio.wait_for(self._done.wait(), APPLY_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError(
                f"raw message {seq}: {self.subscribers - len(self._received)} subscriber(s) did not get it "
                f"within {APPLY_TIMEOUT_S:g} s"
            ) from None
        if timed:
            self.latencies.append(max(t_ack, self._last) - t0)
            self.cpu += time.thread_time() - cpu


async def run_raw(
    address: BrokerAddress, subscribers: int, payload: bytes, iterations: int, warmup: int, gap_s: float = 0.0
) -> tuple[list[float], float]:
    """Publish ``payload`` (QoS 1) to ``subscribers`` QoS 1 subscribers, one message at a time;
    returns the seconds of each and the event loop's CPU seconds per timed message."""
    # as the uploads did: from a collected heap, with full collections and WAL checkpoints put off (the
    # lab's quiet-moment collections and checkpoints wait, as they wait while an upload is in flight)
    gc.collect()
    with QuietCollections.held(), db_thread().held():
        async with RawFanout(address, subscribers, payload, gap_s) as raw:
            for seq in range(iterations):
                await raw.one(seq, timed=seq >= warmup)
    return raw.latencies, raw.cpu / max(1, iterations - warmup)


# ---------------------------------------------------------------------------------------
# the run


def print_report(report: dict[str, Any]) -> None:
    cs, raw = report["certsim"], report["raw"]
    rows = [
        ("certsim upload -> all nodes hold it", cs["end_to_end_ms"]),
        ("  of which: request round trip", cs["request_ms"]),
        ("  of which: last remote apply", cs["last_apply_ms"]),
        ("replication: origin commit -> all", cs["replication_ms"]),
        ("raw aiomqtt fan-out", raw["latency_ms"]),
    ]
    print()
    print(
        f"nodes {report['nodes']}, uploads {report['uploads']} (+{report['warmup']} warm-up), "
        f"broker {report['broker']}, {report['mode']}, gap {report['gap_ms']:g} ms, "
        f"payload {report['payload_bytes']} B "
        f"(sealed change envelope), certificate {report['leaf_key']} leaf"
    )
    print(f"{'series (ms)':<38}{'p50':>9}{'p90':>9}{'p99':>9}{'min':>9}{'max':>9}")
    for label, s in rows:
        print(f"{label:<38}{s['p50']:>9.2f}{s['p90']:>9.2f}{s['p99']:>9.2f}{s['min']:>9.2f}{s['max']:>9.2f}")
    lo, hi = report["ratio_p99_band"]
    print(
        f"{'ratio certsim / raw':<38}{report['ratio_p50']:>8.1f}x{'':>9}{report['ratio_p99']:>8.1f}x   "
        f"(p99 ratio in 90% of resamples: {lo:.1f}x-{hi:.1f}x)"
    )
    rep = report["replication_over_raw"]
    print(f"{'ratio replication / raw':<38}{rep['p50']:>8.1f}x{'':>9}{rep['p99']:>8.1f}x   (issue 10: the first)")
    starts = report["start_s"]
    print(
        f"{report['nodes']}-node cold start, settled and converged: {starts['cold']:.2f} s "
        f"(start {starts['cold_start']:.2f} s + settle {starts['cold_settle']:.2f} s); "
        f"warm start: {starts['warm']:.2f} s (start {starts['warm_start']:.2f} s + converge "
        f"{starts['warm_converge']:.2f} s)   [targets: cold < 5 s, warm < 1 s; p99 ratio <= 3x]"
    )
    per_node = report["start_messages_per_node"]
    print(
        f"start-up anti-entropy messages per node (digests, summaries, state transfers; beyond the nodes' "
        f"own announcements): cold {per_node['cold']:.2f}, warm {per_node['warm']:.2f}"
    )
    cpu, rx = report["loop_cpu_ms"], report["receive_path"]
    print(
        f"event loop CPU (one loop hosts every node): certsim {cpu['certsim_per_upload']:.2f} ms per upload, raw "
        f"{cpu['raw_per_message']:.2f} ms per message; of certsim's, the {rx['receivers']} receivers applying the "
        f"change without MQTT (their message handler called directly): {rx['cpu_ms']:.2f} ms CPU, "
        f"{rx['wall_ms']:.2f} ms until all committed"
    )
    b = report["breakdown_us"]
    receivers = report["nodes"] - 1
    print(f"where one change goes, per receiving node (us; x{receivers} receivers share one event loop here):")
    for label in ("mac_open", "parse_json", "parse_certificate", "merge", "sqlite_commit", "loop_hop"):
        # the nodes of one process share the opening of a broadcast and the parse of its records
        times = 1 if label in SHARED_PER_PROCESS else receivers
        note = "   (once per process: shared)" if times == 1 else ""
        print(f"  {label:<20}{b[label]:>10.1f} us   x{times:<2} = {b[label] * times / 1000:>7.2f} ms{note}")
    print(f"  {'mac_seal (sender)':<20}{b['mac_seal']:>10.1f} us")
    setup = report["setup_s"]
    print(
        f"setup: key pool filled ahead in {setup['key_pool_fill']:.1f} s, certificates {setup['certificates']:.1f} s "
        f"before the start; anti-entropy repairs during the run: {cs['repairs']}; WAL checkpoints during the "
        f"run: {cs['wal_checkpoints']['ran']} ({cs['wal_checkpoints']['forced']} forced by a full log)"
    )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    broker: EmbeddedBroker | MosquittoBroker = EmbeddedBroker() if args.broker == "embedded" else MosquittoBroker()
    watch = ApplyWatch()
    spec = parse_lab(lab_spec_raw(args.nodes), source="bench")
    origin = spec.node_names[0]
    key_algo = {"rsa": KeyAlgo.RSA, "ec": KeyAlgo.EC}[args.leaf_key]
    # SIGTERM cancels the run like Ctrl-C does, so the lab and the mosquitto child are stopped
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    lab: Lab | None = None
    previous_source = certs.use_key_source(None)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="bench-keygen")
    with tempfile.TemporaryDirectory(prefix="certsim-bench-") as tmp:
        try:
            await broker.start()
            # Lab.start probes the port with a bare TCP connect, which amqtt logs as an error
            logging.getLogger("amqtt.broker").setLevel(logging.CRITICAL)
            lab = Lab(spec, Path(tmp) / "lab", broker_url=broker.url, history=watch)

            # Keys made ahead (as ``$CERTSIM_HOME/keypool`` does for ``certsim lab up``), timed apart:
            # the installs and the leaf certificates take theirs from the pool.
            keypool = KeyPool(Path(tmp) / "keypool")
            leaf_rsa = args.uploads + args.warmup if key_algo is KeyAlgo.RSA else 0
            t = time.perf_counter()
            keypool.fill(rsa_keys_to_install(spec) + leaf_rsa)
            t_pool = time.perf_counter() - t
            previous_source = certs.use_key_source(keypool)
            pems, t_certs = await make_certificates(lab, args.warmup + args.uploads, key_algo, pool)

            # cold start: every node installs, connects, tells its digest; until the lab has converged
            t = time.perf_counter()
            await lab.start()
            t_start = time.perf_counter() - t
            t = time.perf_counter()
            await connect_digests_sent(lab)
            conv = await lab.converge(timeout=60)
            t_conv = time.perf_counter() - t
            if not conv.converged:
                raise RuntimeError(f"the cold-started lab did not converge: {conv.detail}")
            await settle(lab, watch)  # untimed: nothing may still be moving when the uploads start
            settle_heap()  # as a lab process does after its start (``certsim lab up``)
            start_messages = anti_entropy_messages(lab)
            repairs_before = watch.repairs
            thread = db_thread()  # (this lab's, until it is stopped for the warm start)
            checkpoints_before = (thread.checkpoints, thread.checkpoints_forced)

            payload = sealed_change(lab, origin, pems[-1])
            gap_s = args.gap_ms / 1000
            if not args.interleave:
                total, reply, remote, replication, cpu_certsim = await run_certsim(
                    lab, watch, origin, pems, args.warmup, gap_s=gap_s
                )
                raw, cpu_raw = await run_raw(
                    broker.address, args.nodes, payload, args.warmup + args.uploads, args.warmup, gap_s
                )
            else:
                async with RawFanout(broker.address, args.nodes, payload, gap_s) as fanout:
                    total, reply, remote, replication, cpu_certsim = await run_certsim(
                        lab, watch, origin, pems, args.warmup, between=fanout, gap_s=gap_s
                    )
                raw, cpu_raw = fanout.latencies, fanout.cpu / max(1, args.uploads)
                if fanout.unquiet:
                    print(
                        f"warning: {fanout.unquiet} raw message(s) sent while the lab was still busy", file=sys.stderr
                    )
            repairs = watch.repairs - repairs_before
            # WAL checkpoints that ran while the uploads and the raw messages were timed (they wait for a
            # quiet moment, so only those forced by a log past node.dbthread.WAL_FORCE_BYTES should show)
            checkpoints = thread.checkpoints - checkpoints_before[0]
            checkpoints_forced = thread.checkpoints_forced - checkpoints_before[1]
            breakdown = await measure_breakdown(lab, origin, pems[-1], payload, Path(tmp))

            # warm start: the same lab directory (installed, in sync) started again
            await lab.stop()
            lab = Lab(spec, Path(tmp) / "lab", broker_url=broker.url, history=watch)
            t = time.perf_counter()
            await lab.start()
            t_warm_start = time.perf_counter() - t
            t = time.perf_counter()
            await connect_digests_sent(lab)
            conv = await lab.converge(timeout=60)
            t_warm_conv = time.perf_counter() - t
            if not conv.converged:
                raise RuntimeError(f"the warm-started lab did not converge: {conv.detail}")
            await settle(lab, watch)
            warm_messages = anti_entropy_messages(lab)
            receive_path = await measure_receive_path(lab, origin)
        finally:
            certs.use_key_source(previous_source)
            pool.shutdown(wait=False, cancel_futures=True)
            if lab is not None:
                await lab.stop()
            await broker.stop()
            watch.close()

    cs_total, raw_s = Summary.of(total), Summary.of(raw)
    return {
        "nodes": args.nodes,
        "uploads": args.uploads,
        "warmup": args.warmup,
        "broker": args.broker,
        "mode": "interleaved" if args.interleave else "sequential",
        "gap_ms": args.gap_ms,
        "origin": origin,
        "leaf_key": args.leaf_key,
        "payload_bytes": len(payload),
        "certsim": {
            "end_to_end_ms": cs_total.as_dict(),
            "request_ms": Summary.of(reply).as_dict(),
            "last_apply_ms": Summary.of(remote).as_dict(),
            "replication_ms": Summary.of(replication).as_dict(),
            "repairs": repairs,
            "wal_checkpoints": {"ran": checkpoints, "forced": checkpoints_forced},
        },
        "raw": {"latency_ms": raw_s.as_dict(), "subscribers": args.nodes},
        "ratio_p50": round(cs_total.p50 / raw_s.p50, 2),
        "ratio_p99": round(cs_total.p99 / raw_s.p99, 2),
        "ratio_p99_band": [round(r, 2) for r in p99_ratio_band(total, raw)],
        "replication_over_raw": {
            "p50": round(Summary.of(replication).p50 / raw_s.p50, 2),
            "p99": round(Summary.of(replication).p99 / raw_s.p99, 2),
        },
        "breakdown_us": breakdown,
        "loop_cpu_ms": {
            "certsim_per_upload": round(cpu_certsim * 1000, 3),
            "raw_per_message": round(cpu_raw * 1000, 3),
        },
        "receive_path": receive_path,
        "start_s": {
            "cold": round(t_start + t_conv, 2),
            "cold_start": round(t_start, 2),
            "cold_settle": round(t_conv, 2),
            "warm": round(t_warm_start + t_warm_conv, 2),
            "warm_start": round(t_warm_start, 2),
            "warm_converge": round(t_warm_conv, 2),
        },
        "start_messages_per_node": {
            "cold": round(start_messages / args.nodes, 2),
            "warm": round(warm_messages / args.nodes, 2),
        },
        "setup_s": {
            "key_pool_fill": round(t_pool, 2),
            "certificates": round(t_certs, 2),
            "lab_start": round(t_start, 2),
            "converge": round(t_conv, 2),
        },
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=MAX_CLUSTER_NODES, help="lab size (2..21, default 21)")
    parser.add_argument("--uploads", type=int, default=200, help="timed uploads (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed uploads first (default 10)")
    parser.add_argument("--broker", choices=("mosquitto", "embedded"), default="mosquitto")
    parser.add_argument(
        "--leaf-key",
        choices=("rsa", "ec"),
        default="rsa",
        help="key of the uploaded leaf certificates (default rsa)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="one raw message after each upload (default: all uploads, then all raw messages)",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="all uploads, then all raw messages: the default (kept for scripts that pass it)",
    )
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="idle pause before each timed upload and raw message, in ms (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= MAX_CLUSTER_NODES:
        parser.error(f"--nodes must be between 2 and {MAX_CLUSTER_NODES}")
    if args.uploads < 1 or args.warmup < 0:
        parser.error("--uploads must be at least 1 and --warmup not negative")
    if args.interleave and args.sequential:
        parser.error("--interleave and --sequential exclude each other")
    if not 0 <= args.gap_ms <= 1000:
        parser.error("--gap-ms must be between 0 and 1000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    t = time.perf_counter()
    try:
        report = asyncio.run(main_async(args))
    except FileNotFoundError as exc:  # no mosquitto binary
        print(f"error: {exc}; or use --broker embedded", file=sys.stderr)
        return 2
    except (RuntimeError, CertsimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; lab and broker stopped", file=sys.stderr)
        return 130
    report["wall_s"] = round(time.perf_counter() - t, 2)
    print_report(report)
    print(f"total wall time {report['wall_s']:.1f} s")
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    rc = main()
    if rc != 0:
        # A run interrupted while nodes were starting can leave a node's aiosqlite connection
        # open (Lab only learns of an agent once its start has returned), and aiosqlite's
        # non-daemon worker thread would then keep the process alive; the broker and the lab
        # directory are already cleaned up, so leave without waiting for it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)
