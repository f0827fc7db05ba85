"""The Certificate Expiry Monitor on a node (R-MON-1..3): its timer, settings, syslog view and mail.

The rules are pure functions in :mod:`node.monitor`; this module is the adapter that keeps
their state in the node's database, arms the timer on the lab clock, writes each warning to
the node's syslog view (and its structlog log) and sends the mails over SMTP to the server
the lab gave the node (``NodeConfig.smtp``; the lab's SMTP sink by default).

Operations: ``monitor_set`` (settings, R-MON-1), ``monitor_get`` (settings and schedule),
``syslog`` (the syslog view). Restarting the node or the "Cisco Certificate Expiry Monitor"
service moves the next run 24 h ahead (R-MON-2).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from cryptography import x509

from node import certs, monitor
from node.errors import BadInput, CertsimError
from node.extension import Extension, PerAgent, sleep_until
from node.mail import send_mail
from node.monitor import CertType, MonitoredCert, MonitorSettings, MonitorState

if TYPE_CHECKING:
    from node.agent import NodeAgent

SERVICE = "Cisco Certificate Expiry Monitor"
SETTINGS_KEY = "monitor_settings"
STATE_KEY = "monitor_state"
RUN_MEMORY = 72  # recent run times kept for ``monitor_get`` (three days of hourly runs)
SYSLOG_LIMIT = 10_000  # most lines one ``syslog`` request returns
READY_WAIT_S = 5.0  # wall seconds a request waits for a just-started monitor


class _Runtime:
    """Per-node memory: current settings, the certificate list cache, recent runs, the restart signal."""

    def __init__(self) -> None:
        self.settings: MonitorSettings | None = None
        self.state: MonitorState | None = None
        self.cache: tuple[int, list[MonitoredCert]] | None = None
        self.runs: list[str] = []
        self.started: dt.datetime | None = None  # when the current schedule began (node or service start)
        self.restart = asyncio.Event()
        self.ready = asyncio.Event()  # set once the schedule is known (just after the node starts)
        self.mail_errors = 0
        self.listening = False  # subscribed to the node's events (once, even if the timer restarts)


_rt = PerAgent(_Runtime)


async def _settings(agent: NodeAgent) -> MonitorSettings:
    rt = _rt(agent)
    if rt.settings is None:
        raw = await agent.store.get_meta(SETTINGS_KEY)
        rt.settings = MonitorSettings.from_mapping(json.loads(raw)) if raw else MonitorSettings()
    return rt.settings


async def _certificates(agent: NodeAgent) -> list[MonitoredCert]:
    """Identities (own-cert) and trust entries (trust-cert) of this node; cached until the stores change."""
    rt = _rt(agent)
    if rt.cache is not None and rt.cache[0] == agent.store.generation:
        return rt.cache[1]
    generation = agent.store.generation
    found: list[MonitoredCert] = []
    for unit, ident in (await agent.store.identities()).items():
        cert = x509.load_der_x509_certificate(ident.cert_der)
        found.append(MonitoredCert(unit, f"{unit}.der", cert.not_valid_after_utc, CertType.OWN))  # as R-MON-3 shows
    for rec in await agent.store.entries():
        assert rec.der is not None
        cert = x509.load_der_x509_certificate(rec.der)
        found.append(MonitoredCert(rec.store, f"{rec.name}.pem", cert.not_valid_after_utc, CertType.TRUST))
    rt.cache = (generation, found)
    return found


async def _save_state(agent: NodeAgent, state: MonitorState) -> None:
    async with agent.store.transaction():
        await agent.store.set_meta(STATE_KEY, json.dumps(state.to_dict()))


async def _monitor_timer(agent: NodeAgent) -> None:
    """Run the monitor for the node's lifetime; a service restart starts the schedule afresh."""
    rt = _rt(agent)
    while True:
        rt.restart.clear()
        runner = asyncio.create_task(_schedule(agent), name=f"monitor-runs:{agent.name}")
        try:
            await rt.restart.wait()
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def _schedule(agent: NodeAgent) -> None:
    rt = _rt(agent)
    raw = await agent.store.get_meta(STATE_KEY)
    previous = MonitorState.from_dict(json.loads(raw)) if raw else None
    settings = await _settings(agent)
    rt.started = agent.clock.now()
    state = monitor.started(rt.started, await _certificates(agent), settings, previous)
    rt.state = state
    rt.ready.set()
    await _save_state(agent, state)
    agent.log.info("monitor-started", next_run=certs.iso(state.next_run))
    while True:
        await sleep_until(agent.clock, state.next_run)
        try:
            state = await _run_once(agent, state)
        except Exception:  # one failed run (a database error, say) must not end the monitor
            agent.log.exception("monitor-run-failed", due=certs.iso(state.next_run))
            state = MonitorState(state.next_run + monitor.HOURLY, state.last_run, state.last_notified)
        rt.state = state


async def _run_once(agent: NodeAgent, state: MonitorState) -> MonitorState:
    """One run at the time it was due; returns the state holding the next run."""
    rt = _rt(agent)
    at = state.next_run  # the simulated time the run was due, even when a jump woke it
    result, state = monitor.run(state, at, await _certificates(agent), await _settings(agent), node_id=agent.name)
    rt.runs = [*rt.runs[-(RUN_MEMORY - 1) :], certs.iso(at)]
    agent.stats["monitor-runs"] += 1
    if result.warnings:
        async with agent.store.transaction():
            for alarm in result.alarms:
                await agent.store.execute(
                    "INSERT INTO syslog(sim_ms, app, text) VALUES (?,?,?)",
                    (int(at.timestamp() * 1000), monitor.APP_ID, alarm),
                )
            await agent.store.set_meta(STATE_KEY, json.dumps(state.to_dict()))
        for alarm in result.alarms:
            agent.log.warning("cert-expiry-alarm", alarm=alarm)
        agent._emit("monitor-alarms", at=certs.iso(at), count=len(result.warnings))
    for mail in result.mails:
        await _send(agent, mail, at)
    return state


async def _send(agent: NodeAgent, mail: monitor.Mail, at: dt.datetime) -> None:
    server = agent.config.smtp
    if server is None:
        agent.log.warning("monitor-mail-skipped", reason="no SMTP server configured", subject=mail.subject)
        return
    host, _, port = server.rpartition(":")
    try:
        if not port.isdigit():
            raise BadInput(f"'{server}' is not host:port")
        await send_mail(
            host, int(port), f"certmonitor@{agent.config.fqdn}", mail.to, mail.subject, mail.body, sim_time=at
        )
    except CertsimError as exc:  # a mail server that is down costs the mail, never the monitor
        _rt(agent).mail_errors += 1
        agent.log.warning("monitor-mail-failed", error=exc.message, subject=mail.subject)
        return
    agent.stats["monitor-mails"] += 1


def _on_event(agent: NodeAgent, event: dict[str, Any]) -> None:
    if event.get("event") == "service-started" and event.get("service") == SERVICE:
        _rt(agent).restart.set()  # R-MON-2: a restart moves the next run 24 h ahead


# ---------------------------------------------------------------------------------------------
# operations


async def op_monitor_set(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """Change some settings (R-MON-1); the others keep their values."""
    settings = MonitorSettings.from_mapping(args, await _settings(agent))
    async with agent.store.transaction():
        await agent.store.set_meta(SETTINGS_KEY, json.dumps(settings.to_dict()))
    _rt(agent).settings = settings
    agent.log.info("monitor-settings", **settings.to_dict())
    return await op_monitor_get(agent, {})


async def op_monitor_get(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    rt = _rt(agent)
    with contextlib.suppress(TimeoutError):  # a request right after start: wait for the first schedule
        await asyncio.wait_for(rt.ready.wait(), READY_WAIT_S)
    state = rt.state
    return {
        "node": agent.name,
        "settings": (await _settings(agent)).to_dict(),
        "started": certs.iso(rt.started) if rt.started else None,
        "next_run": certs.iso(state.next_run) if state else None,
        "last_run": certs.iso(state.last_run) if state and state.last_run else None,
        "recent_runs": list(rt.runs),
        "runs": agent.stats["monitor-runs"],
        "mails_sent": agent.stats["monitor-mails"],
        "mail_errors": rt.mail_errors,
        "smtp": agent.config.smtp,
    }


async def op_syslog(agent: NodeAgent, args: dict[str, Any]) -> list[dict[str, Any]]:
    """The node's syslog view: alarms with their simulated time, oldest first.

    ``grep`` keeps lines containing a text; ``limit`` keeps the newest ones.
    """
    grep = str(args.get("grep") or "")
    limit = args.get("limit", SYSLOG_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= SYSLOG_LIMIT:
        raise BadInput(f"limit must be a whole number from 1 to {SYSLOG_LIMIT}")
    rows = await agent.store.fetchall(
        "SELECT sim_ms, app, text FROM syslog WHERE instr(text, ?) > 0 ORDER BY id DESC LIMIT ?", (grep, limit)
    )
    return [
        {
            "sim_time": certs.iso(dt.datetime.fromtimestamp(int(r[0]) / 1000, dt.UTC)),
            "app": str(r[1]),
            "text": str(r[2]),
        }
        for r in reversed(list(rows))
    ]


def _attach(agent: NodeAgent) -> Coroutine[Any, Any, None]:
    """The registered timer: subscribe to the node's events, then run the monitor."""
    rt = _rt(agent)
    if not rt.listening:
        rt.listening = True
        agent.listeners.append(lambda event: _on_event(agent, event))
    return _monitor_timer(agent)


EXTENSION = Extension(
    name="monitor",
    ops={"monitor_set": op_monitor_set, "monitor_get": op_monitor_get, "syslog": op_syslog},
    timers={"monitor": _attach},
)
