"""Certificate Expiry Monitor: settings, schedule and warnings as pure functions (R-MON-1..3).

Nothing here reads a clock or does I/O: every function takes the simulated ``now`` (or the
time a timer fired) and returns values. The node agent keeps a :class:`MonitorState`, arms
one timer for ``state.next_run`` on the lab clock, and when it fires calls :func:`run`,
then logs each warning's :attr:`ExpiryWarning.alarm` to the node's syslog view and hands
:attr:`MonitorResult.mails` to an SMTP sender (``cluster.smtp.send_mail``).

Schedule (R-MON-2), in :func:`next_run`:

- the monitor runs every 24 h (:data:`DAILY`);
- once any monitored certificate has expired or expires within one day of the run, every
  hour (:data:`HOURLY`), for as long as that stays true (an expired certificate keeps the
  cadence hourly until it is replaced or deleted);
- after a restart (of the node or of the monitor service) the next run is one interval
  after the restart: 24 h in the normal cadence. In the hourly cadence the hourly rule
  wins, so a restart never hides an expired certificate for a day (DOMAIN.md does not
  order the two rules; this is certsim's reading).

Warnings (R-MON-1, R-MON-3), in :func:`evaluate`: a certificate is first warned at the
first run where ``now >= not_after - notification_start_days``, then again at the first
run at least ``frequency`` after its previous warning, and this goes on after it expired
(expired certificates keep being reported) until it leaves the node. Notification times
are tracked per certificate *version* (:class:`CertKey` includes ``not_after``), so a
renewed certificate starts afresh. With LSC monitoring off, certificates marked
``is_lsc`` are neither warned about nor counted for the hourly cadence.

Alarm text (R-MON-3) is the product's, rendered by :func:`alarm_text`::

    %UC_CERT-0-CertExpired: %[Message=Certificate expiration Notification. Certificate name:tomcat.der
    Unit:tomcat Type:own-cert Expiration:Tue Mar 30 02:19:31 UTC 2021][AppID=Cisco Certificate Monitor]
    [NodeID=cucm1]

(one line). ``Expiration`` uses Java's ``Date.toString()`` pattern ``EEE MMM dd HH:mm:ss
zzz yyyy`` in UTC with English names whatever the process locale (:func:`java_date`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple

from node.errors import BadInput

HOURLY = dt.timedelta(hours=1)
DAILY = dt.timedelta(hours=24)
URGENT_WITHIN = dt.timedelta(days=1)  # R-MON-2: "expires within one day" switches to hourly runs

APP_ID = "Cisco Certificate Monitor"
ALARM_PREFIX = "%UC_CERT-0-CertExpired"
MAX_START_DAYS = 3650  # certsim's bound on "notification start"; the product UI's own limits are not modelled

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# A pragmatic address check (dot-atom local part, hostname domain; single-label domains allowed for labs).
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_DURATION = re.compile(r"^\s*(\d+)\s*([dhm]?)\s*$")


class CertType(StrEnum):
    """The alarm's ``Type:`` field: a node's own identity certificate or a trusted one."""

    OWN = "own-cert"
    TRUST = "trust-cert"


# ---------------------------------------------------------------------------------------------
# Settings (R-MON-1)


def parse_emails(text: str) -> tuple[str, ...]:
    """Addresses from the product's ``;``-separated field (R-MON-1).

    Blank items (``a@x; ;b@y;``) are skipped, surrounding spaces stripped, duplicates
    dropped (first kept). Raises :class:`BadInput` naming the first invalid address.
    """
    out: list[str] = []
    for raw in text.split(";"):
        item = raw.strip()
        if not item:
            continue
        if len(item) > 254 or not _EMAIL.match(item):
            raise BadInput(f"'{item}' is not a valid e-mail address (separate addresses with ';')")
        if item.lower() not in (o.lower() for o in out):
            out.append(item)
    return tuple(out)


def parse_frequency(value: str | int | dt.timedelta) -> dt.timedelta:
    """A notification frequency: a timedelta, a number of days, or ``"1d"`` / ``"12h"`` / ``"90m"``."""
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, bool):
        raise BadInput(f"notification frequency must be a duration such as '1d' or '12h', not {value!r}")
    if isinstance(value, int):
        return dt.timedelta(days=value)
    match = _DURATION.match(str(value))
    if not match:
        raise BadInput(f"notification frequency must be a duration such as '1d' or '12h', not {value!r}")
    number, unit = int(match.group(1)), match.group(2) or "d"
    return {"d": dt.timedelta(days=number), "h": dt.timedelta(hours=number), "m": dt.timedelta(minutes=number)}[unit]


@dataclass(frozen=True)
class MonitorSettings:
    """The Certificate Monitor page's settings (R-MON-1).

    ``emails`` accepts a tuple of addresses or the product's ``;``-separated string; either
    way it is validated and stored as a tuple. E-mail notification needs at least one
    address. ``frequency`` must be at least one hour (the monitor never runs more often).
    """

    notification_start_days: int = 30
    frequency: dt.timedelta = DAILY
    email_enabled: bool = False
    lsc_monitoring: bool = True
    emails: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        if isinstance(self.emails, str):
            object.__setattr__(self, "emails", parse_emails(self.emails))
        else:
            object.__setattr__(self, "emails", parse_emails(";".join(self.emails)))
        days = self.notification_start_days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_START_DAYS:
            raise BadInput(
                f"notification start must be a whole number of days from 0 to {MAX_START_DAYS}, not {days!r}"
            )
        if not isinstance(self.frequency, dt.timedelta) or self.frequency < HOURLY:
            raise BadInput(f"notification frequency must be at least one hour, not {self.frequency!r}")
        if self.email_enabled and not self.emails:
            raise BadInput("e-mail notification is enabled but no e-mail address is set")

    @property
    def addresses(self) -> tuple[str, ...]:
        """``emails`` typed as the tuple it always is after construction."""
        return tuple(self.emails)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: MonitorSettings | None = None) -> MonitorSettings:
        """Settings from a CLI or scenario mapping, changing only the keys given (over ``base``).

        Keys: ``notification_start_days`` (int), ``frequency`` (``"1d"``, ``"12h"``, int days),
        ``email_enabled`` / ``lsc_monitoring`` (bool), ``emails`` (``"a@x;b@y"`` or a list).
        """
        known = {"notification_start_days", "frequency", "email_enabled", "lsc_monitoring", "emails"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown monitor setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        current = base or cls()
        changes: dict[str, Any] = {}
        if "notification_start_days" in data:
            changes["notification_start_days"] = data["notification_start_days"]
        if "frequency" in data:
            changes["frequency"] = parse_frequency(data["frequency"])
        for flag in ("email_enabled", "lsc_monitoring"):
            if flag in data:
                if not isinstance(data[flag], bool):
                    raise BadInput(f"monitor setting {flag} must be true or false, not {data[flag]!r}")
                changes[flag] = data[flag]
        if "emails" in data:
            value = data["emails"]
            changes["emails"] = value if isinstance(value, str) else ";".join(str(v) for v in value)
        return replace(current, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``frequency`` in minutes, e.g. ``"1440m"``); :meth:`from_mapping` reads it back."""
        return {
            "notification_start_days": self.notification_start_days,
            "frequency": f"{int(self.frequency.total_seconds()) // 60}m",
            "email_enabled": self.email_enabled,
            "lsc_monitoring": self.lsc_monitoring,
            "emails": ";".join(self.addresses),
        }


# ---------------------------------------------------------------------------------------------
# Certificates and schedule (R-MON-2)


class CertKey(NamedTuple):
    """Identity of one certificate version for notification tracking."""

    unit: str
    name: str
    cert_type: CertType
    not_after: dt.datetime


@dataclass(frozen=True)
class MonitoredCert:
    """A certificate the monitor watches.

    ``unit`` is the identity unit (own-cert) or trust store (trust-cert) as the alarm's
    ``Unit:`` field shows it; ``name`` is the file name the alarm shows (e.g. ``tomcat.pem``).
    ``is_lsc`` marks locally significant certificates, skipped when LSC monitoring is off.
    """

    unit: str
    name: str
    not_after: dt.datetime
    cert_type: CertType
    is_lsc: bool = False

    def __post_init__(self) -> None:
        if self.not_after.tzinfo is None:
            raise ValueError("not_after must be timezone-aware")

    @property
    def key(self) -> CertKey:
        return CertKey(self.unit, self.name, self.cert_type, self.not_after)


def monitored(certs: Iterable[MonitoredCert], settings: MonitorSettings) -> list[MonitoredCert]:
    """The certificates the monitor considers under ``settings`` (LSCs only with LSC monitoring on)."""
    return [c for c in certs if settings.lsc_monitoring or not c.is_lsc]


def is_urgent(at: dt.datetime, certs: Iterable[MonitoredCert], settings: MonitorSettings | None = None) -> bool:
    """True when some monitored certificate has expired or expires within one day of ``at`` (R-MON-2)."""
    return any(c.not_after - at <= URGENT_WITHIN for c in monitored(certs, settings or MonitorSettings()))


def interval(at: dt.datetime, certs: Iterable[MonitoredCert], settings: MonitorSettings | None = None) -> dt.timedelta:
    """The run interval that applies at ``at``: hourly when :func:`is_urgent`, else 24 h (R-MON-2)."""
    return HOURLY if is_urgent(at, certs, settings) else DAILY


def next_run(
    last_run: dt.datetime,
    certs: Iterable[MonitoredCert],
    *,
    restarted_at: dt.datetime | None = None,
    settings: MonitorSettings | None = None,
) -> dt.datetime:
    """When the monitor runs next (R-MON-2).

    ``last_run`` is when it last ran. If the node (or monitor) restarted since, pass
    ``restarted_at``: the next run is then counted from the restart, 24 h later in the
    normal cadence (one hour in the hourly cadence, see the module docstring).
    """
    base = last_run if restarted_at is None or restarted_at < last_run else restarted_at
    return base + interval(base, list(certs), settings)


# ---------------------------------------------------------------------------------------------
# Warnings (R-MON-1, R-MON-3)


def java_date(t: dt.datetime) -> str:
    """``t`` as Java's ``Date.toString()`` in UTC (``EEE MMM dd HH:mm:ss zzz yyyy``), locale-free.

    >>> java_date(dt.datetime(2021, 3, 30, 2, 19, 31, tzinfo=dt.UTC))
    'Tue Mar 30 02:19:31 UTC 2021'
    """
    u = t.astimezone(dt.UTC)
    return f"{_DAYS[u.weekday()]} {_MONTHS[u.month - 1]} {u.day:02d} {u:%H:%M:%S} UTC {u.year}"


def alarm_text(name: str, unit: str, cert_type: CertType, not_after: dt.datetime, node_id: str) -> str:
    """The product's syslog alarm for one certificate (R-MON-3), exactly as the product formats it."""
    return (
        f"{ALARM_PREFIX}: %[Message=Certificate expiration Notification. Certificate name:{name} "
        f"Unit:{unit} Type:{cert_type} Expiration:{java_date(not_after)}][AppID={APP_ID}][NodeID={node_id}]"
    )


@dataclass(frozen=True)
class Mail:
    """An e-mail to send for one warning (certsim's wording; DOMAIN.md does not give the product's)."""

    to: tuple[str, ...]
    subject: str
    body: str


@dataclass(frozen=True)
class ExpiryWarning:
    """One certificate due for a warning at ``at``."""

    cert: MonitoredCert
    at: dt.datetime
    node_id: str

    @property
    def expired(self) -> bool:
        return self.at > self.cert.not_after

    @property
    def alarm(self) -> str:
        """The syslog line (R-MON-3)."""
        return alarm_text(self.cert.name, self.cert.unit, self.cert.cert_type, self.cert.not_after, self.node_id)

    def mail(self, to: Iterable[str]) -> Mail:
        """The notification e-mail for this warning to ``to`` (R-MON-3)."""
        state = "has expired" if self.expired else "is about to expire"
        subject = f"Certificate expiration Notification: {self.cert.name} ({self.cert.unit}) on {self.node_id}"
        body = (
            f"Certificate expiration Notification.\n"
            f"The certificate {self.cert.name} on {self.node_id} {state}.\n\n"
            f"Certificate name: {self.cert.name}\n"
            f"Unit: {self.cert.unit}\n"
            f"Type: {self.cert.cert_type}\n"
            f"Expiration: {java_date(self.cert.not_after)}\n"
            f"Node: {self.node_id}\n"
            f"Checked at: {java_date(self.at)}\n\n"
            f"-- {APP_ID}\n"
        )
        return Mail(tuple(to), subject, body)


@dataclass(frozen=True)
class MonitorResult:
    """What one run produced: warnings (one syslog alarm each), mails, and the updated tracking."""

    warnings: tuple[ExpiryWarning, ...]
    mails: tuple[Mail, ...]
    last_notified: Mapping[CertKey, dt.datetime]

    @property
    def alarms(self) -> tuple[str, ...]:
        return tuple(w.alarm for w in self.warnings)


def evaluate(
    now: dt.datetime,
    certs: Iterable[MonitoredCert],
    settings: MonitorSettings,
    last_notified: Mapping[CertKey, dt.datetime],
    *,
    node_id: str,
) -> MonitorResult:
    """The warnings due at ``now`` (R-MON-1, R-MON-3).

    A certificate is due when ``now >= not_after - notification_start_days`` and it was
    never warned, or its last warning is at least ``settings.frequency`` ago. Expired
    certificates stay due. Warnings are ordered by expiry, then unit and name. The returned
    ``last_notified`` holds only certificates still present (a deleted or replaced one is
    forgotten). One mail per warning when e-mail notification is on.
    """
    start = dt.timedelta(days=settings.notification_start_days)
    present = sorted(monitored(certs, settings), key=lambda c: (c.not_after, c.unit, c.name, c.cert_type))
    tracked: dict[CertKey, dt.datetime] = {}
    due: list[ExpiryWarning] = []
    for cert in present:
        previous = last_notified.get(cert.key)
        if previous is not None:
            tracked[cert.key] = previous
        if now < cert.not_after - start:
            continue
        if previous is None or now - previous >= settings.frequency:
            due.append(ExpiryWarning(cert, now, node_id))
            tracked[cert.key] = now
    mails = tuple(w.mail(settings.addresses) for w in due) if settings.email_enabled else ()
    return MonitorResult(tuple(due), mails, tracked)


# ---------------------------------------------------------------------------------------------
# State the agent keeps between runs


@dataclass(frozen=True)
class MonitorState:
    """The monitor's memory: when it ran, when it runs next, and when each certificate was warned."""

    next_run: dt.datetime
    last_run: dt.datetime | None = None
    last_notified: Mapping[CertKey, dt.datetime] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the node's database; :meth:`from_dict` reads it back."""
        return {
            "next_run": self.next_run.isoformat(),
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "last_notified": [
                [k.unit, k.name, str(k.cert_type), k.not_after.isoformat(), t.isoformat()]
                for k, t in sorted(self.last_notified.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MonitorState:
        try:
            notified = {
                CertKey(unit, name, CertType(kind), dt.datetime.fromisoformat(na)): dt.datetime.fromisoformat(t)
                for unit, name, kind, na, t in data.get("last_notified", [])
            }
            last = data.get("last_run")
            return cls(
                next_run=dt.datetime.fromisoformat(data["next_run"]),
                last_run=dt.datetime.fromisoformat(last) if last else None,
                last_notified=notified,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"malformed monitor state: {exc}") from None


def started(
    now: dt.datetime,
    certs: Iterable[MonitoredCert],
    settings: MonitorSettings,
    previous: MonitorState | None = None,
) -> MonitorState:
    """The state after the node (or monitor) starts or restarts at ``now`` (R-MON-2).

    The next run is one interval later (24 h in the normal cadence); notification history
    from ``previous`` is kept so a restart does not repeat warnings early.
    """
    last = previous.last_run if previous else None
    return MonitorState(
        next_run=next_run(last or now, certs, restarted_at=now, settings=settings),
        last_run=last,
        last_notified=dict(previous.last_notified) if previous else {},
    )


def run(
    state: MonitorState,
    at: dt.datetime,
    certs: Iterable[MonitoredCert],
    settings: MonitorSettings,
    *,
    node_id: str,
) -> tuple[MonitorResult, MonitorState]:
    """One run of the monitor at ``at`` (normally ``state.next_run``): warnings, then the next run time."""
    cert_list = list(certs)
    result = evaluate(at, cert_list, settings, state.last_notified, node_id=node_id)
    return result, MonitorState(
        next_run=next_run(at, cert_list, settings=settings), last_run=at, last_notified=result.last_notified
    )
