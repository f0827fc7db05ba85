"""Shared fixtures: a broker per test (embedded amqtt or a private mosquitto), labs in tmp dirs, and one
deck of RSA keys made once per run that every test's labs draw from (keygen was most of the suite's time).

Broker choice: a test runs on one broker (mosquitto when there is one, else the embedded one) unless it is
marked ``both_brokers`` because the broker is what it tests (sessions, restarts, queueing, the bus itself).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.broker import MosquittoBroker, mosquitto_binary
from cluster.lab import Lab
from cluster.labfile import LabSpec, parse_lab
from node import certs
from node.catalog import KeyAlgo
from node.keypool import KeyPool, generate_pem

BROKERS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]
DECK_SIZE = 128  # keys dealt round-robin: a test lab (a few nodes, ~7 RSA keys each) gets distinct ones
DECK_ENV = "CERTSIM_TEST_KEYDECK"  # the deck file, made by the first process, read by xdist workers


def one_broker() -> Any:
    """mosquitto where there is one (faster, and CI requires it), else the embedded broker instead of a skip."""
    if mosquitto_binary() is not None or os.environ.get("CERTSIM_REQUIRE_MOSQUITTO"):
        return pytest.param("mosquitto", marks=pytest.mark.mosquitto)
    return "embedded"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``broker``: both brokers for tests marked ``both_brokers``, one otherwise (unless the
    test chose its broker itself)."""
    if "broker" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if "broker" in ([n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)):
            return
    kinds = BROKERS if metafunc.definition.get_closest_marker("both_brokers") else [one_broker()]
    metafunc.parametrize("broker", kinds, indirect=True)


class KeyDeck:
    """Test keys: made once per run and dealt round-robin, so labs share them across tests (never inside a lab:
    a lab takes far fewer than DECK_SIZE keys). The product's per-home pool never reuses a key."""

    def __init__(self, pems: list[bytes]) -> None:
        self.pems = pems
        self.keys = [serialization.load_pem_private_key(pem, None, unsafe_skip_rsa_key_validation=True) for pem in pems]
        self._next = itertools.count()

    def take(self, algo: KeyAlgo, size: int) -> certs.PrivateKey | None:
        if algo is not KeyAlgo.RSA or size != 2048:
            return None
        key = self.keys[next(self._next) % len(self.keys)]
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


DECK: list[KeyDeck] = []


def _deck_pems() -> list[bytes]:
    """The deck file named by $CERTSIM_TEST_KEYDECK, or a new one made on every core (the first process)."""
    path = os.environ.get(DECK_ENV)
    if path and Path(path).exists():
        raw = Path(path).read_bytes()
        return [b"-----BEGIN PRIVATE KEY-----" + part for part in raw.split(b"-----BEGIN PRIVATE KEY-----")[1:]]
    with ProcessPoolExecutor() as pool:
        pems = list(pool.map(generate_pem, [2048] * DECK_SIZE, chunksize=8))
    fd, name = tempfile.mkstemp(prefix="certsim-test-keys-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        out.write(b"".join(pems))
    os.environ[DECK_ENV] = name  # xdist workers start after this and inherit it
    return pems


def compiled_children(env: dict[str, str]) -> None:
    """Let child processes (xdist workers, every ``certsim`` a CLI test runs) keep compiled bytecode, in a
    cache outside the source tree: with PYTHONDONTWRITEBYTECODE each one recompiled every module it imports."""
    if env.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir()) / f"certsim-pycache-{os.getuid()}"))


def pytest_configure(config: pytest.Config) -> None:
    compiled_children(os.environ)  # type: ignore[arg-type]
    DECK[:] = [KeyDeck(_deck_pems())]
    certs.use_key_source(DECK[0])
    os.environ.setdefault("CERTSIM_KEYPOOL_TARGET", "0")  # CLI processes of the tests start no background filler


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests (marked ``slow``) first: xdist hands out the rest around them, and no worker is left with a
    long test at the end while the other one idles (the suite's wall time is its longest worker's)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ.get(DECK_ENV)
    if path and not hasattr(config, "workerinput"):  # the process that made the deck removes it
        Path(path).unlink(missing_ok=True)


def stock_home(home: Path, count: int = DECK_SIZE) -> Path:
    """Give a CERTSIM_HOME's key pool keys from the deck, so CLI processes of a test install quickly."""
    pool = KeyPool(home / "keypool")
    if pool.count(2048) < count:
        pool.add(DECK[0].pems[:count], 2048)
    return home


def require_mosquitto() -> None:
    if mosquitto_binary() is None:
        if os.environ.get("CERTSIM_REQUIRE_MOSQUITTO"):
            pytest.fail("CERTSIM_REQUIRE_MOSQUITTO is set but no mosquitto binary was found")
        pytest.skip("no mosquitto binary (set CERTSIM_REQUIRE_MOSQUITTO to make this a failure)")


@pytest.fixture
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[MosquittoBroker | None]:
    """None for the embedded broker (each lab starts its own), or a private mosquitto on a free port."""
    if request.param == "embedded":
        yield None
        return
    require_mosquitto()
    mosq = MosquittoBroker()
    await mosq.start()
    try:
        yield mosq
    finally:
        await mosq.stop()


@pytest.fixture
def broker_url(broker: MosquittoBroker | None) -> str | None:
    return None if broker is None else broker.url


@contextlib.contextmanager
def held_port(host: str, port: int) -> Iterator[int]:
    """``port`` on ``host`` taken by another listener for the block, as a connection of some other
    program can take a port picked free a moment earlier."""
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        yield port


def small_lab(name: str = "t", *, nodes: int = 3, imp: int = 1, release: str = "15", **extra: Any) -> LabSpec:
    """A lab of ``nodes`` Unified CM nodes (first is publisher) plus ``imp`` IM&P nodes."""
    spec = [{"name": f"cucm{i}", "role": "cucm"} for i in range(1, nodes + 1)]
    spec += [{"name": f"imp{i}", "role": "imp"} for i in range(1, imp + 1)]
    return parse_lab({"lab": name, "security_password": "test-cluster-pw", "release": release, "nodes": spec, **extra})


LabFactory = Callable[..., Awaitable[Lab]]


@pytest.fixture
async def make_lab(tmp_path: Path, broker_url: str | None) -> AsyncIterator[LabFactory]:
    """Start labs in their own temporary directories; all are stopped at teardown."""
    labs: list[Lab] = []

    async def factory(spec: LabSpec | None = None, *, subdir: str = "lab", settle: bool = True) -> Lab:
        lab = Lab(spec or small_lab(), tmp_path / subdir, broker_url=broker_url)
        labs.append(lab)
        await lab.start()
        if settle:
            conv = await lab.converge(timeout=30)
            assert conv.converged, conv.detail
        return lab

    yield factory
    for lab in labs:
        await lab.stop()
