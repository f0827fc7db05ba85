"""A lab process's housekeeping: cluster.lab.settle_heap, cluster.labdir.write_private_json."""

from __future__ import annotations

import gc
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from cluster.lab import settle_heap
from cluster.labdir import write_private_json


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
