"""cluster.doors.frontdoors: a node's SSH and HTTPS front doors open and close with its agent, on its own
loopback address; a busy or forbidden port falls back to a free one, and says so."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncssh
import pytest

from cluster.controller import OPS
from cluster.doors.auth import STALE_RESERVATION_S, Throttle
from cluster.doors.frontdoors import DOORS_DIR, FrontDoors, bind_tcp, node_request
from cluster.doors.rest import API_ROOT, basic_auth_header
from cluster.lab import Lab
from cluster.labdir import read_door_files
from cluster.labfile import LabSpec, hosts_lines, parse_lab
from cluster.running import pid_alive
from tests.conftest import small_lab

EMBEDDED = pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the doors use the bus like the CLI


def spec(**doors: Any) -> LabSpec:
    return small_lab(nodes=2, imp=1, front_doors={"ssh_port": 0, "https_port": 0, **doors})


@pytest.fixture
async def lab(tmp_path: Path, broker_url: str | None) -> AsyncIterator[Lab]:
    lab = Lab(spec(), tmp_path / "lab", broker_url=broker_url, front_doors=True)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


async def https_get(doors: FrontDoors, path: str = "identity/certificate?service=tomcat") -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {"Authorization": basic_auth_header("admin", "certsim-admin")}
    url = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}{path}"
    async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx, headers=headers) as response:
        await response.read()
        return response.status


async def ssh_run(doors: FrontDoors, command: str, password: str = "certsim-admin") -> asyncssh.SSHCompletedProcess:
    listener = doors.ssh_listener
    assert listener is not None, doors.describe()
    async with asyncssh.connect(
        listener.host,
        listener.port,
        username="admin",
        password=password,
        known_hosts=None,
        client_keys=[],
        agent_path=None,
        preferred_auth="password",
    ) as conn:
        return await conn.run(command, check=False)


async def refused(host: str, port: int) -> bool:
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except OSError:
        return True
    writer.close()
    return False


@EMBEDDED
async def test_front_doors_open_and_close_with_their_node(lab: Lab) -> None:
    """Every node listens on its own loopback address (SSH and HTTPS) while its agent runs; stop, crash
    and lab stop close the doors; start opens them again. doors/<node>.json says where, never the password."""
    assert set(lab.doors) == {"cucm1", "cucm2", "imp1"}
    addresses = {n: lab.doors[n].https.host for n in lab.doors}
    assert addresses == {"cucm1": "127.0.0.11", "cucm2": "127.0.0.12", "imp1": "127.0.0.13"}
    for name, doors in lab.doors.items():
        assert await https_get(doors) == 200, name
        info = doors.describe()
        assert info["ssh"]["host"] == info["https"]["host"] == addresses[name]
        assert info["ssh"]["port"] != 0 and info["https"]["port"] != 0
    on_disk = read_door_files(lab.lab_dir, pid_alive)
    assert set(on_disk) == {"cucm1", "cucm2", "imp1"} and on_disk["cucm1"]["pid"] == os.getpid()
    assert "certsim-admin" not in json.dumps(on_disk)
    status = await OPS["status"](lab, {})  # the @lab controller reports them too
    assert status["front_doors"]["cucm2"]["https"]["address"] == lab.doors["cucm2"].https.describe()["address"]

    listing = await ssh_run(lab.doors["cucm1"], "show cert list own")
    assert listing.exit_status == 0 and "tomcat/tomcat.pem" in str(listing.stdout)

    old = lab.doors["cucm2"]
    await lab.stop_node("cucm2")
    assert "cucm2" not in lab.doors and "cucm2" not in read_door_files(lab.lab_dir, pid_alive)
    assert await refused(old.https.host, old.https.port)
    assert old.ssh_listener is not None and await refused(old.ssh_listener.host, old.ssh_listener.port)
    await lab.start_node("cucm2")
    assert await https_get(lab.doors["cucm2"]) == 200

    crashed = lab.doors["imp1"]
    await lab.crash_node("imp1")
    assert "imp1" not in lab.doors and await refused(crashed.https.host, crashed.https.port)
    await lab.start_node("imp1")
    assert (await ssh_run(lab.doors["imp1"], "show cert list own")).exit_status == 0

    everything = list(lab.doors.values())
    await lab.stop()
    assert lab.doors == {} and not list((lab.lab_dir / DOORS_DIR).glob("*.json"))
    for doors in everything:
        assert await refused(doors.https.host, doors.https.port)


@EMBEDDED
async def test_wrong_passwords_count_across_both_doors(lab: Lab) -> None:
    """One throttle per node: wrong SSH passwords slow the HTTPS door's answers to that peer too."""
    doors = lab.doors["cucm1"]
    for _ in range(3):
        with pytest.raises(asyncssh.PermissionDenied):
            await ssh_run(doors, "show cert list own", password="not-it")
    assert doors.throttle.failures("127.0.0.1") >= 3
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await https_get(doors) == 200
    assert loop.time() - start >= 0.45
    assert doors.throttle.failures("127.0.0.1") == 0


@EMBEDDED
async def test_a_busy_port_falls_back_to_a_free_one(tmp_path: Path, broker_url: str | None) -> None:
    """The lab file's port when free; in use, a free port instead, with a note (log, describe, status)."""
    taken_https = socket.create_server(("127.0.0.11", 0))
    taken_ssh = socket.create_server(("127.0.0.11", 0))
    try:
        https_port, ssh_port = taken_https.getsockname()[1], taken_ssh.getsockname()[1]
        raw = {
            "lab": "busy",
            "security_password": "test-cluster-pw",
            "front_doors": {"ssh_port": 0, "https_port": 0},
            "nodes": [{"name": "cucm1", "ssh_port": ssh_port, "https_port": https_port}, {"name": "cucm2"}],
        }
        lab = Lab(parse_lab(raw), tmp_path / "lab", broker_url=broker_url, front_doors=True)
        await lab.start()
        try:
            info = lab.doors["cucm1"].describe()
            assert info["https"]["requested"] == https_port and info["https"]["port"] != https_port
            assert "https port" in info["https"]["note"] and "is in use" in info["https"]["note"]
            assert info["ssh"]["requested"] == ssh_port and info["ssh"]["port"] != ssh_port
            assert "is in use" in info["ssh"]["note"]
            assert await https_get(lab.doors["cucm1"]) == 200
            assert lab.doors["cucm2"].describe()["https"]["note"] == ""
            log = (lab.log_dir / "cucm1.log").read_text(encoding="utf-8")
            assert "front-door-port-fallback" in log
        finally:
            await lab.stop()
    finally:
        taken_https.close()
        taken_ssh.close()


def test_a_forbidden_port_falls_back_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports below 1024 need privilege: binding 443 unprivileged fails with EACCES; a free port is used."""

    class Unprivileged(socket.socket):
        def bind(self, address: Any) -> None:
            if address[1] and address[1] < 1024:
                raise PermissionError(errno.EACCES, "Permission denied")
            super().bind(address)

    monkeypatch.setattr(socket, "socket", Unprivileged)  # the module cluster.doors.frontdoors binds with
    sock, note = bind_tcp("127.0.0.11", 443)
    monkeypatch.undo()
    try:
        assert sock.getsockname()[1] not in (0, 443)
        assert (
            note == "https port 443 is not permitted (ports below 1024 need privilege); a free port was taken instead"
        )
    finally:
        sock.close()


def test_hosts_lines_name_every_node() -> None:
    """certsim lab hosts: /etc/hosts lines with the address, the FQDN and the short name."""
    lab = small_lab(nodes=1, imp=1)
    assert hosts_lines(lab) == ["127.0.0.11  cucm1.lab.example cucm1", "127.0.0.12  imp1.lab.example imp1"]
    other = small_lab(nodes=1, imp=0, domain="corp.example")
    assert hosts_lines(other) == ["127.0.0.11  cucm1.corp.example cucm1"]


# --- scenario steps ssh: and rest: (cluster.steps_doors) -----------------------------------------

INLINE_LAB = {
    "lab": "steps",
    "security_password": "test-cluster-pw",
    "front_doors": {"ssh_port": 0, "https_port": 0},
    "nodes": [{"name": "cucm1"}, {"name": "imp1", "role": "imp"}],
}

BAD_STEPS: list[tuple[Any, str]] = [
    ({"rest": {"node": "cucm1"}}, r"missing path"),
    ({"rest": {"node": "cucm9", "path": "csr"}}, r"unknown node 'cucm9'"),
    ({"rest": {"node": "cucm1", "path": "csr", "method": "PATCH"}}, r"method is GET or POST"),
    ({"rest": {"node": "cucm1", "path": "csr", "expect": {"stauts": 200}}}, r"unknown expectation\(s\) stauts"),
    ({"rest": {"node": "cucm1", "path": "csr", "expect": {"status": "ok"}}}, r"expect.status is an HTTP status"),
    ({"rest": {"node": "cucm1", "path": "csr", "json": {"c": [{"pem": "A", "x": 1}]}}}, r"certificate reference"),
    ({"rest": {"node": "cucm1", "path": "csr", "auth": {"pass": "x"}}}, r"unknown key\(s\) pass"),
    ({"rest": {"node": "cucm1", "path": "csr"}, "expect_error": "x"}, r"expect_error does not apply"),
    ({"ssh": {"node": "cucm1"}}, r"missing command"),
    ({"ssh": {"node": "cucm1", "command": " "}}, r"command is one platform command"),
    ({"ssh": {"node": "cucm1", "command": "help", "expect": {"exit": 2}}}, r"expect.exit is 0"),
    ({"ssh": {"node": "cucm1", "command": "help", "input": {"pem": "A", "chain": "yes"}}}, r"'chain' of"),
]


@pytest.mark.parametrize(("step", "pattern"), BAD_STEPS)
def test_door_steps_are_validated_before_the_lab_starts(step: Any, pattern: str) -> None:
    from cluster.scenario import ScenarioError, parse_scenario

    with pytest.raises(ScenarioError, match=pattern):
        parse_scenario({"scenario": "bad", "lab": INLINE_LAB, "steps": [step]})


def test_door_steps_need_a_lab_with_front_doors() -> None:
    from cluster.scenario import ScenarioError, parse_scenario

    closed = {**INLINE_LAB, "front_doors": {"enabled": False}}
    with pytest.raises(ScenarioError, match=r"this lab disables its front doors"):
        parse_scenario({"lab": closed, "steps": [{"ssh": {"node": "cucm1", "command": "help"}}]})


@EMBEDDED
async def test_door_steps_open_the_doors_on_demand_and_fail_as_checks(tmp_path: Path, broker_url: str | None) -> None:
    """No doors until the first ssh:/rest: step; a broken expectation fails the step (verdict invalid)."""
    from cluster.runs import run_scenario
    from cluster.scenario import parse_scenario

    scenario = parse_scenario(
        {
            "scenario": "doors-on-demand",
            "lab": INLINE_LAB,
            "steps": [
                {"list": {"node": "cucm1", "store": "tomcat-trust"}},
                {"ssh": {"node": "imp1", "command": "show cert list own", "expect": {"contains": "cup/cup.pem"}}},
                {"rest": {"node": "cucm1", "path": "snapshot/server", "expect": {"status": 404}}},
                {"rest": {"node": "cucm1", "path": "nothing", "expect": {"status": 404, "json": {"status": 404}}}},
            ],
        }
    )
    report = await run_scenario(scenario, tmp_path / "results", broker_url=broker_url)
    statuses = [(s.kind, s.status) for s in report.result.steps]
    assert statuses == [("list", "ok"), ("ssh", "ok"), ("rest", "failed"), ("rest", "ok")], report.result.steps
    assert report.result.verdict == "invalid"
    assert "HTTP 200" in report.result.steps[2].detail and "expected 404" in report.result.steps[2].detail


# ---------------------------------------------------------------------------------------------
# the throttle both doors share (issue 6 review, finding 1)


def test_throttle_reservations_count_before_the_wait() -> None:
    """Throttle: an attempt counts as a failure from its reservation, so attempts made together get
    the delays of attempts made one after another (0, 0, 0, 0.5, 1, 2 ... up to the cap, never an
    overflow); a success drops only its own reservation (plus the failures settled before it began),
    never the reservations of attempts still in flight."""
    throttle = Throttle()
    burst = [throttle.reserve("127.0.0.1") for _ in range(8)]
    assert [t.delay for t in burst] == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert throttle.failures("127.0.0.1") == 8 and throttle.failures("127.0.0.2") == 0
    burst[3].succeeded()  # right password among wrong ones: the others stay counted
    assert throttle.failures("127.0.0.1") == 7
    for ticket in burst:
        ticket.failed()  # no-op for the one already settled
    assert throttle.failures("127.0.0.1") == 7
    late = throttle.reserve("127.0.0.1")  # began after those seven settled: forgives them
    inflight = throttle.reserve("127.0.0.1")
    assert late.delay == 8.0
    late.succeeded()
    assert throttle.failures("127.0.0.1") == 1  # only ``inflight`` remains
    inflight.failed()
    assert throttle.failures("127.0.0.1") == 1
    many = [throttle.reserve("10.0.0.1") for _ in range(3000)]
    assert many[-1].delay == throttle.max_delay_s


async def test_throttle_attempt_waits_and_counts_an_unsettled_attempt_as_a_failure() -> None:
    """Throttle.attempt: waits the reserved delay before handing the attempt over; an attempt left
    unsettled (an exception, a cancelled wait) counts as a failure; a settled one is not counted twice."""
    throttle = Throttle(free=1, max_delay_s=0.2)
    loop = asyncio.get_running_loop()

    async def wrong(peer: str) -> None:
        async with throttle.attempt(peer) as attempt:
            attempt.failed()

    start = loop.time()
    await asyncio.gather(*(wrong("p") for _ in range(4)))  # delays 0, 0.2 (0.5 capped), 0.2, 0.2
    assert loop.time() - start >= 0.2 - 0.02
    assert throttle.failures("p") == 4
    with pytest.raises(RuntimeError):
        async with throttle.attempt("q"):
            raise RuntimeError("client vanished")
    assert throttle.failures("q") == 1
    throttle.reserve("q")  # in flight: the next attempt waits, and is cancelled while waiting
    task = asyncio.create_task(wrong("q"))
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert throttle.failures("q") == 3
    async with throttle.attempt("q") as attempt:
        attempt.succeeded()
    assert throttle.failures("q") == 1  # the settled ones are forgiven; the reservation still open is not


def test_throttle_delay_failed_succeeded_pattern_is_protected_too() -> None:
    """Throttle, the ``delay(peer)`` / sleep / ``failed(peer)`` or ``succeeded(peer)`` pattern (the REST
    door's): ``delay`` reserves the attempt, so parallel callers wait for each other; a reservation never
    settled (its request vanished) becomes a failure after ``STALE_RESERVATION_S``; a success forgives
    the failures before it, not the reservations still open."""
    clock = [1000.0]
    throttle = Throttle(now=lambda: clock[0])
    assert [throttle.delay("r") for _ in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0]
    for _ in range(5):
        throttle.failed("r")
    assert throttle.failures("r") == 6  # one request vanished: its reservation is still open
    assert throttle.delay("r") == 4.0
    throttle.succeeded("r")
    assert throttle.failures("r") == 1  # the five settled are forgiven; one reservation is still open

    clock[0] += STALE_RESERVATION_S + 1
    assert throttle.failures("r") == 1  # the vanished request's reservation: now a settled failure
    throttle.delay("r")
    throttle.succeeded("r")
    assert throttle.failures("r") == 0
    throttle.failed("t")  # without a reservation: counted all the same
    assert throttle.failures("t") == 1
    throttle.succeeded("t")
    assert throttle.failures("t") == 0


@EMBEDDED
async def test_parallel_wrong_rest_logins_wait_for_each_other(lab: Lab) -> None:
    """Issue 6 review, finding 1, over HTTPS: wrong Basic credentials sent in parallel are slowed like the
    same requests one after another (the REST door's call pattern reserves each attempt first)."""
    doors = lab.doors["cucm1"]
    doors.throttle.max_delay_s = 1.0
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}snapshot/server"
    headers = {"Authorization": basic_auth_header("admin", "not-it")}
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:

        async def wrong() -> int:
            async with session.get(url, ssl=ctx, headers=headers) as response:
                await response.read()
                return response.status

        start = loop.time()
        assert await asyncio.gather(*(wrong() for _ in range(8))) == [401] * 8
        assert loop.time() - start >= 1.0 - 0.05  # delays 0, 0, 0, 0.5, 1, 1, 1, 1
    assert doors.throttle.failures("127.0.0.1") == 8


# ---------------------------------------------------------------------------------------------
# the doors/<node>.json note and the SSH host key (issue 6 review, findings 7 and 8)


@EMBEDDED
async def test_the_doors_note_follows_a_tomcat_restart(lab: Lab) -> None:
    """R-OP-UPLOAD-4, `certsim lab status`: after Cisco Tomcat restarts with a new certificate, HTTPS
    serves it and doors/<node>.json says so (``tls_sha256``), not the certificate served at start."""
    doors = lab.doors["cucm1"]
    first = read_door_files(lab.lab_dir, pid_alive)["cucm1"]["tls_sha256"]
    assert first == doors.describe()["tls_sha256"]
    regen = await lab.request("cucm1", "regen", {"unit": "tomcat"})
    await doors.tls.wait_idle()
    assert read_door_files(lab.lab_dir, pid_alive)["cucm1"]["tls_sha256"] == first  # not before the restart
    await lab.request("cucm1", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
    await doors.tls.wait_idle()
    assert doors.describe()["tls_sha256"] == regen["sha256"] != first
    assert read_door_files(lab.lab_dir, pid_alive)["cucm1"]["tls_sha256"] == regen["sha256"]


@EMBEDDED
async def test_doors_without_a_state_dir_write_nothing(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FrontDoors.start with ``state_dir=None`` keeps nothing on disk: the SSH host key is an in-memory
    ed25519 key (not a file in the working directory) and no doors note is written."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    doors = await FrontDoors.start(
        lab=lab.spec,
        node="cucm2",
        agent=lab.agents["cucm2"],
        request=node_request(lab.client.request, "cucm2"),
        clock=lab.clock,
        state_dir=None,
    )
    try:
        result = await ssh_run(doors, "set cli pagination off")
        assert result.exit_status == 0 and result.stdout == "Automatic pagination is turned off\n"
        await lab.request("cucm2", "regen", {"unit": "tomcat"})
        await lab.request("cucm2", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
        await doors.tls.wait_idle()
    finally:
        await doors.close()
    assert list(cwd.iterdir()) == []
