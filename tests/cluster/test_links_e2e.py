"""Real TLS links on loopback (R-LINK-1..5): a verdict only after a handshake, naming what is missing."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from cluster.labca import LabCA
from cluster.links import LinkSpec, check_link
from node.errors import BadInput, Unavailable
from tests.conftest import LabFactory, small_lab

EMBEDDED = pytest.mark.parametrize("broker", ["embedded"], indirect=True)  # the broker does not matter here


def link(lab_nodes: tuple[str, ...], **args: object) -> LinkSpec:
    return LinkSpec.from_args({"from": args.pop("src"), **args}, lab_nodes)


async def _upload(lab: object, node: str, store: str, pem: bytes) -> None:
    await lab.request(node, "upload", {"store": store, "data": base64.b64encode(pem).decode()})  # type: ignore[attr-defined]


@EMBEDDED
async def test_links_fail_naming_the_missing_certificate_and_recover(make_lab: LabFactory) -> None:
    """R-LINK-1 (tomcat), R-LINK-2 (SIP gateway), R-LINK-3 (LDAP in tomcat-trust), R-LINK-5 (IM&P to Unified CM)."""
    lab = await make_lab(small_lab("ln", nodes=2, imp=1))
    names = lab.spec.node_names
    ca = LabCA(lab.clock)

    ok = await check_link(lab, link(names, kind="tomcat", src="cucm1", to="cucm2"), ca)
    assert ok.ok, ok.detail
    assert ok.tls["version"] in ("TLSv1.2", "TLSv1.3")
    imp = await check_link(lab, link(names, kind="imp", src="imp1", to="cucm1"), ca)
    assert imp.ok and "mutual" in imp.detail, imp.detail

    # R-LINK-3: the directory's issuer is not in tomcat-trust yet
    ca.create_ca("LdapRoot", cn="certsim LDAP Root")
    ca.issue("ldap", issuer="LdapRoot", cn="ldap.lab.example", san=["ldap.lab.example"], days=2)
    bad = await check_link(lab, link(names, kind="ldap", src="cucm2", to="ldap"), ca)
    assert not bad.ok
    assert bad.missing == "tomcat-trust on cucm2 lacks 'ldap.lab.example' (or its issuer 'certsim LDAP Root')"
    await _upload(lab, "cucm1", "tomcat-trust", ca.get("LdapRoot").pem())
    assert (await lab.converge()).converged
    good = await check_link(lab, link(names, kind="ldap", src="cucm2", to="ldap"), ca)
    assert good.ok, good.detail

    # R-LINK-2: a SIP gateway with a lab-CA certificate; each side must trust the other
    ca.create_ca("GwRoot", cn="certsim Gateway Root")
    ca.issue("gw", issuer="GwRoot", cn="gw1.lab.example")
    sip = await check_link(lab, link(names, kind="sip", src="cucm1", to="gw"), ca)
    assert (
        not sip.ok and sip.missing is not None and "CallManager-trust on cucm1 lacks 'gw1.lab.example'" in sip.missing
    )
    await _upload(lab, "cucm1", "CallManager-trust", ca.get("GwRoot").pem())
    assert (await lab.converge()).converged
    sip = await check_link(lab, link(names, kind="sip", src="cucm1", to="gw"), ca)
    assert sip.ok, sip.detail
    stranger = await check_link(lab, link(names, kind="sip", src="cucm1", to="gw", trusts=["LdapRoot"]), ca)
    assert not stranger.ok
    assert stranger.missing is not None and stranger.missing.startswith("the trust list of gateway gw lacks")

    # dates are judged at the lab's simulated time, not the wall clock
    await lab.advance(dt.timedelta(days=3))
    late = await check_link(lab, link(names, kind="ldap", src="cucm2", to="ldap"), ca)
    assert not late.ok and "expired" in late.detail, late.detail

    # R-LINK-1 / R-TS-1: a peer's tomcat deleted from tomcat-trust breaks the link
    rows = await lab.request("cucm1", "list", {"store": "tomcat-trust"})
    peer = next(r["name"] for r in rows if r["cn"] == "cucm2.lab.example")  # the RSA tomcat, not -EC
    await lab.request("cucm1", "delete", {"store": "tomcat-trust", "name": peer})
    assert (await lab.converge()).converged
    broken = await check_link(lab, link(names, kind="tomcat", src="cucm1", to="cucm2"), ca)
    assert (
        not broken.ok and broken.missing is not None and broken.missing.startswith("tomcat-trust on cucm1 lacks 'cucm2")
    )


def test_bad_link_specs_are_refused() -> None:
    with pytest.raises(BadInput, match="unknown link kind"):
        LinkSpec.from_args({"kind": "ftp", "from": "a", "to": "b"}, ["a", "b"])
    with pytest.raises(BadInput, match="must be a node"):
        LinkSpec.from_args({"kind": "tomcat", "from": "a", "to": "zz"}, ["a", "b"])
    with pytest.raises(BadInput, match="for sip links only"):
        LinkSpec.from_args({"kind": "ldap", "from": "a", "to": "west/b"}, ["a", "b"])
    with pytest.raises(BadInput, match="<cluster>/<node>"):
        LinkSpec.from_args({"kind": "sip", "from": "a", "to": "west/"}, ["a", "b"])


@EMBEDDED
async def test_sip_trunk_between_two_clusters_needs_each_others_callmanager(make_lab: LabFactory) -> None:
    """R-LINK-2 between clusters: each cluster's CallManager-trust must hold the other's CallManager certificate."""
    east = await make_lab(small_lab("east", nodes=1, imp=0, domain="east.example"), subdir="east")
    west = await make_lab(small_lab("west", nodes=1, imp=0, domain="west.example"), subdir="west")
    ca = LabCA(east.clock)
    trunk = LinkSpec.from_args({"kind": "sip", "from": "cucm1", "to": "west/cucm1"}, east.spec.node_names)
    first = await check_link(east, trunk, ca)
    assert not first.ok and first.missing == "CallManager-trust on east/cucm1 lacks 'cucm1.west.example'"

    async def cm_pem(lab: object) -> bytes:
        got = await lab.request("cucm1", "download", {"store": "CallManager", "format": "pem"})  # type: ignore[attr-defined]
        return base64.b64decode(got["data"])

    await _upload(east, "cucm1", "CallManager-trust", await cm_pem(west))
    half = await check_link(east, trunk, ca)
    assert not half.ok and half.missing == "CallManager-trust on west/cucm1 lacks 'cucm1.east.example'"
    await _upload(west, "cucm1", "CallManager-trust", await cm_pem(east))
    assert (await check_link(east, trunk, ca)).ok
    with pytest.raises(Unavailable, match="cluster 'north' is not running"):
        await check_link(east, LinkSpec("sip", "cucm1", "north/cucm1"), ca)
