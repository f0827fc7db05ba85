"""The OS Administration web pages of a node (cluster.doors.web), over real HTTPS against a running lab:
sessions, CSRF, the shared throttle, escaping, and actions that are the node's operations."""

from __future__ import annotations

import base64
import re
import ssl
from typing import Any

import aiohttp
import pytest

from cluster.doors.frontdoors import FrontDoors, enable_front_doors
from cluster.doors.rest import API_ROOT, MAX_REQUEST_BYTES, basic_auth_header
from cluster.doors.sessions import COOKIE, SessionStore
from cluster.doors.web import find_match
from cluster.lab import Lab
from cluster.labca import LabCA
from node.catalog import HTTPS_CIPHERS
from tests.conftest import LabFactory, small_lab

EMBEDDED = pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the pages use the bus like the CLI

ADMIN = {"j_username": "admin", "j_password": "certsim-admin"}


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Browser:
    """An HTTP client with a cookie jar, as a browser talks to the pages."""

    def __init__(self, doors: FrontDoors) -> None:
        self.base = f"https://{doors.https.host}:{doors.https.port}/cmplatform"
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), connector=aiohttp.TCPConnector(ssl=insecure())
        )

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, **kw) as r:
            return r.status, await r.text(errors="replace"), r

    async def post(self, path: str, data: Any, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.post(self.base + path, data=data, **kw) as r:
            return r.status, await r.text(errors="replace"), r

    async def login(self, form: dict[str, str] = ADMIN, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        """The login form as a browser fills it: the page first (its token), then the POST."""
        _, text, _ = await self.get("/login")
        match = re.search(r'name="login_token" value="([^"]+)"', text)
        assert match, text[:500]
        return await self.post("/login", {**form, "login_token": match.group(1)}, **kw)

    async def token(self, path: str) -> str:
        _, text, _ = await self.get(path)
        match = re.search(r'name="token" value="([^"]+)"', text)
        assert match, text[:500]
        return match.group(1)

    async def close(self) -> None:
        await self.session.close()


def status_lines(html: str) -> list[str]:
    return re.findall(r'<p class="(?:ok|error)"[^>]*>([^<]*)</p>', html)


async def lab_with_pages(make_lab: LabFactory) -> Lab:
    lab = await make_lab(small_lab(nodes=2, imp=0, front_doors={"ssh_port": 0, "https_port": 0}))
    await enable_front_doors(lab)
    return lab


@EMBEDDED
async def test_no_page_without_a_session_and_login_sets_a_strict_cookie(make_lab: LabFactory) -> None:
    """Security: every page redirects to the login page without a session; a state-changing POST is refused
    (401); login sets an HttpOnly, Secure, SameSite=Strict cookie; logout ends the session."""
    lab = await lab_with_pages(make_lab)
    b = Browser(lab.doors["cucm1"])
    try:
        for page in ("/certificateFindList.do", "/certificateMonitor.do", "/serviceability/controlCenter.do"):
            status, _, r = await b.get(page, allow_redirects=False)
            assert status == 303 and r.headers["Location"] == "/cmplatform/login"
        status, _, _ = await b.post("/certificateDelete.do", {"store": "tomcat-trust", "name": "x"})
        assert status == 401
        status, html, _ = await b.post("/login", ADMIN)
        assert status == 401 and "expired" in html  # a login posted without the form's token (another site)
        status, _, r = await b.login(allow_redirects=False)
        assert status == 303
        cookie = r.headers["Set-Cookie"]
        for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/cmplatform"):
            assert flag in cookie, cookie
        status, html, _ = await b.get("/certificateFindList.do")
        assert status == 200 and "<h1>Certificate List</h1>" in html
        for column in ("Common Name/Common Name_SerialNumber", "Distribution", "Issued By", "Expiration"):
            assert f"<th>{column}</th>" in html
        token = await b.token("/certificateFindList.do")
        await b.post("/logout", {"token": token})
        status, _, r = await b.get("/certificateFindList.do", allow_redirects=False)
        assert status == 303
    finally:
        await b.close()


@EMBEDDED
async def test_wrong_passwords_on_the_page_slow_the_rest_door_too(make_lab: LabFactory) -> None:
    """Security: the login page counts wrong passwords in the node's one throttle (shared with SSH and REST);
    the error does not say which field was wrong."""
    lab = await lab_with_pages(make_lab)
    doors = lab.doors["cucm1"]
    doors.throttle.max_delay_s = 0.0  # count, do not wait: the test checks the counting
    b = Browser(doors)
    try:
        for _ in range(2):
            status, html, _ = await b.login({"j_username": "admin", "j_password": "wrong"})
            assert status == 401 and "Invalid user name or password." in html
        assert doors.throttle.failures("127.0.0.1") == 2
        url = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}identity/certificate"
        async with b.session.get(url, headers={"Authorization": basic_auth_header("admin", "nope")}) as r:
            assert r.status == 401
        assert doors.throttle.failures("127.0.0.1") == 3  # one counter for both doors
    finally:
        await b.close()


@EMBEDDED
async def test_page_actions_are_the_node_operations_with_the_cli_texts(make_lab: LabFactory, tmp_path: Any) -> None:
    """R-OP-UPLOAD-1, R-REPL-1, R-OP-DELETE-1, R-REPL-3: a trust upload through the Upload dialog replicates;
    a form without its CSRF token changes nothing (403); Delete asks for confirmation, then removes the
    certificate everywhere; an identity cannot be deleted; certificate text is escaped."""
    lab = await lab_with_pages(make_lab)
    ca = LabCA(lab.clock)
    evil = ca.create_ca("Evil", cn="<script>alert(1)</script> CA")
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        form = aiohttp.FormData()
        form.add_field("purpose", "tomcat-trust")
        form.add_field("description", "lab root")
        form.add_field("file", evil.pem(), filename="evil.pem", content_type="application/x-pem-file")
        status, _, _ = await b.post("/certificateUpload.do", form)
        assert status == 403  # no CSRF token: refused before the node is asked
        assert not [r for r in await lab.request("cucm1", "list", {"store": "tomcat-trust"}) if "script" in r["cn"]]
        token = await b.token("/certificateUpload.do")
        form = aiohttp.FormData()
        form.add_field("token", token)
        form.add_field("purpose", "tomcat-trust")
        form.add_field("file", evil.pem(), filename="evil.pem", content_type="application/x-pem-file")
        status, html, _ = await b.post("/certificateUpload.do", form)
        assert status == 200
        assert "Successfully imported certificate for tomcat-trust." in status_lines(html)
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        await lab.converge()
        names = [
            r["name"] for r in await lab.request("cucm2", "list", {"store": "tomcat-trust"}) if "script" in r["cn"]
        ]
        assert len(names) == 1  # R-REPL-1
        name = names[0]
        status, html, _ = await b.get(f"/certificateDelete.do?store=tomcat-trust&name={name}")
        assert status == 200 and "cannot be undone" in html  # the confirmation, nothing deleted yet
        assert [r for r in await lab.request("cucm1", "list", {"store": "tomcat-trust"}) if r["name"] == name]
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        status, html, _ = await b.post("/certificateDelete.do", {"token": token, "store": "tomcat-trust", "name": name})
        assert f"Successfully deleted certificate {name}.pem from tomcat-trust." in status_lines(html)
        await lab.converge()
        for node in ("cucm1", "cucm2"):  # R-REPL-3
            assert not [r for r in await lab.request(node, "list", {"store": "tomcat-trust"}) if r["name"] == name]
        status, html, _ = await b.post("/certificateDelete.do", {"token": token, "store": "tomcat", "name": "tomcat"})
        assert any("tomcat" in line for line in status_lines(html))  # the node's refusal, R-OP-DELETE-1
        assert (await lab.request("cucm1", "identity_list"))[0]  # identities untouched
        status, _, r = await b.get("/certificateDownload.do?store=tomcat&name=tomcat&format=der")
        assert status == 200 and r.headers["Content-Disposition"] == 'attachment; filename="cucm1.lab.example.der"'
    finally:
        await b.close()


def test_sessions_time_out_when_idle() -> None:
    """Security: a session unused for longer than its timeout is gone; use keeps it alive."""
    now = [0.0]
    store = SessionStore(idle_timeout_s=60, now=lambda: now[0])
    key, _ = store.create("admin")
    now[0] = 59
    assert store.get(key) is not None
    now[0] = 118
    assert store.get(key) is not None  # 59 s idle since the last use
    now[0] = 179
    assert store.get(key) is None
    assert COOKIE == "JSESSIONIDSSO"


def test_find_bar_operators() -> None:
    """R-OP-LIST: the find bar's operators compare the shown column case-insensitively."""
    assert find_match("begins with", "tomcat-trust", "TOM")
    assert not find_match("begins with", "tomcat-trust", "trust")
    assert find_match("ends with", "tomcat-trust", "trust")
    assert find_match("contains", "CallManager-trust", "manager")
    assert find_match("is exactly", "identity", "identity") and not find_match("is exactly", "identity", "ident")
    assert find_match("is empty", "", "") and not find_match("is empty", "x", "")
    assert find_match("is not empty", "x", "")


@EMBEDDED
async def test_control_center_of_a_remote_server_needs_its_tomcat_trusted(make_lab: LabFactory) -> None:
    """R-LINK-1, R-TS-1: Control Center reaches another server Tomcat to Tomcat: its services are listed and
    restarted while this node trusts the peer's tomcat certificate; once that trust entry is deleted the page
    shows the product's "Connection to the Server cannot be established" and nothing of the peer."""
    lab = await lab_with_pages(make_lab)
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        status, html, _ = await b.get("/serviceability/controlCenter.do?server=cucm2")
        assert status == 200 and "Cisco Tomcat" in html and 'id="remote-error"' not in html
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        before = {r["name"]: r["started"] for r in await lab.request("cucm2", "service_list")}
        _, html, _ = await b.post(
            "/serviceability/controlCenter.do", {"token": token, "server": "cucm2", "service": "Cisco TFTP"}
        )
        assert "Cisco TFTP[STARTED]" in status_lines(html)
        after = {r["name"]: r["started"] for r in await lab.request("cucm2", "service_list")}
        assert after["Cisco TFTP"] != before["Cisco TFTP"]  # restarted on cucm2, the server chosen
        await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": "cucm2.lab.example"})
        await lab.converge()
        status, html, _ = await b.get("/serviceability/controlCenter.do?server=cucm2")
        assert "Connection to the Server cannot be established (unable to connect to Remote Node)" in html
        assert 'name="service"' not in html
    finally:
        await b.close()


@EMBEDDED
async def test_dialogs_and_settings_pages_reach_the_node(make_lab: LabFactory) -> None:
    """R-OP-CSR-1 (multi-server on the publisher), R-OP-REGEN-1 (Generate New Self-signed with a chosen key
    length), R-MON-1, R-OCSP-1, R-OP-REGEN-3: each page's Save or Generate is the node's operation, and the
    node's refusal is shown as it words it, changing nothing."""
    lab = await lab_with_pages(make_lab)
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        token = await b.token("/certificateGenerateCsr.do?purpose=tomcat&distribution=Multi-server(SAN)")
        _, html, _ = await b.get("/certificateGenerateCsr.do?purpose=tomcat&distribution=Multi-server(SAN)")
        assert "cucm1.lab.example, cucm2.lab.example" in html  # the SANs the multi-server CSR will carry
        _, html, _ = await b.post(
            "/certificateGenerateCsr.do",
            {"token": token, "purpose": "tomcat", "distribution": "Multi-server(SAN)", "key_length": "2048"},
        )
        assert "Successfully Generated CSR for tomcat" in status_lines(html)
        csr = await lab.request("cucm1", "csr_get", {"unit": "tomcat"})
        assert set(csr["san"]) >= {"cucm1.lab.example", "cucm2.lab.example"}

        _, html, _ = await b.post(
            "/certificateGenerateNewSelfSigned.do", {"token": token, "purpose": "ipsec", "key_length": "3072"}
        )
        assert "Successfully regenerated certificate for ipsec." in status_lines(html)
        ipsec = next(i for i in await lab.request("cucm1", "identity_list") if i["unit"] == "ipsec")
        assert ipsec["key_bits"] == 3072

        form = {"token": token, "start_days": "45", "frequency": "12", "frequency_unit": "hours", "emails": ""}
        _, html, _ = await b.post("/certificateMonitor.do", {**form, "email_enabled": "on"})
        assert any("no e-mail address" in line for line in status_lines(html))  # the node's refusal
        assert (await lab.request("cucm1", "monitor_get"))["settings"]["notification_start_days"] != 45
        _, html, _ = await b.post(
            "/certificateMonitor.do", {**form, "emails": "pki@lab.example", "email_enabled": "on"}
        )
        settings = (await lab.request("cucm1", "monitor_get"))["settings"]
        assert (
            settings["notification_start_days"] == 45 and settings["frequency"] == "720m" and settings["email_enabled"]
        )

        _, html, _ = await b.post(
            "/certificateRevocation.do",
            {
                "token": token,
                "responder": "configured",
                "url": "http://127.0.0.1:9/ocsp",
                "check_enabled": "on",
                "interval": "6",
                "interval_unit": "hours",
            },
        )
        ocsp = (await lab.request("cucm1", "ocsp_get"))["settings"]
        assert ocsp["url"] == "http://127.0.0.1:9/ocsp" and ocsp["interval_s"] == 6 * 3600 and not ocsp["enabled"]

        _, html, _ = await b.post(
            "/ccmadmin/enterpriseParameters.do",
            {"token": token, "Phone Interaction on Certificate Update": "Reset Phones Manually"},
        )
        assert "Update successful" in status_lines(html)
        await lab.converge()
        params = await lab.request("cucm2", "param_get")
        assert params["Phone Interaction on Certificate Update"] == "Reset Phones Manually"  # cluster-wide
        sub = Browser(lab.doors["cucm2"])
        try:
            await sub.login()
            _, html, _ = await sub.get("/ccmadmin/enterpriseParameters.do")
            assert "Cisco Unified CM Administration runs on the publisher" in status_lines(html)
        finally:
            await sub.close()
    finally:
        await b.close()


@EMBEDDED
async def test_uploads_over_the_doors_limit_are_refused(make_lab: LabFactory) -> None:
    """Security: the Upload dialog has the REST door's 1 MiB body limit (413) and nothing reaches the node."""
    lab = await lab_with_pages(make_lab)
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        before = len(await lab.request("cucm1", "list", {"store": "tomcat-trust"}))
        token = await b.token("/certificateUpload.do")
        form = aiohttp.FormData()
        form.add_field("token", token)
        form.add_field("purpose", "tomcat-trust")
        form.add_field("file", b"A" * (MAX_REQUEST_BYTES + 1), filename="big.pem")
        status, _, _ = await b.post("/certificateUpload.do", form)
        assert status == 413
        assert len(await lab.request("cucm1", "list", {"store": "tomcat-trust"})) == before
    finally:
        await b.close()


@EMBEDDED
async def test_upload_description_is_the_same_from_every_door(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-1: the Upload dialog's Description(friendly name) and the REST API's "description" are
    kept by the node (``cert_describe``) and shown, escaped, in the Certificate List and the Certificate
    Details of the pages and in the REST trust list; a description the node refuses (control characters,
    over 255 characters) is refused before the upload: nothing changed."""
    lab = await lab_with_pages(make_lab)
    ca = LabCA(lab.clock)
    page_ca = ca.create_ca("PageCA", cn="certsim Page CA")
    rest_ca = ca.create_ca("RestCA", cn="certsim Rest CA")
    refused_ca = ca.create_ca("RefusedCA", cn="certsim Refused CA")
    doors = lab.doors["cucm1"]
    b = Browser(doors)
    try:
        await b.login()

        async def upload(cert: bytes, description: str) -> str:
            form = aiohttp.FormData()
            form.add_field("token", await b.token("/certificateUpload.do"))
            form.add_field("purpose", "tomcat-trust")
            form.add_field("description", description)
            form.add_field("file", cert, filename="ca.pem", content_type="application/x-pem-file")
            _, html, _ = await b.post("/certificateUpload.do", form)
            return html

        html = await upload(page_ca.pem(), "  <i>Lab</i> root from the page  ")
        assert "Successfully imported certificate for tomcat-trust." in status_lines(html)
        html = await upload(refused_ca.pem(), "two\nlines")
        assert "the description must be one line of text without control characters" in status_lines(html)
        html = await upload(refused_ca.pem(), "x" * 256)
        assert "the description is 256 characters; the limit is 255" in status_lines(html)
        held = [r["cn"] for r in await lab.request("cucm1", "list", {"store": "tomcat-trust"})]
        assert "certsim Refused CA" not in held  # refused before the upload

        url = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}trust/certificates"
        body = {"service": ["tomcat"], "certificates": [rest_ca.pem().decode()], "description": "root from REST"}
        auth = {"Authorization": basic_auth_header("admin", "certsim-admin")}
        async with b.session.post(url, json=body, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with b.session.post(url, json={**body, "description": "\x07"}, headers=auth) as r:
            assert r.status == 400

        described = await lab.request("cucm1", "cert_descriptions")
        assert sorted(described.values()) == ["<i>Lab</i> root from the page", "root from REST"]
        _, html, _ = await b.get("/certificateFindList.do?field=Common+Name&op=contains&text=certsim")
        assert "&lt;i&gt;Lab&lt;/i&gt; root from the page" in html and "<i>Lab</i>" not in html
        assert "root from REST" in html
        page_name = next(k for k, v in described.items() if v.startswith("<i>")).split("/", 1)[1]
        _, html, _ = await b.get(f"/certificateEdit.do?store=tomcat-trust&name={page_name}")
        assert "<th>Description(friendly name)</th><td>&lt;i&gt;Lab&lt;/i&gt; root from the page</td>" in html
        api = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}trust/certificate?service=tomcat"
        async with b.session.get(api, headers=auth) as r:
            shown = {e["filename"]: e["description"] for e in await r.json()}
        assert shown[f"{page_name}.pem"] == "<i>Lab</i> root from the page"
        assert "root from REST" in shown.values()
    finally:
        await b.close()


@EMBEDDED
async def test_a_description_goes_with_the_certificate_it_was_given_to(make_lab: LabFactory) -> None:
    """R-OP-DELETE-1: ``cert_describe`` names certificates the node holds (else not found, nothing kept); a
    deleted certificate loses its description, and one uploaded again under its name starts without it."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    ca = LabCA(lab.clock)
    root = ca.create_ca("DescRoot", cn="certsim Desc Root")
    data = base64.b64encode(root.pem()).decode()
    name = (await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": data}))["added"][0]
    with pytest.raises(Exception, match="no certificate tomcat-trust/nope on this node"):
        await lab.request("cucm1", "cert_describe", {"store": "tomcat-trust", "names": ["nope"], "description": "x"})
    await lab.request("cucm1", "cert_describe", {"store": "tomcat-trust", "names": [name], "description": "kept"})
    await lab.request("cucm1", "cert_describe", {"store": "tomcat", "description": "the web identity"})
    assert await lab.request("cucm1", "cert_descriptions") == {
        f"tomcat-trust/{name}": "kept",
        "tomcat/tomcat": "the web identity",
    }
    await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": name})
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": data})
    await lab.request("cucm1", "regen", {"unit": "tomcat"})
    assert await lab.request("cucm1", "cert_descriptions") == {}  # both certificates changed since


@EMBEDDED
async def test_certificate_details_buttons_follow_the_product(make_lab: LabFactory) -> None:
    """R-OP-REGEN-1, R-OP-DELETE-1, R-OP-DOWNLOAD: an identity's details offer Regenerate and Generate CSR
    but no Delete; Regenerate asks first with the product's warning, then regenerates through the node with
    the restart advice; a trust certificate offers Delete and no Regenerate; Download .PEM File is the node's
    download; the Navigation list reaches Serviceability and, on the publisher, CM Administration."""
    lab = await lab_with_pages(make_lab)
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        _, html, _ = await b.get("/certificateEdit.do?store=tomcat&name=tomcat")
        assert 'id="btn-regenerate"' in html and 'id="btn-generate-csr"' in html and 'id="btn-delete"' not in html
        for field in ("File Name", "Certificate Purpose", "Certificate Type", "Certificate Group", "Description"):
            assert f"<th>{field}" in html
        before = (await lab.request("cucm1", "download", {"store": "tomcat", "format": "pem"}))["data"]
        _, html, _ = await b.get("/certificateRegenerate.do?store=tomcat&name=tomcat")
        assert "WARNING: This operation will overwrite any CA signed certificate previously imported for tomcat" in html
        assert (await lab.request("cucm1", "download", {"store": "tomcat", "format": "pem"}))["data"] == before
        token = re.search(r'name="token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        _, html, _ = await b.post("/certificateRegenerate.do", {"token": token, "store": "tomcat", "name": "tomcat"})
        lines = status_lines(html)
        assert "Successfully regenerated certificate for tomcat." in lines
        assert "Please restart services related to tomcat for the new certificate to become active." in lines
        after = await lab.request("cucm1", "download", {"store": "tomcat", "format": "pem"})
        assert after["data"] != before
        status, pem, _ = await b.get("/certificateDownload.do?store=tomcat&name=tomcat&format=pem")
        assert status == 200 and pem.encode() == base64.b64decode(after["data"])

        trust = (await lab.request("cucm1", "list", {"store": "tomcat-trust"}))[0]["name"]
        _, html, _ = await b.get(f"/certificateEdit.do?store=tomcat-trust&name={trust}")
        assert 'id="btn-delete"' in html and 'id="btn-regenerate"' not in html

        _, html, r = await b.get("/navigate?to=serviceability")
        assert r.url.path.endswith("/serviceability/controlCenter.do") and "Cisco Unified Serviceability" in html
        _, html, r = await b.get("/navigate?to=ccmadmin")
        assert r.url.path.endswith("/ccmadmin/enterpriseParameters.do")
        assert "Phone Interaction on Certificate Update" in html and HTTPS_CIPHERS in html  # R-OP-ECDSA
    finally:
        await b.close()
