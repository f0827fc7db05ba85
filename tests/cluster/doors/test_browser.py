"""Real-browser tests: the system Chromium (Debian chromium + chromium-driver) driven by Selenium, headless,
through the nodes' OS Administration pages, the lab dashboard and a run's report.html.

One browser and one lab (run like 'lab up': controller and history file, in a thread of its own so the
synchronous Selenium calls never block it) are shared by the tests of this module. Every page a test visits
is saved as a screenshot in that test's temporary folder (``<tmp>/NN-name.png``).

Skipped only when chromium or chromedriver is missing and neither CERTSIM_REQUIRE_MOSQUITTO nor CI is set
(like the mosquitto tests); in CI they are required.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster.control import LAB_TARGET
from cluster.controller import LabController
from cluster.doors.dashboard import Dashboard, RunningUi, start_dashboard
from cluster.doors.frontdoors import enable_front_doors, served_certificate
from cluster.lab import History, Lab
from cluster.labca import LabCA
from cluster.labdir import HISTORY_FILE
from node import certs
from tests.conftest import small_lab

pytestmark = pytest.mark.browser
T = TypeVar("T")
ADMIN = ("admin", "certsim-admin")
WAIT_S = 30.0


def _binaries() -> tuple[str | None, str | None]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return chromium, driver


def require_chromium() -> tuple[str, str]:
    chromium, driver = _binaries()
    if chromium is None or driver is None:
        if os.environ.get("CERTSIM_REQUIRE_MOSQUITTO") or os.environ.get("CI"):
            pytest.fail("CI requires the browser tests: install Debian's chromium and chromium-driver")
        pytest.skip("no chromium/chromedriver (apt-get install chromium chromium-driver; required in CI)")
    return chromium, driver


class LabThread:
    """A lab run like 'lab up' (controller, history file, front doors, dashboard) on its own event loop."""

    def __init__(self, lab_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="lab", daemon=True)
        self.thread.start()
        self.history = History(lab_dir / HISTORY_FILE)
        self.lab = Lab(
            small_lab("browser", nodes=3, imp=0, front_doors={"ssh_port": 0, "https_port": 0}),
            lab_dir,
            history=self.history,
        )
        self.controller: LabController | None = None
        self.ui: RunningUi | None = None
        self.run(self._start())

    async def _start(self) -> None:
        await self.lab.start()
        assert (await self.lab.converge(timeout=60)).converged
        await enable_front_doors(self.lab)
        self.controller = LabController(self.lab)
        await self.controller.start()
        self.ui = await start_dashboard(Dashboard(self.lab.spec, self.lab.lab_dir, self.lab.client))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, node: str, op: str, args: dict[str, Any] | None = None) -> Any:
        return self.run(self.lab.request(node, op, args or {}, timeout=60))

    def pages(self, node: str) -> str:
        https = self.lab.doors[node].https
        return f"https://{https.host}:{https.port}/cmplatform"

    def close(self) -> None:
        async def stop() -> None:
            if self.ui is not None:
                await self.ui.close()
            if self.controller is not None:
                await self.controller.stop()
            await self.lab.stop()

        try:
            self.run(stop())
        finally:
            self.history.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabThread]:
    require_chromium()
    running = LabThread(tmp_path_factory.mktemp("browser-lab"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium for every browser test (starting one costs about a second)."""
    chromium, driver_path = require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.accept_insecure_certs = True  # the nodes' self-signed tomcat certificates
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


class Pages:
    """What a person does in the browser, with a screenshot of every page visited."""

    def __init__(self, driver: Any, shots: Path) -> None:
        from selenium.webdriver.common.by import By

        self.d = driver
        self.by = By
        self.shots = shots
        self.n = 0
        self.d.delete_all_cookies()

    def shot(self, name: str) -> None:
        self.n += 1
        self.d.save_screenshot(str(self.shots / f"{self.n:02d}-{name}.png"))

    def open(self, url: str, name: str) -> None:
        self.d.get(url)
        self.shot(name)

    def el(self, css: str) -> Any:
        return self.d.find_element(self.by.CSS_SELECTOR, css)

    def click(self, css: str, name: str) -> None:
        self.el(css).click()
        self.shot(name)

    def select(self, css: str, text: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.el(css)).select_by_visible_text(text)

    def login(self, base: str, name: str) -> None:
        self.open(base + "/login", f"{name}-login")
        self.el("#j_username").send_keys(ADMIN[0])
        self.el("#j_password").send_keys(ADMIN[1])
        self.click("#login", f"{name}-after-login")

    def status(self) -> str:
        return " | ".join(e.text for e in self.d.find_elements(self.by.CSS_SELECTOR, "#status p"))

    def wait(self, what: Any, timeout: float = WAIT_S) -> Any:
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        # a live update may replace an element between finding it and reading it: look again
        wait = WebDriverWait(self.d, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))
        return wait.until(what)


def wait_for_file(path: Path, timeout: float = WAIT_S) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            return path.read_bytes()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not downloaded")


def test_third_party_ca_flow_done_only_in_pages(lab: LabThread, browser: Any, tmp_path: Path) -> None:
    """R-OP-CSR-1, R-OP-UPLOAD-1, R-OP-UPLOAD-3, R-OP-UPLOAD-4: Generate CSR, Download CSR, sign it with the
    lab CA, upload the root to tomcat-trust and the signed certificate as tomcat, restart Cisco Tomcat in
    Control Center: the HTTPS door then serves the new certificate (and not before the restart)."""
    p = Pages(browser, tmp_path)
    base = lab.pages("cucm1")
    p.login(base, "cucm1")
    p.d.find_element(p.by.ID, "menu-cert-mgmt").get_attribute("href")
    p.open(base + "/certificateFindList.do", "certificate-list")
    assert p.el("h1").text == "Certificate List"
    p.click("#btn-generate-csr", "generate-csr-dialog")
    assert p.el("#purpose").get_attribute("value") == "tomcat"
    p.click("#generate", "csr-generated")
    assert "Successfully Generated CSR for tomcat" in p.status()
    p.click("#btn-download-csr", "download-csr-dialog")
    p.select("#purpose", "tomcat")
    p.el("#download-csr").click()
    csr_pem = wait_for_file(browser.downloads / "tomcat.csr")
    assert csr_pem.startswith(b"-----BEGIN CERTIFICATE REQUEST-----")

    ca = LabCA(lab.lab.clock)
    root = ca.create_ca("BrowserRoot", cn="certsim Browser Root CA")
    signed = ca.sign_csr("cucm1-tomcat", issuer="BrowserRoot", csr_pem=csr_pem)
    (tmp_path / "root.pem").write_bytes(root.pem())
    (tmp_path / "tomcat.pem").write_bytes(signed.pem())
    before = lab.run(served_certificate(lab.lab.doors["cucm1"].https.host, lab.lab.doors["cucm1"].https.port))

    for purpose, file in (("tomcat-trust", "root.pem"), ("tomcat", "tomcat.pem")):
        p.open(base + "/certificateUpload.do", f"upload-dialog-{purpose}")
        p.select("#purpose", purpose)
        p.el("#description").send_keys(f"{purpose} from the lab CA")
        p.el("#file").send_keys(str(tmp_path / file))
        p.click("#upload", f"uploaded-{purpose}")
        assert f"Successfully imported certificate for {purpose}." in p.status(), p.status()

    p.open(base + "/certificateFindList.do?field=Certificate&op=is+exactly&text=tomcat", "list-tomcat-ca-signed")
    row = p.el('tr[data-store="tomcat"]').text
    assert "CA-signed" in row and "certsim Browser Root CA" in row and "restart pending" in row
    assert "tomcat from the lab CA" in row  # the dialog's Description(friendly name)
    p.open(base + "/certificateFindList.do?field=Common+Name&op=contains&text=Browser_Root", "list-root")
    assert "tomcat-trust from the lab CA" in p.el('tr[data-store="tomcat-trust"]').text
    still = lab.run(served_certificate(lab.lab.doors["cucm1"].https.host, lab.lab.doors["cucm1"].https.port))
    assert certs.fingerprint(still) == certs.fingerprint(before)  # R-OP-UPLOAD-4: not before the restart

    p.el("#nav").send_keys("Cisco Unified Serviceability")
    p.click("#nav-go", "control-center")
    assert p.el("h1").text == "Control Center - Network Services"
    label = p.d.find_element(p.by.XPATH, "//label[text()='Cisco Tomcat']")
    p.el("#" + label.get_attribute("for")).click()
    p.click("#restart", "tomcat-restarted")
    assert "Cisco Tomcat[STARTED]" in p.status()
    lab.run(lab.lab.doors["cucm1"].tls.wait_idle())
    served = lab.run(served_certificate(lab.lab.doors["cucm1"].https.host, lab.lab.doors["cucm1"].https.port))
    assert certs.fingerprint(served) == certs.fingerprint(signed.cert)
    p.open(base + "/certificateEdit.do?store=tomcat&name=tomcat", "tomcat-details-ca-signed")
    assert "certsim Browser Root CA" in p.el("#cert-text").text


def test_a_deletion_disappears_from_every_nodes_page(lab: LabThread, browser: Any, tmp_path: Path) -> None:
    """R-OP-DELETE-1, R-REPL-3: Delete (after its confirmation) on one node's page removes the trust
    certificate from every node's Certificate List."""
    ca = LabCA(lab.lab.clock)
    doomed = ca.create_ca("Doomed", cn="certsim Doomed CA")
    import base64

    lab.request("cucm2", "upload", {"store": "tomcat-trust", "data": base64.b64encode(doomed.pem()).decode()})
    assert lab.run(lab.lab.converge(timeout=60)).converged
    p = Pages(browser, tmp_path)
    find = "/certificateFindList.do?field=Common+Name&op=contains&text=Doomed"
    for node in ("cucm1", "cucm2", "cucm3"):
        p.login(lab.pages(node), node)
        p.open(lab.pages(node) + find, f"{node}-before-delete")
        assert len(p.d.find_elements(p.by.CSS_SELECTOR, "#cert-list tbody tr")) == 1
    base = lab.pages("cucm3")
    p.open(base + find, "cucm3-find")
    p.d.find_element(p.by.CSS_SELECTOR, "#cert-list tbody tr td a").click()
    p.shot("cucm3-details")
    p.click("#btn-delete", "cucm3-delete-confirmation")
    assert "cannot be undone" in p.el("#confirm-warning").text
    p.click("#confirm-ok", "cucm3-deleted")
    assert re.search(r"Successfully deleted certificate .*Doomed.*\.pem from tomcat-trust\.", p.status()), p.status()
    for node in ("cucm1", "cucm2", "cucm3"):
        p.open(lab.pages(node) + find, f"{node}-after-delete")
        p.wait(lambda d: not d.find_elements(p.by.CSS_SELECTOR, "#cert-list tbody tr") or d.refresh())
        assert "0 records found" in p.el(".count").text


def test_forms_work_with_javascript_disabled(lab: LabThread, browser: Any, tmp_path: Path) -> None:
    """Issue 12 item 11, R-MON-1, R-OP-UPLOAD-1: with scripts disabled in the browser the pages still work
    where the product's do: login, the Upload dialog (with its Description) and Certificate Monitor's Save
    are plain forms; only the dialog's reload-on-change (forms.js) is gone."""
    p = Pages(browser, tmp_path)
    base = lab.pages("cucm3")
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        p.login(base, "nojs-cucm3")
        p.open(base + "/certificateGenerateCsr.do", "nojs-csr-dialog")
        url = p.d.current_url
        p.select("#purpose", "ipsec")
        p.shot("nojs-csr-purpose-changed")
        assert p.d.current_url == url  # no script ran: the dialog did not reload (it would with JavaScript)

        root = LabCA(lab.lab.clock).create_ca("NoScript", cn="certsim NoScript CA")
        (tmp_path / "noscript.pem").write_bytes(root.pem())
        p.open(base + "/certificateUpload.do", "nojs-upload-dialog")
        p.select("#purpose", "tomcat-trust")
        p.el("#description").send_keys("uploaded <without> scripts")
        p.el("#file").send_keys(str(tmp_path / "noscript.pem"))
        p.click("#upload", "nojs-uploaded")
        assert "Successfully imported certificate for tomcat-trust." in p.status(), p.status()
        p.open(base + "/certificateFindList.do?field=Common+Name&op=contains&text=NoScript", "nojs-list")
        assert "uploaded <without> scripts" in p.el('tr[data-store="tomcat-trust"]').text  # shown as text

        p.open(base + "/certificateMonitor.do", "nojs-monitor")
        p.el("#start_days").clear()
        p.el("#start_days").send_keys("21")
        p.click("#save", "nojs-monitor-saved")
        assert "Update successful" in p.status(), p.status()
        assert lab.request("cucm3", "monitor_get")["settings"]["notification_start_days"] == 21
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})


def test_the_dashboard_updates_live_when_a_node_stops(lab: LabThread, browser: Any, tmp_path: Path) -> None:
    """certsim lab ui: with the page open, a node stopped elsewhere (the lab's own stop request, as 'certsim
    fault stop' sends it) shows as down and the fault appears in the live feed, without reloading."""
    assert lab.ui is not None
    p = Pages(browser, tmp_path)
    p.open(lab.ui.url, "dashboard-login")
    p.el("#j_username").send_keys(ADMIN[0])
    p.el("#j_password").send_keys(ADMIN[1])
    p.click("#login", "dashboard")
    assert p.el('tr[data-node="cucm2"]').get_attribute("data-state") == "up"
    assert p.d.find_elements(p.by.CSS_SELECTOR, "#matrix tbody tr")
    links = [a.get_attribute("href") for a in p.d.find_elements(p.by.CSS_SELECTOR, "#nodes a")]
    assert lab.pages("cucm1") in links
    marker = p.d.find_element(p.by.ID, "nodes")
    p.d.execute_script("window.certsimSamePage = true")  # gone if the page were reloaded
    try:
        lab.run(lab.lab.client.request(LAB_TARGET, "stop", {"node": "cucm2"}, timeout=60))
        p.wait(
            lambda d: d.find_element(p.by.CSS_SELECTOR, 'tr[data-node="cucm2"]').get_attribute("data-state") == "down"
        )
        p.wait(lambda d: "lab-stop" in d.find_element(p.by.ID, "feed").text)
        p.shot("dashboard-node-down-live")
        from selenium.common.exceptions import StaleElementReferenceException

        with pytest.raises(StaleElementReferenceException):
            marker.is_displayed()  # the table was replaced by the live update
        assert p.d.execute_script("return window.certsimSamePage === true")  # the same page, updated in place
    finally:
        lab.run(lab.lab.client.request(LAB_TARGET, "start", {"node": "cucm2"}, timeout=60))


FAILING = """\
scenario: failing-for-report
description: an expectation that cannot hold, to see the report of a failing run
lab:
  lab: report-lab
  security_password: test-cluster-pw
  nodes:
    - {name: cucm-pub, role: cucm}
    - {name: cucm-sub1, role: cucm}
  front_doors: {enabled: false}
steps:
  - ca: {create: Root, cn: "certsim <b>Report</b> Root"}
  - upload: {node: cucm-pub, store: tomcat-trust, cert: Root}
  - expect: {store: tomcat-trust, nodes: [cucm-sub1], lacks: Root, rule: R-REPL-1}
"""


def test_the_report_of_a_failing_scenario(browser: Any, tmp_path: Path) -> None:
    """report.html: 'certsim run' of a failing scenario prints the report's path; the page shows the verdict,
    the failed expectation with its rule and node, the swimlane and the trust matrix, escaped, offline."""
    require_chromium()
    scenario = tmp_path / "failing.yaml"
    scenario.write_text(FAILING, encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "run", str(scenario), "--results", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200", "CERTSIM_HOME": str(tmp_path / "home")},
    )
    assert out.returncode == 1, out.stdout + out.stderr
    report = tmp_path / "results" / "report.html"
    assert f"report: {report}" in out.stdout.replace("\n", ""), out.stdout
    p = Pages(browser, tmp_path)
    p.open(report.as_uri(), "report")
    assert p.el("#verdict").text == "INVALID"
    failures = p.el("#failures + table").text
    assert "R-REPL-1" in failures and "cucm-sub1" in failures
    assert p.d.find_elements(p.by.CSS_SELECTOR, "#swimlane line")
    assert p.d.find_elements(p.by.CSS_SELECTOR, "#matrix tr")
    assert not p.d.find_elements(p.by.CSS_SELECTOR, "b")  # the CA's name is shown as text
    p.d.execute_script("document.getElementById('trust-matrix').scrollIntoView()")
    p.shot("report-trust-matrix")
