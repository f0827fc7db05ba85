"""Fuzz per file kind and per door (issue 14): random and mutated inputs never crash, never change
state, and always end in one error line a person can act on. The production loaders are driven
directly (no copies); each property runs a few dozen examples so the whole file stays fast."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import userfiles
from cluster.cli import main as cli_main
from cluster.labca import LabCA, load_ca_dir
from cluster.labfile import LabFileError, load_lab, parse_lab
from cluster.scenario import ScenarioError, load_scenario, parse_scenario, step_kinds
from node import certs
from node.clock import SimClock
from node.errors import BadInput
from node.safetext import is_safe
from scenarios import shipped_dir

FAST = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
LAB_TEXT = (shipped_dir() / "labs" / "demo.yaml").read_bytes()
SCENARIO_TEXT = (shipped_dir() / "quickstart.yaml").read_bytes()
CA = LabCA(SimClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
CA.create_ca("FuzzRoot", key_algo=certs.KeyAlgo.EC, key_size=256)
LEAF = CA.issue("fuzz-leaf", issuer="FuzzRoot", cn="fuzz.lab.example", key_algo=certs.KeyAlgo.EC, key_size=256)
CERT_PEM = LEAF.pem(with_chain=True)
CERT_DER = LEAF.der()
CSR_PEM = certs.build_csr(
    subject=certs.SubjectFields().name("fuzz.lab.example"),
    key=certs.new_private_key(certs.KeyAlgo.EC, 256),
    extensions=[],
).public_bytes(serialization.Encoding.PEM)


def _one_line(message: str) -> None:
    assert message.strip(), "an empty error message"
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with a few bytes replaced, inserted or deleted, or cut short."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        byte = draw(st.integers(0, 255))
        if action == "replace":
            data[at] = byte
        elif action == "insert":
            data.insert(at, byte)
        elif action == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

# --- file kinds -------------------------------------------------------------------------------


@FAST
@given(data=mutated(LAB_TEXT))
def test_lab_file_fuzz(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("lab") / "lab.yaml"
    path.write_bytes(data)
    try:
        load_lab(path)
    except LabFileError as exc:
        _one_line(str(exc))


@FAST
@given(raw=st.dictionaries(st.sampled_from(["lab", "security_password", "nodes", "clock", "subject", "x"]), JSONISH))
def test_lab_mapping_fuzz(raw: dict[str, Any]) -> None:
    try:
        parse_lab(raw)
    except LabFileError as exc:
        _one_line(str(exc))


@FAST
@given(data=mutated(SCENARIO_TEXT))
def test_scenario_file_fuzz(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("scenario") / "s.yaml"
    path.write_bytes(data)
    (path.parent / "labs").mkdir()
    (path.parent / "labs" / "demo.yaml").write_bytes(LAB_TEXT)
    try:
        load_scenario(path)
    except ScenarioError as exc:
        _one_line(str(exc))


LAB = {
    "lab": "fz",
    "security_password": "cisco-lab-secret",
    "nodes": [{"name": "cucm1"}, {"name": "imp1", "role": "imp"}],
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(step_kinds()), args=JSONISH, extra=st.booleans())
def test_every_step_kind_refuses_random_arguments_with_one_line(kind: str, args: Any, extra: bool) -> None:
    """Any value under any step kind: parsed, or refused with a ScenarioError (never a TypeError)."""
    step: dict[str, Any] = {kind: args}
    if extra:
        step["expect_error"] = "x"
    try:
        parse_scenario({"lab": LAB, "steps": [{"ca": {"create": "R"}}, step]})
    except ScenarioError as exc:
        _one_line(str(exc))


@FAST
@given(data=st.one_of(mutated(CERT_PEM), mutated(CERT_DER), st.binary(max_size=300)))
def test_certificate_file_fuzz(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("cert") / "c.pem"
    path.write_bytes(data)
    try:
        loaded = certs.load_certificates(userfiles.read_bytes(path, "certificate"))
    except BadInput as exc:
        _one_line(exc.message)
        message = exc.message
    else:
        assert all(is_safe(certs.describe(c)["subject"]) for c in loaded)
        return
    assert is_safe(message)


@FAST
@given(data=st.one_of(mutated(CSR_PEM), st.binary(max_size=200)))
def test_csr_file_fuzz(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("csr") / "r.csr"
    path.write_bytes(data)
    ca = LabCA(CA.clock)
    ca.items.update(CA.items)
    before = set(ca.items)
    try:
        ca.sign_csr("signed", issuer="FuzzRoot", csr_pem=userfiles.read_bytes(path, "csr"))
    except BadInput as exc:
        _one_line(exc.message)
        assert set(ca.items) == before  # nothing signed
    else:
        assert set(ca.items) == {*before, "signed"}


@FAST
@given(
    files=st.dictionaries(
        st.sampled_from(["a.pem", "a.key", "b.pem"]), st.one_of(mutated(CERT_PEM), st.binary(max_size=64)), min_size=1
    )
)
def test_ca_folder_fuzz(tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes]) -> None:
    folder = tmp_path_factory.mktemp("ca")
    for name, data in files.items():
        (folder / name).write_bytes(data)
    try:
        load_ca_dir(folder, CA.clock)
    except userfiles.UserFileError as exc:
        _one_line(str(exc))


# --- the CLI door: a lab file given on the command line ------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=mutated(LAB_TEXT))
def test_cli_lab_file_fuzz(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """`certsim lab hosts FILE`: exit 0 or 2, one error line, never a traceback."""
    path = tmp_path_factory.mktemp("cli") / "lab.yaml"
    path.write_bytes(data)
    result = CliRunner().invoke(cli_main, ["lab", "hosts", str(path)])
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if result.exit_code == 2:
        _one_line(result.output.splitlines()[-1] if result.output.strip() else "")


# --- the SSH door: the platform CLI a session talks to -------------------------------------------------


class _Node:
    """A node that answers reads and records anything else (which random input must never reach)."""

    def __init__(self) -> None:
        self.changes: list[str] = []

    async def __call__(self, op: str, args: dict[str, Any]) -> Any:
        if op == "status":
            return {"role": "cucm", "publisher": True, "connected": True, "outbox": 0, "digests": {}}
        if op in ("list", "identity_list", "csr_list", "service_list", "cluster_nodes"):
            return []
        self.changes.append(op)
        raise BadInput("refused by the fuzz node")


WORDS = st.sampled_from(
    [
        "show",
        "cert",
        "list",
        "own",
        "trust",
        "utils",
        "set",
        "file",
        "delete",
        "csr",
        "regen",
        "tomcat",
        "yes",
        "no",
        "-----BEGIN CERTIFICATE-----",
        "",
    ]
)
LINES = st.lists(st.one_of(WORDS, st.text(max_size=20)), max_size=6).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(LINES, min_size=1, max_size=8))
async def test_platform_cli_fuzz(lines: list[str]) -> None:
    """Random lines: never an internal error, every output line safe to print; whatever reached the node
    beyond reads was refused there (so nothing changed)."""
    from cluster.doors.platform_cli import PlatformCli

    node = _Node()
    cli = PlatformCli("cucm1", node, CA.clock)
    for line in lines:
        out = "".join([o async for o in cli.handle_line(line)])
        assert "Internal error" not in out, (line, out)
        assert is_safe(out.replace("\n", "").replace("\t", "")), out
