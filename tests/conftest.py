"""Shared fixtures: a broker per test (embedded amqtt or a private mosquitto) and labs in tmp dirs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.broker import MosquittoBroker, mosquitto_binary
from cluster.lab import Lab
from cluster.labfile import LabSpec, parse_lab

BROKERS = ["embedded", pytest.param("mosquitto", marks=pytest.mark.mosquitto)]


def require_mosquitto() -> None:
    if mosquitto_binary() is None:
        if os.environ.get("CERTSIM_REQUIRE_MOSQUITTO"):
            pytest.fail("CERTSIM_REQUIRE_MOSQUITTO is set but no mosquitto binary was found")
        pytest.skip("no mosquitto binary (set CERTSIM_REQUIRE_MOSQUITTO to make this a failure)")


@pytest.fixture(params=BROKERS)
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
