"""Certificate-operation verbs of the certsim CLI, run as a user runs them against a background lab."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.cluster.test_cli_e2e import DEMO_LAB, certsim


@pytest.fixture
def lab_home(tmp_path: Path) -> Iterator[Path]:
    """The demo lab up in the background (embedded broker) under a private CERTSIM_HOME."""
    home = tmp_path / "home"
    certsim("lab", "up", str(DEMO_LAB), home=home)
    try:
        yield home
    finally:
        certsim("lab", "down", home=home, check=False)


def test_verbs_are_registered(tmp_path: Path) -> None:
    """Every certificate-operation verb has its help (csr, ca, cert regen/upload --purpose, service, key, node)."""
    for args in (
        ("csr", "--help"),
        ("ca", "--help"),
        ("cert", "regen", "--help"),
        ("service", "--help"),
        ("key", "regen", "authz", "--help"),
        ("node", "check-remote", "--help"),
    ):
        assert "Usage" in certsim(*args, home=tmp_path).stdout
    assert "--purpose" in certsim("cert", "upload", "--help", home=tmp_path).stdout


@pytest.mark.slow
def test_third_party_flow_regen_services_and_check_from_the_cli(lab_home: Path, tmp_path: Path) -> None:
    """R-OP-CSR-1, R-OP-UPLOAD-1..4, R-OP-REGEN-1, R-SVC-1, R-OP-AUTHZ, R-TS-1 through the CLI verbs."""
    home = lab_home
    csr_file = tmp_path / "tomcat.csr"
    certsim("csr", "gen", "--node", "cucm-sub1", "--unit", "tomcat", "-o", str(csr_file), home=home)
    csr = x509.load_pem_x509_csr(csr_file.read_bytes())
    assert csr.is_signature_valid
    downloaded = certsim("csr", "download", "--node", "cucm-sub1", "--unit", "tomcat", home=home).stdout
    assert downloaded.encode() == csr_file.read_bytes()

    ca_dir = tmp_path / "ca"
    certsim("ca", "create", "CliRoot", "--ca-dir", str(ca_dir), home=home)
    assert (ca_dir / "CliRoot.pem").exists() and (ca_dir / "CliRoot.key").exists()
    signed = tmp_path / "signed.pem"
    certsim(
        "ca", "sign", "sub1-tomcat", "--issuer", "CliRoot", "--csr", str(csr_file), "--ca-dir", str(ca_dir),
        "-o", str(signed), home=home,
    )  # fmt: skip
    refused = certsim(
        "cert", "upload", "--node", "cucm-sub1", "--purpose", "tomcat", str(signed), home=home, check=False
    )
    assert refused.returncode == 1
    assert "not trusted" in refused.stderr
    certsim(
        "cert", "upload", "--node", "cucm-sub1", "--store", "tomcat-trust", str(ca_dir / "CliRoot.pem"),
        "--description", "root from the CLI", home=home,
    )  # fmt: skip
    out = certsim(
        "cert", "upload", "--node", "cucm-sub1", "--purpose", "tomcat", str(signed), "--json",
        "--description", "tomcat from the CLI", home=home,
    )  # fmt: skip
    result = json.loads(out.stdout)
    trust = json.loads(certsim("cert", "list", "--node", "cucm-sub1", "--cn", "CliRoot", "--json", home=home).stdout)
    assert [r.get("description") for r in trust] == ["root from the CLI"]  # the dialog's Description, CLI side
    assert result["source"] == "ca-signed"
    assert "Cisco Tomcat" in result["restart"]

    rows = json.loads(certsim("service", "list", "--node", "cucm-sub1", "--json", home=home).stdout)
    tomcat = next(r for r in rows if r["name"] == "Cisco Tomcat")
    assert tomcat["restart_pending"] is True
    listed = certsim("cert", "list", "--node", "cucm-sub1", "--store", "tomcat", "--json", home=home).stdout
    assert "Cisco Tomcat" in json.loads(listed)[0]["restart_pending"]  # R-OP-UPLOAD-4 in cert list
    assert json.loads(listed)[0]["description"] == "tomcat from the CLI"
    table = certsim("cert", "list", "--node", "cucm-sub1", "--usage", "identity", home=home).stdout
    assert "restart pending" in table
    certsim("service", "restart", "--node", "cucm-sub1", "Cisco Tomcat", home=home)
    rows = json.loads(certsim("service", "list", "--node", "cucm-sub1", "--json", home=home).stdout)
    assert next(r for r in rows if r["name"] == "Cisco Tomcat")["restart_pending"] is False

    regen = certsim("cert", "regen", "--node", "cucm-pub", "--unit", "CAPF", home=home).stdout
    assert "Successfully regenerated certificate for CAPF." in regen
    assert "CTL" in regen

    authz = certsim("key", "regen", "authz", "encryption", home=home).stdout
    assert "regenerated the authz encryption key" in authz
    wrong = certsim("key", "regen", "authz", "signing", "--node", "cucm-sub2", home=home, check=False)
    assert wrong.returncode == 1 and "publisher" in wrong.stderr

    ok = certsim("node", "check-remote", "--node", "cucm-pub", "--peer", "cucm-sub1", home=home)
    assert "Connected to cucm-sub1" in ok.stdout
