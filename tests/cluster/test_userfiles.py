"""The checked loader for user files (cluster.userfiles): bounded, UTF-8, safe YAML, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster import userfiles
from cluster.labfile import LabFileError, load_lab
from cluster.scenario import ScenarioError, load_scenario
from cluster.userfiles import MAX_BYTES, MAX_DEPTH, UserFileError, load_yaml, read_bytes

LAB = """\
lab: demo
security_password: cisco-lab-secret
nodes:
  - {name: cucm-pub, role: cucm}
  - {name: cucm-sub1, role: cucm}
"""


def _bomb(levels: int = 9) -> str:
    """The 'billion laughs' document: each level repeats the previous one nine times."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast() -> None:
    """An alias bomb is refused while composing, long before it expands (was: 2.5 GB and a minute)."""
    started = time.perf_counter()
    with pytest.raises(UserFileError, match=r"bomb.yaml: expands to more than 200,000 values"):
        load_yaml(_bomb(), "bomb.yaml")
    assert time.perf_counter() - started < 5  # generous on a loaded machine; the real cost is milliseconds


def test_aliases_within_limits_still_work() -> None:
    data = load_yaml("base: &b {role: cucm}\nnodes: [*b, *b]\nmerged: {<<: *b, name: x}\n", "ok.yaml")
    assert data["nodes"] == [{"role": "cucm"}, {"role": "cucm"}]
    assert data["merged"] == {"role": "cucm", "name": "x"}


def test_recursive_alias_refused() -> None:
    with pytest.raises(UserFileError, match=r"alias '\*a' refers to itself"):
        load_yaml("a: &a [1, *a]\n", "loop.yaml")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + "- \n" for i in range(200))])
def test_deep_nesting_refused_without_traceback(text: str) -> None:
    with pytest.raises(UserFileError, match=rf"deep.yaml: nested deeper than {MAX_DEPTH} levels"):
        load_yaml(text, "deep.yaml")


def test_duplicate_key_refused() -> None:
    """A duplicate top-level key is refused, not silently 'last wins'."""
    with pytest.raises(UserFileError, match=r"dup.yaml: duplicate key 'lab' at line 3"):
        load_yaml("lab: a\nnodes: []\nlab: b\n", "dup.yaml")


def test_unhashable_key_refused() -> None:
    with pytest.raises(UserFileError, match="mapping key must be a plain value"):
        load_yaml("? [1, 2]\n: 3\n", "k.yaml")


def test_yaml_syntax_error_is_one_line() -> None:
    with pytest.raises(UserFileError) as info:
        load_yaml("a: [1, 2\nb: 3\n", "bad.yaml")
    assert "\n" not in str(info.value)
    assert "line" in str(info.value)


def test_non_utf8_file_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(LAB.encode() + "description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabFileError, match=r"latin1.yaml: not UTF-8 text \(byte 0xe9 at offset \d+, line 6\)"):
        load_lab(path)


def test_oversized_file_refused_before_reading(tmp_path: Path) -> None:
    """A 60 MB lab file is refused from its size (was: parsed for a minute and a half)."""
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.truncate(60 * 1024 * 1024)  # sparse: no disk, no time
    started = time.perf_counter()
    with pytest.raises(
        LabFileError, match=rf"huge.yaml: 62,914,560 bytes; a lab file has at most {MAX_BYTES['lab']:,}"
    ):
        load_lab(path)
    assert time.perf_counter() - started < 5


def test_endless_stream_read_only_to_the_limit(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    script = (  # writes four times the limit; cut off with a broken pipe when we stop reading
        f"import sys\ntry:\n    open(sys.argv[1], 'wb').write(b'x' * {4 * MAX_BYTES['csr']})\n"
        "except BrokenPipeError:\n    pass\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(fifo)], stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(UserFileError, match="more than 65,536 bytes"):
            read_bytes(fifo, "csr")
    finally:
        writer.wait(timeout=30)


def test_folder_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserFileError, match="is a folder"):
        read_bytes(tmp_path, "certificate")
    with pytest.raises(UserFileError, match=r"cannot read certificate file .*nope.pem"):
        read_bytes(tmp_path / "nope.pem", "certificate")


def test_ca_folder_file_count_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userfiles, "MAX_CA_FILES", 3)
    for i in range(4):
        (tmp_path / f"c{i}.pem").write_text("x", encoding="utf-8")
    with pytest.raises(UserFileError, match="4 certificates; a CA folder holds at most 3"):
        userfiles.ca_folder_files(tmp_path)


def test_scenario_file_uses_the_checked_loader(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_bomb(), encoding="utf-8")
    with pytest.raises(ScenarioError, match="expands to more than"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bomb", _bomb().encode()),
        ("latin1", b"lab: caf\xe9\n"),
        ("deep", b"[" * 3000 + b"]" * 3000),
        ("dup", (LAB + "lab: other\n").encode()),
        ("types", b"lab: demo\nsecurity_password: [1]\nnodes: 3\n"),
    ],
)
def test_cli_invalid_lab_file_is_exit_2_one_line(tmp_path: Path, name: str, content: bytes) -> None:
    """An invalid file: exit code 2 ("could not decide"), one line on stderr, no traceback, never wrapped."""
    path = tmp_path / f"{name}-with-a-rather-long-file-name-so-that-the-error-line-passes-eighty-columns.yaml"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "lab", "hosts", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80", "TERM": "dumb"},
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and str(path) in lines[0]


def test_control_characters_are_a_yaml_error_not_a_crash() -> None:
    """Found by the fuzz test: PyYAML's reader refuses a NUL while the loader is built."""
    with pytest.raises(UserFileError, match=r"nul.yaml: not valid YAML"):
        load_yaml("\x00lab: demo\n", "nul.yaml")
