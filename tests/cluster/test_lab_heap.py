"""A lab process's housekeeping: cluster.lab.settle_heap, cluster.labdir.write_private_json."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cluster.lab import FULL_GC_OVERDUE, QUIET_GC_CHECK_S, Lab, QuietCollections, settle_heap
from cluster.labdir import write_private_json
from tests.conftest import LabFactory, small_lab


def test_settle_heap_freezes_what_is_alive() -> None:
    """After settle_heap the objects alive are frozen: full collections no longer walk them."""
    keep = [[i] for i in range(1000)]
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()  # this test process goes on creating and dropping labs


async def test_full_collections_wait_for_a_quiet_moment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After settle_heap a due full collection waits while a lab of the process is busy (the collector
    itself would run it only FULL_GC_OVERDUE times later) or the process holds it off, runs at the first
    check that finds every lab quiet, and the collector's own thresholds come back once the loop has no
    lab left."""
    before = gc.get_threshold()
    lab = Lab(small_lab(), tmp_path / "lab")
    lab.loop = asyncio.get_running_loop()  # as Lab.start sets it; this lab's nodes are not needed
    busy = True
    monkeypatch.setattr(Lab, "quiet", property(lambda _lab: not busy))
    try:
        settle_heap()
        collector = QuietCollections.installed
        assert collector is not None and collector.running and collector.loop is lab.loop
        assert gc.get_threshold() == (before[0], before[1], before[2] * FULL_GC_OVERDUE)
        assert QuietCollections.install(lab.loop) is collector  # once per loop: no second raise
        assert gc.get_threshold()[2] == before[2] * FULL_GC_OVERDUE
        while not collector.due:
            gc.collect(1)  # each young collection of generation 1 counts towards the next full one
        await asyncio.sleep(QUIET_GC_CHECK_S * 3)
        assert collector.collections == 0 and collector.due  # busy: it waits
        busy = False
        with QuietCollections.held():  # work the labs do not show (a benchmark's raw fan-out)
            await asyncio.sleep(QUIET_GC_CHECK_S * 3)
            assert collector.collections == 0 and collector.due
        await asyncio.sleep(QUIET_GC_CHECK_S * 3)
        assert collector.collections == 1 and not collector.due
        lab.loop = None  # (stopped and gone from this loop)
        await asyncio.sleep(QUIET_GC_CHECK_S * 2)
        assert not collector.running and QuietCollections.installed is None
        assert gc.get_threshold() == before
    finally:
        if QuietCollections.installed is not None:
            QuietCollections.installed.stop()
        gc.unfreeze()


async def until_quiet(lab: Lab, limit_s: float = 10.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while not lab.quiet:
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_lab_is_quiet_only_with_nothing_in_flight(make_lab: LabFactory) -> None:
    """What QuietCollections waits for: a request of the lab's client waiting for its answer (even
    before a node has it) and a node handling it are not quiet; the settled lab before and after is."""
    lab = await make_lab(small_lab("quiet", nodes=2, imp=0))
    assert await until_quiet(lab)
    request = asyncio.create_task(lab.request("cucm1", "ping"))
    await asyncio.sleep(0)  # sent: on its way to the node, which is not busy yet
    assert lab.client.waiting == 1
    assert not lab.quiet
    await request
    assert await until_quiet(lab)
    assert lab.client.waiting == 0


def test_state_files_are_written_whole_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """running.json / class.json: the CLI polls them while a lab starts, so a writer replaces the file in
    one step (a reader sees the old or the new text, never a half) and keeps it 0600 (it holds the bus key)."""
    path = tmp_path / "running.json"
    write_private_json(path, {"pid": 1})
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        seen.append(path.read_text(encoding="utf-8"))  # what a reader sees right before the swap
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_private_json(path, {"pid": 2, "bus_key": "ab" * 32})
    assert json.loads(seen[0]) == {"pid": 1}  # the old file, whole, until the new one replaces it
    assert json.loads(path.read_text(encoding="utf-8"))["pid"] == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["running.json"]
