"""Phones in a running lab: boot, automatic reset after a regeneration, lockout and bulk ITL reset."""

from __future__ import annotations

import base64
import json

import pytest

from cluster.labops_phones import OPS
from cluster.phones import PhoneFleet, fleet
from node import certs
from node.phone import State
from tests.conftest import LabFactory, small_lab

pytestmark = pytest.mark.parametrize("broker", ["embedded"], indirect=True)


def _states(summary: dict[str, object]) -> dict[str, int]:
    states = summary["states"]
    assert isinstance(states, dict)
    return states


async def test_phones_follow_a_callmanager_regen_then_lock_and_recover(make_lab: LabFactory) -> None:
    """R-PHONE-1/2/3/4: TOFU at first boot; CallManager regenerated with automatic reset: every phone
    registered on the new ITL; CallManager and TVS together with manual reset: locked; bulk ITL reset
    with the unchanged ITLRecovery key: registered again. R-PHONE-5: `show ctl` before and after
    `utils ctl set-cluster mixed-mode`. Release 10.5: the ITL is signed by the TFTP node's CallManager
    certificate, so CallManager and TVS together lock the phones."""
    # before 12.0 the ITL signer is CallManager (Cisco TAC 214231; ReleaseProfile.itl_signer)
    spec = small_lab("ph", nodes=2, imp=0, release="10.5", phones={"count": 6, "model": "8845"})
    lab = await make_lab(spec)
    f = await fleet(lab)
    assert _states(f.summary()) == {"registered": 6}

    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await f.settle()
    assert _states(f.summary()) == {"registered": 6}, f.summary()
    pub_phones = [p for p in f.phones.values() if p.node == "cucm1"]
    material = await lab.request("cucm1", "phone_material", {})
    new_cm = certs.der_sha256(base64.b64decode(material["certs"]["CallManager"]))
    assert all(p.itl_file is not None and p.itl_file.signed_by == new_cm for p in pub_phones)
    assert any("automatically" in e for e in f.events)

    await lab.request(
        "cucm1", "param_set", {"name": "Phone Interaction on Certificate Update", "value": "Reset Phones Manually"}
    )
    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await lab.request("cucm1", "regen", {"unit": "TVS"})
    await f.settle()
    assert _states(f.summary()) == {"registered": 6}  # nobody reset yet
    await f.reset()
    locked = [p for p in f.phones.values() if p.state is State.LOCKED]
    assert {p.node for p in locked} == {"cucm1"} and len(locked) == 3, f.summary()
    assert all("Trust List Update Failed" in p.reason for p in locked)

    result = await f.itl_reset("localkey")
    assert result["states"] == {"registered": 6}, result

    shown = await f.show_itl("cucm2")  # `show itl`: what cucm2's TFTP serves (R-PHONE-1)
    assert shown["signer"]["role"] == "CCM+TFTP" and [r["role"] for r in shown["records"]].count("TVS") == 2

    # the phones survive the lab process: phones.json keeps each phone and each distinct file once
    again = PhoneFleet(lab)
    assert again.booted and again.phones == f.phones
    saved = json.loads((lab.lab_dir / "phones.json").read_text())
    assert len(saved["files"]) == 2  # one ITL per TFTP node, shared by its phones

    # `show ctl` (R-PHONE-5): none in non-secure mode; after set-cluster mixed-mode, the tokenless CTL
    # signed with ITLRecovery, listing every node's CallManager, CAPF and ITLRecovery, no TVS
    assert await OPS["ctl_show"](lab, {}) == {"mode": "non-secure"}
    await f.ctl("mixed-mode")
    ctl = await OPS["ctl_show"](lab, {})
    assert ctl["mode"] == "mixed" and ctl["kind"] == "CTL" and ctl["signer"]["role"] == "ITLRecovery"
    assert sorted(r["role"] for r in ctl["records"]) == ["CAPF", "CCM+TFTP", "CCM+TFTP", "ITLRecovery"]


async def test_from_release_12_the_itl_is_signed_by_itlrecovery_and_callmanager_with_tvs_does_not_lock(
    make_lab: LabFactory,
) -> None:
    """R-PHONE-1/2/3/4 on release 15: every TFTP node's ITL is signed by the ITLRecovery certificate, so
    regenerating CallManager and TVS together (manual reset) leaves every phone registered while
    ITLRecovery is unchanged; ITLRecovery and TVS together make the phones of that TVS refuse the new ITL,
    and CallManager regenerated on top locks them."""
    # Cisco TAC 214231 "Certificate Regeneration Process for CUCM": 12.0+ the ITL is signed by the
    # ITLRecovery certificate; Security Guide release 15, "ITL file": "ITLRecovery Certificate—This
    # certificate signs the ITL File".
    spec = small_lab("ph15", nodes=2, imp=0, release="15", phones={"count": 6, "model": "8845"})
    lab = await make_lab(spec)
    f = await fleet(lab)
    assert _states(f.summary()) == {"registered": 6}
    pub = await lab.request("cucm1", "phone_material", {})
    recovery = certs.der_sha256(base64.b64decode(pub["certs"]["ITLRecovery"]))
    for node in ("cucm1", "cucm2"):
        shown = await f.show_itl(node)
        assert shown["signer"]["role"] == "ITLRecovery" and shown["signer"]["sha256"] == recovery, shown

    await lab.request(
        "cucm1", "param_set", {"name": "Phone Interaction on Certificate Update", "value": "Reset Phones Manually"}
    )
    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await lab.request("cucm1", "regen", {"unit": "TVS"})
    await f.settle()
    await f.reset()
    assert _states(f.summary()) == {"registered": 6}, f.summary()
    pub = await lab.request("cucm1", "phone_material", {})
    new_cm = certs.der_sha256(base64.b64decode(pub["certs"]["CallManager"]))
    pub_phones = [p for p in f.phones.values() if p.node == "cucm1"]
    assert all(p.itl_file is not None and p.itl_file.holds(new_cm) for p in pub_phones)
    assert all(p.itl_file is not None and p.itl_file.signed_by == recovery for p in pub_phones)

    # ITLRecovery and TVS together: the new ITL is refused, but configuration files are still signed by a
    # CallManager the phones' ITL holds, so they stay registered on the old ITL; CallManager too locks them
    await lab.request("cucm1", "regen", {"unit": "ITLRecovery"})
    await lab.request("cucm1", "regen", {"unit": "TVS"})
    await f.settle()
    await f.reset()
    assert _states(f.summary()) == {"registered": 6}, f.summary()
    assert all(any("ITL rejected" in e for e in p.history) for p in f.phones.values() if p.node == "cucm1")
    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await f.settle()
    await f.reset()
    locked = [p for p in f.phones.values() if p.state is State.LOCKED]
    assert {p.node for p in locked} == {"cucm1"} and len(locked) == 3, f.summary()
    assert all("Trust List Update Failed" in p.reason for p in locked)


async def test_from_release_12_a_subscriber_serves_its_last_itl_while_the_publisher_is_down(
    make_lab: LabFactory,
) -> None:
    """R-PHONE-1 on release 15: the ITLRecovery key that signs every ITL is the publisher's. With the
    publisher down a subscriber's TFTP serves the last ITL it was given (its phones stay registered);
    with none to serve, its phones are unregistered and the reason names the missing signer."""
    # Cisco TAC 214231: from 12.0 the ITL is signed by the ITLRecovery certificate (Security Guide 15)
    spec = small_lab("phdown", nodes=2, imp=0, release="15", phones={"count": 4, "model": "8845"})
    lab = await make_lab(spec)
    f = await fleet(lab)
    assert _states(f.summary()) == {"registered": 4}
    await lab.stop_node("cucm1")
    sub_phones = [n for n, p in f.phones.items() if p.node == "cucm2"]
    await f.reset(sub_phones)
    assert {f.phones[n].state for n in sub_phones} == {State.REGISTERED}, f.summary()

    fresh = PhoneFleet(lab)  # a new lab process: no ITL was handed to cucm2's TFTP yet
    await fresh.reset(sub_phones)
    assert {fresh.phones[n].state for n in sub_phones} == {State.UNREGISTERED}
    assert all("ITLRecovery key" in fresh.phones[n].reason for n in sub_phones), fresh.summary()
