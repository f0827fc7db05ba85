"""Issue 12 item 8 over every route, not a sample: no page of a node or of the lab dashboard without a
session, no state-changing request without the session's CSRF token, every POST form carries the token,
and everything a certificate says (subject, issuer, SAN, description, file name) is shown as text."""

from __future__ import annotations

import base64
import datetime as dt
import re
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from cluster.doors.auth import Throttle
from cluster.doors.dashboard import Dashboard
from cluster.doors.sessions import COOKIE, CSRF_FIELD, LOGIN_COOKIE
from cluster.doors.web import ROOT, add_pages
from node import certs
from tests.cluster.doors.test_web import EMBEDDED, Browser, lab_with_pages
from tests.conftest import LabFactory, small_lab

TEMPLATES = Path(__file__).resolve().parents[3] / "cluster" / "doors" / "templates"


class _Log:
    def info(self, *_a: Any, **_k: Any) -> None: ...

    def warning(self, *_a: Any, **_k: Any) -> None: ...


async def _never(op: str, _args: dict[str, Any]) -> Any:
    raise AssertionError(f"the node was asked '{op}': a request without session or token must stop before")


def _routes(app: web.Application, prefix: str) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("path") or info.get("formatter") or "")
        if path.startswith(prefix) and route.method in ("GET", "POST"):
            out.append((route.method, path.replace("{name}", "certsim.css")))
    return sorted(set(out))


def _node_app() -> web.Application:
    spec = small_lab(nodes=1, imp=0)
    app = web.Application()
    add_pages(
        app,
        lab=spec,
        node=spec.nodes[0],
        request=_never,
        credentials=spec.os_admin,
        throttle=Throttle(max_delay_s=0.0),
        log=_Log(),
    )
    return app


def _dashboard_app(tmp_path: Path) -> web.Application:
    spec = small_lab(nodes=1, imp=0)
    return Dashboard(spec, tmp_path, cast(Any, None)).app()  # refused before any control request


@pytest.mark.parametrize("which", ["node pages", "lab dashboard"])
async def test_no_page_and_no_change_without_a_session_and_its_token(which: str, tmp_path: Path) -> None:
    """Security (issue 12 item 8): every route of the node's pages and of the dashboard, except the login
    page and the static files, redirects a GET without a session to the login page and refuses a POST
    (401); with a session, every POST without the CSRF token or with another one is refused (403). The
    node is never asked."""
    app = _node_app() if which == "node pages" else _dashboard_app(tmp_path)
    root = ROOT if which == "node pages" else "/lab"
    routes = _routes(app, root)
    public = (f"{root}/login", f"{root}/static/")
    guarded = [(m, p) for m, p in routes if not any(p == x or p.startswith(x) for x in public if x.endswith("/"))]
    guarded = [(m, p) for m, p in guarded if p != f"{root}/login"]
    assert len([m for m, _ in guarded if m == "POST"]) >= (10 if which == "node pages" else 3)
    async with TestClient(TestServer(app)) as client:
        for method, path in guarded:
            async with client.request(method, path, allow_redirects=False) as r:
                if method == "GET" and not path.endswith("/events"):
                    assert r.status in (302, 303), (path, r.status)
                    assert r.headers["Location"] in (f"{root}/login", f"{ROOT}/showHome.do"), path
                else:
                    assert r.status == 401, (method, path, r.status)
        async with client.get(f"{root}/login") as r:
            token = re.search(r'name="login_token" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
        form = {"j_username": "admin", "j_password": "certsim-admin", "login_token": token}
        # the cookies are Secure: this plain-HTTP test server's client is given them by hand
        login_cookie = {"Cookie": f"{LOGIN_COOKIE}={token}"}
        async with client.post(f"{root}/login", data=form, headers=login_cookie, allow_redirects=False) as r:
            assert r.status == 303
            session = {"Cookie": f"{COOKIE}={r.cookies[COOKIE].value}"}
        async with client.get(guarded[0][1] if guarded[0][0] == "GET" else root, headers=session) as r:
            assert r.status != 401  # the session is good: what follows is refused for its token only
        for method, path in guarded:
            if method != "POST":
                continue
            for data in ({}, {CSRF_FIELD: "not-the-token"}):
                async with client.post(path, data=data, headers=session, allow_redirects=False) as r:
                    assert r.status == 403, (path, data, r.status)


def test_every_post_form_carries_the_csrf_token() -> None:
    """Security (issue 12 item 8): every state-changing form of the templates (method post) sends the
    session's CSRF token; the login forms, which have no session yet, send their own login token."""
    forms = 0
    for template in sorted(TEMPLATES.glob("*.html")):
        for form in re.findall(r"<form[^>]*>.*?</form>", template.read_text(encoding="utf-8"), re.S):
            if 'method="post"' not in form:
                continue
            forms += 1
            if "login" in template.name:
                assert 'name="login_token"' in form, template.name
            else:
                assert 'name="{{ csrf_field }}" value="{{ csrf }}"' in form, (template.name, form[:200])
    assert forms >= 10


def _evil_certificate() -> x509.Certificate:
    """A CA certificate whose every text field is markup (subject, issuer, SAN)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "<img src=x onerror=alert(1)>"),
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "<b>Org</b>"),
        ]
    )
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365 * 30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("<svg/onload=alert(2)>.example")]), critical=False)
        .sign(key, hashes.SHA256())
    )


@EMBEDDED
async def test_everything_a_certificate_says_is_shown_as_text(make_lab: LabFactory) -> None:
    """Security (issue 12 item 8): a certificate whose subject, issuer and SAN are markup, with a markup
    description, is listed and opened: the Certificate List, the Certificate Details (text and PEM), the
    file name and the download's name show it escaped; no tag of it reaches a page."""
    lab = await lab_with_pages(make_lab)
    cert = _evil_certificate()
    data = base64.b64encode(certs.pem_of(cert).encode()).decode()
    name = (await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": data}))["added"][0]
    await lab.request(
        "cucm1", "cert_describe", {"store": "tomcat-trust", "names": [name], "description": "<script>x</script>"}
    )
    raw = ("<img", "<b>Org", "<svg", "<script>x")
    b = Browser(lab.doors["cucm1"])
    try:
        await b.login()
        pages = [
            "/certificateFindList.do",
            f"/certificateEdit.do?store=tomcat-trust&name={name}",
            f"/certificateDelete.do?store=tomcat-trust&name={name}",
        ]
        for page in pages:
            status, html, _ = await b.get(page)
            assert status == 200, page
            for tag in raw:
                assert tag not in html, (page, tag)
        _, html, _ = await b.get(pages[1])
        for shown in ("&lt;img src=x onerror=alert(1)", "&lt;b\\&gt;Org", "&lt;svg/onload=alert(2)&gt;"):
            assert shown in html
        assert "&lt;script&gt;x&lt;/script&gt;" in html  # the description
        assert f'<td id="file-name">{name}.pem</td>' in html and "<" not in name
        async with b.session.get(f"{b.base}/certificateDownload.do?store=tomcat-trust&name={name}") as r:
            assert r.status == 200
            assert re.fullmatch(r'attachment; filename="[A-Za-z0-9._-]+"', r.headers["Content-Disposition"])
        async with b.session.get(f"{b.base}/certificateDownload.do?store=../../etc&name=passwd") as r:
            assert r.status in (400, 404)  # by store and name through the node, never a path
    finally:
        await b.close()
    assert isinstance(aiohttp.__version__, str)
