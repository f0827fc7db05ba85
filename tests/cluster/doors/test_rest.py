"""The certmgr REST API of a node, over real HTTPS against a running lab (cluster.doors.rest).

A real client (aiohttp with an ``ssl`` context) talks to each node's HTTPS front door; the served
certificate is read from real TLS handshakes. Every request the door accepts is a node operation
through the lab's control client, so the checks read the nodes' stores over the same path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from cluster.doors.frontdoors import FrontDoors, enable_front_doors, served_certificate
from cluster.doors.rest import API_ROOT, MAX_REQUEST_BYTES, basic_auth_header
from cluster.lab import Lab
from cluster.labca import LabCA
from node import certs
from tests.conftest import LabFactory, small_lab

# The REST door does not touch the bus differently per broker: the embedded broker is enough here
# (every shipped scenario, front-doors included, runs on both brokers).
pytestmark = pytest.mark.parametrize("broker", ["embedded"], indirect=True)

ADMIN = ("admin", "certsim-admin")  # the lab file's default OS administrator


def spec() -> Any:
    return small_lab(nodes=2, imp=1, front_doors={"ssh_port": 0, "https_port": 0})


async def lab_with_doors(make_lab: LabFactory) -> Lab:
    lab = await make_lab(spec())
    await enable_front_doors(lab)
    return lab


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Api:
    """A real HTTPS client of one node's certmgr API."""

    def __init__(self, doors: FrontDoors, auth: tuple[str, str] | None = ADMIN) -> None:
        self.doors = doors
        self.base = f"https://{doors.https.host}:{doors.https.port}"
        self.auth = auth

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        auth: tuple[str, str] | str | None = "default",
        ctx: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> tuple[int, Any, Any]:
        who = self.auth if auth == "default" else auth
        headers = {"Authorization": basic_auth_header(*who)} if isinstance(who, tuple) else {}
        url = self.base + (path if path.startswith("/") else API_ROOT + path)
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method,
                url,
                json=body if raw is None else None,
                data=raw,
                headers=headers,
                ssl=ctx or insecure(),
                server_hostname=server_hostname,
            ) as response,
        ):
            text = await response.text()
            return response.status, json.loads(text), response.headers

    async def get(self, path: str, **kw: Any) -> Any:
        status, body, _ = await self.call("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    async def post(self, path: str, body: Any, **kw: Any) -> Any:
        status, answer, _ = await self.call("POST", path, body, **kw)
        assert status == 200, (path, status, answer)
        return answer


def sha_of_pem(pem: str) -> str:
    return certs.fingerprint(x509.load_pem_x509_certificate(pem.encode()))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def identity(lab: Lab, node: str, unit: str) -> dict[str, Any]:
    return next(r for r in await lab.request(node, "identity_list", {}) if r["unit"] == unit)


async def served_sha(doors: FrontDoors) -> str:
    await doors.tls.wait_idle()
    return certs.fingerprint(await served_certificate(doors.https.host, doors.https.port))


async def test_every_endpoint_answers_over_https(make_lab: LabFactory) -> None:
    """R-OP-LIST, R-OP-DOWNLOAD, R-OP-CSR-1, R-REPL-1, R-REPL-4: every endpoint, checked against the node."""
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm1"])

    tomcat = await api.get("identity/certificate?service=tomcat")
    current = await identity(lab, "cucm1", "tomcat")
    assert [sha_of_pem(r["certificate"]) for r in tomcat] == [current["sha256"]]
    assert tomcat[0]["service"] == "tomcat" and tomcat[0]["source"] == "self-signed"
    assert await served_sha(api.doors) == current["sha256"]  # HTTPS presents the tomcat certificate
    every = await api.get("identity/certificate")
    assert {r["service"] for r in every} == {r["unit"] for r in await lab.request("cucm1", "identity_list", {})}

    trust = await api.get("trust/certificate?service=tomcat")
    listed = await lab.request("cucm1", "list", {"store": "tomcat-trust"})
    assert sorted(sha_of_pem(r["certificate"]) for r in trust) == sorted(r["sha256"] for r in listed)
    assert all(r["service"] == "tomcat-trust" and r["filename"].endswith(".pem") for r in trust)
    assert await api.get("trust/certificate?service=tomcat-trust") == trust
    all_trust = await api.get("trust/certificate")
    assert len(all_trust) == len(await lab.request("cucm1", "list", {"usage": "trust"}))

    csr = await api.post(
        "csr",
        {
            "service": "tomcat",
            "distribution": "this-server",
            "commonName": "cucm1.lab.example",
            "keyType": "RSA",
            "keyLength": 3072,
            "hashAlgorithm": "SHA256",
            "altNames": ["cucm1.lab.example"],
        },
    )
    assert set(csr) == {"csr"}
    request = x509.load_pem_x509_csr(csr["csr"].encode())
    assert certs.common_name(request.subject) == "cucm1.lab.example"
    assert request.public_key().key_size == 3072  # type: ignore[union-attr]
    assert (await lab.request("cucm1", "csr_get", {"unit": "tomcat"}))["csr"] == csr["csr"]
    multi = await api.post(
        "csr",
        {
            "service": "tomcat",
            "distribution": "Multi-server(SAN)",
            "altNames": ["cucm1.lab.example", "cucm2.lab.example"],
        },
    )
    assert certs.csr_san(x509.load_pem_x509_csr(multi["csr"].encode())) == ["cucm1.lab.example", "cucm2.lab.example"]
    # issue 14: extra altNames (the GUI's "Other Domains") go into the CSR; EC CSRs may be SHA-384 or SHA-512
    for digest, algorithm in (("SHA384", hashes.SHA384), ("SHA512", hashes.SHA512)):
        ec_csr = await api.post(
            "csr",
            {"service": "tomcat-ECDSA", "hashAlgorithm": digest, "altNames": ["voice.corp.example", "*.corp.example"]},
        )
        request = x509.load_pem_x509_csr(ec_csr["csr"].encode())
        assert isinstance(request.signature_hash_algorithm, algorithm)
        assert request.is_signature_valid
        assert certs.csr_san(request) == ["cucm1.lab.example", "voice.corp.example", "*.corp.example"]

    ca = LabCA(lab.clock)
    root = ca.create_ca("RestRoot")
    inter = ca.create_ca("RestInter", issuer="RestRoot")
    capf = ca.create_ca("RestCapf")
    both = (root.pem() + inter.pem()).decode()  # one array element may hold several PEM blocks
    done = await api.post(
        "trust/certificates",
        {"service": ["tomcat", "tomcat-ECDSA", "CallManager"], "certificates": [both], "description": "corp CA"},
    )
    assert [r["store"] for r in done["results"]] == ["tomcat-trust", "CallManager-trust"]  # tomcat-ECDSA: same store
    assert done["description"] == "corp CA"
    assert sorted(done["results"][0]["added"]) == ["RestInter", "RestRoot"]
    await api.post("trust/certificates", {"service": ["CAPF"], "certificates": [capf.pem().decode()]})
    assert (await lab.converge()).converged
    for node in ("cucm1", "cucm2"):
        held = {r["sha256"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
        assert {certs.fingerprint(root.cert), certs.fingerprint(inter.cert)} <= held, node  # R-REPL-1
        callmanager = {r["sha256"] for r in await lab.request(node, "list", {"store": "CallManager-trust"})}
        assert certs.fingerprint(capf.cert) in callmanager, node  # R-REPL-4

    snap = await api.get("snapshot/server")
    assert snap["server"] == "cucm1.lab.example"
    assert snap["revokedCertificates"] == [] and snap["trackingId"]
    by_unit = {i["service"]: i for i in snap["identities"]}
    assert sha_of_pem(by_unit["tomcat"]["certificate"]) == current["sha256"]
    assert by_unit["tomcat"]["csr"] == multi["csr"]  # the pending CSR (the multi-server one replaced the first)
    assert by_unit["CallManager"]["csr"] == ""
    trusts = {t["service"]: t["certificate_data"] for t in snap["trusts"]}
    assert "RestRoot.pem" in {c["filename"] for c in trusts["tomcat-trust"]}
    assert "CAPF-trust" in trusts and "Phone-SAST-trust" not in trusts  # only stores that hold something

    imp = Api(lab.doors["imp1"])
    assert {r["service"] for r in await imp.get("identity/certificate")} >= {"cup", "cup-xmpp", "tomcat"}
    assert await imp.get("trust/certificate?service=cup") == []


BAD: list[tuple[str, str, str, Any, int, str]] = [
    # node, method, path, body (bytes: raw), status, message fragment
    ("cucm1", "POST", "csr", b"{not json", 400, "not valid JSON"),
    ("cucm1", "POST", "csr", b"[" * 100_000, 400, "nested too deeply"),
    ("cucm1", "POST", "csr", [], 400, "must be a JSON object"),
    ("cucm1", "POST", "csr", {}, 400, "'service' must be a non-empty string"),
    ("cucm1", "POST", "csr", {"service": "nope"}, 404, "unknown identity unit 'nope'"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "hashAlgorithm": "SHA1"}, 400, "signed with SHA256, not 'SHA1'"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "hashAlgorithm": "SHA384"}, 400, "(RSA key) is signed with SHA256"),
    ("cucm1", "POST", "csr", {"service": "tomcat-ECDSA", "hashAlgorithm": "MD5"}, 400, "SHA256 or SHA384 or SHA512"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "keyLength": 1024}, 400, "1024"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "keyLength": "long"}, 400, "keyLength must be a number"),
    ("cucm1", "POST", "csr", {"service": "tomcat-ECDSA", "keyType": "RSA"}, 400, "carries an EC key (R-UNIT-1)"),
    (
        "cucm1",
        "POST",
        "csr",
        {"service": "tomcat", "altNames": ["evil example"]},
        400,
        "not a host name: 'evil example'",
    ),
    ("cucm1", "POST", "csr", {"service": "tomcat", "altNames": "x.example"}, 400, "altNames must be a list"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "distribution": "elsewhere"}, 400, "distribution must be"),
    ("cucm1", "POST", "csr", {"service": "tomcat", "commonName": "x.example"}, 400, "is 'cucm1.lab.example'"),
    ("cucm2", "POST", "csr", {"service": "CAPF"}, 400, "publisher) only"),
    ("cucm2", "POST", "csr", {"service": "tomcat", "distribution": "multi-server"}, 400, "generated on the publisher"),
    ("cucm1", "POST", "identity/certificates", {"service": "tomcat", "certificates": ["garbage"]}, 400, ""),
    ("cucm1", "POST", "identity/certificates", {"service": "tomcat", "certificates": []}, 400, "non-empty array"),
    ("cucm1", "POST", "identity/certificates", {"certificates": ["x"]}, 400, "'service'"),
    ("cucm1", "POST", "trust/certificates", {"service": ["cup"], "certificates": ["x"]}, 404, "no 'cup-trust' store"),
    ("cucm1", "POST", "trust/certificates", {"service": "nope", "certificates": ["x"]}, 404, "unknown service"),
    ("cucm1", "POST", "trust/certificates", {"service": [], "certificates": ["x"]}, 400, "'service' must be an array"),
    ("cucm1", "POST", "trust/certificates", {"service": ["tomcat"], "certificates": ["junk"]}, 400, ""),
    ("cucm1", "GET", "trust/certificate?service=bogus", None, 404, "unknown service 'bogus'"),
    ("cucm2", "GET", "identity/certificate?service=CAPF", None, 404, "no 'CAPF' identity"),
    ("cucm1", "GET", "nothing/here", None, 404, "Not Found"),
    ("cucm1", "PUT", "csr", {}, 405, "Method Not Allowed"),
    ("cucm1", "POST", "csr", b"x" * (MAX_REQUEST_BYTES + 1), 413, "Maximum request body size"),
]


async def test_bad_requests_are_json_errors_that_change_nothing(make_lab: LabFactory) -> None:
    """Malformed and refused requests: 400 (bad input, refused by a rule), 404, 405, 413, each a JSON
    object with status, error and message; the nodes' stores are unchanged afterwards."""
    lab = await lab_with_doors(make_lab)
    before = {n: await lab.request(n, "list", {}) for n in lab.running_nodes()}
    problems = []
    for node, method, path, body, status, fragment in BAD:
        raw = body if isinstance(body, bytes) else None
        got, answer, headers = await Api(lab.doors[node]).call(method, path, None if raw else body, raw=raw)
        if got != status or fragment not in answer.get("message", "") or answer.get("status") != status:
            problems.append(f"{method} {path} {body!r:.60}: {got} {answer}")
        if headers.get("Content-Type", "").split(";")[0] != "application/json":
            problems.append(f"{method} {path}: {headers.get('Content-Type')}")
        if status == 405 and "POST" not in headers.get("Allow", ""):
            problems.append("405 without Allow")
    assert not problems, "\n".join(problems)
    assert {n: await lab.request(n, "list", {}) for n in lab.running_nodes()} == before


async def test_identity_upload_refusals_are_400_with_the_reason(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-3: 400 with a message while the issuer is not trusted, and for a certificate whose key
    matches no pending CSR; the identity is unchanged."""
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm2"])
    ca = LabCA(lab.clock)
    ca.create_ca("UntrustedRoot")
    csr = await api.post("csr", {"service": "tomcat"})
    signed = ca.sign_csr("sub-tomcat", issuer="UntrustedRoot", csr_pem=csr["csr"].encode())
    before = await identity(lab, "cucm2", "tomcat")
    status, answer, _ = await api.call(
        "POST", "identity/certificates", {"service": "tomcat", "certificates": [signed.pem().decode()]}
    )
    assert status == 400 and "is not trusted" in answer["message"] and answer["error"] == "refused", answer
    await api.post(
        "trust/certificates", {"service": ["tomcat"], "certificates": [ca.get("UntrustedRoot").pem().decode()]}
    )
    own_key = ca.issue("own-key", issuer="UntrustedRoot", cn="cucm2.lab.example", san=["cucm2.lab.example"])
    status, answer, _ = await api.call(
        "POST", "identity/certificates", {"service": "tomcat", "certificates": [own_key.pem().decode()]}
    )
    assert status == 400 and "does not match the pending CSR" in answer["message"], answer
    assert await identity(lab, "cucm2", "tomcat") == before
    assert [r["unit"] for r in await lab.request("cucm2", "csr_list", {})] == ["tomcat"]  # still pending


async def test_wrong_credentials_are_refused_slowed_and_never_logged(make_lab: LabFactory) -> None:
    """HTTP Basic with the OS administrator: 401 with a Basic challenge otherwise; after three wrong
    attempts every answer to that peer waits (doors.auth.Throttle); no password reaches the log."""
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm1"])
    status, answer, headers = await api.call("GET", "snapshot/server", auth=None)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="certmgr"', answer
    wrong = ("admin", "wrong-password-1")
    assert (await api.call("GET", "snapshot/server", auth=wrong))[0] == 401
    assert (await api.call("GET", "snapshot/server", auth=("root", ADMIN[1])))[0] == 401  # wrong user
    assert lab.doors["cucm1"].throttle.failures("127.0.0.1") == 3  # the free failures are used up
    start = time.monotonic()
    assert (await api.call("GET", "snapshot/server", auth=wrong))[0] == 401
    assert time.monotonic() - start >= 0.45  # the fourth failure waits
    start = time.monotonic()
    assert (await api.call("GET", "identity/certificate?service=tomcat"))[0] == 200  # right, but still slowed
    assert time.monotonic() - start >= 0.9
    start = time.monotonic()
    assert (await api.call("GET", "identity/certificate?service=tomcat"))[0] == 200
    assert time.monotonic() - start < 0.45  # a success reset the count
    log = (lab.log_dir / "cucm1.log").read_text(encoding="utf-8")
    assert "rest-auth-failed" in log
    assert "wrong-password-1" not in log and ADMIN[1] not in log
    assert ADMIN[1] not in json.dumps(lab.doors["cucm1"].describe())


async def test_https_presents_what_tomcat_loaded_until_it_restarts(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-4 (and R-OP-REGEN-1): a new tomcat certificate, uploaded or regenerated, is the
    node's identity at once, but HTTPS keeps presenting the one Cisco Tomcat loaded until Tomcat
    restarts. A client that trusts only the corporate CA (hostname checked) connects after the restart."""
    lab = await lab_with_doors(make_lab)
    doors = lab.doors["cucm1"]
    api = Api(doors)
    old = (await identity(lab, "cucm1", "tomcat"))["sha256"]
    assert await served_sha(doors) == old
    ca = LabCA(lab.clock)
    root = ca.create_ca("TlsRoot")
    csr = await api.post("csr", {"service": "tomcat"})
    leaf = ca.sign_csr("pub-tomcat", issuer="TlsRoot", csr_pem=csr["csr"].encode())
    await api.post("trust/certificates", {"service": ["tomcat"], "certificates": [root.pem().decode()]})
    uploaded = await api.post("identity/certificates", {"service": "tomcat", "certificates": [leaf.pem().decode()]})
    assert "Cisco Tomcat" in uploaded["restart"]
    new = certs.fingerprint(leaf.cert)
    assert (await identity(lab, "cucm1", "tomcat"))["sha256"] == new
    assert await served_sha(doors) == old  # not before a restart

    corp_only = ssl.create_default_context(cadata=root.pem().decode())  # verifies the chain and the host name
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await api.call("GET", "snapshot/server", ctx=corp_only, server_hostname="cucm1.lab.example")

    await lab.request("cucm1", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
    assert await served_sha(doors) == new
    status, snap, _ = await api.call("GET", "snapshot/server", ctx=corp_only, server_hostname="cucm1.lab.example")
    assert status == 200 and snap["server"] == "cucm1.lab.example"

    regen = await lab.request("cucm1", "regen", {"unit": "tomcat"})
    assert await served_sha(doors) == new  # a regenerated certificate waits for the restart too
    await lab.request("cucm1", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
    assert await served_sha(doors) == regen["sha256"]

    # another service restarting changes nothing
    await lab.request("cucm1", "service_restart", {"name": "Cisco TFTP", "seconds": 0})
    assert await served_sha(doors) == regen["sha256"]
    # key pairs seen since the doors opened stay in memory: the CA-signed certificate can still be
    # served although the node's key is now the regenerated one (a regenerate racing a restart)
    await doors.tls.reload(new)
    assert await served_sha(doors) == new
    # a loaded certificate whose key was never seen keeps the previous context
    await doors.tls.reload("00" * 32)
    assert doors.tls.kept_previous == 1
    assert await served_sha(doors) == new
    assert await served_sha(lab.doors["cucm2"]) == (await identity(lab, "cucm2", "tomcat"))["sha256"]


async def test_third_party_ca_flow_entirely_over_rest(make_lab: LabFactory) -> None:
    """R-OP-CSR-1, R-OP-UPLOAD-3, R-REPL-1, R-REPL-5: CSR, trust the root and the intermediate, upload
    the signed certificate with its chain, all over REST on a subscriber; then the nodes' stores agree."""
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm2"])
    ca = LabCA(lab.clock)
    root = ca.create_ca("FlowRoot")
    inter = ca.create_ca("FlowIssuing", issuer="FlowRoot")
    csr = await api.post(
        "csr", {"service": "tomcat", "distribution": "this-server", "keyType": "RSA", "hashAlgorithm": "SHA256"}
    )
    leaf = ca.sign_csr("sub2-tomcat", issuer="FlowIssuing", csr_pem=csr["csr"].encode())
    chain = [leaf.pem().decode(), inter.pem().decode()]

    status, answer, _ = await api.call("POST", "identity/certificates", {"service": "tomcat", "certificates": chain})
    assert status == 400 and "is not trusted" in answer["message"]
    await api.post("trust/certificates", {"service": ["tomcat"], "certificates": [root.pem().decode()]})
    status, answer, _ = await api.call("POST", "identity/certificates", {"service": "tomcat", "certificates": chain})
    assert status == 400 and "is not in tomcat-trust" in answer["message"], answer  # the intermediate too
    await api.post("trust/certificates", {"service": ["tomcat"], "certificates": [inter.pem().decode()]})
    done = await api.post("identity/certificates", {"service": "tomcat", "certificates": chain})
    assert done["sha256"] == certs.fingerprint(leaf.cert) and done["issuer"] == "FlowIssuing"
    assert "Cisco Tomcat" in done["restart"]

    row = await identity(lab, "cucm2", "tomcat")
    assert row["source"] == "ca-signed" and row["sha256"] == certs.fingerprint(leaf.cert)
    assert await lab.request("cucm2", "csr_list", {}) == []  # R-OP-UPLOAD-3: the CSR is gone
    assert (await lab.converge()).converged
    wanted = {certs.fingerprint(c.cert) for c in (root, inter, leaf)}
    for node in lab.running_nodes():
        held = {r["sha256"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
        assert wanted <= held, node
    listed = await api.get("identity/certificate?service=tomcat")
    assert sha_of_pem(listed[0]["certificate"]) == certs.fingerprint(leaf.cert)
    snap = await api.get("snapshot/server")
    tomcat = next(i for i in snap["identities"] if i["service"] == "tomcat")
    assert tomcat["csr"] == "" and sha_of_pem(tomcat["certificate"]) == certs.fingerprint(leaf.cert)
    peer = Api(lab.doors["imp1"])  # R-REPL-5 as the IM&P node lists it over REST
    shas = {sha_of_pem(r["certificate"]) for r in await peer.get("trust/certificate?service=tomcat")}
    assert wanted <= shas


async def test_trust_upload_stops_at_the_first_refusal_and_says_what_was_done(make_lab: LabFactory) -> None:
    """R-REPL-8 through REST: a CA with the name of one already in CallManager-trust but an earlier
    validity start is taken by tomcat-trust, then refused by CallManager-trust: 400 naming the refusal,
    with the upload already done; nothing after it runs."""
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm1"])
    ca = LabCA(lab.clock)
    newer = ca.create_ca("SameNewer", cn="certsim Same Name CA")
    older = ca.create_ca("SameOlder", cn="certsim Same Name CA", starts_in_days=-10)
    await api.post("trust/certificates", {"service": ["CallManager"], "certificates": [newer.pem().decode()]})
    status, answer, _ = await api.call(
        "POST",
        "trust/certificates",
        {"service": ["tomcat", "CallManager", "Phone-SAST-trust"], "certificates": [older.pem().decode()]},
    )
    assert status == 400 and answer["error"] == "refused", answer
    assert [r["store"] for r in answer["completed"]] == ["tomcat-trust"]
    assert answer["completed"][0]["added"] == ["certsim_Same_Name_CA"]
    sast = await lab.request("cucm1", "list", {"store": "Phone-SAST-trust"})
    assert certs.fingerprint(older.cert) not in {r["sha256"] for r in sast}


async def test_front_doors_of_an_imp_node_and_a_stopped_node(make_lab: LabFactory, tmp_path: Path) -> None:
    """An IM&P node's API lists its own units; a stopped node's doors are closed (connection refused)."""
    lab = await lab_with_doors(make_lab)
    doors = lab.doors["cucm2"]
    host, port = doors.https.host, doors.https.port
    await lab.stop_node("cucm2")
    assert "cucm2" not in lab.doors
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    await lab.start_node("cucm2")  # front doors are on for this lab now: they come back with the node
    assert (await Api(lab.doors["cucm2"]).get("identity/certificate?service=tomcat"))[0]["service"] == "tomcat"
