"""Structured logs (structlog): one processor chain, defined here once, for every node's JSON log.

Each agent gets a logger bound to ``node=`` and ``cluster=`` that writes JSON lines to its own
file; the event carries both the simulated time (``sim``) and the wall time (``ts``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger


def _sim_time(now: Callable[[], str]) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    def add(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        event["sim"] = now()
        return event

    return add


def node_logger(sink: IO[str] | None, sim_now: Callable[[], str], **context: Any) -> Any:
    """A bound logger writing JSON lines to ``sink`` (or nowhere) with ``context`` on every line."""
    processors: list[Any] = [
        structlog.processors.add_log_level,
        _sim_time(sim_now),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        # tracebacks without local variables: a frame's locals may hold a password or a private key
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        structlog.processors.JSONRenderer(sort_keys=False),
    ]
    target = structlog.WriteLogger(cast(TextIO, sink)) if sink is not None else structlog.ReturnLogger()
    return structlog.wrap_logger(target, processors=processors, context_class=dict).bind(**context)


def open_log(path: Path) -> IO[str]:
    """Open a node's log for appending, line-buffered so a crash keeps what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", buffering=1, encoding="utf-8")
