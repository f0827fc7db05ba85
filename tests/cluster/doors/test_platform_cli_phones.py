"""The platform CLI's phone, CTL and DRS commands: they run on the publisher and ask the lab."""

from __future__ import annotations

from tests.cluster.doors.test_platform_cli import FakeNode, make_cli, run


async def test_itl_reset_ctl_mode_and_drs_commands() -> None:
    """R-PHONE-3, R-PHONE-5, R-DRS-1: utils itl reset, utils ctl set-cluster, utils disaster_recovery."""
    node = FakeNode(
        **{
            "@lab:itl_reset": {"states": {"registered": 20}},
            "@lab:ctl": {"mode": "mixed"},
            "@lab:backup_create": {"name": "b1", "taken_at": "2026-01-01T00:00:00Z", "nodes": ["cucm1", "cucm2"]},
            "@lab:backup_restore": {"restored": {"cucm2": {"taken_at": "2026-01-01T00:00:00Z"}}},
            "@lab:backup_list": {"backups": [{"name": "b1", "taken_at": "2026-01-01T00:00:00Z"}]},
            "@lab:itl_show": {
                "kind": "ITL",
                "serial": 3,
                "signer": {"cn": "cucm1.lab.example", "role": "CCM+TFTP"},
                "records": [{"role": "TVS", "host": "cucm1", "cn": "TVS-cucm1.lab.example"}],
            },
            "@lab:ctl_show": {"mode": "non-secure"},
        }
    )
    cli = make_cli(node)
    out = await run(cli, "utils itl reset localkey")
    assert "Successfully reset the ITL file with the ITLRecovery key of this publisher" in out
    assert "Phones reset: 20 registered" in out
    assert node.calls[-1] == ("@lab:itl_reset", {"source": "localkey"})
    out = await run(cli, "utils ctl set-cluster mixed-mode")
    assert out.endswith("The cluster is now in mixed-mode.\n")
    out = await run(cli, "utils disaster_recovery backup network b1")
    assert out.startswith("Backup initiated successfully. Backup b1 taken at 2026-01-01T00:00:00Z of cucm1, cucm2.")
    out = await run(cli, "utils disaster_recovery restore network b1 cucm2")
    assert node.calls[-1] == ("@lab:backup_restore", {"name": "b1", "nodes": ["cucm2"]})
    assert "cucm2 restored to the backup taken at 2026-01-01T00:00:00Z" in out
    assert "b1" in await run(cli, "utils disaster_recovery history backup")
    out = await run(cli, "show itl")
    assert out == (
        "ITL file: serial 3, signed by cucm1.lab.example (CCM+TFTP)\n"
        "   1  TVS          cucm1                        TVS-cucm1.lab.example\n"
    )
    assert node.calls[-1] == ("@lab:itl_show", {"node": "cucm1"})
    assert await run(cli, "show ctl") == "The cluster is in non-secure mode: there is no CTL file\n"
    out = await run(cli, "utils itl reset sideways")
    assert out.endswith("Executed command unsuccessfully\n")
    node.answers["status"] = {"publisher": False, "role": "cucm"}
    out = await run(cli, "utils itl reset localkey")
    assert "only be executed on the Unified CM publisher" in out
    assert node.calls[-1][0] == "status"
