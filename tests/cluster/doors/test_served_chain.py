"""The HTTPS door serves the uploaded chain (leaf + intermediates), as the product's Tomcat does (issue 14)."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl

import pytest

from cluster.labca import LabCA
from node import certs
from tests.cluster.doors.test_rest import Api, lab_with_doors, served_sha
from tests.conftest import LabFactory


async def test_https_serves_leaf_and_intermediates_to_a_root_only_client(make_lab: LabFactory) -> None:
    """R-OP-UPLOAD-3/4: after a CA-signed tomcat certificate (issued by an intermediate) is uploaded and
    Tomcat restarts, HTTPS presents leaf + intermediate: openssl s_client sees both, and a client that
    trusts only the root verifies the server (it could not with the leaf alone)."""
    lab = await lab_with_doors(make_lab)
    doors = lab.doors["cucm1"]
    api = Api(doors)
    ca = LabCA(lab.clock)
    root = ca.create_ca("ChainRoot")
    inter = ca.create_ca("ChainIssuing", issuer="ChainRoot")
    csr = await api.post("csr", {"service": "tomcat"})
    leaf = ca.sign_csr("chain-tomcat", issuer="ChainIssuing", csr_pem=csr["csr"].encode())
    await api.post("trust/certificates", {"service": ["tomcat"], "certificates": [root.pem().decode()]})
    await api.post("trust/certificates", {"service": ["tomcat"], "certificates": [inter.pem().decode()]})
    await api.post("identity/certificates", {"service": "tomcat", "certificates": [leaf.pem().decode()]})
    await lab.request("cucm1", "service_restart", {"name": "Cisco Tomcat", "seconds": 0})
    assert await served_sha(doors) == certs.fingerprint(leaf.cert)
    assert doors.tls.identity is not None
    assert doors.tls.identity.material.cert_pem.count(b"BEGIN CERTIFICATE") == 2

    root_only = ssl.create_default_context(cadata=root.pem().decode())
    status, snap, _ = await api.call("GET", "snapshot/server", ctx=root_only, server_hostname="cucm1.lab.example")
    assert status == 200 and snap["server"] == "cucm1.lab.example"

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary")
    proc = await asyncio.create_subprocess_exec(
        openssl,
        "s_client",
        "-connect",
        f"{doors.https.host}:{doors.https.port}",
        "-servername",
        "cucm1.lab.example",
        "-showcerts",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    text = out.decode(errors="replace")
    served = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.DOTALL)
    assert [certs.fingerprint(certs.load_certificates(p.encode())[0]) for p in served] == [
        certs.fingerprint(leaf.cert),
        certs.fingerprint(inter.cert),
    ], text
