"""Node agents end to end: real SQLite files, a real broker, requests over the control path."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cluster.labca import LabCA
from node import certs
from node.catalog import UNITS, KeyAlgo, Role, units_for
from node.errors import BadInput, NotFound, Refused, Unavailable
from replication.core import Slot
from replication.envelope import Envelope
from replication.hlc import Version
from replication.records import Record
from tests.conftest import LabFactory, small_lab


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def snapshot(lab) -> dict[str, list[tuple[str, str, str]]]:  # type: ignore[no-untyped-def]
    out = {}
    for node in lab.running_nodes():
        rows = await lab.request(node, "list", {})
        out[node] = sorted((r["store"], r["name"], r["sha256"]) for r in rows)
    return out


async def test_install_generates_real_identities_per_role(make_lab: LabFactory) -> None:
    """R-NODE-2, R-UNIT-1: each node holds its own identity units, -ECDSA on EC keys, CAPF on the publisher only."""
    lab = await make_lab()
    for spec in lab.spec.nodes:
        rows = await lab.request(spec.name, "list", {"usage": "identity"})
        held = {r["store"]: r for r in rows}
        assert set(held) == {u.name for u in units_for(spec.role, publisher=spec.publisher)}
        for unit, row in held.items():
            assert row["key_type"] == ("EC" if UNITS[unit].key_algo is KeyAlgo.EC else "RSA")
            assert row["self_signed"] is True
        assert ("CAPF" in held) == (spec.role is Role.CUCM and spec.publisher)
        assert held["tomcat"]["cn"] == spec.fqdn


@pytest.mark.both_brokers
async def test_every_node_trusts_every_peers_tomcat_after_install(make_lab: LabFactory) -> None:
    """R-REPL-5: after install every node's tomcat-trust holds each node's tomcat and tomcat-ECDSA certificate."""
    lab = await make_lab()
    identities = {}
    for node in lab.spec.node_names:
        for row in await lab.request(node, "list", {"usage": "identity"}):
            if row["store"] in ("tomcat", "tomcat-ECDSA"):
                identities[(node, row["store"])] = row["sha256"]
    assert len(identities) == 2 * len(lab.spec.nodes)
    for node in lab.spec.node_names:
        trusted = {r["sha256"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
        assert set(identities.values()) <= trusted, node


async def test_restart_reuses_the_database_and_regenerates_nothing(make_lab: LabFactory, tmp_path: Path) -> None:
    """R-NODE-2: a restarted node keeps its identities and trust stores (one SQLite file per node)."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    root = ca.create_ca("KeepMe")
    await lab.request("cucm2", "upload", {"store": "tomcat-trust", "data": b64(root.pem())})
    assert (await lab.converge()).converged
    before = await snapshot(lab)
    db = tmp_path / "lab" / "nodes" / "cucm2.sqlite"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM entry WHERE name='KeepMe'").fetchone()[0] == 1
    await lab.stop_node("cucm2")
    await lab.start_node("cucm2")
    assert (await lab.converge()).converged
    assert await snapshot(lab) == before


async def test_upload_formats_pem_der_and_pkcs7(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-2: DER and PEM certificates and PKCS#7 chains (PEM and DER) are accepted."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    root = ca.create_ca("FmtRoot")
    inter = ca.create_ca("FmtInter", issuer="FmtRoot")
    other = ca.create_ca("FmtOther")
    third = ca.create_ca("FmtThird")
    r1 = await lab.request("cucm1", "upload", {"store": "Phone-trust", "data": b64(root.der())})
    r2 = await lab.request("cucm1", "upload", {"store": "Phone-trust", "data": b64(inter.pkcs7())})
    r3 = await lab.request("cucm1", "upload", {"store": "Phone-trust", "data": b64(other.pkcs7(der=True))})
    r4 = await lab.request("cucm1", "upload", {"store": "Phone-trust", "data": b64(third.pem() + root.pem())})
    assert r1["added"] == ["FmtRoot"]
    assert r2["added"] == ["FmtInter"] and r2["unchanged"] == ["FmtRoot"]
    assert r3["added"] == ["FmtOther"]
    assert r4["added"] == ["FmtThird"] and r4["unchanged"] == ["FmtRoot"]
    names = {r["name"] for r in await lab.request("cucm1", "list", {"store": "Phone-trust"})}
    assert names == {"FmtRoot", "FmtInter", "FmtOther", "FmtThird"}


async def test_a_node_is_busy_while_its_upload_is_unsent_and_quiet_after(make_lab: LabFactory) -> None:
    """``NodeAgent.busy`` (what the latency benchmark waits for): a node whose committed change has
    not left (its replication link is cut: the publisher waits) is busy once its request is done;
    after the heal it sends the change and every node is quiet."""
    lab = await make_lab()
    origin = lab.agents["cucm1"]
    root = LabCA(lab.clock).create_ca("BusyRoot")
    origin.bus.partition()
    try:
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.der())})
        for _ in range(500):
            if not origin._control_tasks:
                break
            await asyncio.sleep(0.01)
        assert not origin._control_tasks
        assert origin.busy, "a committed change waiting in the outbox does not count"
    finally:
        await origin.bus.heal()
    for _ in range(500):
        if not any(a.busy for a in lab.agents.values()):
            break
        await asyncio.sleep(0.01)
    assert not any(a.busy for a in lab.agents.values()), [n for n, a in lab.agents.items() if a.busy]


async def test_an_upload_change_leaves_before_its_answer(make_lab: LabFactory) -> None:
    """The origin puts the committed change on the bus before it sends the answer to its client:
    the cluster waits for the change (``NodeStore.transaction`` yields to the publisher)."""
    lab = await make_lab()
    origin = lab.agents["cucm1"]
    root = LabCA(lab.clock).create_ca("OrderRoot")
    published: list[str] = []
    publish = origin.bus.publish

    async def recording(topic: str, payload: bytes, **kwargs: Any) -> None:
        published.append(topic)
        await publish(topic, payload, **kwargs)

    origin.bus.publish = recording  # type: ignore[method-assign]
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.der())})
    repl, reply = origin.config.topics.repl, origin.config.topics.reply("")
    kinds = ["change" if t == repl else "answer" if t.startswith(reply) else "other" for t in published]
    assert "change" in kinds and "answer" in kinds, published
    assert kinds.index("change") < kinds.index("answer"), kinds


async def test_download_round_trips_pem_and_der(make_lab: LabFactory) -> None:
    """R-OP-DOWNLOAD: trust and identity certificates download as PEM or DER, byte-identical to what is held."""
    lab = await make_lab()
    root = LabCA(lab.clock).create_ca("DlRoot")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.pem())})
    pem = await lab.request("cucm1", "download", {"store": "tomcat-trust", "name": "DlRoot.pem", "format": "pem"})
    der = await lab.request("cucm1", "download", {"store": "tomcat-trust", "name": "DlRoot", "format": "der"})
    assert base64.b64decode(pem["data"]) == root.pem()
    assert base64.b64decode(der["data"]) == root.der()
    assert der["filename"] == "DlRoot.der"
    ident = await lab.request("imp1", "download", {"store": "cup-xmpp", "format": "pem"})
    cert = x509.load_pem_x509_certificate(base64.b64decode(ident["data"]))
    assert certs.common_name(cert.subject) == "xmpp-imp1.lab.example"


async def test_list_filters(make_lab: LabFactory) -> None:
    """R-OP-LIST: filters on common name, expiry, key type and usage."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    ca.create_ca("ShortLived", days=40)
    ca.create_ca("EcRoot", key_algo=KeyAlgo.EC, key_size=256)
    for name in ("ShortLived", "EcRoot"):
        await lab.request("cucm1", "upload", {"store": "TVS-trust", "data": b64(ca.get(name).pem())})
    ec_rows = await lab.request("cucm1", "list", {"store": "TVS-trust", "key_type": "EC"})
    assert [r["name"] for r in ec_rows] == ["EcRoot"]
    soon = (lab.clock.now().date().replace(year=lab.clock.now().year + 1)).isoformat()
    expiring = await lab.request("cucm1", "list", {"usage": "trust", "expires_before": soon})
    assert [r["name"] for r in expiring] == ["ShortLived"]
    by_cn = await lab.request("cucm1", "list", {"cn": "cucm2-ec"})
    assert {r["store"] for r in by_cn} == {"tomcat-trust"}
    identity = await lab.request("cucm1", "list", {"usage": "identity", "key_type": "EC"})
    assert {r["store"] for r in identity} == {"tomcat-ECDSA", "CallManager-ECDSA"}
    with pytest.raises(BadInput, match="not an ISO date"):
        await lab.request("cucm1", "list", {"expires_before": "next tuesday"})


BAD_UPLOADS: list[tuple[str, bytes, str]] = [
    ("garbage", b"this is not a certificate", "neither PEM"),
    ("empty", b"   \n", "empty input"),
    (
        "bad base64",
        b"-----BEGIN CERTIFICATE-----\n!!!notbase64@@@\n-----END CERTIFICATE-----\n",
        "bad base64",
    ),
    ("no END", b"-----BEGIN CERTIFICATE-----\nMIIB\n", "no matching -----END"),
    ("private key", b"-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n", "not a certificate"),
    ("truncated DER", b"\x30\x82\x05\x00\x30\x82\x04", "truncated or malformed"),
    ("oversize", b"\x30" + b"\x00" * (1 << 21), "limit"),
]


@pytest.mark.parametrize(("label", "data", "message"), BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
async def test_bad_upload_is_refused_and_changes_nothing(
    make_lab: LabFactory, label: str, data: bytes, message: str
) -> None:
    """Bad input gets a clear error naming the problem and changes nothing on any node."""
    lab = await make_lab()
    before = await snapshot(lab)
    with pytest.raises(BadInput, match=message):
        await lab.request("cucm2", "upload", {"store": "tomcat-trust", "data": b64(data)})
    assert (await lab.converge()).converged
    assert await snapshot(lab) == before


async def test_errors_for_unknown_store_node_name_and_empty_pkcs7(make_lab: LabFactory) -> None:
    """Unknown store, unknown node, a missing name and an empty PKCS#7 are each refused clearly; nothing changes."""
    lab = await make_lab()
    before = await snapshot(lab)
    root = LabCA(lab.clock).create_ca("ErrRoot")
    with pytest.raises(NotFound, match="unknown trust store 'tomcat-trusts'"):
        await lab.request("cucm1", "upload", {"store": "tomcat-trusts", "data": b64(root.pem())})
    with pytest.raises(NotFound, match="has no 'CallManager-trust' store"):
        await lab.request("imp1", "upload", {"store": "CallManager-trust", "data": b64(root.pem())})
    with pytest.raises(NotFound, match="unknown node 'cucm9'"):
        await lab.request("cucm9", "list", {})
    with pytest.raises(NotFound, match="no certificate named 'Nope'"):
        await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": "Nope.pem"})
    # An empty signed-data PKCS#7 (version 1, no digest algorithms, data content, no certificates).
    empty_p7 = bytes.fromhex("302306092a864886f70d010702a01630140201013100300b06092a864886f70d0107013100")
    with pytest.raises(BadInput):
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(empty_p7)})
    assert (await lab.converge()).converged
    assert await snapshot(lab) == before


async def test_expired_and_not_yet_valid_are_stored_with_a_warning(make_lab: LabFactory) -> None:
    """Issue 14: expired or not-yet-valid trust certificates (by the lab's clock) are stored, and the
    result carries a warning that every door prints (its notes)."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    ca.create_ca("Old", days=30, starts_in_days=-400)
    ca.create_ca("Future", starts_in_days=10)
    old = await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("Old").pem())})
    future = await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("Future").pem())})
    assert any(n.startswith("warning:") and "expired on" in n for n in old["notes"]), old
    assert any(n.startswith("warning:") and "not yet valid" in n for n in future["notes"]), future
    names = {r["name"] for r in await lab.request("cucm1", "list", {"store": "tomcat-trust"})}
    assert {certs.entry_name(ca.get("Old").cert), certs.entry_name(ca.get("Future").cert)} <= names


async def test_same_name_rule_across_the_cluster(make_lab: LabFactory) -> None:
    """R-REPL-8: a same-CN certificate starting later replaces the old one everywhere; an earlier one is refused."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    ca.create_ca("v1", cn="Corp Root")
    ca.create_ca("v2", cn="Corp Root", starts_in_days=-1)
    ca.create_ca("v3", cn="Corp Root", starts_in_days=-10)
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("v2").pem())})
    assert (await lab.converge()).converged
    result = await lab.request("cucm2", "upload", {"store": "tomcat-trust", "data": b64(ca.get("v1").pem())})
    assert result["replaced"] == ["Corp_Root"]
    assert (await lab.converge()).converged
    with pytest.raises(Refused, match="R-REPL-8"):
        await lab.request("imp1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("v3").pem())})
    v1 = certs.fingerprint(ca.get("v1").cert)
    for node in lab.spec.node_names:
        rows = await lab.request(node, "list", {"store": "tomcat-trust", "cn": "Corp Root"})
        assert [r["sha256"] for r in rows] == [v1], node


@pytest.mark.both_brokers
async def test_applying_a_change_twice_changes_nothing(make_lab: LabFactory) -> None:
    """Idempotent apply: records applied again, or replayed on the bus, change nothing on any node."""
    lab = await make_lab()
    root = LabCA(lab.clock).create_ca("Twice")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.pem())})
    assert (await lab.converge()).converged
    digests = {n: lab.agents[n].digests() for n in lab.spec.node_names}
    held = next(r for r in await lab.agents["cucm1"].store.entries("tomcat-trust") if r.name == "Twice")
    assert await lab.agents["cucm3"].apply_records([held], "cucm1") == 0
    payload = Envelope("change", "cucm1", {"records": [held.to_json()]}).seal(lab.secret)
    for _ in range(3):
        await lab.client._bus.publish(lab.topics.repl, payload)
    assert (await lab.converge()).converged
    assert {n: lab.agents[n].digests() for n in lab.spec.node_names} == digests
    fresh = Record("tomcat-trust", "Twice2", Version(lab.clock.now_ms() + 1, 0, "cucm1"), root.der(), "cucm1")
    assert await lab.agents["cucm3"].apply_records([fresh], "cucm1") == 1
    assert await lab.agents["cucm3"].apply_records([fresh], "cucm1") == 0
    # R-REPL-8: another certificate under the held copy's version (a buggy peer reusing a version) is
    # parsed, not taken for the held copy: its later start wins, so every node can settle on it
    other = _self_signed("Twice", held_start=lab.agents["cucm3"].store.index[("tomcat-trust", "Twice")])
    assert await lab.agents["cucm3"].apply_records([replace(held, der=other)], "cucm1") == 1
    assert (await lab.agents["cucm3"].store.get_entry("tomcat-trust", "Twice")).der == other  # type: ignore[union-attr]


async def test_the_clock_stays_ahead_of_a_displaced_version_after_a_restart(make_lab: LabFactory) -> None:
    """HLC durability with R-REPL-8: a newer version displaced by an older one that starts later is no
    longer in the store, so the node notes its clock; restarted, it still issues versions above it."""
    lab = await make_lab()
    root = LabCA(lab.clock).create_ca("Displaced")
    node = lab.agents["cucm3"]
    ahead = Version(lab.clock.now_ms() + 86_400_000, 7, "cucm1")  # a peer's clock a day ahead
    newer = Record("tomcat-trust", "Displaced", ahead, root.der(), "cucm1")
    assert await node.apply_records([newer], "cucm1") == 1
    later = _self_signed("Displaced", held_start=node.store.index[("tomcat-trust", "Displaced")])
    older = Record("tomcat-trust", "Displaced", Version(lab.clock.now_ms() + 1, 0, "cucm2"), later, "cucm2")
    assert await node.apply_records([older], "cucm2") == 1
    assert node.store.index[("tomcat-trust", "Displaced")].entry == older.version
    await lab.stop_node("cucm3")
    await lab.start_node("cucm3")
    assert lab.agents["cucm3"].hlc.tick() > ahead


def _self_signed(cn: str, held_start: Slot) -> bytes:
    """A self-signed certificate named ``cn`` that starts a day after the held entry's certificate."""
    assert held_start.entry_rank is not None
    start = dt.datetime.fromtimestamp(held_start.entry_rank.start_ms / 1000 + 86_400, tz=dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certs.der_of(cert)


@pytest.mark.both_brokers
async def test_forged_envelopes_are_refused(make_lab: LabFactory) -> None:
    """Authenticity: an envelope sealed with another cluster's password, or altered, is refused and logged."""
    lab = await make_lab()
    root = LabCA(lab.clock).create_ca("Forged")
    rec = Record("tomcat-trust", "Forged", Version(lab.clock.now_ms() + 10_000, 0, "cucm1"), root.der(), "cucm1")
    env = Envelope("change", "cucm1", {"records": [rec.to_json()]})
    from replication.envelope import derive_key

    forged = env.seal(derive_key("not-the-cluster-password", lab.spec.name))
    altered = env.seal(lab.secret).replace(b'"cucm1"', b'"cucm2"', 1)
    for payload in (forged, altered, b"{not json", b"\x00" * 50):
        await lab.client._bus.publish(lab.topics.repl, payload)
    assert (await lab.converge()).converged
    for node in lab.spec.node_names:
        names = {r["name"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
        assert "Forged" not in names
        status = await lab.request(node, "status")
        assert status["rejected"].get("bad-mac", 0) >= 2
        assert status["rejected"].get("malformed", 0) >= 2


@pytest.mark.both_brokers
async def test_node_that_is_down_times_out_with_a_clear_error(make_lab: LabFactory) -> None:
    """One control path: a request to a stopped node fails with an error naming the node, not a hang."""
    lab = await make_lab()
    await lab.stop_node("cucm3")
    with pytest.raises(Unavailable, match="'cucm3' did not answer"):
        await lab.request("cucm3", "status", timeout=1.0)


@pytest.mark.both_brokers
async def test_catch_up_by_anti_entropy_alone(make_lab: LabFactory, broker) -> None:  # type: ignore[no-untyped-def]
    """R-REPL-6: a node down while others changed trust stores converges after it comes back,
    even when the broker lost its queued messages (digests on reconnect, then state transfer)."""
    lab = await make_lab()
    ca = LabCA(lab.clock)
    for name in ("AeOld", "AeNew"):
        ca.create_ca(name)
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("AeOld").pem())})
    assert (await lab.converge()).converged
    await lab.stop_node("cucm3")
    await lab.request("cucm2", "upload", {"store": "CallManager-trust", "data": b64(ca.get("AeNew").pem())})
    await lab.request("imp1", "delete", {"store": "tomcat-trust", "name": "AeOld"})
    assert (await lab.converge()).converged
    if broker is None:
        await lab.restart_broker()
    else:
        await broker.stop()
        await broker.start()
    await lab.start_node("cucm3")
    assert (await lab.converge(timeout=30)).converged
    cm = {r["name"] for r in await lab.request("cucm3", "list", {"store": "CallManager-trust"})}
    tt = {r["name"] for r in await lab.request("cucm3", "list", {"store": "tomcat-trust"})}
    assert "AeNew" in cm
    assert "AeOld" not in tt
    assert lab.agents["cucm3"].stats["received:state"] >= 1


async def test_labs_sharing_a_broker_do_not_see_each_other(make_lab: LabFactory, broker) -> None:  # type: ignore[no-untyped-def]
    """Several labs on one broker are isolated by their topic roots."""
    if broker is None:
        pytest.skip("needs one external broker shared by both labs")
    lab_a = await make_lab(small_lab("alpha", nodes=2, imp=0), subdir="a")
    lab_b = await make_lab(small_lab("alpha", nodes=2, imp=0), subdir="b")
    assert lab_a.topics.root != lab_b.topics.root
    root = LabCA(lab_a.clock).create_ca("OnlyInA")
    await lab_a.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(root.pem())})
    assert (await lab_a.converge()).converged
    assert (await lab_b.converge()).converged
    assert "OnlyInA" in {r["name"] for r in await lab_a.request("cucm2", "list", {"store": "tomcat-trust"})}
    assert "OnlyInA" not in {r["name"] for r in await lab_b.request("cucm2", "list", {"store": "tomcat-trust"})}


def test_key_types_of_installed_identities_are_real_keys() -> None:
    """R-UNIT-1 (catalog level): the key algorithm classes map to real cryptography key types."""
    assert isinstance(certs.new_private_key(KeyAlgo.EC, 256), ec.EllipticCurvePrivateKey)
    key = certs.new_private_key(KeyAlgo.RSA, 2048)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


@pytest.mark.both_brokers
async def test_oversized_request_is_refused_by_the_client_with_its_size(make_lab: LabFactory) -> None:
    """Bad input: a 20 MB upload is refused at once with a message naming the size, and changes nothing."""
    lab = await make_lab()
    before = await snapshot(lab)
    with pytest.raises(BadInput, match="bytes; the bus carries at most"):
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(b"\x30" * (20 << 20))})
    assert await snapshot(lab) == before


async def test_stale_envelopes_keep_deletions_and_drop_uploads(make_lab: LabFactory) -> None:
    """R-REPL-9: an envelope older than the tombstone retention (replayed, or sent just before a clock
    jump) may not bring a certificate back; the deletions in it still apply."""
    lab = await make_lab(small_lab(nodes=2, imp=0))
    ca = LabCA(lab.clock)
    ca.create_ca("StaleKeep")
    ca.create_ca("StaleNew")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": b64(ca.get("StaleKeep").pem())})
    assert (await lab.converge()).converged
    old_ms = lab.clock.now_ms() - 40 * 86_400_000
    later = Version(lab.clock.now_ms() + 1000, 0, "cucm1")
    tomb = Record("tomcat-trust", "StaleKeep", later, None, "cucm1")
    put = Record("tomcat-trust", "StaleNew", later, ca.get("StaleNew").der(), "cucm1")
    env = Envelope("change", "cucm9", {"records": [tomb.to_json(), put.to_json()]}, sent_ms=old_ms)  # a departed member
    await lab.client._bus.publish(lab.topics.repl, env.seal(lab.secret))
    assert (await lab.converge()).converged
    names = {r["name"] for r in await lab.request("cucm2", "list", {"store": "tomcat-trust"})}
    assert "StaleKeep" not in names
    assert "StaleNew" not in names
    assert (await lab.request("cucm2", "status"))["rejected"].get("stale", 0) >= 1


async def test_a_control_answer_travels_at_qos_0_as_its_request(make_lab: LabFactory) -> None:
    """The control path is QoS 0 both ways (a client's session is clean: QoS 1 would add an
    acknowledgement each way and no redelivery); the client still gets its answer."""
    lab = await make_lab(small_lab("ctlqos", nodes=1, imp=0))
    assert lab.broker is not None
    topic = lab.topics.reply(lab.client.name)
    seen: list[int] = []
    async with aiomqtt.Client(lab.broker.host, lab.broker.port, identifier="ctlqos-observer", username="t") as watcher:
        await watcher.subscribe(topic, qos=1)

        async def watch() -> None:
            async for message in watcher.messages:
                seen.append(message.qos)

        task = asyncio.create_task(watch())
        try:
            assert (await lab.request("cucm1", "ping"))["node"] == "cucm1"
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()
    assert seen == [0]
