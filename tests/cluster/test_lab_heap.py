"""cluster.lab.settle_heap: a lab process's start-up objects leave the cyclic collector's sight."""

from __future__ import annotations

import gc

from cluster.lab import settle_heap


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
