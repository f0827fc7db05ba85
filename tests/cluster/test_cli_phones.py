"""certsim phone / itl / ctl / backup / link on a running lab, as a user runs them (real processes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scenarios import shipped_dir
from tests.cluster.test_cli_e2e import certsim

PHONES_LAB = shipped_dir() / "labs" / "phones.yaml"


def _json(*args: str, home: Path) -> dict[str, object]:
    out = json.loads(certsim(*args, "--json", home=home).stdout)
    assert isinstance(out, dict)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["embedded"], indirect=True)
def test_phone_backup_and_link_verbs(tmp_path: Path, broker: object) -> None:
    """R-PHONE-1/3, R-DRS-1, R-LINK-1 through the CLI: phones boot on `lab up`'s first phone verb;
    backups are listed; a restore under the lab's password succeeds; a TLS link check exits 0 or
    1 naming the missing certificate."""
    home = tmp_path / "home"
    certsim("lab", "up", str(PHONES_LAB), home=home)
    try:
        listed = _json("phone", "list", home=home)
        assert listed["summary"] == {"phones": 20, "states": {"registered": 20}, "reasons": {}, "events": []}
        one = json.loads(certsim("phone", "show", "SEP000000000002", home=home).stdout)
        assert one["node"] == "cucm-sub1" and [r["role"] for r in one["itl"]["records"]].count("TVS") == 2

        made = _json("backup", "create", "b1", home=home)
        assert made["nodes"] == ["cucm-pub", "cucm-sub1", "imp-pub"]
        assert [b["name"] for b in _json("backup", "list", home=home)["backups"]] == ["b1"]  # type: ignore[index]
        restored = _json("backup", "restore", "b1", "--node", "cucm-sub1", home=home)
        assert list(restored["restored"]) == ["cucm-sub1"]  # type: ignore[call-overload]
        bad = certsim("backup", "restore", "nope", home=home, check=False)
        assert bad.returncode != 0 and "no backup named 'nope'" in bad.stderr

        reset = _json("itl", "reset", "localkey", home=home)
        assert reset["states"] == {"registered": 20} and reset["itl_reset"] == "localkey"

        ok = certsim("link", "check", "tomcat", "--from", "cucm-pub", "--to", "cucm-sub1", home=home)
        assert ok.stdout.startswith("ok:")
        rows = json.loads(
            certsim("cert", "list", "--node", "cucm-pub", "--store", "tomcat-trust", "--json", home=home).stdout
        )
        peer = next(r["name"] for r in rows if r["cn"] == "cucm-sub1.lab.example")
        certsim("cert", "delete", "--node", "cucm-pub", "--store", "tomcat-trust", peer, home=home)
        broken = certsim("link", "check", "tomcat", "--from", "cucm-pub", "--to", "cucm-sub1", home=home, check=False)
        assert broken.returncode == 1
        assert "tomcat-trust on cucm-pub lacks 'cucm-sub1.lab.example'" in broken.stdout
    finally:
        certsim("lab", "down", home=home, check=False)
