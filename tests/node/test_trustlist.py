"""ITL and CTL files: real signed TLV files, built and checked with cryptography."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import trustlist
from node.catalog import RELEASES
from node.errors import BadInput
from node.trustlist import FileKind, Role
from tests.node.phone_fixtures import MiniCluster, ident

CLUSTER = MiniCluster()
ITL = CLUSTER.itl()  # EC signatures are randomised: one file for the property test


def test_itl_lists_tftp_signer_every_tvs_capf_and_itlrecovery() -> None:
    """R-PHONE-1: the TFTP node's CallManager (its signer), every TVS, CAPF and ITLRecovery; signed."""
    f = trustlist.parse(CLUSTER.itl("sub"), expect=FileKind.ITL)
    assert f.signed_by == CLUSTER.cm["sub"].sha
    assert f.signer_role is Role.TFTP
    assert [r.sha256 for r in f.certs_of(Role.TFTP)] == [CLUSTER.cm["sub"].sha]
    assert {r.sha256 for r in f.certs_of(Role.TVS)} == {CLUSTER.tvs["pub"].sha, CLUSTER.tvs["sub"].sha}
    assert CLUSTER.capf and CLUSTER.itlr
    assert [r.sha256 for r in f.certs_of(Role.CAPF)] == [CLUSTER.capf.sha]
    assert [r.sha256 for r in f.certs_of(Role.ITL_RECOVERY)] == [CLUSTER.itlr.sha]
    assert not f.holds(CLUSTER.cm["pub"].sha)  # another node's CallManager is not in this node's ITL


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_the_itl_signer_follows_the_release_profile(release: str) -> None:
    """R-PHONE-1: before 12.0 (10.5) the ITL is signed by the TFTP node's CallManager certificate, from
    12.0 (12.5, 14, 15) by ITLRecovery; configuration files always by CallManager, the CTL and bulk reset
    by ITLRecovery. One table holds it: ReleaseProfile.itl_signer."""
    # Cisco TAC 214231 "Certificate Regeneration Process for CUCM": "8.X - 11.5.X the ITL is signed by the
    # Call Manager Certificate ... 12.0+ the ITL is signed by the ITLRecovery Certificate" (Security Guide 15)
    profile = RELEASES[release]
    major = int(release.split(".", maxsplit=1)[0])
    expected = "CallManager" if major < 12 else "ITLRecovery"
    assert trustlist.signer_unit(FileKind.ITL, profile) == expected
    assert trustlist.signer_unit(FileKind.CONFIG, profile) == "CallManager"
    assert trustlist.signer_unit(FileKind.CTL, profile) == "ITLRecovery"
    assert trustlist.signer_unit(FileKind.ITL_RESET, profile) == "ITLRecovery"
    c = MiniCluster(release=profile)
    itl = trustlist.parse(c.itl("sub"), expect=FileKind.ITL)
    signer = c.cm["sub"] if major < 12 else c.itlr
    assert signer is not None and itl.signed_by == signer.sha
    assert itl.signer_role is trustlist.SIGNER_ROLES[expected]


def test_ctl_lists_callmanagers_capf_itlrecovery_and_is_signed_by_itlrecovery() -> None:
    """R-PHONE-5: tokenless CTL signed with ITLRecovery; every node's CallManager, CAPF, ITLRecovery; no TVS."""
    f = trustlist.parse(CLUSTER.ctl(), expect=FileKind.CTL)
    assert CLUSTER.itlr
    assert f.signed_by == CLUSTER.itlr.sha
    assert {r.sha256 for r in f.certs_of(Role.TFTP)} == {CLUSTER.cm["pub"].sha, CLUSTER.cm["sub"].sha}
    assert not f.certs_of(Role.TVS)
    assert len(f.certs_of(Role.CAPF)) == 1
    assert len(f.certs_of(Role.ITL_RECOVERY)) == 1


def test_a_tampered_record_fails_the_signature() -> None:
    data = bytearray(CLUSTER.itl())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(BadInput):
        trustlist.parse(bytes(data), expect=FileKind.ITL)


def test_a_file_resigned_by_another_key_names_its_signer_mismatch() -> None:
    other = ident("CallManager", "rogue")
    raw = CLUSTER.itl()
    # keep the original signer certificate but sign with another key: the signature must not match
    f = trustlist.parse(raw)
    forged = trustlist.build(FileKind.ITL, Role.TFTP, CLUSTER.cm["pub"].cert, other.key, records=f.records)
    with pytest.raises(BadInput, match="signature does not match"):
        trustlist.parse(forged)


def test_kind_is_checked() -> None:
    with pytest.raises(BadInput, match="this is a CTL file"):
        trustlist.parse(CLUSTER.ctl(), expect=FileKind.ITL)


def test_describe_shows_roles() -> None:
    shown = trustlist.describe(trustlist.parse(CLUSTER.itl()))
    assert shown["kind"] == "ITL"
    roles = [r["role"] for r in shown["records"]]  # type: ignore[attr-defined]
    assert roles.count("TVS") == 2


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_mutation_or_truncation_is_refused_cleanly(data: st.DataObject) -> None:
    """Garbage in a trust list file is a BadInput, never another exception and never accepted altered."""
    raw = bytearray(ITL)
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if data.draw(st.booleans()):
        mutated = bytes(raw[:cut])
    else:
        raw[cut] ^= data.draw(st.integers(min_value=1, max_value=255))
        mutated = bytes(raw)
    with pytest.raises(BadInput):
        trustlist.parse(mutated)
