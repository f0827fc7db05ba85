"""Certificate operations end to end: real nodes, SQLite files, a real broker (embedded and mosquitto)."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

from cryptography import x509

from cluster.lab import Lab
from cluster.labca import LabCA
from node.errors import CertsimError
from tests.conftest import LabFactory
from tests.node import bad_inputs


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def snapshot(lab: Lab) -> dict[str, Any]:
    """Everything an operation could change, on every running node: trust and identity listings, CSRs."""
    out: dict[str, Any] = {}
    for node in lab.running_nodes():
        rows = await lab.request(node, "list", {})
        idents = await lab.request(node, "identity_list", {})
        csrs = await lab.request(node, "csr_list", {})
        out[node] = (
            sorted((r["store"], r["name"], r["sha256"]) for r in rows),
            sorted((r["unit"], r["sha256"], r["source"]) for r in idents),
            sorted((r["unit"], r["sha256"]) for r in csrs),
        )
    return out


async def identity(lab: Lab, node: str, unit: str) -> dict[str, Any]:
    rows = await lab.request(node, "identity_list", {})
    return next(r for r in rows if r["unit"] == unit)


async def test_multi_server_csr_signed_and_installed_cluster_wide(make_lab: LabFactory, tmp_path: Path) -> None:
    """R-OP-CSR-1, R-OP-UPLOAD-3, R-REPL-5, R-OP-DOWNLOAD: one publisher CSR with every Unified CM node in
    its SAN; a new CSR replaces the old one; the signed certificate becomes each Unified CM node's identity."""
    lab = await make_lab()
    first = await lab.request("cucm1", "csr_gen", {"unit": "tomcat", "multi_server": True})
    second = await lab.request("cucm1", "csr_gen", {"unit": "tomcat", "multi_server": True})
    assert first["csr"] != second["csr"]
    assert second["san"] == ["cucm1.lab.example", "cucm2.lab.example", "cucm3.lab.example"]
    assert sorted(second["nodes"]) == ["cucm2", "cucm3"]
    assert second["signature_hash"] == "sha256" and second["key_type"] == "RSA"
    listed = await lab.request("cucm1", "csr_list", {})
    assert [r["unit"] for r in listed] == ["tomcat"]
    downloaded = await lab.request("cucm1", "csr_get", {"unit": "tomcat"})
    assert downloaded["csr"] == second["csr"]

    ca = LabCA(lab.clock)
    root = ca.create_ca("MsRoot")
    signed = ca.sign_csr("ms-tomcat", issuer="MsRoot", csr_pem=second["csr"].encode())
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.pem())})
    result = await lab.request("cucm1", "identity_upload", {"unit": "tomcat", "data": b64(signed.pem())})
    assert sorted(result["shared_with"]) == ["cucm2", "cucm3"]
    assert (await lab.converge()).converged
    fp = x509.load_pem_x509_certificate(signed.pem()).fingerprint(signed.cert.signature_hash_algorithm)  # type: ignore[arg-type]
    for node in ("cucm1", "cucm2", "cucm3"):
        row = await identity(lab, node, "tomcat")
        assert row["source"] == "ca-signed" and row["sha256"] == fp.hex(), node
        assert row["csr_pending"] is False
        assert "Cisco Tomcat" in row["restart_pending"]
    assert (await identity(lab, "imp1", "tomcat"))["source"] == "self-signed"
    for node in lab.running_nodes():
        trusted = {r["sha256"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
        assert fp.hex() in trusted, node
    row = next(r for r in await lab.request("cucm2", "list", {"store": "tomcat"}))
    assert row["SubjectDN"].endswith("CN=cucm1-ms.lab.example")
    assert "2.5.29.17" in row["extensions"]  # SAN, by OID (R-OP-LIST)


async def test_tftp_serves_the_cached_tomcat_until_restarted(make_lab: LabFactory, tmp_path: Path) -> None:
    """R-OP-UPLOAD-4, R-SVC-1, R-REPL-5: after a tomcat regen TFTP keeps the old certificate until it restarts;
    a restarted node starts every service with the current certificates; service states live in the node DB."""
    lab = await make_lab()
    before = await lab.request("cucm2", "service_cert", {"name": "Cisco TFTP", "unit": "tomcat"})
    regen = await lab.request("cucm2", "regen", {"unit": "tomcat"})
    assert regen["message"] == "Successfully regenerated certificate for tomcat."
    assert set(regen["restart"]) == {"Cisco Tomcat", "Cisco TFTP", "Cisco DRF Local"}
    assert regen["phones"] is None and regen["ctl_update_needed"] is False and regen["backup_due"] is True
    cached = await lab.request("cucm2", "service_cert", {"name": "Cisco TFTP", "unit": "tomcat"})
    assert cached["sha256"] == before["sha256"] != regen["sha256"]
    restarted = await lab.request("cucm2", "service_restart", {"name": "Cisco TFTP"})
    assert restarted["loaded"]["tomcat"] == regen["sha256"]
    services = {r["name"]: r for r in await lab.request("cucm2", "service_list", {})}
    assert services["Cisco TFTP"]["restart_pending"] is False
    assert services["Cisco Tomcat"]["restart_pending"] is True
    assert (await lab.converge()).converged
    for node in lab.running_nodes():
        assert regen["sha256"] in {r["sha256"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}

    with sqlite3.connect(tmp_path / "lab" / "nodes" / "cucm2.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM service").fetchone()[0] == len(services)
    await lab.stop_node("cucm2")
    await lab.start_node("cucm2")
    services = {r["name"]: r for r in await lab.request("cucm2", "service_list", {})}
    assert not any(r["restart_pending"] for r in services.values())


async def test_bad_input_corpus_is_refused_and_changes_nothing(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-1..3, R-OP-UPLOAD-2, R-UNIT-1, R-REPL-8, R-OP-CSR-1: every malformed or hostile input is
    refused with a message naming the problem, and no node's listings, identities or CSRs change."""
    lab = await make_lab()
    csrs = {u: (await lab.request("cucm1", "csr_gen", {"unit": u}))["csr"] for u in ("tomcat", "CallManager")}
    ca = LabCA(lab.clock)
    ca.create_ca("Root", cn="Corpus Root")
    ca.create_ca("Issuing", issuer="Root", cn="Corpus Issuing")
    good = ca.issue("seed", issuer="Root", cn="good.lab.example")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("Root").pem() + good.pem())})
    assert (await lab.converge()).converged
    bad_inputs.prepare_rsa()
    corpus = bad_inputs.build_corpus(ca, lab.clock.now(), csrs, pub="cucm1", sub="cucm2", imp="imp1")
    assert len({item.id for item in corpus}) >= 30
    before = await snapshot(lab)
    problems = []
    for item in corpus:
        try:
            if item.direct:  # the bus refuses envelopes this big before any node sees them
                result = await lab.agents[item.node].handle(item.op, item.args)
            else:
                result = await lab.request(item.node, item.op, item.args, timeout=30)
        except CertsimError as exc:
            if item.expect.lower() not in exc.message.lower():
                problems.append(f"{item.id}: refused with '{exc.message}', expected '{item.expect}'")
        else:
            problems.append(f"{item.id}: accepted ({str(result)[:120]})")
            continue
        if await snapshot(lab) != before:
            problems.append(f"{item.id}: state changed")
            before = await snapshot(lab)
    assert not problems, "\n".join(problems)
    assert (await lab.converge()).converged
    assert await snapshot(lab) == before
