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


def test_the_p99_ratio_band_holds_the_ratio_and_narrows_with_more_samples() -> None:
    """The band printed beside the p99 ratio: it contains the measured ratio, it is a band (a
    series with one stray pause moves its p99), and more uploads make it narrower."""
    bench = _bench()
    raw = [0.0013 + 0.00001 * (i % 17) for i in range(200)]
    certsim = [3 * r for r in raw]
    certsim[7] = certsim[90] = 0.02  # two pauses: the third-largest sample decides the p99
    point = bench.Summary.of(certsim).p99 / bench.Summary.of(raw).p99
    lo, hi = bench.p99_ratio_band(certsim, raw)
    assert lo <= point <= hi
    assert hi - lo > 0.5, "two stray pauses in 200 samples leave the p99 ratio uncertain"
    lo_more, hi_more = bench.p99_ratio_band(certsim * 5 + [3 * r for r in raw] * 5, raw * 10)
    assert hi_more - lo_more < hi - lo
    assert bench.p99_ratio_band(certsim, raw) == (lo, hi), "the resamples are the same in every run"
