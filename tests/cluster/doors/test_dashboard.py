"""certsim lab ui (cluster.doors.dashboard) against a running lab: login, the nodes and the trust matrix,
fault buttons that are the lab's own requests, and the live feed of the lab's history."""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cluster.controller import LabController
from cluster.doors.dashboard import (
    MAX_EVENT_LINE,
    ClassDashboard,
    Dashboard,
    RunningUi,
    feed_line,
    split_lines,
    start_dashboard,
)
from cluster.lab import History, Lab
from cluster.labca import LabCA
from cluster.labdir import HISTORY_FILE
from tests.conftest import small_lab

EMBEDDED = pytest.mark.parametrize("broker", ["embedded"], indirect=True)


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
async def ui(tmp_path: Path, broker_url: str | None) -> AsyncIterator[tuple[Lab, RunningUi]]:
    """A lab as 'lab up' runs it (controller, history file) and its dashboard."""
    history = History(tmp_path / "lab" / HISTORY_FILE)
    lab = Lab(small_lab(nodes=2, imp=0), tmp_path / "lab", broker_url=broker_url, history=history)
    await lab.start()
    controller = LabController(lab)
    await controller.start()
    running = await start_dashboard(Dashboard(lab.spec, lab.lab_dir, lab.client))
    try:
        yield lab, running
    finally:
        await running.close()
        await controller.stop()
        await lab.stop()
        history.close()


@EMBEDDED
async def test_dashboard_shows_the_lab_and_its_fault_buttons_act(ui: tuple[Lab, RunningUi]) -> None:
    """The dashboard needs a login; it lists every node and the replicated trust matrix; its Stop button is
    the lab's own stop request (the node goes down and the page says so), and the live feed streams the
    lab's history (the fault included) as text."""
    lab, running = ui
    base = running.url
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=insecure())
    ) as s:
        async with s.get(base, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/lab/login"
        async with s.get(base + "/login") as r:
            login_token = re.search(r'name="login_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        form = {"j_username": "admin", "j_password": "certsim-admin", "login_token": login_token}
        async with s.post(base + "/login", data=form) as r:
            html = await r.text()
        assert 'data-node="cucm1" data-state="up"' in html and 'data-node="cucm2" data-state="up"' in html
        assert 'id="matrix"' in html and "tomcat-trust" in html
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        events: list[str] = []

        async def listen() -> None:
            async with s.get(base + "/events") as stream:
                async for raw in stream.content:
                    events.append(raw.decode().strip())

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.3)
        async with s.post(base + "/fault", data={"token": token, "action": "stop", "node": "cucm2"}) as r:
            html = await r.text()
        assert "cucm2" not in lab.running_nodes()
        assert 'data-node="cucm2" data-state="down"' in html
        async with s.post(base + "/fault", data={"action": "start", "node": "cucm2"}) as r:
            assert r.status == 403  # no CSRF token: nothing done
        assert "cucm2" not in lab.running_nodes()
        for _ in range(50):
            if any("lab-stop" in e for e in events) and "event: changed" in events:
                break
            await asyncio.sleep(0.1)
        assert any(e.startswith("data:") and "@lab lab-stop" in e and "cucm2" in e for e in events), events[:20]
        assert "event: changed" in events
        history = lab.history
        history.max_bytes = history._written + 1  # the next line moves the file aside, as a full one would be
        async with s.post(base + "/fault", data={"token": token, "action": "start", "node": "cucm2"}) as r:
            assert r.status == 200
        for _ in range(100):
            if any("@lab lab-start" in e for e in events):
                break
            await asyncio.sleep(0.1)
        listener.cancel()
        assert (lab.lab_dir / (HISTORY_FILE + ".1")).exists()
        assert any(e.startswith("data:") and "@lab lab-start" in e for e in events), events[-20:]


@EMBEDDED
async def test_dashboard_clock_partition_heal_and_broker_restart(ui: tuple[Lab, RunningUi]) -> None:
    """R-REPL-1, R-REPL-6: the clock's Advance moves the lab clock; Partition cuts a node off (shown), a
    certificate uploaded meanwhile is a highlighted difference of the trust matrix; Heal all brings it back
    and the matrix converges; Restart broker is the lab's broker_restart. Each button's answer is shown."""
    lab, running = ui
    base = running.url
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=insecure())
    ) as s:
        async with s.get(base + "/login") as r:
            login_token = re.search(r'name="login_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        form = {"j_username": "admin", "j_password": "certsim-admin", "login_token": login_token}
        async with s.post(base + "/login", data=form) as r:
            html = await r.text()
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        before = lab.clock.now()
        async with s.post(base + "/advance", data={"token": token, "by": "2d"}) as r:
            html = await r.text()
        assert (lab.clock.now() - before).days >= 2 and "lab clock advanced from" in html
        async with s.post(base + "/advance", data={"token": token, "by": "soon"}) as r:
            assert '<p class="error"' in await r.text()  # the lab's refusal, shown

        async with s.post(base + "/fault", data={"token": token, "action": "partition", "nodes": "cucm2"}) as r:
            html = await r.text()
        assert 'id="partitioned">cucm2<' in html
        root = LabCA(lab.clock).create_ca("Split", cn="certsim Split CA")
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()})
        async with s.get(base) as r:
            html = await r.text()
        assert re.search(r'<tr class="differs"><th>tomcat-trust</th><th>certsim_Split_CA</th>', html), html[-3000:]
        async with s.post(base + "/fault", data={"token": token, "action": "heal"}) as r:
            assert 'id="partitioned">none<' in await r.text()
        assert (await lab.converge(timeout=30)).converged
        async with s.get(base) as r:
            html = await r.text()
        assert "certsim_Split_CA" in html and 'class="differs"' not in html

        async with s.post(base + "/fault", data={"token": token, "action": "broker_restart"}) as r:
            html = await r.text()
        assert "broker_restart:" in html
        assert (await lab.converge(timeout=60)).converged  # the nodes came back to the restarted broker


def test_feed_lines_are_one_line_of_text() -> None:
    """The feed shows each history event as one line (the browser inserts it as text)."""
    line = feed_line({"wall": 1.0, "event": "op", "node": "n1", "sim": "t", "op": "upload", "ok": True, "error": None})
    assert line == "t n1 op op=upload ok=True"
    assert feed_line({"event": "x", "detail": "a\nb"}) == "x detail=a b"


@EMBEDDED
async def test_a_class_dashboard_shows_every_cluster_and_acts_on_the_one_chosen(
    tmp_path: Path, broker_url: str | None
) -> None:
    """certsim lab ui of several clusters (a class): one login, an overview row per cluster and a row per node
    of every cluster, and each cluster's dashboard (its fault buttons act on that cluster only). Security: a
    cluster with an administrator of its own is seen by its administrator only (404 for the others)."""
    labs = [
        Lab(small_lab(name, nodes=2, imp=0), tmp_path / name, broker_url=broker_url)
        for name in ("student01", "student02")
    ]
    own = {"user": "teacher", "password": "other-admin-pw"}
    labs.append(Lab(small_lab("student03", nodes=1, imp=0, os_admin=own), tmp_path / "s3", broker_url=broker_url))
    controllers = []
    running = None

    async def login(s: aiohttp.ClientSession, user: str, password: str) -> str:
        assert running is not None
        async with s.get(running.url + "/login") as r:
            login_token = re.search(r'name="login_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        form = {"j_username": user, "j_password": password, "login_token": login_token}
        async with s.post(running.url + "/login", data=form) as r:
            return await r.text()

    try:
        for lab in labs:
            await lab.start()
            controller = LabController(lab)
            await controller.start()
            controllers.append(controller)
        running = await start_dashboard(ClassDashboard([(lab.spec, lab.lab_dir, lab.client) for lab in labs]))
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=insecure())
        ) as s:
            html = await login(s, "admin", "certsim-admin")
            assert 'data-cluster="student01"' in html and 'data-cluster="student02"' in html
            for cluster in ("student01", "student02"):  # every node of every cluster, with its link
                for node in ("cucm1", "cucm2"):
                    assert f'data-cluster="{cluster}" data-node="{node}" data-state="up"' in html
            assert 'data-cluster="student03"' not in html and "1 other cluster(s)" in html
            async with s.get(running.url + "/c/student03") as r:
                assert r.status == 404
            async with s.get(running.url + "/c/student02") as r:
                html = await r.text()
            assert "certsim lab student02" in html and 'data-node="cucm1" data-state="up"' in html
            token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            async with s.post(
                running.url + "/c/student03/fault", data={"token": token, "action": "stop", "node": "cucm1"}
            ) as r:
                assert r.status == 404
            assert "cucm1" in labs[2].running_nodes()
            async with s.post(
                running.url + "/c/student02/fault", data={"token": token, "action": "stop", "node": "cucm2"}
            ):
                pass
            assert "cucm2" not in labs[1].running_nodes() and "cucm2" in labs[0].running_nodes()
            async with s.get(running.url) as r:
                html = await r.text()
            assert re.search(r'data-cluster="student02">.*?1/2', html, re.S)
            assert 'data-cluster="student02" data-node="cucm2" data-state="down"' in html
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=insecure())
        ) as s:
            html = await login(s, "teacher", "other-admin-pw")
            assert 'data-cluster="student03" data-node="cucm1"' in html
            assert 'data-cluster="student01"' not in html
    finally:
        if running is not None:
            await running.close()
        for controller in controllers:
            await controller.stop()
        for lab in labs:
            await lab.stop()


def test_a_serving_labs_history_is_bounded(tmp_path: Path) -> None:
    """The history a serving lab writes (what the live feed tails) is bounded: past ``max_bytes`` the file
    moves to history.jsonl.1 and a new one starts, so at most twice the limit is kept; a run's history
    (no limit) keeps every line."""
    path = tmp_path / HISTORY_FILE
    history = History(path, max_bytes=2_000)
    for i in range(200):
        history.record({"event": "op", "node": "n1", "op": "upload", "i": i})
    history.close()
    old = tmp_path / (HISTORY_FILE + ".1")
    assert path.stat().st_size <= 2_000 and old.stat().st_size <= 2_000
    assert '"i": 199' in path.read_text().splitlines()[-1]
    run = History(tmp_path / "run.jsonl")
    for i in range(200):
        run.record({"event": "op", "i": i})
    run.close()
    assert len((tmp_path / "run.jsonl").read_text().splitlines()) == 200


def test_the_event_stream_holds_at_most_one_bounded_line() -> None:
    """The live feed's reader keeps whole lines and at most MAX_EVENT_LINE bytes of an unfinished one: a
    longer line is dropped whole (its end too), the lines around it are kept."""
    lines, rest = split_lines(b"", b'{"a": 1}\n{"b"', limit=100)
    assert lines == [b'{"a": 1}'] and rest == b'{"b"'
    lines, rest = split_lines(rest, b": 2}\n" + b"x" * 150, limit=100)
    assert lines == [b'{"b": 2}'] and len(rest) <= 100
    lines, rest = split_lines(rest, b"y" * 150, limit=100)
    assert lines == [] and len(rest) <= 100
    lines, rest = split_lines(rest, b'yyy\n{"c": 3}\n', limit=100)
    assert lines == [b'{"c": 3}'] and rest == b""
    assert MAX_EVENT_LINE == 64 * 1024
