"""The seeded chaos runner: random operations under random faults, then the checker.

The seed fixes the schedule (which operation or fault, on which node, in which order), so
the same seed and code replay the same schedule; timing on a real broker still varies,
which is the point. The schedule, the seed and the checker's verdict go into results.json.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster import checker
from cluster.broker import MosquittoBroker
from cluster.lab import History, Lab
from cluster.labca import LabCA
from cluster.labfile import LabSpec, parse_lab
from cluster.report import write_report
from node.catalog import KeyAlgo, Role
from node.errors import CertsimError, Unavailable
from replication.hlc import Version

FAULTS = ("crash", "partition", "broker", "dup", "delay", "reorder")
# (store, weight) of uploads; CAPF-trust and ipsec-trust exercise locality, the rest replication.
STORE_WEIGHTS = (
    ("tomcat-trust", 4),
    ("CallManager-trust", 2),
    ("Phone-SAST-trust", 1),
    ("CAPF-trust", 2),
    ("ipsec-trust", 1),
)
FAULT_PROBABILITY = 0.3
_log = logging.getLogger("certsim.chaos")


@dataclass(frozen=True)
class ChaosConfig:
    seed: int
    nodes: int = 4
    ops: int = 30
    faults: tuple[str, ...] = FAULTS
    release: str = "15"
    op_timeout: float = 3.0
    converge_timeout: float = 60.0

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}")
        if not 2 <= self.nodes <= 21:
            raise ValueError("a chaos lab has 2 to 21 nodes")
        if self.ops < 1:
            raise ValueError("at least one operation")


@dataclass(frozen=True)
class Action:
    index: int
    kind: str  # upload delete crash restart partition heal broker faults clear
    node: str = ""
    args: dict[str, Any] = field(default_factory=dict)


def lab_spec(cfg: ChaosConfig) -> LabSpec:
    """N nodes: Unified CM nodes, the last one IM&P when the lab has five or more."""
    names = [f"node{i:02d}" for i in range(1, cfg.nodes + 1)]
    nodes = [
        {"name": n, "role": "imp" if cfg.nodes >= 5 and i == cfg.nodes - 1 else "cucm"} for i, n in enumerate(names)
    ]
    return parse_lab({"lab": "chaos", "security_password": "chaos-cluster-pw", "release": cfg.release, "nodes": nodes})


def schedule(cfg: ChaosConfig) -> list[Action]:
    """The operation and fault schedule drawn from the seed (pure: same seed, same schedule)."""
    rng = random.Random(cfg.seed)  # noqa: S311 - a test schedule, not security
    spec = lab_spec(cfg)
    roles = {n.name: n.role for n in spec.nodes}
    names = list(roles)
    pool = max(6, cfg.ops // 3)
    down: dict[str, int] = {}  # node -> steps until restart
    cut: dict[str, int] = {}  # node -> steps until heal
    linked: dict[str, int] = {}  # node -> steps until its link faults clear
    uploaded: list[tuple[str, int]] = []
    actions: list[Action] = []

    def add(kind: str, node: str = "", **args: Any) -> None:
        actions.append(Action(len(actions), kind, node, args))

    for _ in range(cfg.ops):
        for table, kind in ((down, "restart"), (cut, "heal"), (linked, "clear")):
            for node in sorted(table):
                table[node] -= 1
                if table[node] <= 0:
                    del table[node]
                    add(kind, node)
        if cfg.faults and rng.random() < FAULT_PROBABILITY:
            fault = rng.choice(cfg.faults)
            up = [n for n in names if n not in down]
            if fault == "crash" and len(up) > 2:
                node = rng.choice(up)
                down[node] = rng.randint(1, 4)
                cut.pop(node, None)
                linked.pop(node, None)
                add("crash", node)
            elif fault == "partition":
                free = [n for n in up if n not in cut]
                for node in rng.sample(free, min(len(free) - 1, rng.randint(1, max(1, cfg.nodes // 3)))):
                    cut[node] = rng.randint(2, 5)
                    add("partition", node)
            elif fault == "broker":
                add("broker", down_s=rng.choice((0.0, 0.3)))
            elif fault in ("dup", "delay", "reorder"):
                node = rng.choice(up)
                args = {
                    "duplicate": 0.3 if fault == "dup" else 0.0,
                    "delay_s": 0.05 if fault == "delay" else 0.0,
                    "reorder": 0.3 if fault == "reorder" else 0.0,
                    "seed": rng.randrange(10**6),
                }
                linked[node] = rng.randint(3, 6)
                add("faults", node, **args)
        node = rng.choice([n for n in names if n not in down] or names)
        if uploaded and rng.random() < 0.3:
            store, cert = rng.choice(uploaded)
            add("delete", node, store=store, cert=cert)
        else:
            stores = [
                (s, w) for s, w in STORE_WEIGHTS if roles[node] is Role.CUCM or s in ("tomcat-trust", "ipsec-trust")
            ]
            store = rng.choices([s for s, _ in stores], [w for _, w in stores])[0]
            cert = rng.randrange(pool)
            uploaded.append((store, cert))
            add("upload", node, store=store, cert=cert)
    for node in sorted(cut):
        add("heal", node)
    for node in sorted(linked):
        add("clear", node)
    for node in sorted(down):
        add("restart", node)
    return actions


_templates: dict[tuple[int, str], Path] = {}


async def _template(cfg: ChaosConfig) -> Path:
    """A lab directory with every node installed, made once per process and copied for each seed
    (RSA key generation would otherwise dominate a short chaos run)."""
    key = (cfg.nodes, cfg.release)
    if key not in _templates:
        base = Path(tempfile.mkdtemp(prefix="certsim-chaos-template-"))
        lab = Lab(lab_spec(cfg), base / "lab", log_dir=base / "logs")
        try:
            await lab.start()
            conv = await lab.converge(timeout=cfg.converge_timeout)
            if not conv.converged:
                raise Unavailable(f"the chaos template lab did not settle: {conv.detail}")
        finally:
            await lab.stop()
        _templates[key] = base / "lab"
    return _templates[key]


@dataclass
class ChaosReport:
    seed: int
    verdict: str
    results_dir: Path
    counts: dict[str, Any]
    convergence_s: float | None
    violations: list[dict[str, Any]]
    wall_s: float

    @property
    def exit_code(self) -> int:
        return {"valid": 0, "invalid": 1}.get(self.verdict, 2)


async def run_chaos(
    cfg: ChaosConfig,
    results_dir: Path,
    *,
    broker_url: str | None = None,
    progress: Callable[[Action], None] | None = None,
) -> ChaosReport:
    """Run one seed; ``broker_url`` None = embedded, "mosquitto" = a private mosquitto, else that URL."""
    started = time.perf_counter()
    try:
        if broker_url == "mosquitto":
            private = MosquittoBroker()
            await private.start()
            try:
                return await _run(cfg, results_dir, private.url, private, progress)
            finally:
                await private.stop()
        return await _run(cfg, results_dir, broker_url, None, progress)
    except Exception as exc:  # before or after the lab ran (broker, template): still a verdict, exit 2
        return _undecided(cfg, results_dir, f"the run could not start or end: {_reason(exc)}", started)


async def run_seeds(
    cfgs: list[ChaosConfig],
    base: Path,
    *,
    broker_url: str | None = None,
    jobs: int = 1,
    done: Callable[[ChaosReport], None] | None = None,
) -> list[ChaosReport]:
    """Several seeds, ``jobs`` of them at a time in this event loop (each its own lab, and its own broker
    unless ``broker_url`` names one), results under ``base/seed-N``; reports in the order of ``cfgs``.
    Seeds spend most of their time waiting on the bus, so running them side by side overlaps the waits."""
    for cfg in {(c.nodes, c.release): c for c in cfgs}.values():  # each template once, before seeds share it
        with contextlib.suppress(Exception):  # if it cannot be made, every seed reports why (exit 2)
            await _template(cfg)
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(cfg: ChaosConfig) -> ChaosReport:
        async with gate:
            report = await run_chaos(cfg, base / f"seed-{cfg.seed}", broker_url=broker_url)
        if done is not None:
            done(report)
        return report

    return list(await asyncio.gather(*(one(c) for c in cfgs)))


def _reason(exc: Exception) -> str:
    """Why a seed could not decide: our own errors say it; anything else is logged with its traceback."""
    if isinstance(exc, CertsimError):
        return exc.message
    _log.warning("chaos run failed", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"


def _undecided(cfg: ChaosConfig, results_dir: Path, reason: str, started: float) -> ChaosReport:
    """The report (and results.json) of a seed that could not decide."""
    wall = round(time.perf_counter() - started, 2)
    counts: dict[str, Any] = {"attempted": 0, "acknowledged": 0, "faults": {}, "messages": 0}
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "seed": cfg.seed,
        "config": asdict(cfg),
        "verdict": "unknown",
        "exit_code": 2,
        "counts": counts,
        "convergence_after_last_heal_s": None,
        "violations": [],
        "notes": [reason],
        "wall_seconds": wall,
    }
    (results_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    write_report(results_dir, {})  # report.html (cluster.report)
    return ChaosReport(cfg.seed, "unknown", results_dir, counts, None, [], wall)


async def _run(  # noqa: PLR0915 - one seed's phases in order: lab, schedule, heal, check, files
    cfg: ChaosConfig,
    results_dir: Path,
    broker_url: str | None,
    control: MosquittoBroker | None,
    progress: Callable[[Action], None] | None,
) -> ChaosReport:
    started = time.perf_counter()
    actions = schedule(cfg)
    spec = lab_spec(cfg)
    template = await _template(cfg)
    results_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - setup before the lab runs
    shutil.copytree(template / "nodes", results_dir / "lab" / "nodes")
    history = History(results_dir / "history.jsonl")
    lab = Lab(
        spec,
        results_dir / "lab",
        broker_url=broker_url,
        log_dir=results_dir / "nodes",
        history=history,
        broker_control=control,
    )
    ca = LabCA(lab.clock)
    pool = max(6, cfg.ops // 3)
    pems = await asyncio.to_thread(
        lambda: [ca.create_ca(f"chaos-{cfg.seed}-{i}", key_algo=KeyAlgo.EC, key_size=256).pem() for i in range(pool)]
    )
    names = [f"chaos-{cfg.seed}-{i}" for i in range(pool)]
    acked: list[checker.Op] = []
    maybe_deleted: set[tuple[str, str]] = set()
    injected: Counter[str] = Counter()
    attempted = succeeded = 0
    convergence_s: float | None = None
    rows: dict[str, list[dict[str, Any]]] = {}  # each node's trust list at the end (report.html's matrix)
    published = 0
    try:
        await lab.start()
        for action in actions:
            if progress is not None:
                progress(action)
            history.record({"event": "chaos", **asdict(action)})
            if action.kind in ("upload", "delete"):
                attempted += 1
                succeeded += await _operate(lab, action, pems, names, acked, maybe_deleted, cfg.op_timeout)
            else:
                injected[action.kind] += 1
                await _fault(lab, action)
        await lab.heal()
        t0 = time.perf_counter()
        for node in lab.running_nodes():  # the 1800 s resync, now: as restarting the sync agent does
            await lab.request(node, "resync")
        conv = await lab.converge(timeout=cfg.converge_timeout)
        convergence_s = time.perf_counter() - t0
        rows.update({n: await lab.request(n, "list", {"usage": "trust"}) for n in lab.running_nodes()})
        held = {n: checker.parse_rows(r) for n, r in rows.items()}
        roles = {n.name: n.role for n in spec.nodes}
        verdict = checker.check(held, roles, acked, spec.release, converged=conv.converged, maybe_deleted=maybe_deleted)
        published = sum(a.stats["published"] for a in lab.agents.values())
    except Exception as exc:  # a seed that could not decide gets a verdict (exit 2), not a traceback
        verdict = checker.Verdict("unknown", notes=[f"the run could not finish: {_reason(exc)}"])
    finally:
        await lab.stop()  # total: it logs a part that fails and stops the rest
        history.close()
    counts = {
        **verdict.counts,
        "attempted": attempted,
        "acknowledged": succeeded,
        "faults": dict(injected),
        "messages": published,
        "messages_per_operation": round(published / max(1, succeeded), 2),
    }
    report = ChaosReport(
        cfg.seed,
        verdict.verdict,
        results_dir,
        counts,
        None if convergence_s is None else round(convergence_s, 3),
        verdict.to_json()["violations"],
        round(time.perf_counter() - started, 2),
    )
    payload = {
        "seed": cfg.seed,
        "config": asdict(cfg),
        "verdict": verdict.verdict,
        "exit_code": report.exit_code,
        "counts": counts,
        "convergence_after_last_heal_s": report.convergence_s,
        "violations": report.violations,
        "notes": verdict.notes,
        "wall_seconds": report.wall_s,
        "schedule": [asdict(a) for a in actions],
    }
    (results_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    write_report(results_dir, rows)  # report.html (cluster.report)
    return report


async def _operate(
    lab: Lab,
    action: Action,
    pems: list[bytes],
    names: list[str],
    acked: list[checker.Op],
    maybe_deleted: set[tuple[str, str]],
    timeout: float,
) -> int:
    """Send one operation; 1 when it was acknowledged, 0 when refused or unanswered."""
    store = str(action.args["store"])
    index = int(action.args["cert"])
    try:
        if action.kind == "upload":
            data = base64.b64encode(pems[index]).decode()
            result = await lab.request(action.node, "upload", {"store": store, "data": data}, timeout=timeout)
            for key, raw in result.get("versions", {}).items():
                target, _, name = key.partition("/")
                acked.append(checker.Op("upload", action.node, target, name, Version.from_json(raw)))
        else:
            name = names[index].replace(" ", "_")
            result = await lab.request(action.node, "delete", {"store": store, "name": name}, timeout=timeout)
            acked.append(checker.Op("delete", action.node, store, name, Version.from_json(result["version"])))
    except Unavailable:
        if action.kind == "delete":
            maybe_deleted.add((store, names[index]))
        return 0
    except CertsimError:
        return 0  # refused (not found, same-name rule): nothing happened
    return 1


async def _fault(lab: Lab, action: Action) -> None:
    node = action.node
    if action.kind == "crash":
        await lab.crash_node(node)
    elif action.kind == "restart":
        if node not in lab.running_nodes():
            await lab.start_node(node)
    elif action.kind == "partition":
        lab.partition([node])
    elif action.kind == "heal":
        await lab.heal([node])
    elif action.kind == "broker":
        await lab.restart_broker(down_s=float(action.args.get("down_s", 0)))
    elif action.kind == "faults" and node in lab.running_nodes():
        lab.set_link_faults(
            node,
            delay_s=float(action.args["delay_s"]),
            duplicate=float(action.args["duplicate"]),
            reorder=float(action.args["reorder"]),
            seed=int(action.args["seed"]),
        )
    elif action.kind == "clear" and node in lab.running_nodes():
        lab.set_link_faults(node)


def summarize(reports: list[ChaosReport]) -> dict[str, Any]:
    """Totals over several seeds, with convergence-time quantiles after the last heal."""
    conv = sorted(r.convergence_s for r in reports if r.convergence_s is not None)

    def q(p: float) -> float | None:
        if not conv:
            return None
        if len(conv) == 1:
            return conv[0]
        return round(statistics.quantiles(conv, n=100, method="inclusive")[int(p * 100) - 1], 3)

    faults: Counter[str] = Counter()
    for r in reports:
        faults.update(r.counts.get("faults", {}))
    return {
        "seeds": [r.seed for r in reports],
        "verdicts": dict(Counter(r.verdict for r in reports)),
        "operations_acknowledged": sum(int(r.counts.get("acknowledged", 0)) for r in reports),
        "operations_attempted": sum(int(r.counts.get("attempted", 0)) for r in reports),
        "faults": dict(faults),
        "lost": sum(int(r.counts.get("lost", 0)) for r in reports),
        "resurrected": sum(int(r.counts.get("resurrected", 0)) for r in reports),
        "divergent": sum(int(r.counts.get("divergent", 0)) for r in reports),
        "messages": sum(int(r.counts.get("messages", 0)) for r in reports),
        "convergence_s": {"p50": q(0.5), "p99": q(0.99), "max": conv[-1] if conv else None},
    }
