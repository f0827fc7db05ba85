"""Node logs: structured JSON lines that never carry secrets."""

from __future__ import annotations

import io
import json

from node.logs import node_logger


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
