"""Replication on the lab clock: what anti-entropy does across clock jumps (R-REPL-6, R-REPL-9)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt

from cluster.labca import LabCA
from node import certs
from replication.hlc import Version
from replication.records import Record
from tests.conftest import LabFactory, small_lab


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_missed_change_is_repaired_at_the_resync_due_inside_a_jump(make_lab: LabFactory) -> None:
    """R-REPL-6: during a 2-day jump the state transfer that repairs a lost change arrives at the
    first 1800 s resync, not hours later (each jump step waits for the messages its timers sent)."""
    lab = await make_lab(small_lab(nodes=3, imp=0))
    await asyncio.sleep(0.6)  # the start-up anti-entropy is over
    lab.set_link_faults("cucm3", drop_next=1)
    uploaded_at = lab.clock.now()
    ca = LabCA(lab.clock).create_ca("LostCA")
    data = base64.b64encode(ca.pem()).decode()
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": data})
    await asyncio.sleep(0.3)
    names = {r["name"] for r in await lab.request("cucm3", "list", {"store": "tomcat-trust"})}
    assert certs.entry_name(ca.cert) not in names
    await lab.advance(dt.timedelta(days=2))
    repairs = [e for e in lab.history.events if e["event"] == "state-in" and e["node"] == "cucm3" and e["changed"]]
    assert repairs, "cucm3 was never repaired"
    assert _t(repairs[0]["sim"]) - uploaded_at <= dt.timedelta(minutes=31)
    names = {r["name"] for r in await lab.request("cucm3", "list", {"store": "tomcat-trust"})}
    assert certs.entry_name(ca.cert) in names


async def test_an_expired_tombstone_deletes_what_it_covers_but_is_not_kept(make_lab: LabFactory) -> None:
    """R-REPL-9 with the 30-day retention: a tombstone older than the retention still removes an older
    copy, but is not stored again, so purged tombstones do not come back from peers that still hold them."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    agent = lab.agents["cucm1"]
    ca = LabCA(lab.clock).create_ca("OldCA")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(ca.pem()).decode()})
    name = certs.entry_name(ca.cert)
    old_ms = lab.clock.now_ms() - 40 * 86_400_000
    assert agent.store.index[("tomcat-trust", name)].entry is not None
    expired = Record("tomcat-trust", "never-held", Version(old_ms, 0, "cucm9"), None, "cucm9")
    assert await agent.apply_records([expired], "cucm9") == 0
    assert ("tomcat-trust", "never-held") not in agent.store.index or not agent.store.index[
        ("tomcat-trust", "never-held")
    ].tombstone
    newer = Record("tomcat-trust", name, Version(lab.clock.now_ms() + 1, 0, "cucm9"), None, "cucm9")
    await lab.advance(dt.timedelta(days=31))  # the deletion is now older than the retention
    assert await agent.apply_records([newer], "cucm9") == 1
    slot = agent.store.index[("tomcat-trust", name)]
    assert slot.entry is None
    assert slot.tombstone is None


async def test_a_stopped_peer_does_not_keep_anti_entropy_busy(make_lab: LabFactory) -> None:
    """R-REPL-6: once a peer goes offline its last digest is forgotten, so the others' resync timers
    stop broadcasting on its account (they still broadcast when something changed)."""
    lab = await make_lab(small_lab(nodes=3, imp=0))
    await lab.advance(dt.timedelta(hours=2))
    await lab.stop_node("cucm3")
    for _ in range(100):
        if "cucm3" not in lab.agents["cucm1"].peer_digests:
            break
        await asyncio.sleep(0.02)
    assert "cucm3" not in lab.agents["cucm1"].peer_digests
    ca = LabCA(lab.clock).create_ca("WhileAway")
    await lab.request("cucm1", "upload", {"store": "tomcat-trust", "data": base64.b64encode(ca.pem()).decode()})
    await lab.advance(dt.timedelta(hours=2))
    before = lab.agents["cucm1"].stats["digests-sent"] + lab.agents["cucm2"].stats["digests-sent"]
    await lab.advance(dt.timedelta(days=1))
    after = lab.agents["cucm1"].stats["digests-sent"] + lab.agents["cucm2"].stats["digests-sent"]
    assert after - before <= 2  # 96 timer firings, nothing left to tell


async def test_nodes_started_apart_resync_in_one_jump_step(make_lab: LabFactory) -> None:
    """R-REPL-6: the 1800 s resync of every node falls on the same simulated moments, however far
    apart the nodes started, so a jump wakes them together (counted from each start, a node started
    10 s after the others had its own step at every round)."""
    lab = await make_lab(small_lab(nodes=2, imp=0))
    await lab.stop_node("cucm2")
    await lab.advance(dt.timedelta(seconds=10))  # beyond the clock's step granularity (2 s)
    await lab.start_node("cucm2")
    before = {name: agent.stats["resync-timer"] for name, agent in lab.agents.items()}
    steps = await lab.advance(dt.timedelta(hours=2))
    fired = {name: agent.stats["resync-timer"] - before[name] for name, agent in lab.agents.items()}
    assert fired == {"cucm1": 4, "cucm2": 4}
    assert steps == 4  # one step per round for both nodes (each node alone would make it 8)
