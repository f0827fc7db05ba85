"""OCSP: the lab CA's responder over real HTTP, the node's client core, the lab's responder, the CLI (R-OCSP-1..3)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from cluster.labca import Issued, LabCA
from cluster.ocsp import (
    LAB_OCSP_FILE,
    REVOKED_FILE,
    DirectoryCA,
    OcspResponder,
    SignerMode,
    lab_responder_url,
    start_lab_responder,
)
from node import certs
from node.catalog import KeyAlgo
from node.clock import SimClock
from node.errors import BadInput, NotFound
from node.ocsp_check import (
    OcspError,
    OcspStatus,
    Signer,
    aia_ocsp_urls,
    build_request,
    check,
    evaluate_response,
    fetch,
    issuer_hashes,
    responder_url,
)
from tests.conftest import held_port, stock_home

ORIGIN = dt.datetime(2030, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


@dataclass
class Env:
    clock: SimClock
    ca: LabCA
    responder: OcspResponder
    root: Issued
    leaf: Issued

    async def ask(self, cert: x509.Certificate, issuer: x509.Certificate | None = None) -> bytes:
        """A real HTTP round trip to the responder named in the certificate's AIA (R-OCSP-1)."""
        return await fetch(responder_url(cert), build_request(cert, issuer or self.root.cert))


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = SimClock(ORIGIN, rate=1.0)
    ca = LabCA(clock)
    responder = OcspResponder(ca, clock)
    root = ca.create_ca("lab-root", key_algo=KeyAlgo.EC, key_size=256)
    leaf = ca.issue("cucm1-tomcat", issuer="lab-root", key_algo=KeyAlgo.EC, key_size=256, ocsp_url=responder.url)
    await responder.start()
    try:
        yield Env(clock, ca, responder, root, leaf)
    finally:
        await responder.stop()


def foreign_serial_cert(root: Issued) -> x509.Certificate:
    """A certificate signed with the lab root's key that the lab CA never recorded: the responder does not know it."""
    key = certs.new_private_key(KeyAlgo.EC, 256)
    assert root.key is not None
    return certs.build_certificate(
        subject=x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rogue.lab.test")]),
        public_key=key.public_key(),
        issuer=root.cert.subject,
        issuer_key=root.key,
        not_before=ORIGIN - dt.timedelta(days=1),
        not_after=ORIGIN + dt.timedelta(days=30),
        extensions=[],
    )


async def test_labca_puts_the_responder_in_aia_only_when_asked(env: Env) -> None:
    """R-OCSP-1: the responder URI travels in the certificate's AIA; without ocsp_url nothing changes."""
    assert aia_ocsp_urls(env.leaf.cert) == [env.responder.url]
    assert env.responder.url.startswith("http://127.0.0.1:")
    plain = env.ca.issue("plain", issuer="lab-root", key_algo=KeyAlgo.EC, key_size=256)
    assert aia_ocsp_urls(plain.cert) == []
    with pytest.raises(x509.ExtensionNotFound):
        plain.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess)
    inter = env.ca.create_ca(
        "inter", issuer="lab-root", key_algo=KeyAlgo.EC, key_size=256, ocsp_url="http://127.0.0.1:1/ocsp"
    )
    assert aia_ocsp_urls(inter.cert) == ["http://127.0.0.1:1/ocsp"]


async def test_configured_uri_wins_over_aia_and_none_is_an_error(env: Env) -> None:
    """R-OCSP-1: a configured responder URI is used first; a certificate without AIA needs one."""
    assert responder_url(env.leaf.cert, "http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    assert responder_url(env.leaf.cert) == env.responder.url
    with pytest.raises(BadInput, match="no OCSP responder"):
        responder_url(env.root.cert)


async def test_good_over_http_signed_by_the_issuer(env: Env) -> None:
    """R-OCSP-2/R-OCSP-3: a good certificate, response signed by the CA (delegated trust model), allowed."""
    der = await env.ask(env.leaf.cert)
    now = env.clock.now()
    for cc_mode in (False, True):
        result = evaluate_response(der, env.leaf.cert, env.root.cert, [], now, cc_mode)
        assert (result.status, result.allowed, result.signer) == (OcspStatus.GOOD, True, Signer.ISSUER)
    assert result.this_update is not None and abs(result.this_update - now) < dt.timedelta(seconds=5)
    assert result.next_update == result.this_update + dt.timedelta(hours=24)
    assert env.responder.requests == 1


async def test_revoked_after_revoke_fails_in_both_modes(env: Env) -> None:
    """R-OCSP-3: once revoked, the status is revoked (time and reason) and the connection fails, CC or not."""
    at = env.clock.now() - dt.timedelta(hours=1)
    env.responder.revoke(env.leaf, "keyCompromise", at)
    der = await env.ask(env.leaf.cert)
    for cc_mode in (False, True):
        result = evaluate_response(der, env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode)
        assert (result.status, result.allowed) == (OcspStatus.REVOKED, False)
    assert result.revocation_time == at.replace(microsecond=0)
    assert result.revocation_reason == "key_compromise"


async def test_unknown_serial_fails_only_in_cc_mode(env: Env) -> None:
    """R-OCSP-3: a serial the CA never issued is unknown: allowed without CC mode, refused with it."""
    rogue = foreign_serial_cert(env.root)
    der = await fetch(env.responder.url, build_request(rogue, env.root.cert))  # configured URI: no AIA in it
    off = evaluate_response(der, rogue, env.root.cert, [], env.clock.now(), cc_mode=False)
    on = evaluate_response(der, rogue, env.root.cert, [], env.clock.now(), cc_mode=True)
    assert (off.status, off.allowed) == (OcspStatus.UNKNOWN, True)
    assert (on.status, on.allowed) == (OcspStatus.UNKNOWN, False)


async def test_delegated_responder_certificate_is_accepted(env: Env) -> None:
    """R-OCSP-2: a responder certificate issued by the CA with the OCSPSigning EKU signs under the delegated model."""
    env.responder.set_signer("lab-root", SignerMode.DELEGATED)
    der = await env.ask(env.leaf.cert)
    result = evaluate_response(der, env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode=True)
    assert (result.status, result.signer) == (OcspStatus.GOOD, Signer.DELEGATED)
    responder_cert = env.responder.signer_certificate("lab-root")
    assert ocsp.load_der_ocsp_response(der).certificates == [responder_cert]


async def test_trusted_responder_fallback_needs_tomcat_trust(env: Env) -> None:
    """R-OCSP-2: a responder not issued by the CA is accepted only if its certificate is in tomcat-trust."""
    env.responder.set_signer("lab-root", SignerMode.TRUSTED)
    signing = env.responder.signer_certificate("lab-root")
    der = await env.ask(env.leaf.cert)
    now = env.clock.now()
    with pytest.raises(OcspError, match=r"untrusted responder.*not issued by the CA"):
        evaluate_response(der, env.leaf.cert, env.root.cert, [env.root.cert], now, cc_mode=False)
    result = evaluate_response(der, env.leaf.cert, env.root.cert, [env.root.cert, signing], now, cc_mode=True)
    assert (result.status, result.allowed, result.signer) == (OcspStatus.GOOD, True, Signer.TRUSTED)


async def test_bad_signature_is_refused(env: Env) -> None:
    """R-OCSP-2: a response claiming the CA as responder but signed with another key is refused."""
    impostor_key = certs.new_private_key(KeyAlgo.EC, 256)
    now = env.clock.now().replace(microsecond=0)
    impostor = certs.build_certificate(  # same subject as the lab root, another key
        subject=env.root.cert.subject,
        public_key=impostor_key.public_key(),
        issuer=env.root.cert.subject,
        issuer_key=impostor_key,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=1),
        extensions=[],
    )
    name_hash, key_hash = issuer_hashes(env.root.cert, hashes.SHA1())
    forged = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            name_hash,
            key_hash,
            env.leaf.cert.serial_number,
            hashes.SHA1(),
            ocsp.OCSPCertStatus.GOOD,
            now,
            None,
            None,
            None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.NAME, impostor)  # names the lab root as the signer
        .sign(impostor_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(OcspError, match="bad signature"):
        evaluate_response(forged, env.leaf.cert, env.root.cert, [], now, cc_mode=False)
    genuine = bytearray(await env.ask(env.leaf.cert))
    genuine[-5] ^= 0xFF  # inside the signature at the end of the DER
    with pytest.raises(OcspError, match=r"bad signature|malformed"):
        evaluate_response(bytes(genuine), env.leaf.cert, env.root.cert, [], now, cc_mode=False)


async def test_wrong_serial_and_stale_responses_are_refused(env: Env) -> None:
    """R-OCSP-2: a response for another certificate, or outside thisUpdate..nextUpdate, is not used."""
    other = env.ca.issue("cucm2-tomcat", issuer="lab-root", key_algo=KeyAlgo.EC, key_size=256)
    der = await env.ask(env.leaf.cert)
    now = env.clock.now()
    with pytest.raises(OcspError, match=f"does not answer for serial {other.cert.serial_number:x}"):
        evaluate_response(der, other.cert, env.root.cert, [], now, cc_mode=False)
    with pytest.raises(OcspError, match="stale"):
        evaluate_response(der, env.leaf.cert, env.root.cert, [], now + dt.timedelta(hours=25), cc_mode=False)
    with pytest.raises(OcspError, match="in the future"):
        evaluate_response(der, env.leaf.cert, env.root.cert, [], now - dt.timedelta(hours=1), cc_mode=False)
    env.clock.advance(dt.timedelta(days=30))  # the responder dates answers by the lab clock
    fresh = evaluate_response(await env.ask(env.leaf.cert), env.leaf.cert, env.root.cert, [], env.clock.now(), False)
    assert fresh.this_update is not None and fresh.this_update >= now + dt.timedelta(days=30) - dt.timedelta(seconds=1)


async def test_check_maps_trouble_to_unknown_by_cc_mode(env: Env) -> None:
    """R-OCSP-3: the agent-facing check: good over HTTP; unreachable or untrusted answers count as unknown."""
    good = await check(env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode=True)
    assert (good.status, good.allowed) == (OcspStatus.GOOD, True)
    await env.responder.stop()
    down_off = await check(env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode=False, timeout=2)
    down_on = await check(env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode=True, timeout=2)
    assert (down_off.status, down_off.allowed, down_on.allowed) == (OcspStatus.UNKNOWN, True, False)
    assert "cannot be reached" in down_on.reason
    await env.responder.start()
    env.responder.set_signer("lab-root", SignerMode.TRUSTED)
    untrusted = await check(env.leaf.cert, env.root.cert, [], env.clock.now(), cc_mode=True)
    assert (untrusted.status, untrusted.allowed) == (OcspStatus.UNKNOWN, False)
    assert "untrusted responder" in untrusted.reason


async def test_get_requests_unauthorized_issuers_and_malformed_requests(env: Env) -> None:
    """RFC 6960 GET works; an issuer the lab CA does not hold is unauthorized; garbage is malformed."""
    request = build_request(env.leaf.cert, env.root.cert)
    url = f"{env.responder.url}/{quote(base64.b64encode(request).decode(), safe='')}"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        assert reply.status == 200
        assert reply.content_type == "application/ocsp-response"
        body = await reply.read()
    assert evaluate_response(body, env.leaf.cert, env.root.cert, [], env.clock.now(), True).status is OcspStatus.GOOD
    other_ca = LabCA(env.clock)
    stranger_root = other_ca.create_ca("elsewhere", key_algo=KeyAlgo.EC, key_size=256)
    stranger = other_ca.issue("x", issuer="elsewhere", key_algo=KeyAlgo.EC, key_size=256)
    der = await fetch(env.responder.url, build_request(stranger.cert, stranger_root.cert))
    assert ocsp.load_der_ocsp_response(der).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
    with pytest.raises(OcspError, match="unauthorized"):
        evaluate_response(der, stranger.cert, stranger_root.cert, [], env.clock.now(), False)
    garbage = await fetch(env.responder.url, b"\x30\x03\x02\x01\x00")
    assert ocsp.load_der_ocsp_response(garbage).response_status is ocsp.OCSPResponseStatus.MALFORMED_REQUEST


async def test_revoke_errors_and_fetch_stays_on_loopback(env: Env) -> None:
    """Clear errors: revoking what the lab CA did not issue, an unknown reason, a non-loopback responder."""
    with pytest.raises(NotFound, match="no certificate with serial"):
        env.responder.revoke(foreign_serial_cert(env.root))
    with pytest.raises(BadInput, match="unknown revocation reason"):
        env.responder.revoke("cucm1-tomcat", "bored")
    revocation = env.responder.revoke(f"{env.leaf.cert.serial_number:x}")
    assert revocation.ca_name == "lab-root" and revocation.at == env.clock.now().replace(microsecond=0)
    with pytest.raises(BadInput, match="loopback"):
        await fetch("http://192.0.2.1/ocsp", b"")


# --- the responder of a running lab, revocations in a file, and the CLI ------------------------------


async def test_directory_ca_and_revocations_file_are_read_live(tmp_path: Path) -> None:
    """R-OCSP-3: a responder over a CA directory answers for CAs written after it started, and for
    revocations another process writes into revoked.json."""
    clock = SimClock(ORIGIN, rate=1.0)
    ca_dir = tmp_path / "ca"
    responder = await start_lab_responder(tmp_path, clock)
    try:
        assert lab_responder_url(tmp_path) == responder.url
        writer = LabCA(clock)  # as `certsim ca create/sign` would write them
        root = writer.create_ca("dir-root", key_algo=KeyAlgo.EC, key_size=256)
        leaf = writer.issue("dir-leaf", issuer="dir-root", key_algo=KeyAlgo.EC, key_size=256)
        ca_dir.mkdir()
        for issued in (root, leaf):
            (ca_dir / f"{issued.name}.pem").write_bytes(issued.pem(with_chain=True))
        (ca_dir / "dir-root.key").write_bytes(certs.key_pem(root.key))  # type: ignore[arg-type]
        ask = await fetch(responder.url, build_request(leaf.cert, root.cert))
        assert evaluate_response(ask, leaf.cert, root.cert, [], clock.now(), True).status is OcspStatus.GOOD
        other = OcspResponder(DirectoryCA(ca_dir), clock, revocations_file=ca_dir / REVOKED_FILE)  # another process
        other.revoke("dir-leaf", "superseded")
        ask = await fetch(responder.url, build_request(leaf.cert, root.cert))
        result = evaluate_response(ask, leaf.cert, root.cert, [], clock.now(), False)
        assert (result.status, result.revocation_reason) == (OcspStatus.REVOKED, "superseded")
        port = responder.port
    finally:
        await responder.stop()
    again = await start_lab_responder(tmp_path, clock)  # the next `lab up` keeps the port: AIA URIs stay valid
    try:
        assert again.port == port
        assert int(json.loads((tmp_path / LAB_OCSP_FILE).read_text())["port"]) == port
    finally:
        await again.stop()


def _certsim(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    stock_home(home)
    env = {**os.environ, "CERTSIM_HOME": str(home), "COLUMNS": "200"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args], env=env, capture_output=True, timeout=120, check=False, text=True
    )
    if proc.returncode != 0:
        raise AssertionError(f"certsim {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.mark.slow
def test_revoke_from_the_cli_on_a_running_lab(tmp_path: Path) -> None:
    """R-OCSP-1, R-OCSP-3: `certsim lab up` serves the lab CA's responder; `certsim ca revoke` revokes a
    certificate signed with `certsim ca sign`; `ocsp check`, `ocsp show` and `cert list` show revoked."""
    home = tmp_path / "home"
    lab_file = tmp_path / "ocsp-cli.yaml"
    lab_file.write_text(
        "lab: ocsp-cli\nsecurity_password: ocsp-cli-cluster\nrelease: '15'\n"
        "nodes:\n  - {name: cucm1, role: cucm}\n  - {name: cucm2, role: cucm}\n",
        encoding="utf-8",
    )
    _certsim("lab", "up", str(lab_file), home=home)
    try:
        enabled = json.loads(
            _certsim(
                "ocsp", "set", "--node", "cucm1", "--enable", "--responder", "lab", "--cc-mode", "--json", home=home
            ).stdout
        )
        assert enabled["settings"]["cc_mode"] is True and enabled["settings"]["url"].startswith("http://127.0.0.1:")
        assert enabled["checked"] == []  # only self-signed certificates so far
        root = tmp_path / "CliRoot.pem"
        root.write_text(_certsim("ca", "create", "CliRoot", "--key-type", "EC", home=home).stdout)
        csr, leaf = tmp_path / "cucm2-tomcat.csr", tmp_path / "cucm2-tomcat.pem"
        _certsim("csr", "gen", "--node", "cucm2", "--unit", "tomcat", "-o", str(csr), home=home)
        _certsim("ca", "sign", "cucm2-tomcat", "--issuer", "CliRoot", "--csr", str(csr), "-o", str(leaf), home=home)
        _certsim("cert", "upload", "--node", "cucm1", "--store", "tomcat-trust", str(root), home=home)
        _certsim("cert", "upload", "--node", "cucm2", "--purpose", "tomcat", str(leaf), home=home)
        for _ in range(10):  # the new tomcat certificate reaches cucm1's tomcat-trust by replication (R-REPL-5)
            checked = json.loads(_certsim("ocsp", "check", "--node", "cucm1", "--json", home=home).stdout)
            if checked["checked"]:
                break
            time.sleep(0.5)
        assert [(r["cn"], r["status"]) for r in checked["checked"]] == [("cucm2.lab.example", "good")]

        revoked = json.loads(
            _certsim("ca", "revoke", "cucm2-tomcat", "--reason", "keyCompromise", "--json", home=home).stdout
        )
        assert revoked["reason"] == "keyCompromise"
        assert (home / "labs" / "ocsp-cli" / "ca" / REVOKED_FILE).exists()
        checked = json.loads(_certsim("ocsp", "check", "--node", "cucm1", "--json", home=home).stdout)
        assert [(r["status"], r["allowed"]) for r in checked["checked"]] == [("revoked", False)]
        rows = json.loads(
            _certsim("cert", "list", "--node", "cucm1", "--store", "tomcat-trust", "--json", home=home).stdout
        )
        assert {r["cn"]: r["ocsp"] for r in rows}["cucm2.lab.example"] == "revoked"
        shown = _certsim("ocsp", "show", "--node", "cucm1", home=home).stdout
        assert "revoked" in shown and "Common Criteria mode on" in shown
    finally:
        subprocess.run(
            [sys.executable, "-m", "cluster.cli", "lab", "down"],
            env={**os.environ, "CERTSIM_HOME": str(home)},
            capture_output=True,
            timeout=60,
            check=False,
        )


async def test_a_picked_port_taken_before_the_start_is_replaced(tmp_path: Path) -> None:
    """Scale: the responder's picked port taken before it listens (the ephemeral range is shared with
    every MQTT connection) moves it to another port, which its URI then names; it answers there."""
    clock = SimClock(ORIGIN, rate=1.0)
    ca = LabCA(clock)
    root = ca.create_ca("lab-root", key_algo=KeyAlgo.EC, key_size=256)
    responder = OcspResponder(ca, clock)
    with held_port(responder.host, responder.port) as taken:
        await responder.start()
        try:
            assert responder.port != taken and f":{responder.port}/" in responder.url
            leaf = ca.issue("moved", issuer="lab-root", key_algo=KeyAlgo.EC, key_size=256, ocsp_url=responder.url)
            der = await fetch(responder_url(leaf.cert), build_request(leaf.cert, root.cert))
            result = evaluate_response(der, leaf.cert, root.cert, [], clock.now(), False)
            assert result.status is OcspStatus.GOOD
        finally:
            await responder.stop()
