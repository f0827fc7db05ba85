"""The per-home key pool: keys made ahead, each handed out exactly once, kept private on disk."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.keys import TARGET_ENV, derive_bus_keys_ahead, home_pool, refill_later, rsa_keys_to_install
from cluster.lab import Lab
from node import certs
from node.catalog import KeyAlgo
from node.keypool import KeyPool
from replication.envelope import derive_key
from tests.conftest import DECK, small_lab


def modulus(key: certs.PrivateKey) -> int:
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.private_numbers().public_numbers.n


def _drain(root: str, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    pool = KeyPool(Path(root))
    taken = []
    while (key := pool.take(KeyAlgo.RSA, 2048)) is not None:
        taken.append(modulus(key))
    out.put(taken)


def test_each_key_is_taken_once_even_by_processes_racing(tmp_path: Path) -> None:
    """Two processes drain one pool at once: every key goes to exactly one of them, then the pool is empty."""
    pool = KeyPool(tmp_path / "keypool")
    assert pool.add(DECK[0].pems[:40], 2048) == 40
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_drain, args=(str(pool.root), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    everything = got[0] + got[1]
    assert len(everything) == 40
    assert len(set(everything)) == 40
    assert pool.count(2048) == 0
    assert pool.take(KeyAlgo.RSA, 2048) is None
    assert not list((pool.root / "rsa-2048").iterdir()), "no claimed or partial files are left behind"


def test_pool_files_are_private_and_other_kinds_are_not_pooled(tmp_path: Path) -> None:
    """Key files are 0600 in 0700 directories; EC keys and unpooled sizes are never taken from the pool."""
    pool = KeyPool(tmp_path / "keypool")
    pool.add(DECK[0].pems[:2], 2048)
    for path in [pool.root, pool.root / "rsa-2048"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (pool.root / "rsa-2048").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pool.take(KeyAlgo.EC, 256) is None
    assert pool.take(KeyAlgo.RSA, 1024) is None
    assert pool.take(KeyAlgo.RSA, 3072) is None
    assert pool.count(2048) == 2


def test_fill_generates_what_is_missing_on_a_process_pool(tmp_path: Path) -> None:
    """fill tops the pool up to its target and no further; the keys are real RSA keys of that size."""
    pool = KeyPool(tmp_path / "keypool")
    pool.add(DECK[0].pems[:1], 2048)
    assert pool.fill(3, 2048, workers=2) == 2
    assert pool.fill(3, 2048) == 0
    keys = [pool.take(KeyAlgo.RSA, 2048) for _ in range(3)]
    assert all(isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048 for k in keys)


def test_new_keys_come_from_the_source_first_then_are_generated(tmp_path: Path) -> None:
    """certs.new_private_key takes pooled keys while there are some, and generates fresh ones after."""
    pool = KeyPool(tmp_path / "keypool")
    pool.add(DECK[0].pems[:2], 2048)
    expected = {modulus(k) for k in DECK[0].keys[:2]}  # type: ignore[arg-type]
    previous = certs.use_key_source(pool)
    try:
        first = {modulus(certs.new_private_key(KeyAlgo.RSA, 2048)) for _ in range(2)}
        third = modulus(certs.new_private_key(KeyAlgo.RSA, 2048))
    finally:
        certs.use_key_source(previous)
    assert first == expected
    assert third not in expected
    assert third not in {modulus(k) for k in DECK[0].keys}  # type: ignore[arg-type]


async def test_a_lab_installs_from_the_pool_and_no_key_serves_two_nodes(tmp_path: Path) -> None:
    """R-NODE-2: a first start takes one pooled key per RSA identity unit; every node's keys are its own."""
    spec = small_lab(nodes=2, imp=1)
    pool = KeyPool(tmp_path / "keypool")
    pool.add(DECK[0].pems[:60], 2048)
    need = rsa_keys_to_install(spec)
    assert need == 7 + 4 + 5  # publisher, subscriber, IM&P: their RSA units (R-UNIT-1)
    previous = certs.use_key_source(pool)
    lab = Lab(spec, tmp_path / "lab")
    try:
        await lab.start()
        moduli = []
        for node in spec.node_names:
            for row in await lab.request(node, "list", {"usage": "identity", "key_type": "RSA"}):
                moduli.append(row["Modulus"])
    finally:
        await lab.stop()
        certs.use_key_source(previous)
    assert pool.count(2048) == 60 - need
    assert len(moduli) == need
    assert len(set(moduli)) == need


def test_background_refill_is_off_when_the_target_is_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CERTSIM_KEYPOOL_TARGET=0 (the suite's setting) starts no filler; a full pool starts none either."""
    monkeypatch.setenv(TARGET_ENV, "0")
    assert refill_later(home_pool(tmp_path), 100) is None
    monkeypatch.setenv(TARGET_ENV, "2")
    pool = home_pool(tmp_path)
    pool.add(DECK[0].pems[:2], 2048)
    assert refill_later(pool, 1) is None
    assert os.environ[TARGET_ENV] == "2"


def test_the_background_filler_tops_up_once_per_pool(tmp_path: Path) -> None:
    """python -m node.keypool: fills to its target; while one filler holds the pool's lock another does nothing."""
    import fcntl

    from node.keypool import fill_in_background

    root = tmp_path / "keypool"
    fill_in_background(root, 2)
    assert KeyPool(root).count(2048) == 2
    with (root / "fill.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fill_in_background(root, 4)  # another filler is at work: this one leaves
    assert KeyPool(root).count(2048) == 2


def test_keys_fill_and_status_from_the_cli(tmp_path: Path) -> None:
    """certsim keys fill / keys status: the home's pool, counted per size."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "CERTSIM_HOME": str(tmp_path)}
    run = [sys.executable, "-m", "cluster.cli", "keys"]
    subprocess.run([*run, "fill", "--count", "2", "--workers", "1"], env=env, check=True, capture_output=True)
    out = subprocess.run([*run, "status", "--json"], env=env, check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["keys"] == {"2048": 2, "3072": 0, "4096": 0}
    assert stat.S_IMODE((tmp_path / "keypool").stat().st_mode) == 0o700


def test_bus_keys_derived_ahead_are_the_ones_each_lab_then_uses() -> None:
    """A lab process derives its clusters' bus keys (scrypt) in a thread while it imports its machinery: each
    lab then finds its key made (derive_key's cache), the same key as one derived on the spot."""
    specs = [small_lab("ahead1"), small_lab("ahead2")]
    derive_key.cache_clear()
    derive_bus_keys_ahead(specs)()
    hits = derive_key.cache_info().hits
    keys = [derive_key(s.security_password, s.name) for s in specs]
    assert derive_key.cache_info().hits == hits + len(specs)
    derive_key.cache_clear()
    assert keys == [derive_key(s.security_password, s.name) for s in specs]
