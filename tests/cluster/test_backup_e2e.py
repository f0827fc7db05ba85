"""DRS backup and restore (R-DRS-1/2): restore puts identities back; a stale one locks phones;
another security password is refused and changes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cluster import backup
from cluster.lab import Lab
from cluster.phones import fleet
from node.errors import Refused
from tests.conftest import LabFactory, small_lab

pytestmark = pytest.mark.parametrize("broker", ["embedded"], indirect=True)


async def _fp(lab: Lab, node: str, unit: str) -> str:
    rows = await lab.request(node, "identity_list", {})
    return str(next(r["sha256"] for r in rows if r["unit"] == unit))


async def test_stale_backup_locks_phones_and_itl_reset_recovers(make_lab: LabFactory) -> None:
    """R-DRS-1: a restore brings back the backup's identities and keys. R-DRS-2: taken before a
    CallManager and TVS regeneration, it locks phones holding the new ITL; ITLRecovery is unchanged,
    so a bulk ITL reset recovers them (R-PHONE-3). Release 10.5: the ITL is signed by CallManager."""
    # before 12.0 the ITL signer is CallManager (Cisco TAC 214231; ReleaseProfile.itl_signer)
    spec = small_lab("bk", nodes=2, imp=0, release="10.5", phones={"count": 4, "nodes": ["cucm1"]})
    lab = await make_lab(spec)
    phones = await fleet(lab)
    before = await _fp(lab, "cucm1", "CallManager")
    made = await backup.create(lab, "before-regen")
    assert made["nodes"] == ["cucm1", "cucm2"]
    assert [b["name"] for b in backup.list_backups(lab)] == ["before-regen"]
    assert not any(b"PRIVATE KEY" in p.read_bytes() for p in (lab.lab_dir / "backups").rglob("*.drs"))

    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await phones.settle()
    await lab.request("cucm1", "regen", {"unit": "TVS"})
    await phones.settle()
    assert phones.summary()["states"] == {"registered": 4}, phones.summary()

    result = await backup.restore(lab, "before-regen")
    assert set(result["restored"]) == {"cucm1", "cucm2"}
    assert await _fp(lab, "cucm1", "CallManager") == before
    await phones.settle()
    assert phones.summary()["states"] == {"registered-old-config": 4}, phones.summary()

    recovered = await phones.itl_reset("remotekey", recovery_key_file=await backup.remotekey_reset_file(lab))
    assert recovered["states"] == {"registered": 4}, recovered


async def test_from_release_12_a_stale_backup_with_the_same_itlrecovery_keeps_phones_registered(
    make_lab: LabFactory,
) -> None:
    """R-DRS-1/R-DRS-2 and R-PHONE-1/2 on release 15: the ITL is signed by ITLRecovery, which the backup
    taken before a CallManager and TVS regeneration holds unchanged, so restoring it locks nobody."""
    # Cisco TAC 214231: from 12.0 the ITL is signed by the ITLRecovery certificate (Security Guide 15, "ITL file")
    spec = small_lab("bk15", nodes=2, imp=0, release="15", phones={"count": 4, "nodes": ["cucm1"]})
    lab = await make_lab(spec)
    phones = await fleet(lab)
    before = await _fp(lab, "cucm1", "CallManager")
    await backup.create(lab, "before-regen")
    await lab.request("cucm1", "regen", {"unit": "CallManager"})
    await phones.settle()
    await lab.request("cucm1", "regen", {"unit": "TVS"})
    await phones.settle()
    assert await _fp(lab, "cucm1", "CallManager") != before

    await backup.restore(lab, "before-regen")
    assert await _fp(lab, "cucm1", "CallManager") == before
    await phones.settle()
    await phones.reset()
    assert phones.summary()["states"] == {"registered": 4}, phones.summary()


async def test_restore_under_another_security_password_is_refused(make_lab: LabFactory, tmp_path: Path) -> None:
    """R-DRS-1: a restore needs the security password the backup was taken with; refused, nothing changes."""
    first = await make_lab(small_lab("pw", nodes=1, imp=0), subdir="one")
    await backup.create(first, "b1")
    other = small_lab("pw", nodes=1, imp=0)
    other = type(other)(**{**other.__dict__, "security_password": "another-password"})
    second = await make_lab(other, subdir="two")
    shutil.copytree(first.lab_dir / "backups", second.lab_dir / "backups")
    fp = await _fp(second, "cucm1", "CallManager")
    with pytest.raises(Refused, match="another cluster security password"):
        await backup.restore(second, "b1")
    assert await _fp(second, "cucm1", "CallManager") == fp
