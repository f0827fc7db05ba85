"""Stopping is total and never hangs: faults injected while a node, a lab or a chaos run stops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import cluster.chaos
from cluster.broker import EmbeddedBroker
from cluster.chaos import ChaosConfig, run_chaos
from cluster.lab import Lab
from node.dbthread import db_thread
from replication.transport import Bus, NotConnected
from tests.conftest import small_lab


async def test_lab_stop_closes_every_database_although_nodes_fail_to_stop(tmp_path: Path) -> None:
    """A node whose bus fails (or hangs) at stop is logged; every node's database is still closed
    and its worker thread gone, so the process can exit (issue 10 item 8)."""
    lab = Lab(small_lab("stop", nodes=3, imp=0), tmp_path / "lab")
    await lab.start()
    agents = list(lab.agents.values())
    threads = db_thread().threads()
    assert len(threads) == 1 and all(a.store.is_open for a in agents)  # one database thread for the whole lab

    async def broken_publish(*_args: Any, **_kwargs: Any) -> None:
        raise NotConnected("injected: presence publish timed out")

    async def broken_stop(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("injected: bus task died")

    async def hanging_publish(*_args: Any, **_kwargs: Any) -> None:
        await asyncio.Event().wait()  # never acknowledged

    agents[0].bus.publish = broken_publish  # type: ignore[method-assign]
    agents[0].bus.stop = broken_stop  # type: ignore[method-assign]
    agents[1].bus.publish = hanging_publish  # type: ignore[method-assign]

    await asyncio.wait_for(lab.stop(), timeout=30)

    assert all(not a.running for a in agents)
    for agent in agents:
        assert not agent.store.is_open, agent.name
    threads[0].join(timeout=5)
    assert not threads[0].is_alive(), "the SQLite thread still runs after every database was closed"


async def test_bus_survives_a_failing_connect_handler_and_stops_quietly() -> None:
    """The reproducer's cause: a presence publish failing inside on_connect ended the bus task with
    NotConnected and Bus.stop re-raised it. Now the bus reconnects and stop never raises."""
    broker = EmbeddedBroker()
    await broker.start()
    calls = 0

    async def on_connect() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NotConnected("injected: Operation timed out")

    async def on_message(_topic: str, _payload: bytes) -> None:
        return None

    bus = Bus(broker.address, "stop-test", ["stop-test/#"], on_message, on_connect=on_connect)
    try:
        bus.start()
        for _ in range(200):
            if calls >= 2 and bus.connected:
                break
            await asyncio.sleep(0.02)
        assert calls >= 2, "the bus did not reconnect after its connect handler failed"
        assert bus.connected
    finally:
        await asyncio.wait_for(bus.stop(), timeout=10)
        await broker.stop()
    assert not bus.connected


async def test_chaos_seed_that_cannot_decide_ends_with_exit_2_and_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chaos run whose operations blow up gives verdict 'unknown' (exit 2) with the reason and a
    results.json, never a traceback; the lab is stopped all the same."""

    async def exploding(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("injected fault during the run")

    monkeypatch.setattr(cluster.chaos, "_operate", exploding)
    report = await asyncio.wait_for(
        run_chaos(ChaosConfig(seed=7, nodes=2, ops=2, faults=()), tmp_path / "seed-7"), timeout=120
    )
    assert report.verdict == "unknown"
    assert report.exit_code == 2
    results = (tmp_path / "seed-7" / "results.json").read_text(encoding="utf-8")
    assert "injected fault during the run" in results


async def test_chaos_seed_whose_lab_cannot_start_still_gets_a_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a failure before the lab ran (template, broker) ends as exit 2 with a reason."""

    async def no_template(_cfg: ChaosConfig) -> Path:
        raise OSError("injected: disk full")

    monkeypatch.setattr(cluster.chaos, "_template", no_template)
    report = await run_chaos(ChaosConfig(seed=8, nodes=2, ops=2, faults=()), tmp_path / "seed-8")
    assert (report.verdict, report.exit_code) == ("unknown", 2)
    assert "disk full" in (tmp_path / "seed-8" / "results.json").read_text(encoding="utf-8")


async def test_a_failing_timer_is_logged_and_restarted(tmp_path: Path) -> None:
    """Item 6 of issue 10: a timer that raises is restarted (and counted), never silently gone."""
    lab = Lab(small_lab("timers", nodes=1, imp=0), tmp_path / "lab")
    await lab.start()
    try:
        agent = lab.agents["cucm1"]
        calls = 0
        alive = asyncio.Event()

        async def flaky(_agent: Any) -> None:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise RuntimeError("injected timer failure")
            alive.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(agent._supervised("flaky", flaky))
        await asyncio.wait_for(alive.wait(), timeout=10)
        assert agent.stats["timer-restarts:flaky"] == 2
        assert not task.done()
        task.cancel()
    finally:
        await lab.stop()


async def test_the_outgoing_queue_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 6 of issue 10: while the link is down, non-durable messages queue up to a bound; beyond
    it the oldest is dropped and counted (anti-entropy resends digests anyway)."""
    import node.agent

    lab = Lab(small_lab("bounded", nodes=1, imp=0), tmp_path / "lab")
    await lab.start()
    try:
        agent = lab.agents["cucm1"]
        monkeypatch.setattr(node.agent, "MAX_EPHEMERAL", 2)
        agent.bus.cut()
        await asyncio.sleep(0.2)
        for _ in range(5):
            agent.send(None, "barrier", {"token": "x"})
        assert agent.stats["ephemeral-dropped"] >= 3
        assert len(agent._ephemeral) <= 2
        agent.bus.restore()
    finally:
        await lab.stop()
