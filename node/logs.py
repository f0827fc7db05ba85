"""Structured logs (structlog): one processor chain, defined here once, for every node's JSON log.

Each agent gets a logger bound to ``node=`` and ``cluster=`` that writes JSON lines to its own
file; the event carries both the simulated time (``sim``) and the wall time (``ts``).

Lines below the level in ``$CERTSIM_LOG_LEVEL`` (default ``info``) cost nothing: per-message
detail (every replicated apply, every duplicate delivery) is ``debug``, because a line per node
per change is most of a receiving node's work otherwise (the lab's ``history.jsonl`` has them all).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, TextIO, cast

import structlog
from structlog.typing import EventDict, WrappedLogger

from node.errors import BadInput

LOG_LEVEL_ENV = "CERTSIM_LOG_LEVEL"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
DEFAULT_LEVEL = "info"


def log_level(environ: Mapping[str, str] | None = None) -> int:
    """The node log level named in ``$CERTSIM_LOG_LEVEL``; a name it does not know is the user's error."""
    raw = (os.environ if environ is None else environ).get(LOG_LEVEL_ENV, "") or DEFAULT_LEVEL
    level = LEVELS.get(raw.strip().lower())
    if level is None:
        shown = raw.encode("ascii", "backslashreplace").decode()[:40]
        raise BadInput(f"{LOG_LEVEL_ENV}={shown!r} is not a log level; use one of {', '.join(LEVELS)}")
    return level


def _sim_time(now: Callable[[], str]) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    def add(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        event["sim"] = now()
        return event

    return add


def node_logger(sink: IO[str] | None, sim_now: Callable[[], str], *, level: int | None = None, **context: Any) -> Any:
    """A bound logger writing JSON lines at ``level`` (default: ``log_level()``) and above to ``sink``
    (or nowhere) with ``context`` on every line."""
    processors: list[Any] = [
        structlog.processors.add_log_level,
        _sim_time(sim_now),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        # tracebacks without local variables: a frame's locals may hold a password or a private key
        structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False)),
        structlog.processors.JSONRenderer(sort_keys=False),
    ]
    target = structlog.WriteLogger(cast(TextIO, sink)) if sink is not None else structlog.ReturnLogger()
    wrapper = structlog.make_filtering_bound_logger(log_level() if level is None else level)
    return structlog.wrap_logger(target, processors=processors, wrapper_class=wrapper, context_class=dict).bind(
        **context
    )


def open_log(path: Path) -> IO[str]:
    """Open a node's log for appending, line-buffered so a crash keeps what was written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("a", buffering=1, encoding="utf-8")
