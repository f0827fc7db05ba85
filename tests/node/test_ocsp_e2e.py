"""OCSP on running nodes (R-OCSP-1..4): real nodes and SQLite, the lab CA's responder over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.lab import Lab
from cluster.labca import Issued, LabCA
from cluster.ocsp import OcspResponder, SignerMode
from node import certs
from node.catalog import KeyAlgo
from node.errors import BadInput, CertsimError, Refused
from tests.conftest import small_lab

ROOT = "ocsp-root"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Env:
    lab: Lab
    ca: LabCA
    responder: OcspResponder
    root: Issued

    def leaf(self, name: str, *, aia: bool = True) -> Issued:
        return self.ca.issue(
            name,
            issuer=ROOT,
            cn=f"{name}.lab.example",
            key_algo=KeyAlgo.EC,
            key_size=256,
            ocsp_url=self.responder.url if aia else None,
        )

    async def enable(self, node: str, **settings: Any) -> dict[str, Any]:
        args = {"enabled": True, "url": self.responder.url, **settings}
        result: dict[str, Any] = await self.lab.request(node, "ocsp_set", args)
        return result

    async def upload(self, node: str, *items: Issued, store: str = "tomcat-trust") -> dict[str, Any]:
        data = b"".join(i.pem() for i in items)
        result: dict[str, Any] = await self.lab.request(node, "upload", {"store": store, "data": b64(data)})
        return result

    async def statuses(self, node: str, store: str = "tomcat-trust") -> dict[str, str | None]:
        rows = await self.lab.request(node, "list", {"store": store})
        return {r["name"]: r["ocsp"] for r in rows}

    async def advance(self, delta: dt.timedelta) -> None:
        """The one place tests move the lab clock: a jump that fires due timers in order."""
        await self.lab.advance(delta)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """Two Unified CM nodes on the embedded broker, a lab CA root, and its responder on loopback."""
    lab = Lab(small_lab("ocsp", nodes=2, imp=0), tmp_path / "lab")
    await lab.start()
    ca = LabCA(lab.clock)
    responder = OcspResponder(ca, lab.clock)
    await responder.start()
    root = ca.create_ca(ROOT, cn="certsim OCSP Root", key_algo=KeyAlgo.EC, key_size=256)
    try:
        assert (await lab.converge(timeout=30)).converged
        yield Env(lab, ca, responder, root)
    finally:
        await responder.stop()
        await lab.stop()


def name_of(issued: Issued) -> str:
    return certs.entry_name(issued.cert)


async def test_good_revoked_unknown_are_shown_in_listings_and_checked_on_upload(env: Env) -> None:
    """R-OCSP-1, R-OCSP-3: an upload is checked at once; listings show good / revoked / unknown (none for
    a self-signed root); a revoked certificate is stored anyway, in Common Criteria mode too."""
    good, revoked, unknown = env.leaf("good"), env.leaf("revoked"), env.leaf("unknown")
    env.responder.revoke(revoked, "keyCompromise")
    env.responder.forget(unknown)
    enabled = await env.enable("cucm1", cc_mode=True)
    assert enabled["settings"] == {
        "enabled": True,
        "responder": "configured",
        "url": env.responder.url,
        "interval_s": 86400,
        "cc_mode": True,
    }
    result = await env.upload("cucm1", env.root, good, revoked, unknown)
    assert sorted(result["added"]) == sorted(map(name_of, (env.root, good, revoked, unknown)))
    rows = {r["name"]: r for r in result["ocsp"]}
    assert (rows[name_of(good)]["status"], rows[name_of(good)]["allowed"]) == ("good", True)
    assert (rows[name_of(revoked)]["status"], rows[name_of(revoked)]["allowed"]) == ("revoked", False)
    assert rows[name_of(revoked)]["revocation_reason"] == "key_compromise"
    assert (rows[name_of(unknown)]["status"], rows[name_of(unknown)]["allowed"]) == ("unknown", False)
    assert rows[name_of(env.root)]["status"] is None and "self-signed" in rows[name_of(env.root)]["reason"]
    listed = await env.statuses("cucm1")
    assert {k: listed[name_of(v)] for k, v in (("g", good), ("r", revoked), ("u", unknown), ("root", env.root))} == {
        "g": "good",
        "r": "revoked",
        "u": "unknown",
        "root": None,
    }
    assert (await env.lab.converge()).converged  # replicated (R-REPL-1), but cucm2 has OCSP off: no status there
    assert set((await env.statuses("cucm2")).values()) == {None}
    idents = await env.lab.request("cucm1", "list", {"usage": "identity"})
    assert idents and all(r["ocsp"] is None for r in idents)  # self-signed identities: OCSP does not apply


async def test_common_criteria_mode_decides_unknown_for_the_remote_node_check(env: Env) -> None:
    """R-OCSP-3, R-OCSP-4: check_remote asks about the peer's CA-signed Tomcat certificate in real time;
    unknown connects without Common Criteria mode and fails with it; revoked fails either way."""
    lab = env.lab
    csr = await lab.request("cucm2", "csr_gen", {"unit": "tomcat"})
    signed = env.ca.sign_csr("cucm2-tomcat", issuer=ROOT, csr_pem=csr["csr"].encode())
    await env.upload("cucm1", env.root)
    assert (await lab.converge()).converged
    await lab.request("cucm2", "identity_upload", {"unit": "tomcat", "data": b64(signed.pem())})
    await lab.request("cucm2", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
    assert (await lab.converge()).converged

    off = await lab.request("cucm1", "check_remote", {"peer": "cucm2"})
    assert (off["connected"], off["ocsp"]) == (True, None)  # OCSP off: the chain alone decides
    await env.enable("cucm1", cc_mode=False)
    good = await lab.request("cucm1", "check_remote", {"peer": "cucm2"})
    assert (good["connected"], good["ocsp"]) == (True, "good")

    env.responder.forget(signed)
    unknown = await lab.request("cucm1", "check_remote", {"peer": "cucm2"})
    assert (unknown["connected"], unknown["ocsp"]) == (True, "unknown")
    assert (await env.statuses("cucm1"))[name_of(signed)] == "unknown"  # a real check: the listing shows it
    await lab.request("cucm1", "ocsp_set", {"cc_mode": True})
    refused = await lab.request("cucm1", "check_remote", {"peer": "cucm2"})
    assert (refused["connected"], refused["ocsp"]) == (False, "unknown")
    assert "Common Criteria" in refused["reason"]

    await lab.request("cucm1", "ocsp_set", {"cc_mode": False})
    env.responder.revoke(signed)
    revoked = await lab.request("cucm1", "check_remote", {"peer": "cucm2"})
    assert (revoked["connected"], revoked["ocsp"]) == (False, "revoked")
    assert "OCSP status is revoked" in revoked["reason"]


async def test_scheduled_check_after_the_clock_jumps_and_reuses_fresh_responses(env: Env) -> None:
    """R-OCSP-1: checks run every check interval of the lab clock; a revocation shows after the next one.
    A response still fresh past the following check is reused without a request."""
    leaf = env.leaf("scheduled")
    await env.enable("cucm1")
    await env.upload("cucm1", env.root, leaf)
    env.responder.revoke(leaf)
    assert (await env.statuses("cucm1"))[name_of(leaf)] == "good"  # nothing asked since the upload
    before = await env.lab.request("cucm1", "ocsp_get", {})
    await env.advance(dt.timedelta(days=1, minutes=1))
    after = await env.lab.request("cucm1", "ocsp_get", {})
    assert (await env.statuses("cucm1"))[name_of(leaf)] == "revoked"
    assert after["requests"] == before["requests"] + 1
    assert after["last_check"] is not None and after["next_check"] > after["last_check"]

    await env.lab.request("cucm1", "ocsp_set", {"interval": "1h"})  # responses last 24 h: most checks reuse
    asked = (await env.lab.request("cucm1", "ocsp_get", {}))["requests"]
    checks = (await env.lab.request("cucm1", "ocsp_get", {}))["checks"]
    await env.advance(dt.timedelta(hours=5, minutes=1))
    later = await env.lab.request("cucm1", "ocsp_get", {})
    assert later["checks"] == checks + 5
    assert later["requests"] - asked <= 1


async def test_delegated_then_trusted_responder(env: Env) -> None:
    """R-OCSP-2: a response signed by a responder certificate the CA issued is accepted (delegated trust
    model); one signed by an independent responder only once its certificate is in tomcat-trust."""
    leaf = env.leaf("signed-by")
    await env.enable("cucm1")
    await env.upload("cucm1", env.root, leaf)
    env.responder.set_signer(ROOT, SignerMode.DELEGATED)
    checked = {r["name"]: r for r in (await env.lab.request("cucm1", "ocsp_check", {}))["checked"]}
    assert (checked[name_of(leaf)]["status"], checked[name_of(leaf)]["signer"]) == ("good", "delegated")

    env.responder.set_signer(ROOT, SignerMode.TRUSTED)
    checked = {r["name"]: r for r in (await env.lab.request("cucm1", "ocsp_check", {}))["checked"]}
    assert checked[name_of(leaf)]["status"] == "unknown"
    assert "untrusted responder" in checked[name_of(leaf)]["reason"]
    signing = env.responder.signer_certificate(ROOT)
    upload = await env.lab.request(
        "cucm1", "upload", {"store": "tomcat-trust", "data": b64(certs.pem_of(signing).encode())}
    )
    assert upload["ocsp"][0]["status"] is None  # the self-signed responder certificate is not checked itself
    checked = {r["name"]: r for r in (await env.lab.request("cucm1", "ocsp_check", {}))["checked"]}
    assert (checked[name_of(leaf)]["status"], checked[name_of(leaf)]["signer"]) == ("good", "trusted")


async def test_responder_uri_from_the_certificate(env: Env) -> None:
    """R-OCSP-1: without a configured URI the node asks the responder named in the certificate's AIA;
    a certificate without one cannot be checked and is unknown."""
    with_aia, without = env.leaf("with-aia"), env.leaf("without-aia", aia=False)
    await env.lab.request("cucm1", "ocsp_set", {"enabled": True, "url": "certificate"})
    result = await env.upload("cucm1", env.root, with_aia, without)
    rows = {r["name"]: r for r in result["ocsp"]}
    assert (rows[name_of(with_aia)]["status"], rows[name_of(with_aia)]["url"]) == ("good", env.responder.url)
    assert rows[name_of(without)]["status"] == "unknown"
    assert "no OCSP responder" in rows[name_of(without)]["reason"]
    assert rows[name_of(without)]["allowed"] is True  # unknown passes outside Common Criteria mode


async def test_identity_upload_is_checked_and_settings_survive_a_restart(env: Env) -> None:
    """R-OCSP-1: a CA-signed identity upload is checked; OCSP settings and statuses live in the node's database."""
    csr = await env.lab.request("cucm1", "csr_gen", {"unit": "tomcat"})
    signed = env.ca.sign_csr("cucm1-tomcat", issuer=ROOT, csr_pem=csr["csr"].encode())
    await env.upload("cucm1", env.root)
    await env.enable("cucm1", interval="12h", cc_mode=True)
    installed = await env.lab.request("cucm1", "identity_upload", {"unit": "tomcat", "data": b64(signed.pem())})
    assert [(r["name"], r["status"]) for r in installed["ocsp"]] == [(name_of(signed), "good")]
    own = await env.lab.request("cucm1", "list", {"store": "tomcat", "usage": "identity"})
    assert own[0]["ocsp"] == "good"
    await env.lab.stop_node("cucm1")
    await env.lab.start_node("cucm1")
    kept = await env.lab.request("cucm1", "ocsp_get", {})
    assert kept["settings"]["interval_s"] == 12 * 3600 and kept["settings"]["cc_mode"] is True
    assert {r["name"]: r["status"] for r in kept["statuses"]}[name_of(signed)] == "good"


async def test_bad_settings_are_refused(env: Env) -> None:
    """R-OCSP-1: settings are validated; a check needs OCSP enabled; only loopback responders are asked."""
    problems = {
        "url": ({"url": "http://192.0.2.1/ocsp"}, "loopback"),
        "interval": ({"interval": "10s"}, "between 1 minute"),
        "flag": ({"cc_mode": "yes"}, "true or false"),
        "key": ({"uri": "x"}, "unknown OCSP setting"),
    }
    for what, (args, text) in problems.items():
        with pytest.raises(CertsimError, match=text) as caught:
            await env.lab.request("cucm1", "ocsp_set", args)
        assert caught.value.code == BadInput.code, what
    with pytest.raises(CertsimError, match="not enabled") as refused:
        await env.lab.request("cucm1", "ocsp_check", {})
    assert refused.value.code == Refused.code
    assert (await env.lab.request("cucm1", "ocsp_get", {}))["settings"]["enabled"] is False


async def test_responder_down_is_unknown(env: Env) -> None:
    """R-OCSP-3 (the responder must run): an unreachable responder gives unknown, allowed only outside CC mode."""
    leaf = env.leaf("down")
    await env.enable("cucm1")
    await env.upload("cucm1", env.root, leaf)
    await env.responder.stop()
    try:
        rows = (await env.lab.request("cucm1", "ocsp_check", {}))["checked"]
        assert [(r["status"], r["allowed"]) for r in rows] == [("unknown", True)]
        assert "cannot be reached" in rows[0]["reason"]
    finally:
        await env.responder.start()
    await asyncio.sleep(0)
