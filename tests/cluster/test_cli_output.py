"""CLI output for scripts: never markup from certificate text, never wrapped or truncated off a terminal."""

from __future__ import annotations

import pytest

from cluster.cli.common import NOT_A_TERMINAL_WIDTH, _console, fail
from cluster.scenario import StepResult
from cluster.views import cert_table, step_line
from node.safetext import safe_text

HOSTILE_CN = safe_text("[/][bold red]evil\n\x1b[2Jcleared")  # as describe() hands it to every door
LONG_NAME = "a-very-long-certificate-name-" * 8


def _row() -> dict[str, object]:
    return {
        "store": "tomcat-trust",
        "name": LONG_NAME,
        "usage": "trust",
        "key_type": "EC",
        "key_bits": 256,
        "issuer_cn": HOSTILE_CN,
        "not_after": "2027-01-01T00:00:00Z",
        "origin": "uploaded",
        "flags": [],
    }


def test_tables_keep_whole_values_and_print_certificate_text_literally(capsys: pytest.CaptureFixture[str]) -> None:
    """Not on a terminal: no value truncated or folded at 80 columns; '[/]' in a CN is text, not markup."""
    console = _console(stderr=False)
    assert console.width == NOT_A_TERMINAL_WIDTH
    console.print(cert_table([_row()], "cucm1"))
    out = capsys.readouterr().out
    assert LONG_NAME in out
    assert HOSTILE_CN in out
    assert "\x1b" not in out


def test_step_lines_show_detail_text_literally(capsys: pytest.CaptureFixture[str]) -> None:
    step = StepResult(3, "upload", "failed", "2026-01-01T00:00:00Z", "R-REPL-1", f"refused: [/] {HOSTILE_CN}")
    _console(stderr=False).print(step_line(step))
    out = capsys.readouterr().out
    assert f"step  3 upload  R-REPL-1 refused: [/] {HOSTILE_CN}" in out


def test_errors_are_one_line_however_long(capsys: pytest.CaptureFixture[str]) -> None:
    message = "x" * 300 + " [not markup] " + "y" * 50
    with pytest.raises(SystemExit) as info:
        fail(message.replace("[", r"\["), code=2)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
