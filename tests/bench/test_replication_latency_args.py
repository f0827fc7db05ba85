"""bench/replication_latency.py refuses option values it cannot honour, naming them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replication_latency.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replication_latency_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--interleave", "--sequential"], "exclude each other"),
        (["--gap-ms", "-1"], "--gap-ms must be between 0 and 1000"),
        (["--gap-ms", "1001"], "--gap-ms must be between 0 and 1000"),
        (["--nodes", "1"], "--nodes must be between 2"),
        (["--uploads", "0"], "--uploads must be at least 1"),
    ],
)
def test_bad_options_are_refused_by_name(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _bench().parse_args(argv)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_the_default_times_the_series_one_after_the_other() -> None:
    args = _bench().parse_args([])
    assert not args.interleave and args.gap_ms == 0
    assert _bench().parse_args(["--interleave", "--gap-ms", "5"]).interleave
