"""Certificate Expiry Monitor core: settings (R-MON-1), schedule (R-MON-2), warnings (R-MON-3)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from node.errors import BadInput
from node.monitor import (
    DAILY,
    HOURLY,
    CertType,
    MonitoredCert,
    MonitorSettings,
    MonitorState,
    alarm_text,
    evaluate,
    java_date,
    next_run,
    parse_emails,
    run,
    started,
)

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2021, 3, 20, 2, 19, 31, tzinfo=dt.UTC)  # so the 10-day certificate expires Tue Mar 30 02:19:31


def own(name: str, days: float, unit: str = "tomcat", *, lsc: bool = False) -> MonitoredCert:
    return MonitoredCert(unit, name, T0 + dt.timedelta(days=days), CertType.OWN, is_lsc=lsc)


EXAMPLE = (
    own("tomcat.pem", 10),
    MonitoredCert("CallManager-trust", "lab-root.pem", T0 + 40 * DAY, CertType.TRUST),
    own("ipsec.pem", 400, unit="ipsec"),
)


def simulate(
    certs: tuple[MonitoredCert, ...], settings: MonitorSettings, days: int
) -> tuple[list[dt.datetime], list[tuple[dt.datetime, str]], int]:
    """Start the monitor at T0 and step its scheduler until T0 + days: (run times, (time, cert) warnings, mails)."""
    state = started(T0, certs, settings)
    runs: list[dt.datetime] = []
    warned: list[tuple[dt.datetime, str]] = []
    mails = 0
    while state.next_run <= T0 + days * DAY:
        at = state.next_run
        result, state = run(state, at, certs, settings, node_id="cucm1")
        runs.append(at)
        warned += [(w.at, w.cert.name) for w in result.warnings]
        mails += len(result.mails)
    return runs, warned, mails


def test_issue_example_sixty_days_of_alarms_at_the_expected_times() -> None:
    """R-MON-1/R-MON-3: start 30 days, frequency 1 day; certificates expiring in 10, 40, 400 days.

    The 10-day certificate is warned at every daily run from the first (T0+1d, it is already
    inside the 30-day window) and keeps being warned daily after it expired; the 40-day one
    from T0+10d (40 - 30) on; the 400-day one never within 60 days. One mail per alarm.
    """
    settings = MonitorSettings(notification_start_days=30, frequency=DAY, email_enabled=True, emails="pki@lab.test")
    _runs, warned, mails = simulate(EXAMPLE, settings, 60)
    expected = sorted(
        [(T0 + k * DAY, "tomcat.pem") for k in range(1, 61)] + [(T0 + k * DAY, "lab-root.pem") for k in range(10, 61)]
    )
    assert sorted(warned) == expected
    assert mails == len(expected) == 60 + 51
    assert all(name != "ipsec.pem" for _, name in warned)


def test_cadence_is_daily_then_hourly_from_the_last_day_before_expiry() -> None:
    """R-MON-2: runs every 24 h; once a certificate expires within one day (or has expired), every hour."""
    settings = MonitorSettings(notification_start_days=30, frequency=DAY)
    runs, _warned, _ = simulate(EXAMPLE, settings, 60)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    expiry = T0 + 10 * DAY
    assert runs[:9] == [T0 + k * DAY for k in range(1, 10)]  # daily up to T0+9d, one day before expiry
    assert set(gaps[:8]) == {DAILY}
    assert set(gaps[8:]) == {HOURLY}  # hourly from T0+9d on, also after expiry
    last_day = [t for t in runs if expiry - DAY <= t <= expiry]
    assert last_day == [expiry - DAY + h * HOURLY for h in range(25)]
    assert runs[-1] == T0 + 60 * DAY


def test_cadence_returns_to_daily_when_the_expired_certificate_is_gone() -> None:
    """R-MON-2: the hourly cadence lasts while a certificate is expired or within a day of expiry."""
    expired = own("old.pem", -3)
    assert next_run(T0, [expired, own("ok.pem", 400)]) == T0 + HOURLY
    assert next_run(T0, [own("ok.pem", 400)]) == T0 + DAILY
    assert next_run(T0, [own("soon.pem", 1)]) == T0 + HOURLY  # exactly one day left counts as "within one day"
    assert next_run(T0, [own("later.pem", 1.01)]) == T0 + DAILY


def test_restart_moves_the_next_run_a_day_after_the_restart() -> None:
    """R-MON-2: after a restart the next run is 24 h later (counted from the restart, not the last run)."""
    certs = [own("tomcat.pem", 200)]
    assert next_run(T0, certs, restarted_at=T0 + 5 * HOURLY) == T0 + 29 * HOURLY
    state = started(T0 + 5 * HOURLY, certs, MonitorSettings(), MonitorState(next_run=T0 + DAY, last_run=T0))
    assert state.next_run == T0 + 29 * HOURLY
    assert state.last_run == T0
    # in the hourly cadence a restart does not hide an expired certificate for a day
    assert next_run(T0, [own("gone.pem", -1)], restarted_at=T0 + 5 * HOURLY) == T0 + 6 * HOURLY


def test_restart_keeps_notification_history() -> None:
    """R-MON-1: frequency counts from the last warning, across a restart of the monitor."""
    settings = MonitorSettings(frequency=DAY)
    certs = [own("tomcat.pem", 5)]
    result, state = run(MonitorState(next_run=T0), T0, certs, settings, node_id="n1")
    assert len(result.warnings) == 1
    state = started(T0 + 2 * HOURLY, certs, settings, state)
    result, _ = run(state, T0 + 20 * HOURLY, certs, settings, node_id="n1")
    assert result.warnings == ()  # only 20 h since the last warning


def test_alarm_text_is_the_products() -> None:
    """R-MON-3: the syslog line has the product's alarm format and Java date format."""
    warning = evaluate(T0, [own("tomcat.pem", 10)], MonitorSettings(), {}, node_id="cucm1").warnings[0]
    assert warning.alarm == (
        "%UC_CERT-0-CertExpired: %[Message=Certificate expiration Notification. Certificate name:tomcat.pem "
        "Unit:tomcat Type:own-cert Expiration:Tue Mar 30 02:19:31 UTC 2021][AppID=Cisco Certificate Monitor]"
        "[NodeID=cucm1]"
    )
    trust = alarm_text("root.pem", "tomcat-trust", CertType.TRUST, T0, "imp1")
    assert "Unit:tomcat-trust Type:trust-cert Expiration:Sat Mar 20 02:19:31 UTC 2021][" in trust
    assert java_date(dt.datetime(2024, 1, 5, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == (
        "Fri Jan 05 05:08:09 UTC 2024"
    )


def test_frequency_spaces_repeated_warnings() -> None:
    """R-MON-1: after the first warning the next comes only once ``frequency`` has passed."""
    settings = MonitorSettings(notification_start_days=30, frequency=dt.timedelta(days=3))
    certs = [own("tomcat.pem", 20)]
    notified: dict = {}
    times = []
    for h in range(24 * 8):
        at = T0 + h * HOURLY
        result = evaluate(at, certs, settings, notified, node_id="n")
        notified = dict(result.last_notified)
        times += [w.at for w in result.warnings]
    assert times == [T0, T0 + 3 * DAY, T0 + 6 * DAY]


def test_window_start_is_not_after_minus_start_days() -> None:
    """R-MON-1: no warning before not_after - notification start; a warning at that instant."""
    settings = MonitorSettings(notification_start_days=30)
    cert = own("tomcat.pem", 40)
    assert evaluate(T0 + 10 * DAY - dt.timedelta(seconds=1), [cert], settings, {}, node_id="n").warnings == ()
    assert len(evaluate(T0 + 10 * DAY, [cert], settings, {}, node_id="n").warnings) == 1


def test_renewed_certificate_is_a_new_certificate_and_deleted_ones_are_forgotten() -> None:
    """R-MON-3: tracking is per certificate version; a certificate that left the node is dropped."""
    settings = MonitorSettings()
    first = evaluate(T0, [own("tomcat.pem", 10)], settings, {}, node_id="n")
    renewed = own("tomcat.pem", 25)
    again = evaluate(T0 + HOURLY, [renewed], settings, first.last_notified, node_id="n")
    assert [w.cert for w in again.warnings] == [renewed]
    assert list(again.last_notified) == [renewed.key]


def test_lsc_monitoring_off_skips_lscs_for_warnings_and_cadence() -> None:
    """R-MON-1/R-MON-2: with LSC monitoring off an expiring LSC neither warns nor makes runs hourly."""
    lsc = own("SEP001122334455.pem", 0.5, unit="CAPF-trust", lsc=True)
    off = MonitorSettings(lsc_monitoring=False)
    assert evaluate(T0, [lsc], off, {}, node_id="n").warnings == ()
    assert next_run(T0, [lsc], settings=off) == T0 + DAILY
    assert len(evaluate(T0, [lsc], MonitorSettings(), {}, node_id="n").warnings) == 1
    assert next_run(T0, [lsc]) == T0 + HOURLY


def test_mails_only_when_enabled_and_name_the_certificate() -> None:
    """R-MON-3: e-mail notification on sends one mail per warning to every configured address."""
    certs = [own("tomcat.pem", -2)]
    quiet = evaluate(T0, certs, MonitorSettings(emails="a@lab.test"), {}, node_id="cucm1")
    assert quiet.mails == ()
    enabled = MonitorSettings(email_enabled=True, emails="a@lab.test; b@lab.test")
    loud = evaluate(T0, certs, enabled, {}, node_id="cucm1")
    (mail,) = loud.mails
    assert mail.to == ("a@lab.test", "b@lab.test")
    assert "tomcat.pem" in mail.subject and "cucm1" in mail.subject
    assert "has expired" in mail.body and "Expiration: Thu Mar 18 02:19:31 UTC 2021" in mail.body


def test_email_addresses_are_parsed_and_validated() -> None:
    """R-MON-1: addresses are separated by ';'; blanks skipped, duplicates dropped, bad ones refused."""
    assert parse_emails(" a@lab.test;b.c+d@mail.example.com ;; A@lab.test;") == ("a@lab.test", "b.c+d@mail.example.com")
    assert parse_emails("") == ()
    for bad in ("no-at-sign", "a@b@c", "a@-bad.com", "a b@lab.test", "a@lab.test, b@lab.test"):
        with pytest.raises(BadInput, match="not a valid e-mail address"):
            parse_emails(f"ok@lab.test;{bad}")


def test_settings_validation_and_mapping() -> None:
    """R-MON-1: defaults, clear errors for bad values, and the CLI/scenario mapping form."""
    default = MonitorSettings()
    assert (default.notification_start_days, default.frequency, default.email_enabled, default.lsc_monitoring) == (
        30,
        DAY,
        False,
        True,
    )
    with pytest.raises(BadInput, match="no e-mail address"):
        MonitorSettings(email_enabled=True)
    with pytest.raises(BadInput, match="notification start"):
        MonitorSettings(notification_start_days=-1)
    with pytest.raises(BadInput, match="at least one hour"):
        MonitorSettings(frequency=dt.timedelta(minutes=5))
    changed = MonitorSettings.from_mapping({"frequency": "12h", "emails": ["x@lab.test"], "email_enabled": True})
    assert changed.frequency == dt.timedelta(hours=12) and changed.addresses == ("x@lab.test",)
    assert MonitorSettings.from_mapping(changed.to_dict()) == changed
    with pytest.raises(BadInput, match="unknown monitor setting"):
        MonitorSettings.from_mapping({"frequncy": "1d"})
    with pytest.raises(BadInput, match="duration"):
        MonitorSettings.from_mapping({"frequency": "daily"})


def test_state_round_trips_through_json() -> None:
    """R-MON-2: the monitor's state survives a restart of the node through its database."""
    _, state = run(MonitorState(next_run=T0), T0, EXAMPLE, MonitorSettings(), node_id="n")
    assert MonitorState.from_dict(state.to_dict()) == state
    with pytest.raises(BadInput, match="malformed monitor state"):
        MonitorState.from_dict({"last_notified": []})
