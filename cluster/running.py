"""Labs that run in the background (``certsim lab up``) and how other commands reach them.

``lab up`` starts ``certsim lab serve`` as a detached process that owns the broker and the
nodes and writes ``running.json`` in the lab directory; ``lab status``, ``lab down`` and
``cert ...`` read that file to find the broker, the topic root and the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.control import ControlClient
from cluster.labdir import (
    HISTORY_FILE,
    LAB_COPY,
    READY_POLL_S,
    RUNNING_FILE,
    LabState,
    certsim_home,
    default_lab_dir,
    pid_alive,
    read_door_files,
    write_private_json,
)
from cluster.labfile import LabSpec, load_lab
from node.errors import NotFound, Unavailable
from replication.envelope import derive_key
from replication.transport import BrokerAddress
from scenarios import shipped

if TYPE_CHECKING:
    from cluster.controller import LabController


@dataclass(frozen=True)
class RunningLab:
    """A lab started by ``lab up``, as described by its ``running.json``."""

    lab_dir: Path
    spec: LabSpec
    state: LabState
    pid: int
    broker: BrokerAddress
    bus_key: bytes | None = None  # the cluster key the lab process derived (scrypt costs a CLI call ~50 ms)

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def read_running(lab_dir: Path) -> RunningLab | None:
    path = lab_dir / RUNNING_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    spec = load_lab(lab_dir / LAB_COPY)
    return RunningLab(
        lab_dir,
        spec,
        LabState.load_or_create(lab_dir, spec),
        int(raw["pid"]),
        BrokerAddress.parse(raw["broker"]),
        bytes.fromhex(raw["bus_key"]) if isinstance(raw.get("bus_key"), str) else None,
    )


def running_smtp(lab_dir: Path) -> str | None:
    """The mail server of the lab running in ``lab_dir`` (``smtp://host:port``), if one runs."""
    running = read_running(lab_dir)
    if running is None or not running.alive:
        return None
    raw = json.loads((lab_dir / RUNNING_FILE).read_text(encoding="utf-8"))
    server = raw.get("smtp")
    return f"smtp://{server}" if isinstance(server, str) and server else None


def find_running(lab: str | None = None, lab_dir: Path | None = None) -> RunningLab:
    """The running lab named by ``lab``/``lab_dir``, or the only one running; a clear error otherwise."""
    labs_root = certsim_home() / "labs"
    if lab_dir is not None or lab is not None:
        directory = lab_dir or default_lab_dir(str(lab))
        if lab_dir is None and not directory.exists():  # a cluster of a multi-cluster lab (cluster.classroom)
            directory = next(iter(sorted(labs_root.glob(f"*/clusters/{lab}"))), directory)
        found = read_running(directory)
        if found is None or not found.alive:
            raise Unavailable(f"no lab is running in {directory}; start one with 'certsim lab up LAB_FILE'")
        return found
    dirs = sorted([*labs_root.glob("*"), *labs_root.glob("*/clusters/*")])
    candidates = [r for d in dirs if (r := read_running(d)) is not None and r.alive]
    if not candidates:
        raise Unavailable(f"no lab is running under {labs_root}; start one with 'certsim lab up LAB_FILE'")
    if len(candidates) > 1:
        names = ", ".join(c.spec.name for c in candidates)
        raise Unavailable(f"several labs are running ({names}); choose one with --lab NAME")
    return candidates[0]


@asynccontextmanager
async def connect(running: RunningLab) -> AsyncIterator[ControlClient]:
    """A control client for a running lab."""
    client = ControlClient(
        running.broker,
        running.state.topics(running.spec.name),
        running.bus_key or derive_key(running.spec.security_password, running.spec.name),
        running.spec.node_names,
        now_ms=running.state.clock(running.lab_dir).now_ms,
    )
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


def prepare_lab_dir(lab_file: Path, lab_dir: Path | None) -> tuple[LabSpec, Path]:
    """Validate the lab file and keep a copy in the lab directory for later commands."""
    spec = load_lab(lab_file)
    directory = lab_dir or default_lab_dir(spec.name)
    existing = read_running(directory)
    if existing is not None and existing.alive:
        raise Unavailable(f"lab '{spec.name}' is already running (pid {existing.pid}); 'certsim lab down' first")
    LabState.load_or_create(directory, spec)
    (directory / LAB_COPY).write_text(lab_file.read_text(encoding="utf-8"), encoding="utf-8")
    return spec, directory


def spawn_serve(
    lab_file: Path, lab_dir: Path, broker_url: str | None, skip: tuple[str, ...], smtp_url: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``certsim lab serve`` detached from this terminal, logging to ``serve.log``."""
    args = [sys.executable, "-m", "cluster.cli", "lab", "serve", str(lab_file), "--lab-dir", str(lab_dir)]
    if broker_url:
        args += ["--broker", broker_url]
    for name in skip:
        args += ["--skip", name]
    if smtp_url:
        args += ["--smtp", smtp_url]
    with (lab_dir / "serve.log").open("ab") as log:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )


async def serve(
    spec: LabSpec,
    lab_dir: Path,
    broker_url: str | None,
    skip: tuple[str, ...],
    progress: Callable[[str], None] | None = None,
    smtp_url: str | None = None,
) -> None:
    """Run a lab until SIGTERM or SIGINT; ``running.json`` exists exactly while it serves."""
    for name in skip:
        spec.node(name)
    from cluster.keys import derive_bus_keys_ahead, refill_later, rsa_keys_to_install, use_home_pool  # noqa: PLC0415

    bus_key_made = derive_bus_keys_ahead([spec])  # while the lab machinery loads
    from cluster.controller import LabController  # noqa: PLC0415 - the lab machinery only in the lab process
    from cluster.lab import LIVE_HISTORY_MAX_BYTES, History, Lab, settle_heap_soon  # noqa: PLC0415

    pool = use_home_pool()  # identities of first-started nodes come from keys made ahead
    bus_key_made()
    history = History(lab_dir / HISTORY_FILE, LIVE_HISTORY_MAX_BYTES)  # the dashboard's live feed tails it
    lab = Lab(
        spec,
        lab_dir,
        broker_url=broker_url,
        front_doors=spec.front_doors.enabled,
        smtp_url=smtp_url,
        history=history,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = lab_dir / RUNNING_FILE
    controller: LabController | None = None
    responder: Any = None  # OCSP: cluster.ocsp.OcspResponder of the lab CA in <lab dir>/ca
    try:
        # the controller connects while the nodes start, unless the broker is the lab's own (it starts with them)
        controller = LabController(lab) if lab.broker is not None else None
        await asyncio.gather(
            lab.start(nodes=[n for n in spec.node_names if n not in skip], progress=progress),
            *([controller.start()] if controller is not None else []),
        )
        refill_later(pool, rsa_keys_to_install(spec), spec.rsa_key_size)  # the next cold start finds them waiting
        if controller is None:
            controller = LabController(lab)
            await controller.start()
        # --- OCSP (cluster/ocsp.py): the lab CA's responder; its URI goes to <lab dir>/ocsp.json (R-OCSP-1)
        from cluster.ocsp import start_lab_responder  # noqa: PLC0415 - aiohttp's server only in the lab process

        responder = await start_lab_responder(lab_dir, lab.clock)
        # --- end OCSP
        write_private_json(
            running,
            {
                "pid": os.getpid(),
                "broker": lab.broker_url,
                "lab": spec.name,
                "topic_root": lab.topics.root,
                # the lab directory (0700) already holds the security password in lab.yaml
                "bus_key": lab.secret.hex(),
                "smtp": lab.smtp_server,
                "started_wall": time.time(),
            },
        )
        settle_heap_soon()
        await stop.wait()
    finally:
        if controller is not None:
            await controller.stop()
        if responder is not None:  # OCSP
            await responder.stop()
        with contextlib.suppress(FileNotFoundError):
            running.unlink()
        await lab.stop()
        history.close()


async def wait_up(
    lab_dir: Path, proc: subprocess.Popen[bytes], timeout: float, tick: Callable[[int], None] | None = None
) -> RunningLab:
    """Wait for a spawned lab to write ``running.json`` and for its nodes to answer."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.poll() is not None:
            log = (lab_dir / "serve.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise Unavailable(f"the lab process exited with code {proc.returncode}:\n{log}")
        running = read_running(lab_dir)
        if running is not None:
            return running
        if tick is not None:
            tick(0)
        await asyncio.sleep(READY_POLL_S)
    raise Unavailable(f"the lab did not come up within {timeout:g} s; see {lab_dir / 'serve.log'}")


async def stop_running(running: RunningLab, timeout: float = 30.0) -> None:
    os.kill(running.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pid_alive(running.pid) and (running.lab_dir / RUNNING_FILE).exists():
        if loop.time() > deadline:
            raise Unavailable(f"lab process {running.pid} did not stop within {timeout:g} s")
        await asyncio.sleep(0.1)


async def statuses(client: ControlClient, timeout: float = 5.0) -> dict[str, dict[str, Any] | None]:
    """Every node's status, or None for a node that did not answer."""

    async def one(node: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await client.request(node, "status", timeout=timeout)
        except Unavailable:
            return None
        return result

    answers = await asyncio.gather(*(one(n) for n in client.nodes))
    return dict(zip(client.nodes, answers, strict=True))


def front_doors(lab_dir: Path) -> dict[str, dict[str, Any]]:
    """Where each node of the lab in ``lab_dir`` listens (SSH, HTTPS), for nodes whose front doors are
    open in a live process (``lab up`` or ``node run``); see ``cluster.doors.frontdoors``."""
    return read_door_files(lab_dir, pid_alive)


def resolve_scenario(name_or_path: str) -> Path:
    """A scenario file path, or the name of a shipped scenario (``quickstart``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    found = shipped().get(name_or_path.removesuffix(".yaml"))
    if found is None:
        raise NotFound(
            f"no scenario file '{name_or_path}' and no shipped scenario of that name; shipped: {', '.join(shipped())}"
        )
    return found
