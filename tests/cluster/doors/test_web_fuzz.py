"""Web pages fuzz (issue 14, the fourth door beside the CLI, SSH and REST fuzz tests): a corpus of random
and mutated form posts and page queries, generated here from a seed, sent by a logged-in browser
session with valid CSRF tokens, never gets a 5xx, never prints what it was sent raw, answers every
refused form with an error line a person can act on, and changes nothing on any node."""

from __future__ import annotations

import random
import re
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from cluster.labca import LabCA
from node.safetext import is_safe
from tests.cluster.doors.test_web import Browser, lab_with_pages
from tests.conftest import LabFactory

pytestmark = pytest.mark.parametrize("broker", ["embedded"], indirect=True)

JUNK = ["tomcat-nope", "../../etc/passwd", "\x1b[2J", "[/]", "<script>x</script>", "", "0", "-1", "9" * 40, "\x00"]
# form actions and the fields their forms carry; values are never a valid unit or store, so every post is refused
FORMS = {
    "/certificateUpload.do": ["purpose", "description"],
    "/certificateDelete.do": ["store", "name"],
    "/certificateRegenerate.do": ["store", "purpose", "key_length"],
    "/certificateGenerateCsr.do": ["purpose", "distribution", "key_length", "hash"],
}
PAGES = ["/certificateFindList.do", "/certificateEdit.do", "/certificateDownload.do", "/certificateDelete.do"]
QUERY = ["store", "name", "field", "op", "text", "format", "purpose"]


def _junk(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 12)))
    return rng.choice(JUNK)


def _file(rng: random.Random, pem: bytes) -> bytes:
    """The lab CA's certificate with a few bytes changed, cut short, or random bytes."""
    data = bytearray(pem if rng.random() < 0.7 else rng.randbytes(rng.randrange(0, 200)))
    for _ in range(rng.randrange(1, 5)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data[: rng.randrange(1, len(data) + 1)] if data and rng.random() < 0.3 else data)


async def test_web_pages_fuzz(make_lab: LabFactory) -> None:
    lab = await lab_with_pages(make_lab)
    pem = LabCA(lab.clock).create_ca("FuzzRoot").pem()
    rng = random.Random(14)
    before = {n: await lab.request(n, "list", {}) for n in lab.running_nodes()}
    idents = {n: await lab.request(n, "identity_list") for n in lab.running_nodes()}
    browser = Browser(lab.doors["cucm1"])
    problems: list[str] = []
    try:
        await browser.login()
        for _ in range(30):
            action = rng.choice(list(FORMS))
            fields: dict[str, Any] = {name: _junk(rng) for name in FORMS[action] if rng.random() < 0.8}
            form = aiohttp.FormData()
            form.add_field("token", await browser.token(action))
            for name, value in fields.items():
                form.add_field(name, value)
            if action == "/certificateUpload.do" and rng.random() < 0.8:
                form.add_field("file", _file(rng, pem), filename="x.pem", content_type="application/x-pem-file")
            status, html, _ = await browser.post(action, form)
            errors = _status_lines(html, "error")
            if status >= 500 or not errors or not all(is_safe(line) for line in errors):
                problems.append(f"POST {action} {fields!r:.100}: {status} {errors!r:.200}")
            elif any(ch in html for ch in ("\x1b", "\x00")):
                problems.append(f"POST {action} {fields!r:.100}: printed a control character raw")
        for _ in range(30):
            page = rng.choice(PAGES)
            query = {name: _junk(rng) for name in QUERY if rng.random() < 0.5}
            status, html, _ = await browser.get(f"{page}?{urlencode(query)}")
            if status >= 500 or any(ch in html for ch in ("\x1b", "\x00")):
                problems.append(f"GET {page} {query!r:.100}: {status}")
    finally:
        await browser.close()
    assert not problems, "\n".join(problems)
    assert {n: await lab.request(n, "list", {}) for n in lab.running_nodes()} == before
    assert {n: await lab.request(n, "identity_list") for n in lab.running_nodes()} == idents


def _status_lines(html: str, kind: str) -> list[str]:
    return re.findall(rf'<p class="{kind}"[^>]*>([^<]*)</p>', html)
