"""The per-home key pool as the lab uses it: ``$CERTSIM_HOME/keypool``, used by the processes that start
nodes, topped up in the background once a lab is up (see ``node.keypool``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from cluster.labdir import certsim_home
from cluster.labfile import LabSpec
from node import certs
from node.catalog import KeyAlgo, units_for
from node.keypool import POOL_DIR, KeyPool
from replication.envelope import derive_key

MIN_POOL = 64  # what a refill keeps at least: a few small labs' worth
TARGET_ENV = "CERTSIM_KEYPOOL_TARGET"  # keys a refill keeps at least; 0 turns background refills off


def home_pool(home: Path | None = None) -> KeyPool:
    return KeyPool((home or certsim_home()) / POOL_DIR)


def rsa_keys_to_install(spec: LabSpec, nodes: list[str] | None = None) -> int:
    """RSA keys a first start of these nodes generates (one per RSA identity unit, R-UNIT-1)."""
    wanted = set(nodes if nodes is not None else spec.node_names)
    return sum(
        sum(1 for u in units_for(n.role, publisher=n.publisher) if u.key_algo is KeyAlgo.RSA)
        for n in spec.nodes
        if n.name in wanted
    )


def derive_bus_keys_ahead(specs: Iterable[LabSpec]) -> Callable[[], None]:
    """Derive these clusters' bus keys (scrypt, ~50 ms each, run without the GIL) in a thread, while the lab
    process goes on importing its machinery; returns the wait for that thread. ``derive_key`` keeps what it
    derived (at most its cache's size, so no more are made ahead), so each ``Lab`` then finds its key made.
    A failure is left for ``Lab`` to raise, where it is reported."""
    pairs = [(spec.security_password, spec.name) for spec in specs]
    ahead = pairs[: derive_key.cache_info().maxsize or len(pairs)]

    def derive() -> None:
        for password, name in ahead:
            with contextlib.suppress(Exception):
                derive_key(password, name)

    thread = threading.Thread(target=derive, name="bus-keys", daemon=True)
    thread.start()
    return thread.join


def use_home_pool(home: Path | None = None) -> KeyPool:
    """New RSA keys of this process come from the home's pool first (each key taken once)."""
    pool = home_pool(home)
    certs.use_key_source(pool)
    return pool


def refill_later(pool: KeyPool, target: int, size: int = 2048) -> subprocess.Popen[bytes] | None:
    """Start a detached, lowest-priority filler so the next lab's install finds its keys waiting."""
    floor = int(os.environ.get(TARGET_ENV) or MIN_POOL)
    if floor <= 0:
        return None
    target = max(target, floor)
    if pool.count(size) >= target:
        return None
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "node.keypool", str(pool.root), str(target), str(size)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
