"""A lab directory's persisted facts (instance id, clock origin, file names) without the lab machinery:
the CLI reads them on every call, so this module imports no broker, agent or front door."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.clock import SimClock
from node.errors import NotFound
from replication.topics import Topics

if TYPE_CHECKING:
    from cluster.labfile import LabSpec

STATE_FILE = "lab.json"
CLOCK_FILE = "clock.json"  # the offset jumps added to the lab clock, so a restarted lab keeps its time
RUNNING_FILE = "running.json"
LAB_COPY = "lab.yaml"
HISTORY_FILE = "history.jsonl"  # every event of a running lab: what 'certsim lab ui' shows live
READY_POLL_S = 0.02  # wall seconds between looks at running.json / class.json while 'lab up' waits for the lab
DOORS_DIR = "doors"  # <node>.json per node whose front doors are open (cluster.doors.frontdoors writes them)


def write_private_json(path: Path, value: object) -> None:
    """Write a lab directory's state file (``running.json``, ``class.json``) whole or not at all, mode
    0600: the CLI polls these every 20 ms while a lab starts and must never read half of one (it did:
    a JSON error from ``lab up``)."""
    text = json.dumps(value, indent=2)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)


def certsim_home() -> Path:
    """Where labs live unless told otherwise: ``$CERTSIM_HOME`` or ``~/.certsim``."""
    return Path(os.environ.get("CERTSIM_HOME") or Path.home() / ".certsim")


def default_lab_dir(name: str) -> Path:
    return certsim_home() / "labs" / name


def pid_alive(pid: int) -> bool:
    """Whether a process of that id exists (the lab process named by running.json or class.json)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_door_files(lab_dir: Path, alive: Callable[[int], bool]) -> dict[str, dict[str, Any]]:
    """What ``doors/<node>.json`` say about nodes whose hosting process is alive."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((lab_dir / DOORS_DIR).glob("*.json")):
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and isinstance(info.get("pid"), int) and alive(info["pid"]):
            found[str(info.get("node", path.stem))] = info
    return found


@dataclass(frozen=True)
class LabState:
    """Persisted facts of one lab directory."""

    instance: str
    sim_origin: dt.datetime
    wall_origin: float
    rate: float

    @classmethod
    def load_or_create(cls, lab_dir: Path, spec: LabSpec) -> LabState:
        path = lab_dir / STATE_FILE
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.get("lab") != spec.name:
                raise NotFound(f"{lab_dir} holds lab '{raw.get('lab')}', not '{spec.name}'; use another --lab-dir")
            return cls(
                raw["instance"],
                dt.datetime.fromisoformat(raw["sim_origin"]),
                float(raw["wall_origin"]),
                float(raw["rate"]),
            )
        wall = time.time()  # the lab's clock origin is the one wall-clock read a lab makes
        state = cls(
            secrets.token_hex(4),
            spec.clock_start or dt.datetime.fromtimestamp(wall, dt.UTC).replace(microsecond=0),
            wall,
            spec.clock_rate,
        )
        lab_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(lab_dir, 0o700)
        path.write_text(
            json.dumps(
                {
                    "lab": spec.name,
                    "instance": state.instance,
                    "sim_origin": state.sim_origin.isoformat(),
                    "wall_origin": state.wall_origin,
                    "rate": state.rate,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
        return state

    def topics(self, lab: str) -> Topics:
        return Topics(f"certsim/{lab}/{self.instance}")

    def clock(self, lab_dir: Path | None = None) -> SimClock:
        """The lab clock, with the jumps already made (read from ``clock.json`` in ``lab_dir``)."""
        clock = SimClock(self.sim_origin, rate=self.rate, wall_origin=self.wall_origin)
        if lab_dir is not None and (lab_dir / CLOCK_FILE).exists():
            saved = json.loads((lab_dir / CLOCK_FILE).read_text(encoding="utf-8"))
            clock.offset = dt.timedelta(milliseconds=int(saved["offset_ms"]))
        return clock
