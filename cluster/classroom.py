"""Many clusters in one lab (a classroom): one broker, one event loop per worker process, every cluster a
lab of its own (its name, security password, topics, keys and databases), reachable by every ``certsim``
verb with ``--lab CLUSTER``.

Layout of a multi-cluster lab directory::

    <lab dir>/class.yaml               the lab file (all clusters)
    <lab dir>/class.json               while it runs: main pid, worker pids, broker, clusters
    <lab dir>/clusters/<cluster>/      an ordinary lab directory per cluster (lab.yaml, nodes/, running.json)

Workers: ``--workers N`` runs the clusters in N processes (cluster i in worker i mod N) on the same broker;
the main process owns the broker (embedded unless a URL is given) and stops its workers when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.labdir import HISTORY_FILE, LAB_COPY, READY_POLL_S, RUNNING_FILE, LabState, pid_alive, write_private_json
from cluster.labfile import ClustersSpec, LabSpec, load_lab, parse_clusters
from node.errors import Unavailable

CLASS_FILE = "class.yaml"
CLASS_STATE = "class.json"
CLUSTERS_DIR = "clusters"
DEFAULT_CLASS = "class"


def cluster_dir(lab_dir: Path, name: str) -> Path:
    return lab_dir / CLUSTERS_DIR / name


def classroom(template: Path, count: int, name: str = DEFAULT_CLASS, prefix: str = "student") -> dict[str, Any]:
    """A lab mapping of ``count`` copies of the template's cluster, ``student01`` .., each with a security
    password of its own (random: students of one class cannot join each other's clusters)."""
    raw = yaml.safe_load(template.read_text(encoding="utf-8"))
    if not isinstance(raw, Mapping) or "clusters" in raw:
        raise Unavailable(f"{template}: a class template is a one-cluster lab file")
    load_lab(template)  # the template itself must be valid
    defaults = {k: v for k, v in raw.items() if k not in ("lab", "security_password")}
    if isinstance(defaults.get("nodes"), list):  # every student's nodes get their own loopback addresses
        defaults["nodes"] = [
            {k: v for k, v in n.items() if k != "address"} if isinstance(n, Mapping) else n for n in defaults["nodes"]
        ]
    width = max(2, len(str(count)))
    clusters = [
        {"cluster": f"{prefix}{i:0{width}d}", "security_password": secrets.token_urlsafe(12)}
        for i in range(1, count + 1)
    ]
    return {"lab": name, **defaults, "clusters": clusters}


def prepare_class_dir(raw: Mapping[str, Any], lab_dir: Path) -> ClustersSpec:
    """Validate, keep the lab file and one ordinary lab directory per cluster (state, lab.yaml copy)."""
    multi = parse_clusters(raw, source=CLASS_FILE)
    existing = read_class(lab_dir)
    if existing is not None and pid_alive(int(existing["pid"])):
        raise Unavailable(f"lab '{multi.name}' is already running (pid {existing['pid']}); 'certsim class down' first")
    lab_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir, 0o700)
    (lab_dir / CLASS_FILE).write_text(yaml.safe_dump(dict(raw), sort_keys=False), encoding="utf-8")
    for spec, cluster_raw in zip(multi.clusters, multi.raw, strict=True):
        directory = cluster_dir(lab_dir, spec.name)
        LabState.load_or_create(directory, spec)
        (directory / LAB_COPY).write_text(yaml.safe_dump(dict(cluster_raw), sort_keys=False), encoding="utf-8")
    return multi


def load_class(lab_dir: Path) -> ClustersSpec:
    return parse_clusters(yaml.safe_load((lab_dir / CLASS_FILE).read_text(encoding="utf-8")), str(lab_dir))


def read_class(lab_dir: Path) -> dict[str, Any] | None:
    path = lab_dir / CLASS_STATE
    if not path.exists():
        return None
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return raw


def spawn_class(
    lab_dir: Path, broker_url: str | None, workers: int, smtp_url: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``certsim lab serve`` on the class directory, detached, logging to ``serve.log``."""
    args = [sys.executable, "-m", "cluster.cli", "lab", "serve", str(lab_dir / CLASS_FILE), "--lab-dir", str(lab_dir)]
    if broker_url:
        args += ["--broker", broker_url]
    if workers > 1:
        args += ["--workers", str(workers)]
    if smtp_url:
        args += ["--smtp", smtp_url]
    with (lab_dir / "serve.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


async def wait_class_up(lab_dir: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            log = (lab_dir / "serve.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise Unavailable(f"the lab process exited with code {proc.returncode}:\n{log}")
        state = read_class(lab_dir)
        if state is not None and state.get("ready"):
            return state
        await asyncio.sleep(READY_POLL_S)
    raise Unavailable(f"the class did not come up within {timeout:g} s; see {lab_dir / 'serve.log'}")


async def serve_class(
    multi: ClustersSpec,
    lab_dir: Path,
    broker_url: str | None,
    *,
    workers: int = 1,
    worker: int | None = None,
    smtp_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run the clusters of ``multi`` until SIGTERM/SIGINT. The main process (``worker`` None) owns the
    broker and ``class.json`` and spawns ``workers - 1`` worker processes; each process serves the
    clusters whose index is its number modulo ``workers`` and writes their ``running.json``."""
    from cluster.keys import derive_bus_keys_ahead, refill_later, rsa_keys_to_install, use_home_pool  # noqa: PLC0415

    number = worker or 0
    mine = [spec for i, spec in enumerate(multi.clusters) if i % workers == number]
    bus_keys_made = derive_bus_keys_ahead(mine)  # while the lab machinery loads
    from cluster.broker import EmbeddedBroker  # noqa: PLC0415 - the lab machinery only in the lab process
    from cluster.controller import LabController  # noqa: PLC0415
    from cluster.lab import LIVE_HISTORY_MAX_BYTES, History, Lab, settle_heap_soon  # noqa: PLC0415
    from cluster.limits import ensure_fd_limit, fds_needed  # noqa: PLC0415

    owner = os.getpid() if worker is None else os.getppid()  # 'lab down --lab CLUSTER' stops the whole lab
    ensure_fd_limit(
        fds_needed(
            sum(len(s.nodes) for s in mine),
            embedded_broker=broker_url is None,
            front_doors=any(s.front_doors.enabled for s in mine),
        )
    )
    pool = use_home_pool()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    embedded: EmbeddedBroker | None = None
    children: list[subprocess.Popen[bytes]] = []
    labs: list[Lab] = []
    controllers: list[LabController] = []
    try:
        if broker_url is None:
            embedded = EmbeddedBroker()
            await embedded.start()
            broker_url = embedded.address.url
        if worker is None:
            for n in range(1, workers):
                children.append(_spawn_worker(lab_dir, broker_url, workers, n, smtp_url))
        bus_keys_made()
        labs = [
            Lab(
                spec,
                cluster_dir(lab_dir, spec.name),
                broker_url=broker_url,
                front_doors=spec.front_doors.enabled,
                smtp_url=smtp_url,
                history=History(cluster_dir(lab_dir, spec.name) / HISTORY_FILE, LIVE_HISTORY_MAX_BYTES),
            )
            for spec in mine
        ]

        async def start(lab: Lab) -> None:
            await lab.start()
            if progress is not None:
                progress(lab.spec.name)

        controllers = [LabController(lab) for lab in labs]  # they connect while the nodes start
        await asyncio.gather(*(start(lab) for lab in labs), *(c.start() for c in controllers))
        refill_later(pool, sum(rsa_keys_to_install(s) for s in mine))
        for lab in labs:
            _write_running(lab, owner)
        if worker is None:
            await _wait_workers(multi, lab_dir, children)
            _write_class(lab_dir, multi, broker_url, children, ready=True)
        settle_heap_soon()
        await stop.wait()
    finally:
        await _shutdown(children, controllers, labs, lab_dir if worker is None else None)
        for lab in labs:
            lab.history.close()
        if embedded is not None:
            await embedded.stop()


async def _shutdown(
    children: list[subprocess.Popen[bytes]], controllers: list[Any], labs: list[Any], class_dir: Path | None
) -> None:
    """Workers first (they stop their own clusters), then this process's controllers and labs."""
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    for controller in controllers:
        await controller.stop()
    for lab in labs:
        with contextlib.suppress(FileNotFoundError):
            (lab.lab_dir / RUNNING_FILE).unlink()
    await asyncio.gather(*(lab.stop() for lab in labs), return_exceptions=True)
    for child in children:
        await asyncio.to_thread(child.wait, 60)
    if class_dir is not None:
        with contextlib.suppress(FileNotFoundError):
            (class_dir / CLASS_STATE).unlink()


def _spawn_worker(
    lab_dir: Path, broker_url: str, workers: int, number: int, smtp: str | None
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "cluster.cli",
        "lab",
        "serve",
        str(lab_dir / CLASS_FILE),
        "--lab-dir",
        str(lab_dir),
        "--broker",
        broker_url,
        "--workers",
        str(workers),
        "--worker",
        str(number),
    ]
    if smtp:
        args += ["--smtp", smtp]
    with (lab_dir / f"worker-{number}.log").open("ab") as log:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # noqa: S603


async def _wait_workers(multi: ClustersSpec, lab_dir: Path, children: list[subprocess.Popen[bytes]]) -> None:
    """Until every cluster (the workers' too) has written its running.json."""
    while not all((cluster_dir(lab_dir, name) / RUNNING_FILE).exists() for name in multi.names):
        for child in children:
            if child.poll() is not None:
                raise Unavailable(f"worker pid {child.pid} exited with code {child.returncode}; see {lab_dir}")
        await asyncio.sleep(READY_POLL_S)


def _write_running(lab: Any, owner: int) -> None:
    write_private_json(
        lab.lab_dir / RUNNING_FILE,
        {
            "pid": owner,
            "worker_pid": os.getpid(),
            "broker": lab.broker_url,
            "lab": lab.spec.name,
            "topic_root": lab.topics.root,
            "bus_key": lab.secret.hex(),  # the lab directory (0700) already holds the password in lab.yaml
            "smtp": lab.smtp_server,
            "started_wall": time.time(),
        },
    )


def _write_class(
    lab_dir: Path, multi: ClustersSpec, broker_url: str, children: list[subprocess.Popen[bytes]], *, ready: bool
) -> None:
    write_private_json(
        lab_dir / CLASS_STATE,
        {
            "pid": os.getpid(),
            "workers": [os.getpid(), *(c.pid for c in children)],
            "broker": broker_url,
            "lab": multi.name,
            "clusters": list(multi.names),
            "ready": ready,
        },
    )


def cluster_specs(lab_dir: Path) -> list[LabSpec]:
    return list(load_class(lab_dir).clusters)
