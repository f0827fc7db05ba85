"""Authenticity on a real broker: a rogue client and a node with the wrong password change nothing."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from cluster.control import ControlClient
from cluster.lab import Lab
from cluster.labca import LabCA
from cluster.labfile import parse_lab
from cluster.rogue import RogueClient
from node.errors import CertsimError, Refused
from node.logs import LOG_LEVEL_ENV
from replication import core
from tests.conftest import LabFactory, small_lab


async def holdings(lab: Lab) -> dict[str, list[tuple[str, str, str]]]:
    return {
        n: sorted((r["store"], r["name"], r["sha256"]) for r in await lab.request(n, "list", {}))
        for n in lab.running_nodes()
    }


@pytest.mark.both_brokers
async def test_rogue_client_thousand_envelopes_change_nothing(make_lab: LabFactory, tmp_path: Path) -> None:
    """Property 5: 1,000+ forged, altered and replayed envelopes; none applied on any node; each kind
    counted; the log is rate-limited and never holds the password or the derived key."""
    lab = await make_lab()
    rogue = RogueClient(lab.broker, lab.topics, lab.spec.name, seed=3)  # type: ignore[arg-type]
    await rogue.start()
    try:
        root = LabCA(lab.clock).create_ca("RogueTarget")
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()})
        assert (await lab.converge()).converged
        await lab.request("cucm2", "delete", {"store": "tomcat-trust", "name": "RogueTarget"})
        assert (await lab.converge()).converged
        before = await holdings(lab)
        assert len(rogue.captured) >= 2
        sent = await rogue.attack(1200)
    finally:
        await rogue.stop()
    assert sum(sent.values()) == 1200 and set(sent) == {"forged", "altered", "replayed"}
    assert (await lab.converge()).converged
    assert await holdings(lab) == before
    for node in lab.running_nodes():
        rejected = (await lab.request(node, "status"))["rejected"]
        assert rejected.get("bad-mac", 0) >= 800, (node, rejected)  # forged + altered
        if node not in ("cucm1", "cucm2"):  # the senders drop echoes of their own messages silently
            assert rejected.get("replay", 0) >= 300, (node, rejected)
    secret_hex = lab.secret.hex()
    for log in (tmp_path / "lab" / "logs").glob("*.log"):
        text = log.read_text()
        assert lab.spec.security_password not in text
        assert secret_hex not in text
        assert text.count("envelope-rejected") < 60, f"{log.name} is not rate-limited"


@pytest.mark.both_brokers
async def test_node_with_the_wrong_password_cannot_join(make_lab: LabFactory, tmp_path: Path) -> None:
    """Property 5: a node keyed with another password neither changes the cluster nor learns from it."""
    lab = await make_lab(small_lab("auth", nodes=2, imp=0))
    intruder_spec = parse_lab(
        {
            "lab": "auth",
            "security_password": "not-the-cluster-password",
            "nodes": [
                {"name": "cucm1", "role": "cucm"},
                {"name": "cucm2", "role": "cucm"},
                {"name": "cucm9", "role": "cucm"},
            ],
        }
    )
    intruder = Lab(intruder_spec, tmp_path / "lab", broker_url=lab.broker_url)  # same lab dir: same topic root
    try:
        await intruder.start(nodes=["cucm9"])
        root = LabCA(lab.clock).create_ca("IntruderCA")
        added = await intruder.request(
            "cucm9", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()}
        )
        assert added["replicated"] == ["tomcat-trust/IntruderCA"]
        await intruder.request("cucm9", "resync")
        assert (await lab.converge()).converged
        for node in lab.running_nodes():
            names = {r["name"] for r in await lab.request(node, "list", {"store": "tomcat-trust"})}
            assert "IntruderCA" not in names
            assert "cucm9.lab.example" not in names
            for _ in range(100):  # the intruder's messages are refused as they arrive, not at any barrier
                if (await lab.request(node, "status"))["rejected"].get("bad-mac", 0) >= 1:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{node} never refused the intruder's messages as bad-mac")
        learned = {r["name"] for r in await intruder.request("cucm9", "list", {"store": "tomcat-trust"})}
        assert "cucm1.lab.example" not in learned
    finally:
        await intruder.stop()


async def test_replayed_control_request_after_a_restart_changes_nothing(make_lab: LabFactory) -> None:
    """Item 5 of issue 10, R-REPL-9: a captured upload request replayed after its node restarted is
    refused as a replay, logged, and does not bring back the certificate deleted meanwhile."""
    lab = await make_lab(small_lab("ctlreplay", nodes=2, imp=0))
    rogue = RogueClient(lab.broker, lab.topics, lab.spec.name, seed=5)  # type: ignore[arg-type]
    await rogue.start()
    try:
        root = LabCA(lab.clock).create_ca("ReplayTarget")
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()})
        assert (await lab.converge()).converged
        await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": "ReplayTarget"})
        assert (await lab.converge()).converged
        before = await holdings(lab)
        await lab.stop_node("cucm1")
        await lab.start_node("cucm1")
        assert (await lab.converge()).converged
        assert await rogue.replay_control("upload") >= 1
        await asyncio.sleep(1.0)  # give the node time to (wrongly) run it
    finally:
        await rogue.stop()
    assert (await lab.converge()).converged
    assert await holdings(lab) == before
    status = await lab.request("cucm1", "status")
    assert status["rejected"].get("replay", 0) >= 1, status["rejected"]


async def test_stale_control_request_is_refused(make_lab: LabFactory) -> None:
    """Item 5 of issue 10: a control request sent long ago (outside the freshness window) is refused
    with a clear error and changes nothing."""
    lab = await make_lab(small_lab("ctlstale", nodes=1, imp=0))
    root = LabCA(lab.clock).create_ca("StaleTarget")
    stale = ControlClient(lab.broker, lab.topics, lab.secret, lab.spec.node_names, now_ms=lambda: 1)  # type: ignore[arg-type]
    await stale.start()
    try:
        with pytest.raises(Refused, match="stale"):
            await stale.request(
                "cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()}
            )
    finally:
        await stale.stop()
    names = {r["name"] for r in await lab.request("cucm1", "list", {"store": "tomcat-trust"})}
    assert "StaleTarget" not in names
    assert (await lab.request("cucm1", "status"))["rejected"].get("stale", 0) >= 1


async def _rejected(lab: Lab, node: str, reason: str, at_least: int) -> dict[str, Any]:
    """The node's status once it has refused ``at_least`` envelopes for ``reason`` (they arrive async)."""
    for _ in range(200):
        status: dict[str, Any] = await lab.request(node, "status")
        if status["rejected"].get(reason, 0) >= at_least:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node} never refused {at_least} envelope(s) as {reason}: {status['rejected']}")


async def test_replayed_failed_control_request_is_refused_also_after_a_restart(
    make_lab: LabFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items 5 and 7 of issue 10, R-REPL-3: a control request that FAILED (a delete of a certificate
    not there yet) is remembered like one that changed something. Its next copies get the same answer
    (QoS 1 duplicates: counted, logged at debug); copies beyond that are refused as a replay (warning);
    after a restart a replay is refused too, so it cannot delete the certificate uploaded meanwhile."""
    monkeypatch.setenv(LOG_LEVEL_ENV, "debug")  # (debug lines are not written at the default level)
    lab = await make_lab(small_lab("ctlfail", nodes=2, imp=0))
    rogue = RogueClient(lab.broker, lab.topics, lab.spec.name, seed=9)  # type: ignore[arg-type]
    await rogue.start()
    try:
        with pytest.raises(CertsimError):
            await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": "LateTarget"})
        root = LabCA(lab.clock).create_ca("LateTarget")
        await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(root.pem()).decode()})
        assert (await lab.converge()).converged
        before = await holdings(lab)
        assert all(any(name == "LateTarget" for _s, name, _h in held) for held in before.values())
        for _ in range(core.DUPLICATES_TOLERATED + 1):
            assert await rogue.replay_control("delete") == 1
        status = await _rejected(lab, "cucm1", "replay", 1)
        assert status["stats"].get("duplicates", 0) >= core.DUPLICATES_TOLERATED, status["stats"]
        await lab.stop_node("cucm1")
        await lab.start_node("cucm1")
        assert (await lab.converge()).converged
        assert await rogue.replay_control("delete") == 1
        await _rejected(lab, "cucm1", "replay", 1)  # (counters start again at the restart)
    finally:
        await rogue.stop()
    assert (await lab.converge()).converged
    assert await holdings(lab) == before
    lines = [json.loads(line) for line in (tmp_path / "lab" / "logs" / "cucm1.log").read_text().splitlines()]
    replays = [x for x in lines if x.get("event") == "envelope-rejected" and x.get("reason") == "replay"]
    assert len(replays) >= 2 and all(x["level"] == "warning" for x in replays)
    duplicates = [x for x in lines if x.get("event") == "duplicate-delivery" and x.get("kind") == "ctl"]
    assert duplicates and all(x["level"] == "debug" for x in duplicates)
