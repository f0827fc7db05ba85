"""certsim lab ui (cluster.doors.dashboard) against a running lab: login, the nodes and the trust matrix,
fault buttons that are the lab's own requests, and the live feed of the lab's history."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from cluster.controller import LabController
from cluster.doors.dashboard import ClassDashboard, Dashboard, RunningUi, feed_line, start_dashboard
from cluster.lab import History, Lab
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
        listener.cancel()
        assert any(e.startswith("data:") and "@lab lab-stop" in e and "cucm2" in e for e in events), events[:20]
        assert "event: changed" in events


def test_feed_lines_are_one_line_of_text() -> None:
    """The feed shows each history event as one line (the browser inserts it as text)."""
    line = feed_line({"wall": 1.0, "event": "op", "node": "n1", "sim": "t", "op": "upload", "ok": True, "error": None})
    assert line == "t n1 op op=upload ok=True"
    assert feed_line({"event": "x", "detail": "a\nb"}) == "x detail=a b"


@EMBEDDED
async def test_a_class_dashboard_shows_every_cluster_and_acts_on_the_one_chosen(
    tmp_path: Path, broker_url: str | None
) -> None:
    """certsim lab ui of several clusters (a class): one login, an overview row per cluster, and each cluster's
    dashboard (its fault buttons act on that cluster only)."""
    labs = [
        Lab(small_lab(name, nodes=2, imp=0), tmp_path / name, broker_url=broker_url)
        for name in ("student01", "student02")
    ]
    controllers = []
    running = None
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
            async with s.get(running.url + "/login") as r:
                login_token = re.search(r'name="login_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
            form = {"j_username": "admin", "j_password": "certsim-admin", "login_token": login_token}
            async with s.post(running.url + "/login", data=form) as r:
                html = await r.text()
            assert 'data-cluster="student01"' in html and 'data-cluster="student02"' in html
            async with s.get(running.url + "/c/student02") as r:
                html = await r.text()
            assert "certsim lab student02" in html and 'data-node="cucm1" data-state="up"' in html
            token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
            async with s.post(
                running.url + "/c/student02/fault", data={"token": token, "action": "stop", "node": "cucm2"}
            ):
                pass
            assert "cucm2" not in labs[1].running_nodes() and "cucm2" in labs[0].running_nodes()
            async with s.get(running.url) as r:
                html = await r.text()
            assert re.search(r'data-cluster="student02">.*?1/2', html, re.S)
    finally:
        if running is not None:
            await running.close()
        for controller in controllers:
            await controller.stop()
        for lab in labs:
            await lab.stop()
