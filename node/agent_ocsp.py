"""OCSP on a running node (R-OCSP-1..4): settings, checks, and the status of every certificate.

:mod:`node.ocsp_check` is the pure half (requests, response validation, the Common Criteria
decision); this module is the agent's half: settings in the node's database, a timer on the
lab clock, real HTTP to the responder, and a status kept per certificate.

Operations (its ``EXTENSION``):

- ``ocsp_set {enabled, url, interval, cc_mode}``, any subset. ``url`` is the configured
  responder URI; null, ``""`` or ``"certificate"`` take the URI from each certificate's AIA
  (R-OCSP-1). ``interval`` is the check interval, seconds or ``"90s"``/``"15m"``/``"12h"``/
  ``"1d"``/``"2w"`` (default one day: the reference names no default, certsim takes the
  expiry monitor's 24 h). ``cc_mode`` is Common Criteria mode (R-OCSP-3). Enabling OCSP, or
  changing its URI, checks every certificate at once; enabling it or changing the interval
  restarts the schedule from now.
- ``ocsp_get {}``: the settings, the last and next scheduled check, counters, and every status held.
- ``ocsp_check {}``: check every certificate now (a request for each), per-certificate rows.

What is checked: every certificate the node holds (trust stores and identities) that is not
self-signed and whose issuer is in one of its trust stores. A self-signed certificate has no
issuer to ask about, and one whose issuer the node does not hold cannot be named in a request:
both get no status. Statuses are kept per certificate (SHA-256), so a certificate in two
stores has one status; ``list`` rows carry it as ``ocsp``: ``good``, ``revoked``, ``unknown``,
or null (OCSP off, or the certificate is not checked).

When (R-OCSP-1):

- on every upload: ``upload`` (trust) and ``identity_upload`` check the uploaded certificates
  before they answer, and their result carries ``ocsp`` rows. An upload is never refused for
  its status, in Common Criteria mode or not: the reference checks uploaded certificates and
  makes *connections* fail on revoked (and, in Common Criteria mode, unknown), R-OCSP-3. So
  the certificate is stored, its status shows in listings, and a connection that presents it
  fails;
- every check interval of the lab clock (the ``ocsp`` timer of its ``EXTENSION``). Due times
  follow one another (``due + interval``), so a clock jump runs each check inside it in
  order, at its own simulated time. A check reuses a certificate's last response, without a
  request, while that response's nextUpdate lies beyond the following check (a 1 h interval
  with the lab responder's 24 h responses asks about once a day; a daily interval asks at
  every check); otherwise it asks the responder. A scheduled check is kept cheap for long
  simulated runs: what the node holds and which of it can be checked is computed again only
  when the store changed, one kept-alive HTTP connection pool serves all requests, and the
  database is written only when an answer changes (the same answer again is kept in memory);
- on a connection: ``check_remote`` asks the responder about the peer's leaf certificate in
  real time (R-OCSP-4) and fails the connection when R-OCSP-3 says so.

A certificate that reaches a node by replication is checked there at its next scheduled
check (or ``ocsp_check``), not on arrival. Responder trouble (down, a response nobody trusts,
no URI) gives status unknown with the reason (:func:`node.ocsp_check.check`); R-OCSP-2 (the
delegated trust model, then a trusted responder in tomcat-trust) is applied by
:func:`node.ocsp_check.evaluate_response` with the node's tomcat-trust.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from node import certs, ocsp_check
from node.errors import BadInput, Refused
from node.extension import Extension, PerAgent, sleep_until
from node.ocsp_check import OcspResult, OcspStatus, Signer

if TYPE_CHECKING:
    import aiohttp

    from node.agent import NodeAgent

DEFAULT_INTERVAL = dt.timedelta(days=1)
MIN_INTERVAL = dt.timedelta(minutes=1)
MAX_INTERVAL = dt.timedelta(days=365)
FETCH_TIMEOUT_S = 5.0  # wall seconds for one responder request
IDLE_CONNECTION_S = 15.0  # wall seconds a kept-alive responder connection may idle (servers allow more)
PARALLEL_FETCHES = 8  # requests one check keeps in flight
TRUSTED_RESPONDERS = "tomcat-trust"  # R-OCSP-2: where a trusted responder's signing certificate must be

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ocsp_config (id INTEGER PRIMARY KEY CHECK (id = 1), settings TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ocsp_status (sha256 TEXT PRIMARY KEY, row TEXT NOT NULL)",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NOT_SELF_SIGNED = "self-signed: there is no issuer to ask, OCSP does not apply"
NO_ISSUER = "its issuer is in none of this node's trust stores, so no OCSP request can name it"


# ---------------------------------------------------------------------------------------------
# settings and statuses


@dataclass(frozen=True)
class OcspSettings:
    """The Certificate Revocation page of one node (R-OCSP-1, R-OCSP-3)."""

    enabled: bool = False
    url: str | None = None  # the configured responder URI; None: the URI in each certificate's AIA
    interval: dt.timedelta = DEFAULT_INTERVAL
    cc_mode: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "responder": "configured" if self.url else "certificate",
            "url": self.url,
            "interval_s": int(self.interval.total_seconds()),
            "cc_mode": self.cc_mode,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> OcspSettings:
        return cls(
            bool(raw.get("enabled", False)),
            raw.get("url") or None,
            dt.timedelta(seconds=float(raw.get("interval_s", DEFAULT_INTERVAL.total_seconds()))),
            bool(raw.get("cc_mode", False)),
        )


def parse_interval(raw: Any) -> dt.timedelta:
    """A check interval: seconds, or ``"90s"``, ``"15m"``, ``"12h"``, ``"1d"``, ``"2w"``; one minute to a year."""
    if isinstance(raw, bool):
        raise BadInput(f"check interval must be a duration such as '12h' or '1d', not {raw!r}")
    if isinstance(raw, int | float):
        value = dt.timedelta(seconds=float(raw))
    else:
        match = _DURATION.match(str(raw))
        if not match:
            raise BadInput(f"check interval must be a duration such as '12h' or '1d', not {raw!r}")
        value = dt.timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise BadInput(f"check interval must be between 1 minute and 365 days, not {value}")
    return value


def _flag(args: Mapping[str, Any], key: str, current: bool) -> bool:
    if key not in args:
        return current
    value = args[key]
    if not isinstance(value, bool):
        raise BadInput(f"{key} must be true or false, not {value!r}")
    return value


def parse_settings(args: Mapping[str, Any], current: OcspSettings) -> OcspSettings:
    """``current`` changed by the keys given in ``args`` (see the module docstring)."""
    unknown = set(args) - {"enabled", "url", "interval", "cc_mode"}
    if unknown:
        raise BadInput(f"unknown OCSP setting(s) {', '.join(sorted(unknown))}; known: enabled, url, interval, cc_mode")
    url = current.url
    if "url" in args:
        raw = args["url"]
        if raw is None or raw in ("", "certificate"):
            url = None
        elif isinstance(raw, str):
            ocsp_check.require_loopback(raw)
            url = raw
        else:
            raise BadInput(f"url must be a responder URI or 'certificate', not {raw!r}")
    return OcspSettings(
        enabled=_flag(args, "enabled", current.enabled),
        url=url,
        interval=parse_interval(args["interval"]) if "interval" in args else current.interval,
        cc_mode=_flag(args, "cc_mode", current.cc_mode),
    )


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else certs.iso(t)


def _time(raw: Any) -> dt.datetime | None:
    return None if raw is None else dt.datetime.fromisoformat(str(raw))


@dataclass(frozen=True)
class CertStatus:
    """The outcome of the last check of one certificate."""

    name: str
    serial: str
    status: OcspStatus
    signer: Signer
    reason: str
    url: str | None
    checked: dt.datetime
    this_update: dt.datetime | None = None
    next_update: dt.datetime | None = None
    revocation_time: dt.datetime | None = None
    revocation_reason: str | None = None

    @classmethod
    def of(cls, cert: x509.Certificate, result: OcspResult, url: str | None, checked: dt.datetime) -> CertStatus:
        return cls(
            certs.entry_name(cert),
            f"{cert.serial_number:x}",
            result.status,
            result.signer,
            result.reason,
            url,
            checked,
            result.this_update,
            result.next_update,
            result.revocation_time,
            result.revocation_reason,
        )

    def same_answer(self, other: CertStatus | None) -> bool:
        """Whether ``other`` says the same (ignoring when it was asked)."""
        return other is not None and (self.status, self.signer, self.reason, self.url, self.revocation_time) == (
            other.status,
            other.signer,
            other.reason,
            other.url,
            other.revocation_time,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serial": self.serial,
            "status": self.status.value,
            "signer": self.signer.value,
            "reason": self.reason,
            "url": self.url,
            "checked": _iso(self.checked),
            "this_update": _iso(self.this_update),
            "next_update": _iso(self.next_update),
            "revocation_time": _iso(self.revocation_time),
            "revocation_reason": self.revocation_reason,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CertStatus:
        checked = _time(raw["checked"])
        assert checked is not None
        return cls(
            str(raw["name"]),
            str(raw["serial"]),
            OcspStatus(raw["status"]),
            Signer(raw["signer"]),
            str(raw["reason"]),
            raw.get("url"),
            checked,
            _time(raw.get("this_update")),
            _time(raw.get("next_update")),
            _time(raw.get("revocation_time")),
            raw.get("revocation_reason"),
        )


# ---------------------------------------------------------------------------------------------
# per-agent state


class _Runtime:
    def __init__(self) -> None:
        self.loaded = False
        self.load_lock = asyncio.Lock()
        self.settings = OcspSettings()
        self.statuses: dict[str, CertStatus] = {}
        self.parsed: dict[str, x509.Certificate] = {}  # certificates by SHA-256, parsed once
        self.issuers: dict[str, str] = {}  # certificate SHA-256 -> its issuer's, once found
        self.held: tuple[int, dict[str, _Held]] | None = None  # holdings at a store generation
        self.targets: tuple[dict[str, _Held], _Targets] | None = None  # what the holdings above let check
        self.session: aiohttp.ClientSession | None = None  # HTTP to responders, kept alive between checks
        self.changed = asyncio.Event()  # settings changed: the timer re-reads them
        self.anchor = dt.datetime.min.replace(tzinfo=dt.UTC)  # the schedule starts here
        self.next_due: dt.datetime | None = None
        self.last_check: dt.datetime | None = None
        self.checks = 0  # checks run (scheduled, on upload, on demand, on connection)
        self.requests = 0  # responder requests made


_rt = PerAgent(_Runtime)


async def _ensure(agent: NodeAgent) -> _Runtime:
    """The agent's OCSP state, loaded from its database on first use (tables made if missing)."""
    rt = _rt(agent)
    if rt.loaded:
        return rt
    async with rt.load_lock:
        if rt.loaded:
            return rt
        store = agent.store
        async with store.transaction():
            for statement in SCHEMA:
                await store.execute(statement)
        row = await store.fetchone("SELECT settings FROM ocsp_config WHERE id = 1")
        if row is not None:
            rt.settings = OcspSettings.from_json(json.loads(str(row[0])))
        rows = await store.fetchall("SELECT sha256, row FROM ocsp_status")
        rt.statuses = {str(r[0]): CertStatus.from_json(json.loads(str(r[1]))) for r in rows}
        rt.anchor = agent.clock.now()  # after a (re)start the next check is one interval away
        rt.loaded = True
    return rt


def _session(rt: _Runtime) -> aiohttp.ClientSession:
    """The node's HTTP client for responders (one connection pool; the timer closes it on node stop)."""
    if rt.session is None or rt.session.closed:
        import aiohttp  # noqa: PLC0415 - only nodes with OCSP enabled pay for importing aiohttp

        rt.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=IDLE_CONNECTION_S))
    return rt.session


async def _close_session(rt: _Runtime) -> None:
    if rt.session is not None:
        session, rt.session = rt.session, None
        await session.close()


# ---------------------------------------------------------------------------------------------
# what the node holds, and what can be checked


@dataclass
class _Held:
    cert: x509.Certificate
    places: list[str] = field(default_factory=list)  # "tomcat-trust/name", "identity tomcat"
    stores: set[str] = field(default_factory=set)  # trust stores holding it


async def _holdings(agent: NodeAgent, rt: _Runtime) -> dict[str, _Held]:
    """Every certificate of the node by SHA-256: trust entries (from the in-memory index, parsed
    once) and identity certificates; reused while the store reports no change (its generation)."""
    generation = agent.store.generation
    if rt.held is not None and rt.held[0] == generation:
        return rt.held[1]
    held: dict[str, _Held] = {}
    for (store, name), slot in sorted(agent.store.index.items()):
        sha = slot.entry_sha
        if slot.entry is None or sha is None:
            continue
        cert = rt.parsed.get(sha)
        if cert is None:
            rec = await agent.store.get_entry(store, name)
            if rec is None or rec.der is None:
                continue
            cert = rt.parsed[sha] = x509.load_der_x509_certificate(rec.der)
        item = held.setdefault(sha, _Held(cert))
        item.places.append(f"{store}/{name}")
        item.stores.add(store)
    for unit, ident in sorted((await agent.store.identities()).items()):
        sha = certs.der_sha256(ident.cert_der)
        cert = rt.parsed.get(sha)
        if cert is None:
            cert = rt.parsed[sha] = x509.load_der_x509_certificate(ident.cert_der)
        held.setdefault(sha, _Held(cert)).places.append(f"identity {unit}")
    if len(rt.parsed) > 2 * len(held) + 64:  # forget certificates the node no longer holds
        rt.parsed = {sha: c for sha, c in rt.parsed.items() if sha in held}
    rt.held = (generation, held)
    return held


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _find_issuer(
    rt: _Runtime, sha: str, cert: x509.Certificate, candidates: Iterable[tuple[str, x509.Certificate]]
) -> x509.Certificate | None:
    options = [(s, c) for s, c in candidates if s != sha]
    known = rt.issuers.get(sha)
    for candidate_sha, candidate in options:
        if candidate_sha == known:
            return candidate
    for candidate_sha, candidate in options:
        if _signed_by(cert, candidate):
            rt.issuers[sha] = candidate_sha
            return candidate
    return None


_Targets = tuple[dict[str, tuple[_Held, x509.Certificate]], dict[str, str]]


def _targets(rt: _Runtime, held: dict[str, _Held], only: set[str] | None = None) -> _Targets:
    """(certificates to check with their issuer, certificates not checked with the reason); for the
    whole node, computed once per holdings (parsing names is what a quiet check would spend its time on)."""
    if only is None and rt.targets is not None and rt.targets[0] is held:
        return rt.targets[1]
    by_subject: dict[x509.Name, list[tuple[str, x509.Certificate]]] = {}
    for sha, item in held.items():
        if item.stores:
            by_subject.setdefault(item.cert.subject, []).append((sha, item.cert))
    checkable: dict[str, tuple[_Held, x509.Certificate]] = {}
    skipped: dict[str, str] = {}
    for sha, item in held.items():
        if only is not None and sha not in only:
            continue
        if item.cert.issuer == item.cert.subject:
            skipped[sha] = NOT_SELF_SIGNED
            continue
        issuer = _find_issuer(rt, sha, item.cert, by_subject.get(item.cert.issuer, []))
        if issuer is None:
            skipped[sha] = NO_ISSUER
        else:
            checkable[sha] = (item, issuer)
    if only is None:
        rt.targets = (held, (checkable, skipped))
    return checkable, skipped


def _url_for(settings: OcspSettings, cert: x509.Certificate) -> str | None:
    if settings.url:
        return settings.url
    urls = ocsp_check.aia_ocsp_urls(cert)
    return urls[0] if urls else None


def _reusable(old: CertStatus | None, url: str | None, now: dt.datetime, beyond: dt.datetime) -> bool:
    """A usable earlier response from the same responder that stays fresh past ``beyond``."""
    return (
        old is not None
        and old.signer is not Signer.NONE
        and old.url == url
        and old.next_update is not None
        and old.next_update > max(now, beyond)
    )


# ---------------------------------------------------------------------------------------------
# checking


async def _check(
    agent: NodeAgent,
    rt: _Runtime,
    held: Mapping[str, _Held],
    targets: Mapping[str, tuple[_Held, x509.Certificate]],
    *,
    reuse_beyond: dt.datetime | None = None,
) -> dict[str, CertStatus]:
    """Ask the responder about ``targets`` (all at once, a few in flight); with ``reuse_beyond``,
    certificates whose last response stays fresh past it are not asked again (and not returned)."""
    settings = rt.settings
    now = agent.clock.now()
    asks = [
        (sha, item, issuer, _url_for(settings, item.cert))
        for sha, (item, issuer) in targets.items()
        if reuse_beyond is None or not _reusable(rt.statuses.get(sha), _url_for(settings, item.cert), now, reuse_beyond)
    ]
    rt.checks += 1
    agent.stats["ocsp-checks"] += 1
    if not asks:
        return {}
    trusted = [item.cert for item in held.values() if TRUSTED_RESPONDERS in item.stores]
    gate = asyncio.Semaphore(PARALLEL_FETCHES)
    session = _session(rt)

    async def one(cert: x509.Certificate, issuer: x509.Certificate) -> OcspResult:
        async with gate:
            return await ocsp_check.check(
                cert,
                issuer,
                trusted,
                agent.clock.now(),
                settings.cc_mode,
                configured_url=settings.url,
                timeout=FETCH_TIMEOUT_S,
                session=session,
            )

    outcomes = await asyncio.gather(*(one(item.cert, issuer) for _, item, issuer, _ in asks))
    rt.requests += sum(1 for _, _, _, url in asks if url)
    agent.stats["ocsp-requests"] += sum(1 for _, _, _, url in asks if url)
    checked = agent.clock.now()
    return {
        sha: CertStatus.of(item.cert, result, url, checked)
        for (sha, item, _, url), result in zip(asks, outcomes, strict=True)
    }


async def _save(agent: NodeAgent, rt: _Runtime, results: Mapping[str, CertStatus], gone: Iterable[str] = ()) -> None:
    """Keep ``results`` (and forget ``gone``) in memory; log changed answers and write them to the
    node's database. The same answer again is kept in memory only (the database keeps the time of the
    last change), so a check that learns nothing new writes nothing."""
    drop = [sha for sha in gone if sha in rt.statuses and sha not in results]
    changed = {sha: status for sha, status in results.items() if not status.same_answer(rt.statuses.get(sha))}
    if changed or drop:
        async with agent.store.transaction():
            for sha, status in changed.items():
                await agent.store.execute(
                    "INSERT OR REPLACE INTO ocsp_status(sha256, row) VALUES (?, ?)",
                    (sha, json.dumps(status.to_json())),
                )
            for sha in drop:
                await agent.store.execute("DELETE FROM ocsp_status WHERE sha256 = ?", (sha,))
    for sha, status in results.items():
        before = rt.statuses.get(sha)
        rt.statuses[sha] = status
        if status.same_answer(before):
            continue
        fields = {
            "cert": status.name,
            "serial": status.serial,
            "status": status.status.value,
            "allowed": ocsp_check.allowed(status.status, rt.settings.cc_mode),
            "reason": status.reason,
        }
        if status.status is OcspStatus.GOOD:
            agent.log.info("ocsp-status", **fields)
        else:
            agent.log.warning("ocsp-status", **fields)
        agent._emit("ocsp-status", **fields)
    for sha in drop:
        del rt.statuses[sha]


def _row(rt: _Runtime, sha: str, status: CertStatus, item: _Held | None) -> dict[str, Any]:
    return {
        "sha256": sha,
        "places": list(item.places) if item else [],
        "cn": certs.common_name(item.cert.subject) if item else None,
        **status.to_json(),
        "allowed": ocsp_check.allowed(status.status, rt.settings.cc_mode),
    }


def _skipped_row(sha: str, item: _Held, reason: str) -> dict[str, Any]:
    return {
        "sha256": sha,
        "places": list(item.places),
        "cn": certs.common_name(item.cert.subject),
        "name": certs.entry_name(item.cert),
        "serial": f"{item.cert.serial_number:x}",
        "status": None,
        "allowed": True,
        "reason": reason,
    }


async def _full_check(
    agent: NodeAgent, rt: _Runtime, *, reuse_beyond: dt.datetime | None, report: bool = True
) -> dict[str, Any]:
    """Check every certificate the node holds; statuses of certificates no longer checked are dropped.
    With ``report`` the answer lists every certificate (for operations; the timer needs none)."""
    held = await _holdings(agent, rt)
    targets, skipped = _targets(rt, held)
    results = await _check(agent, rt, held, targets, reuse_beyond=reuse_beyond)
    await _save(agent, rt, results, gone=[sha for sha in rt.statuses if sha not in targets])
    rt.last_check = agent.clock.now()
    if not report:
        return {"asked": len(results)}
    return {
        "checked": [_row(rt, sha, rt.statuses[sha], held[sha]) for sha in targets if sha in rt.statuses],
        "not_checked": [_skipped_row(sha, held[sha], why) for sha, why in skipped.items()],
        "asked": len(results),
    }


# ---------------------------------------------------------------------------------------------
# hooks the agent calls


async def listing_statuses(agent: NodeAgent) -> Mapping[str, str]:
    """SHA-256 -> good / revoked / unknown for ``list`` rows; empty while OCSP is off."""
    rt = await _ensure(agent)
    if not rt.settings.enabled:
        return {}
    return {sha: status.status.value for sha, status in rt.statuses.items()}


async def on_upload(agent: NodeAgent, uploaded: Iterable[x509.Certificate]) -> list[dict[str, Any]] | None:
    """R-OCSP-1: check the certificates of an upload now (after it was stored); None when OCSP is off.

    Never refuses and never raises: the upload has happened (see the module docstring).
    """
    try:
        rt = await _ensure(agent)
        if not rt.settings.enabled:
            return None
        wanted = {certs.fingerprint(c) for c in uploaded}
        held = await _holdings(agent, rt)
        targets, skipped = _targets(rt, held, only=wanted)
        await _save(agent, rt, await _check(agent, rt, held, targets))
    except Exception:  # the upload is stored; a failed check must not make it look refused
        agent.log.exception("ocsp-upload-check-failed")
        return None
    rows = [_row(rt, sha, rt.statuses[sha], held[sha]) for sha in targets if sha in rt.statuses]
    return rows + [_skipped_row(sha, held[sha], why) for sha, why in skipped.items()]


async def check_connection(
    agent: NodeAgent, cert: x509.Certificate, trust: list[x509.Certificate]
) -> OcspResult | None:
    """R-OCSP-3/R-OCSP-4: ask the responder now about a peer's leaf ``cert`` whose chain ``trust``
    (the node's tomcat-trust) already validated. None when OCSP is off or does not apply
    (a self-signed certificate); the status is kept when the node holds the certificate."""
    rt = await _ensure(agent)
    if not rt.settings.enabled or cert.issuer == cert.subject:
        return None
    sha = certs.fingerprint(cert)
    issuer = _find_issuer(rt, sha, cert, [(certs.fingerprint(c), c) for c in trust if c.subject == cert.issuer])
    if issuer is None:
        return None
    url = _url_for(rt.settings, cert)
    result = await ocsp_check.check(
        cert,
        issuer,
        trust,
        agent.clock.now(),
        rt.settings.cc_mode,
        configured_url=rt.settings.url,
        timeout=FETCH_TIMEOUT_S,
        session=_session(rt),
    )
    rt.checks += 1
    rt.requests += 1 if url else 0
    agent.stats["ocsp-checks"] += 1
    agent.stats["ocsp-requests"] += 1 if url else 0
    if any(slot.entry_sha == sha for slot in agent.store.index.values()):
        await _save(agent, rt, {sha: CertStatus.of(cert, result, url, agent.clock.now())})
    return result


# ---------------------------------------------------------------------------------------------
# the schedule


async def _schedule(agent: NodeAgent, rt: _Runtime, settings: OcspSettings, anchor: dt.datetime) -> None:
    """Check every ``settings.interval`` from ``anchor``. It sleeps on the lab clock in its own task,
    so a clock jump wakes it at each due time in order and waits for its check (``node.clock``)."""
    due = anchor + settings.interval
    while True:
        rt.next_due = due
        await sleep_until(agent.clock, due)
        try:
            await _full_check(agent, rt, reuse_beyond=due + settings.interval, report=False)
        except Exception:  # the schedule must outlive any single failure
            agent.log.exception("ocsp-check-failed")
        due = due + settings.interval


async def _timer(agent: NodeAgent) -> None:
    """The node's OCSP timer (R-OCSP-1), run from node start to stop (a timer of its ``EXTENSION``): it (re)starts
    the schedule whenever the settings change, and runs none while OCSP is off."""
    rt = await _ensure(agent)
    schedule: asyncio.Task[None] | None = None
    try:
        while True:
            rt.changed.clear()
            if schedule is not None:
                schedule.cancel()
                await asyncio.gather(schedule, return_exceptions=True)
                schedule = None
            rt.next_due = None
            if rt.settings.enabled:
                schedule = asyncio.create_task(
                    _schedule(agent, rt, rt.settings, rt.anchor), name=f"ocsp-schedule:{agent.name}"
                )
            await rt.changed.wait()
    finally:
        if schedule is not None:
            schedule.cancel()
            await asyncio.gather(schedule, return_exceptions=True)
        await _close_session(rt)


# ---------------------------------------------------------------------------------------------
# operations


async def op_ocsp_set(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    rt = await _ensure(agent)
    old = rt.settings
    new = parse_settings(args, old)
    async with agent.store.transaction():
        await agent.store.execute(
            "INSERT OR REPLACE INTO ocsp_config(id, settings) VALUES (1, ?)", (json.dumps(new.to_json()),)
        )
    rt.settings = new
    if new.enabled != old.enabled or new.interval != old.interval:
        rt.anchor = agent.clock.now()
        rt.changed.set()
    agent.log.info("ocsp-settings", **new.to_json())
    result: dict[str, Any] = {"settings": new.to_json()}
    if new.enabled and (not old.enabled or new.url != old.url):
        result.update(await _full_check(agent, rt, reuse_beyond=None))
    return result


async def op_ocsp_get(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    rt = await _ensure(agent)
    held = await _holdings(agent, rt)
    return {
        "settings": rt.settings.to_json(),
        "last_check": _iso(rt.last_check),
        "next_check": _iso(rt.next_due) if rt.settings.enabled else None,
        "checks": rt.checks,
        "requests": rt.requests,
        "statuses": [_row(rt, sha, status, held.get(sha)) for sha, status in sorted(rt.statuses.items())],
    }


async def op_ocsp_check(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    rt = await _ensure(agent)
    if not rt.settings.enabled:
        raise Refused("OCSP is not enabled on this node; enable it first (ocsp set)")
    return await _full_check(agent, rt, reuse_beyond=None)


EXTENSION = Extension(
    name="ocsp",
    ops={"ocsp_set": op_ocsp_set, "ocsp_get": op_ocsp_get, "ocsp_check": op_ocsp_check},
    timers={"ocsp": _timer},
    on_upload=on_upload,
    listing=listing_statuses,
)
