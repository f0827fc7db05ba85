"""The Certificate Expiry Monitor on running nodes: timers on the lab clock, syslog alarms, real SMTP mail."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re

import pytest

from cluster.lab import Lab
from cluster.labca import LabCA
from node.agent import NodeAgent
from node.errors import BadInput
from node.mail import SIM_TIME_HEADER
from node.monitor import java_date
from tests.conftest import LabFactory, small_lab

ALARM = re.compile(
    r"^%UC_CERT-0-CertExpired: %\[Message=Certificate expiration Notification\. Certificate name:(?P<name>\S+) "
    r"Unit:(?P<unit>\S+) Type:(?P<type>own-cert|trust-cert) "
    r"Expiration:(?P<exp>\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4})\]\[AppID=Cisco Certificate Monitor\]"
    r"\[NodeID=(?P<node>[\w-]+)\]$"
)


def _t(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def _upload(lab: Lab, node: str, store: str, pem: bytes) -> None:
    await lab.request(node, "upload", {"store": store, "data": base64.b64encode(pem).decode()})


async def test_alarms_and_mails_fire_at_their_simulated_times(make_lab: LabFactory) -> None:
    """R-MON-1..3: a certificate expiring in 10 days is warned daily from the first run (24 h after
    start), every warning is a syslog alarm in the product format on every node holding it, and the
    node with e-mail on sends each one as a real SMTP delivery dated at the run's simulated time;
    once it expires within a day the monitor runs hourly."""
    lab = await make_lab(small_lab(nodes=2, imp=0))
    assert lab.smtp is not None
    monitor_before = await lab.request("cucm1", "monitor_get")
    first_run = _t(monitor_before["next_run"])
    ca = LabCA(lab.clock)
    expiring = ca.create_ca("expires-in-10-days", days=10)
    await _upload(lab, "cucm1", "tomcat-trust", expiring.pem())
    settings = await lab.request(
        "cucm1", "monitor_set", {"email_enabled": True, "emails": "pki@lab.example;oncall@lab.example"}
    )
    assert settings["settings"]["emails"] == "pki@lab.example;oncall@lab.example"
    await lab.converge()

    await lab.advance(dt.timedelta(days=12))

    for node in ("cucm1", "cucm2"):
        lines = await lab.request(node, "syslog", {"grep": "expires-in-10-days"})
        times = [_t(line["sim_time"]) for line in lines]
        assert len(lines) == 12, [line["sim_time"] for line in lines]
        for i, when in enumerate(times):  # daily, counted from the node's own first run
            assert abs(when - (times[0] + dt.timedelta(days=i))) < dt.timedelta(seconds=1)
        assert abs(times[0] - first_run) < dt.timedelta(seconds=5)
        match = ALARM.match(lines[0]["text"])
        assert match is not None, lines[0]["text"]
        assert match["name"] == "expires-in-10-days.pem"
        assert match["unit"] == "tomcat-trust"
        assert match["type"] == "trust-cert"
        assert match["node"] == node
        assert match["exp"] == java_date(expiring.cert.not_valid_after_utc)

    mails = [m for m in lab.smtp.messages if "expires-in-10-days" in m.subject]
    assert len(mails) == 12  # only cucm1 has e-mail on
    assert all(m.to == ("pki@lab.example", "oncall@lab.example") for m in mails)
    assert all("cucm1" in m.subject for m in mails)
    cucm1_times = [_t(line["sim_time"]) for line in await lab.request("cucm1", "syslog", {})]
    mail_times = [dt.datetime.fromisoformat(m.headers[SIM_TIME_HEADER]) for m in mails]
    assert [t.replace(microsecond=0) for t in mail_times] == [t.replace(microsecond=0) for t in cucm1_times]

    state = await lab.request("cucm1", "monitor_get")
    runs = [_t(r) for r in state["recent_runs"]]
    gaps = {b - a for a, b in zip(runs[-24:], runs[-23:], strict=False)}
    assert gaps == {dt.timedelta(hours=1)}  # expired: the hourly cadence (R-MON-2)
    assert state["mails_sent"] == 12


async def test_monitor_restart_moves_the_next_run_a_day_ahead(make_lab: LabFactory) -> None:
    """R-MON-2: restarting the Certificate Expiry Monitor service moves the next run 24 h after the restart."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    await lab.advance(dt.timedelta(hours=20))
    await lab.request("cucm1", "service_restart", {"name": "Cisco Certificate Expiry Monitor", "seconds": 0})
    restarted = lab.clock.now()
    for _ in range(50):
        state = await lab.request("cucm1", "monitor_get")
        if abs(_t(state["next_run"]) - (restarted + dt.timedelta(hours=24))) < dt.timedelta(seconds=5):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"next run {state['next_run']} is not 24 h after the restart at {restarted}")
    await lab.advance(dt.timedelta(hours=10))  # the run that was due at 24 h after start did not happen
    assert (await lab.request("cucm1", "monitor_get"))["runs"] == 0


async def test_node_restart_moves_the_next_run_and_keeps_settings(make_lab: LabFactory) -> None:
    """R-MON-2: after a node restart the next run is 24 h later; settings survive in the node's database."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    await lab.request("cucm1", "monitor_set", {"notification_start_days": 45, "frequency": "12h"})
    await lab.advance(dt.timedelta(hours=23))
    await lab.stop_node("cucm1")
    await lab.start_node("cucm1")
    state = await lab.request("cucm1", "monitor_get")
    assert state["settings"]["notification_start_days"] == 45
    assert state["settings"]["frequency"] == "720m"
    assert _t(state["next_run"]) - lab.clock.now() > dt.timedelta(hours=23, minutes=59)


async def test_bad_monitor_settings_are_refused_and_change_nothing(make_lab: LabFactory) -> None:
    """R-MON-1: e-mail on without an address, a bad address or a frequency under an hour is refused."""
    lab = await make_lab(small_lab(nodes=1, imp=0))
    before = (await lab.request("cucm1", "monitor_get"))["settings"]
    for bad, message in (
        ({"email_enabled": True}, "no e-mail address"),
        ({"emails": "not-an-address"}, "address"),
        ({"frequency": "30m"}, "at least one hour"),
        ({"notification_start_days": -1}, "notification start"),
        ({"colour": "blue"}, "unknown monitor setting"),
    ):
        with pytest.raises(BadInput, match=message):
            await lab.request("cucm1", "monitor_set", bad)
    assert (await lab.request("cucm1", "monitor_get"))["settings"] == before


async def test_clock_travels_on_the_bus_to_a_node_in_another_process(make_lab: LabFactory) -> None:
    """R-TIME: a node with its own clock object (as in a separate process) follows the lab's jump
    from the retained clock message and runs its own monitor at the simulated times it was due."""
    lab = await make_lab(small_lab(nodes=2, imp=0), settle=False)
    await lab.stop_node("cucm2")
    own_clock = lab.state.clock(lab.lab_dir)  # what `certsim node run` builds from the lab directory
    assert lab.broker is not None
    agent = NodeAgent(lab.node_config("cucm2"), clock=own_clock, broker=lab.broker, secret=lab.secret)
    await agent.start()
    try:
        await agent.bus.wait_connected(timeout=10)
        await lab.advance(dt.timedelta(days=3))
        for _ in range(200):
            if own_clock.offset == lab.clock.offset and agent.stats["monitor-runs"] == 3:
                break
            await asyncio.sleep(0.05)
        assert own_clock.offset == lab.clock.offset
        assert agent.stats["monitor-runs"] == 3
        assert agent.stats["resync-timer"] >= 3 * 48 - 1
    finally:
        await agent.stop()
