"""Issue 14 through every door of one lab: a certificate whose subject and SAN carry terminal escape
sequences, a bell, a newline and a bidirectional override is uploaded, and every door shows that text
escaped (CLI table and JSON, the SSH platform CLI, the REST API, the web pages, the node logs and
report.html); an expired or not-yet-valid trust certificate is stored with a warning each door prints;
chains that loop or run deep and certificates with too many SANs are refused by each door with the
node's reason, and nothing changes.

Real clients only: asyncssh for SSH, aiohttp over HTTPS for REST and the pages; the CLI's own
rendering (``cluster.views.cert_table`` on a console that is not a terminal, and ``emit_json``) is fed
the rows the node answered."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import asyncssh
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.cli.common import _console, emit_json
from cluster.doors.frontdoors import FrontDoors, enable_front_doors
from cluster.doors.rest import API_ROOT, basic_auth_header
from cluster.lab import Lab
from cluster.report import render_report
from cluster.views import cert_table
from node.safetext import is_safe
from tests.cluster.doors.test_web import Browser, status_lines
from tests.conftest import LabFactory, small_lab
from tests.node.test_upload_policy import KEYS, _cert, _pem

pytestmark = pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the doors, not the bus

NODE = "cucm1"
HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\nforged: line\u202e"  # clears the screen, retitles it, forges a line
ESCAPED = "evil\\x1b[2J\\x1b]0;pwned\\x07\\nforged: line\\u202e"  # what every door shows instead
SUBJECT = "CN=" + ESCAPED.replace(";", "\\;")  # in RFC 4514 subject text, ';' is escaped too
HOSTILE_SAN = "x\x1b[31m.lab.example"
RAW = ("\x1b", "\x07", "\u202e")


def _hostile(tag: str, now: dt.datetime, *, starts: float, days: float) -> x509.Certificate:
    """A self-signed CA certificate (its signature verifies) with hostile subject, issuer and SAN text."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{HOSTILE} {tag}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Org\r\nX-Injected: yes"),
        ]
    )
    begin = now + dt.timedelta(days=starts)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(begin)
        .not_valid_after(begin + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOSTILE_SAN)]), critical=False)
        .sign(key, hashes.SHA256())
    )


def _pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _bad_uploads() -> dict[str, str]:
    """Three uploads the policy refuses, each with the words of its refusal."""
    loop = _pem(_cert("Alpha", KEYS[5], "Beta", KEYS[6]), _cert("Beta", KEYS[6], "Alpha", KEYS[5]))
    chain = [_cert("C0", KEYS[0], "C0", KEYS[0])]
    for i in range(1, 10):
        chain.append(_cert(f"C{i}", KEYS[i], f"C{i - 1}", KEYS[i - 1]))
    deep = _pem(*reversed(chain))
    many = _pem(_cert("big", KEYS[7], "big", KEYS[7], ca=False, san=[f"h{i}.lab.example" for i in range(300)]))
    return {
        "issuers loop": loop.decode(),
        "a chain of more than 8": deep.decode(),
        "subject alternative": many.decode(),
    }


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _unsafe(value: Any) -> list[str]:
    """Strings of a JSON answer that are not safe to print (a PEM block's own newlines are its format)."""
    return [s for s in _strings(value) if not is_safe(s) and not s.startswith("-----BEGIN ")]


def _assert_shown_escaped(text: str, door: str) -> None:
    for ch in RAW:
        assert ch not in text, f"{door} printed {ch!r} raw"
    assert not re.search(r"^forged: line", text, re.MULTILINE), f"{door}: the CN's newline forged a line"


async def _trust_names(lab: Lab) -> set[str]:
    return {str(r["name"]) for r in await lab.request(NODE, "list", {"store": "tomcat-trust"})}


async def _rest(doors: FrontDoors, method: str, path: str, body: Any = None) -> tuple[int, str]:
    headers = {"Authorization": basic_auth_header("admin", "certsim-admin")}
    url = f"https://{doors.https.host}:{doors.https.port}{API_ROOT}{path}"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_every_door_shows_hostile_certificate_text_escaped_warns_and_refuses_alike(
    make_lab: LabFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14 (safe text, upload policy): each door escapes certificate text, warns about an expired or
    not-yet-valid trust certificate, and refuses a looping chain, a deep chain and too many SANs."""
    lab = await make_lab(small_lab(nodes=2, imp=0, front_doors={"ssh_port": 0, "https_port": 0}))
    await enable_front_doors(lab)
    doors = lab.doors[NODE]
    now = lab.clock.now()
    expired = _hostile("rest", now, starts=-400, days=30)
    future = _hostile("ssh", now, starts=30, days=365)
    web_expired = _hostile("web", now, starts=-400, days=30)

    # REST: a description with control characters is refused and changes nothing; the upload answers with
    # the warning; the listing shows the certificate text escaped
    body = {"service": ["tomcat"], "certificates": [_pem_of(expired)], "description": f"desc {HOSTILE}"}
    before = await _trust_names(lab)
    status, text = await _rest(doors, "POST", "trust/certificates", body)
    assert status == 400 and "control characters" in text and await _trust_names(lab) == before, text
    status, text = await _rest(doors, "POST", "trust/certificates", {**body, "description": "REST root <b>[/]"})
    assert status == 200, text
    answer = json.loads(text)
    notes = [n for r in answer["results"] for n in r["notes"]]
    assert any(n.startswith("warning:") and "expired on" in n for n in notes), notes
    assert _unsafe(answer) == [], answer
    status, text = await _rest(doors, "GET", "trust/certificate?service=tomcat")
    assert status == 200
    listed = json.loads(text)
    assert _unsafe(listed) == []
    assert any(SUBJECT in s for s in _strings(listed)), [s for s in _strings(listed) if "evil" in s]

    # SSH (asyncssh): the import warns; the list and the details show the text escaped
    listener = doors.ssh_listener
    assert listener is not None
    async with asyncssh.connect(
        listener.host, listener.port, username="admin", password="certsim-admin", known_hosts=None, client_keys=None
    ) as conn:
        done = await conn.run("set cert import trust tomcat", input=_pem_of(future), timeout=60)
        out = str(done.stdout)
        assert done.exit_status == 0, out
        assert re.search(r"^warning: .* is not yet valid", out, re.MULTILINE), out
        _assert_shown_escaped(out, "ssh import")
        await lab.converge()
        names = await _trust_names(lab)
        done = await conn.run("show cert list trust", timeout=60)
        _assert_shown_escaped(str(done.stdout), "show cert list trust")
        hostile_names = sorted(n for n in names if n.startswith("evil"))
        assert len(hostile_names) == 2, names  # distinct subjects, distinct names
        rest_name, ssh_name = sorted(hostile_names, key=lambda n: "_ssh_" in n)  # the REST upload's, the SSH one's
        assert f"tomcat-trust/{rest_name}.pem: REST root <b>[/]\n" in str(done.stdout), done.stdout  # as given
        # uploaded without a description: a "Trust Certificate", not "generated by system"
        assert f"tomcat-trust/{ssh_name}.pem: Trust Certificate\n" in str(done.stdout), done.stdout
        for name in hostile_names:
            done = await conn.run(f"show cert trust tomcat-trust/{name}.pem", timeout=60)
            out = str(done.stdout)
            assert done.exit_status == 0, out
            _assert_shown_escaped(out, "show cert trust")
            assert SUBJECT in out and "\\x1b[31m.lab.example" in out, out
            assert "Org\\r\\nX-Injected: yes" in out, out
        for words, pem in _bad_uploads().items():
            before = await _trust_names(lab)
            done = await conn.run("set cert import trust tomcat", input=pem, timeout=60)
            assert done.exit_status == 1 and words in str(done.stdout), (words, done.stdout)
            assert await _trust_names(lab) == before

    # REST refuses the same uploads, naming the reason, changing nothing
    for words, pem in _bad_uploads().items():
        before = await _trust_names(lab)
        status, text = await _rest(doors, "POST", "trust/certificates", {"service": ["tomcat"], "certificates": [pem]})
        assert status == 400 and words in json.loads(text)["message"], (words, text)
        assert await _trust_names(lab) == before

    # the web pages (a browser's requests): the upload dialog warns; the list and details escape
    browser = Browser(doors)
    try:
        await browser.login()
        for words, pem in [("expired on", _pem_of(web_expired)), *_bad_uploads().items()]:
            before = await _trust_names(lab)
            form = aiohttp.FormData()
            form.add_field("token", await browser.token("/certificateUpload.do"))
            form.add_field("purpose", "tomcat-trust")
            form.add_field("description", "web root")
            form.add_field("file", pem.encode(), filename="x.pem", content_type="application/x-pem-file")
            status, html, _ = await browser.post("/certificateUpload.do", form)
            assert status == 200
            lines = status_lines(html)
            assert any(words in line for line in lines), (words, lines)
            _assert_shown_escaped(html, "web upload")
            if words != "expired on":
                assert await _trust_names(lab) == before
        status, html, _ = await browser.get("/certificateFindList.do")
        assert status == 200
        _assert_shown_escaped(html, "web list")
        for name in sorted(n for n in await _trust_names(lab) if n.startswith("evil")):
            status, html, _ = await browser.get(f"/certificateEdit.do?store=tomcat-trust&name={name}")
            assert status == 200
            _assert_shown_escaped(html, "web details")
            assert SUBJECT in html, html[:3000]
    finally:
        await browser.close()

    # the CLI's table and JSON of what the node lists
    rows = await lab.request(NODE, "list", {"store": "tomcat-trust"})
    console = _console(stderr=False)
    with console.capture() as captured:
        console.print(cert_table(rows, NODE))
    table = captured.get()
    _assert_shown_escaped(table, "CLI table")
    assert "evil\\x1b[2J" in table
    capsys.readouterr()
    emit_json(rows)
    shown = capsys.readouterr().out
    assert _unsafe(json.loads(shown)) == [] and "evil\\\\x1b[2J" in shown

    # logs: every node's JSON log decodes to text that is safe to print
    logs = sorted(lab.log_dir.rglob("*"))
    logs = [p for p in logs if p.is_file()]
    assert logs
    for path in logs:
        for line in path.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            assert _unsafe(event) == [], (path.name, event)

    # report.html of a run that ends with these certificates held, a node's note as a step's detail
    step = {"index": 1, "kind": "upload", "status": "ok", "sim": "", "rule": None, "detail": notes[0], "result": None}
    results = {
        "scenario": "hostile",
        "description": "",
        "verdict": "valid",
        "exit_code": 0,
        "reason": "",
        "lab": lab.spec.name,
        "release": lab.spec.release.name,
        "nodes": [NODE],
        "broker": "embedded",
        "wall_seconds": 0,
        "sim_start": "",
        "sim_end": "",
        "expectations": {"total": 0, "held": 0, "failed": 0},
        "rules": [],
        "failures": [],
        "steps": [step],
    }
    report = render_report(results, [], {NODE: rows})
    _assert_shown_escaped(report, "report.html")
    assert "evil\\x1b[2J" in report, "report.html lacks the escaped CN"
