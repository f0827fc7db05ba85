"""The phone state machine: ITL trust on first use, TVS vouching, locked phones, bulk reset, CTL, LSC."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from node import certs
from node.catalog import RELEASES
from node.phone import Phone, State, boot, issue_lsc, lsc_problem, phone_key
from tests.node.phone_fixtures import NOW, MiniCluster


def fresh_phone(**kw: object) -> Phone:
    return Phone("SEP000000000001", "8845", "pub", **kw)  # type: ignore[arg-type]


def booted(c: MiniCluster, phone: Phone | None = None, *, mixed: bool = False, tvs_up: bool = True) -> Phone:
    return boot(phone or fresh_phone(), c.offer(mixed=mixed), c.tvs_services(tvs_up)[:1], c.registrar())


def test_new_phone_trusts_the_first_itl() -> None:
    """R-PHONE-1: a phone with no ITL accepts the first one it downloads, then registers."""
    c = MiniCluster()
    p = booted(c)
    assert p.state is State.REGISTERED
    assert p.itl_file is not None and p.itl_file.signed_by == c.cm["pub"].sha
    assert any("first use" in h for h in p.history)


def test_callmanager_regen_is_vouched_by_tvs() -> None:
    """R-PHONE-2: a new signer the phone does not know is vouched by its TVS; the phone takes the new ITL."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    p2 = booted(c, p)
    assert p2.state is State.REGISTERED, p2.reason
    assert p2.itl_file is not None and p2.itl_file.signed_by == c.cm["pub"].sha
    assert any("vouched by TVS pub" in h for h in p2.history)


def test_unreachable_tvs_rejects_the_new_signer_and_keeps_the_old_itl() -> None:
    """R-PHONE-2: no TVS reachable: the file is rejected and the phone keeps its old ITL (locked, R-PHONE-3)."""
    c = MiniCluster()
    p = booted(c)
    old_itl = p.itl
    c.regen("CallManager")
    p2 = booted(c, p, tvs_up=False)
    assert p2.itl == old_itl
    assert p2.state is State.LOCKED
    assert "no TVS in its ITL is reachable" in p2.reason


def test_callmanager_and_tvs_together_lock_the_phone() -> None:
    """R-PHONE-3/4 on release 10.5 (ITL signed by CallManager): CallManager and TVS regenerated together:
    the TVS is no longer one the ITL knows; locked."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    c.regen("TVS")
    p2 = booted(c, p)
    assert p2.state is State.LOCKED
    assert p2.config_sha == p.config_sha  # keeps running its old configuration
    assert "Trust List Update Failed" in p2.reason


def test_from_release_12_callmanager_and_tvs_together_do_not_lock_the_phone() -> None:
    """R-PHONE-1/2/4 on release 15: the new ITL is signed by the ITLRecovery certificate the phone's ITL
    holds, so CallManager and TVS regenerated together leave it registered on the new ITL."""
    # Cisco TAC 214231: "release 12.0+ the ITL is signed by the ITLRecovery Certificate" (Security Guide 15)
    c = MiniCluster(release=RELEASES["15"])
    p = booted(c)
    c.regen("CallManager")
    c.regen("TVS")
    p2 = booted(c, p)
    assert p2.state is State.REGISTERED, p2.reason
    assert p2.itl_file is not None and p2.itl_file.holds(c.cm["pub"].sha)
    assert c.itlr is not None and p2.itl_file.signed_by == c.itlr.sha


def test_from_release_12_itlrecovery_callmanager_and_tvs_together_lock_the_phone() -> None:
    """R-PHONE-2/3 on release 15: with ITLRecovery, CallManager and TVS all new, neither the ITL nor a TVS
    it knows vouches for the new signer: locked, running its old configuration."""
    # Cisco TAC 214231 / Security Guide 15: the 12.0+ ITL signer is ITLRecovery
    c = MiniCluster(release=RELEASES["15"])
    p = booted(c)
    for unit in ("ITLRecovery", "CallManager", "TVS"):
        c.regen(unit)
    p2 = booted(c, p)
    assert p2.state is State.LOCKED and "Trust List Update Failed" in p2.reason
    assert p2.config_sha == p.config_sha


def test_one_at_a_time_with_a_reset_between_is_safe() -> None:
    """R-PHONE-4: regenerate CallManager, reset phones, then TVS, reset again: still registered."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    p = booted(c, p)
    c.regen("TVS")
    p = booted(c, p)
    assert p.state is State.REGISTERED, p.reason


def test_bulk_itl_reset_with_unchanged_itlrecovery_recovers_a_locked_phone() -> None:
    """R-PHONE-3: utils itl reset: a file signed with the ITLRecovery key still in the ITL erases it; TOFU again."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    c.regen("TVS")
    locked = booted(c, p)
    assert locked.state is State.LOCKED
    recovered = boot(locked, c.offer(reset=c.reset_file()), c.tvs_services()[:1], c.registrar())
    assert recovered.state is State.REGISTERED, recovered.reason
    assert any("bulk ITL reset" in h for h in recovered.history)


def test_bulk_itl_reset_signed_by_a_new_itlrecovery_is_ignored() -> None:
    """R-PHONE-3 / R-DRS-2: once ITLRecovery changed, the phone ignores the reset; it stays locked."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    c.regen("TVS")
    c.regen("ITLRecovery")
    locked = booted(c, p)
    still = boot(locked, c.offer(reset=c.reset_file()), c.tvs_services()[:1], c.registrar())
    assert still.state is State.LOCKED
    assert any("reset ignored" in h for h in still.history)


def test_erasing_the_itl_by_hand_recovers() -> None:
    """R-PHONE-3: the settings menu erases the ITL; the next boot trusts the offered one."""
    c = MiniCluster()
    p = booted(c)
    c.regen("CallManager")
    c.regen("TVS")
    locked = booted(c, p)
    assert booted(c, locked.erased()).state is State.REGISTERED


def test_mixed_mode_rejects_a_new_signer_until_the_ctl_is_updated() -> None:
    """R-PHONE-5: with a CTL, files from a regenerated CallManager are rejected until utils ctl update CTLFile."""
    c = MiniCluster()
    p = booted(c, mixed=True)
    assert p.ctl is not None and p.state is State.REGISTERED
    stale_ctl = c.ctl()
    c.regen("CallManager")
    p2 = boot(p, c.offer(ctl=stale_ctl), c.tvs_services()[:1], c.registrar())
    assert p2.state is State.LOCKED
    assert "not in the phone's CTL" in p2.reason
    p3 = booted(c, p2, mixed=True)  # the CTL file updated: signed by ITLRecovery, which the old CTL holds
    assert p3.state is State.REGISTERED, p3.reason


def test_secure_phone_needs_mixed_mode_and_a_trusted_lsc() -> None:
    """R-PHONE-6 / R-LINK-4: secure registration needs a CTL holding the node's CallManager and a trusted LSC."""
    c = MiniCluster()
    assert c.capf is not None
    p = fresh_phone(secure=True)
    assert booted(c, p).state is State.UNREGISTERED
    key = phone_key()
    lsc = issue_lsc(p.name, key.public_key(), c.capf.cert, c.capf.key, NOW)
    p = Phone(p.name, p.model, p.node, secure=True, lsc=certs.der_of(lsc))
    missing = lsc_problem(p.lsc, [], NOW, "CallManager-trust")
    assert missing is not None and "CallManager-trust lacks the LSC issuer" in missing
    reg = c.registrar(lsc_problem=missing)
    refused = boot(p, c.offer(mixed=True), c.tvs_services()[:1], reg)
    assert refused.state is State.UNREGISTERED and "lacks the LSC issuer" in refused.reason
    assert lsc_problem(p.lsc, [c.capf.cert], NOW, "CallManager-trust") is None
    ok = boot(p, c.offer(mixed=True), c.tvs_services()[:1], c.registrar())
    assert ok.state is State.REGISTERED


def test_capf_certificate_is_a_ca_limited_to_leaf_certificates() -> None:
    """R-PHONE-6: the CAPF certificate carries CA:TRUE, pathlen:0 and keyCertSign (the 14SU2 security
    guide: without them TLS fails), and the LSC it issues chains to it."""
    c = MiniCluster()
    assert c.capf is not None
    bc = c.capf.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert (bc.critical, bc.value.ca, bc.value.path_length) == (True, True, 0)
    assert c.capf.cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lsc = issue_lsc("SEP1", phone_key().public_key(), c.capf.cert, c.capf.key, NOW)
    assert lsc_problem(certs.der_of(lsc), [c.capf.cert], NOW, "CallManager-trust") is None


def test_lsc_checks_validity_and_presence() -> None:
    """R-PHONE-6: no LSC and an expired LSC are refused with the reason."""
    c = MiniCluster()
    assert c.capf is not None
    assert "no LSC" in (lsc_problem(None, [c.capf.cert], NOW, "CallManager-trust") or "")
    lsc = issue_lsc("SEP1", phone_key().public_key(), c.capf.cert, c.capf.key, NOW)
    later = NOW + dt.timedelta(days=6 * 365)
    assert "expired" in (lsc_problem(certs.der_of(lsc), [c.capf.cert], later, "CallManager-trust") or "")


def test_unit_node_down_unregisters() -> None:
    c = MiniCluster()
    reg = c.registrar()
    down = type(reg)(reg.host, reg.cm_cert_sha, reg.lsc_problem, up=False)
    p = boot(fresh_phone(), c.offer(), c.tvs_services(), down)
    assert p.state is State.UNREGISTERED and "not running" in p.reason
