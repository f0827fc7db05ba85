"""Node logs: structured JSON lines that never carry secrets."""

from __future__ import annotations

import io
import json

import pytest

from node.errors import BadInput
from node.logs import LOG_LEVEL_ENV, log_level, node_logger


def test_a_logged_traceback_carries_no_local_variables() -> None:
    """Security: an exception logged while a password or key sits in a local variable does not write it."""
    sink = io.StringIO()
    log = node_logger(sink, lambda: "2026-01-01T00:00:00Z", node="cucm1")

    def check(password: str) -> None:
        key_pem = b"-----BEGIN PRIVATE KEY-----"
        raise RuntimeError(f"failed with {len(password) + len(key_pem)} bytes")

    try:
        check("s3cret-admin-pw")
    except RuntimeError:
        log.exception("rest-internal-error")
    line = json.loads(sink.getvalue())
    assert line["event"] == "rest-internal-error"
    assert line["exception"][0]["exc_type"] == "RuntimeError"
    assert "s3cret-admin-pw" not in sink.getvalue()
    assert "PRIVATE KEY" not in sink.getvalue()


def test_lines_below_the_level_are_not_written() -> None:
    """Issue 10 item 7: per-message detail is debug; at the default level (info) it costs no line."""
    sink = io.StringIO()
    log = node_logger(sink, lambda: "2026-01-01T00:00:00Z", level=log_level({}), node="cucm1")
    log.debug("records-applied", changed=1)
    log.info("upload", store="tomcat-trust")
    events = [json.loads(line)["event"] for line in sink.getvalue().splitlines()]
    assert events == ["upload"]
    debug_sink = io.StringIO()
    node_logger(debug_sink, lambda: "x", level=log_level({LOG_LEVEL_ENV: " DEBUG "}), node="cucm1").debug("dup")
    assert json.loads(debug_sink.getvalue())["level"] == "debug"


def test_an_unknown_log_level_is_refused_by_name() -> None:
    """Bad input: a level name the logger does not know is a clear error naming the variable."""
    with pytest.raises(BadInput, match=r"CERTSIM_LOG_LEVEL='loud\\x07' is not a log level; use one of debug"):
        log_level({LOG_LEVEL_ENV: "loud\x07"})
