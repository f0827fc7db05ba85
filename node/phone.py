"""A phone's trust decisions, pure: what it does at boot with the files its TFTP node offers.

Phones are cheap state machines (a lab holds hundreds), not agents: ``boot`` takes a phone,
the files offered (ITL, CTL in mixed mode, its signed configuration, a pending bulk ITL
reset), the TVS services it can reach and its Unified CM node's side of registration, and
returns the phone afterwards with its state and the reason. Rule IDs refer to DOMAIN.md:
R-PHONE-1 (ITL, trust on first use), R-PHONE-2 (TVS vouching), R-PHONE-3 (locked phone,
bulk reset), R-PHONE-5 (CTL in mixed mode), R-PHONE-6 / R-LINK-4 (LSC, secure registration).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node import certs
from node.catalog import KU
from node.trustlist import FileKind, Role, SignedFile, parse

HISTORY_KEPT = 20
# R-PHONE-1/2: who may sign a new ITL. The phone does not know the release: it accepts a signer its
# ITL (or CTL) holds in either role, and asks TVS otherwise (Cisco TAC 214231; Security Guide 15).
ITL_SIGNER_ROLES = (Role.TFTP, Role.ITL_RECOVERY)  # the events a phone remembers (what `phone show` prints)


class State(StrEnum):
    REGISTERED = "registered"
    LOCKED = "registered-old-config"  # R-PHONE-3: runs its old configuration, takes no new one
    UNREGISTERED = "unregistered"


@functools.lru_cache(maxsize=256)
def _parse(data: bytes, kind: FileKind) -> SignedFile:
    """Hundreds of phones are offered the same few files: parse and check each once."""
    return parse(data, expect=kind)


@dataclass(frozen=True)
class Phone:
    name: str  # SEP<MAC>
    model: str
    node: str  # the Unified CM node it registers to; its TFTP server too
    secure: bool = False  # an encrypted device security profile: TLS registration with its LSC
    itl: bytes | None = None
    ctl: bytes | None = None
    config_sha: str | None = None  # the configuration it runs
    lsc: bytes | None = None  # DER of its locally significant certificate (R-PHONE-6)
    state: State = State.UNREGISTERED
    reason: str = "not booted yet"
    history: tuple[str, ...] = field(default=(), compare=False)

    @property
    def itl_file(self) -> SignedFile | None:
        return None if self.itl is None else _parse(self.itl, FileKind.ITL)

    @property
    def ctl_file(self) -> SignedFile | None:
        return None if self.ctl is None else _parse(self.ctl, FileKind.CTL)

    def erased(self) -> Phone:
        """Settings > Security > Reset Security Settings: the ITL and CTL go (R-PHONE-3)."""
        return replace(self, itl=None, ctl=None, history=(*self.history, "trust lists erased by hand"))


@dataclass(frozen=True)
class TftpOffer:
    """What the phone's TFTP node serves it: raw signed files."""

    host: str
    itl: bytes
    config: bytes
    ctl: bytes | None = None  # mixed mode only
    itl_reset: bytes | None = None  # `utils itl reset localkey|remotekey` pending


@dataclass(frozen=True)
class Tvs:
    """A Trust Verification Service: the certificate it serves and what it vouches for (its
    own cluster's CallManager, TVS, CAPF and ITLRecovery certificates, R-PHONE-2)."""

    host: str
    cert_sha: str
    vouches: frozenset[str]
    reachable: bool = True


@dataclass(frozen=True)
class Registrar:
    """The Unified CM node's side of registration: the CallManager certificate it presents over
    TLS, and its verdict on a phone's LSC (None when CallManager-trust holds its issuer)."""

    host: str
    cm_cert_sha: str
    lsc_problem: Callable[[bytes | None], str | None]
    up: bool = True


def _cn(der: bytes) -> str:
    return certs.common_name(x509.load_der_x509_certificate(der).subject) or "(no CN)"


def _trust_problem(
    f: SignedFile, roles: Iterable[Role], itl: SignedFile | None, ctl: SignedFile | None, tvs: Sequence[Tvs]
) -> tuple[str | None, str]:
    """(problem, how) for a downloaded file: known from the CTL (mixed mode), the ITL, or a TVS."""
    roles = tuple(roles)
    what = f"{f.kind.value} signer {_cn(f.signer_der)!r}"
    if ctl is not None:  # R-PHONE-5: in mixed mode the CTL authenticates TFTP files
        if ctl.holds(f.signed_by, roles):
            return None, "CTL"
        return f"{what} is not in the phone's CTL (run utils ctl update CTLFile)", ""
    if itl is None:
        return None, "no trust list"
    if itl.holds(f.signed_by, roles):
        return None, "ITL"
    usable = [t for t in tvs if itl.holds(t.cert_sha, [Role.TVS])]
    if not usable:
        return f"{what} is not in the phone's ITL, and no TVS it knows serves a certificate in its ITL", ""
    reachable = [t for t in usable if t.reachable]
    if not reachable:
        return f"{what} is not in the phone's ITL, and no TVS in its ITL is reachable", ""
    for t in reachable:
        if f.signed_by in t.vouches:
            return None, f"vouched by TVS {t.host}"
    return f"{what} is not in the phone's ITL and TVS {reachable[0].host} does not vouch for it", ""


def boot(phone: Phone, offer: TftpOffer, tvs: Sequence[Tvs], registrar: Registrar) -> Phone:
    """A reset: bulk ITL reset, CTL, ITL, configuration, then registration (R-PHONE-1..6)."""
    notes: list[str] = []
    itl = phone.itl_file
    ctl = phone.ctl_file
    itl_raw, ctl_raw = phone.itl, phone.ctl
    # R-PHONE-3: a bulk reset file signed with the ITLRecovery key the phone's ITL still holds
    if offer.itl_reset is not None and itl is not None:
        reset = _parse(offer.itl_reset, FileKind.ITL_RESET)
        if itl.holds(reset.signed_by, [Role.ITL_RECOVERY]):
            itl, itl_raw = None, None
            notes.append("ITL erased by the bulk ITL reset (signed with the ITLRecovery key in its ITL)")
        else:
            notes.append("bulk ITL reset ignored: its signer is not the ITLRecovery certificate in the phone's ITL")
    # R-PHONE-5: the CTL (mixed mode); the first one is trusted, later ones must be signed by a member
    if offer.ctl is not None:
        new_ctl = _parse(offer.ctl, FileKind.CTL)
        if ctl is None:
            ctl, ctl_raw = new_ctl, offer.ctl
            notes.append("CTL installed (first CTL: trusted on first use)")
        elif new_ctl.sha256 != ctl.sha256:
            if ctl.holds(new_ctl.signed_by, [Role.ITL_RECOVERY, Role.TFTP]):
                ctl, ctl_raw = new_ctl, offer.ctl
                notes.append("CTL updated")
            else:
                notes.append(f"CTL update rejected: signer {_cn(new_ctl.signer_der)!r} is not in the phone's CTL")
    # R-PHONE-1/2: the ITL
    new_itl = _parse(offer.itl, FileKind.ITL)
    itl_problem: str | None = None
    if itl is None and ctl is None:
        itl, itl_raw = new_itl, offer.itl
        notes.append(f"ITL from {offer.host} accepted on first use")
    elif itl is None or new_itl.sha256 != itl.sha256:
        # signed by the TFTP node's CallManager (before 12.0) or by ITLRecovery (from 12.0, Cisco TAC 214231)
        itl_problem, how = _trust_problem(new_itl, ITL_SIGNER_ROLES, itl, ctl, tvs)
        if itl_problem is None:
            itl, itl_raw = new_itl, offer.itl
            notes.append(f"new ITL from {offer.host} accepted ({how})")
        else:
            notes.append(f"ITL rejected: {itl_problem}")
    # the configuration file, checked against the (possibly new) ITL
    cfg = _parse(offer.config, FileKind.CONFIG)
    cfg_problem, _how = _trust_problem(cfg, [Role.TFTP], itl, ctl, tvs)
    config_sha = phone.config_sha
    if cfg_problem is None:
        config_sha = hashlib.sha256(cfg.body).hexdigest()
    history = (*phone.history, *notes)[-HISTORY_KEPT:]
    after = replace(phone, itl=itl_raw, ctl=ctl_raw, config_sha=config_sha, history=history)
    if cfg_problem is not None and phone.config_sha is None:
        return _set(after, State.UNREGISTERED, f"Trust List Update Failed: {cfg_problem}; no configuration to run")
    if not registrar.up:
        return _set(after, State.UNREGISTERED, f"Unified CM node {registrar.host} is not running")
    if phone.secure:  # R-LINK-4: TLS both ways
        problem = _secure_problem(after, registrar)
        if problem is not None:
            return _set(after, State.UNREGISTERED, problem)
    if cfg_problem is not None:
        return _set(after, State.LOCKED, f"Trust List Update Failed: {cfg_problem}")
    return _set(after, State.REGISTERED, f"registered to {registrar.host}" + (" (secure, LSC)" if phone.secure else ""))


def _secure_problem(phone: Phone, registrar: Registrar) -> str | None:
    ctl = phone.ctl_file
    if ctl is None:
        return "secure registration needs the cluster in mixed mode (no CTL on the phone)"
    if not ctl.holds(registrar.cm_cert_sha, [Role.TFTP]):
        return (
            f"the phone's CTL lacks the CallManager certificate {registrar.host} presents"
            " (run utils ctl update CTLFile)"
        )
    return registrar.lsc_problem(phone.lsc)


def _set(phone: Phone, state: State, reason: str) -> Phone:
    return replace(phone, state=state, reason=reason)


# ---------------------------------------------------------------------------------------------
# LSC (R-PHONE-6)

LSC_VALIDITY_DAYS = 5 * 365


def phone_key() -> ec.EllipticCurvePrivateKey:
    """A phone's key pair: P-256 (cheap enough for hundreds of phones)."""
    return ec.generate_private_key(ec.SECP256R1())


def issue_lsc(
    phone_name: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate,
    issuer_key: certs.PrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    """A locally significant certificate for ``phone_name``, signed by CAPF (or a CA CAPF uses)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, phone_name)]))
        .issuer_name(issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LSC_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(certs.key_usage([KU.DS, KU.KE]), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(issuer_key, hashes.SHA256())
    )


def lsc_problem(lsc_der: bytes | None, trusted: Sequence[x509.Certificate], now: dt.datetime, store: str) -> str | None:
    """R-PHONE-6 / R-LINK-4: the node accepts a phone's LSC when ``store`` holds its issuer."""
    if lsc_der is None:
        return "no LSC on the phone: install one through CAPF (authentication string)"
    lsc = x509.load_der_x509_certificate(lsc_der)
    problem = certs.validity_problem(lsc, now)
    if problem:
        return f"the phone's LSC is {problem}"
    for ca in trusted:
        if ca.subject != lsc.issuer:
            continue
        try:
            lsc.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception):  # noqa: S112 - another CA with the same name: keep looking
            continue
        return None
    return f"{store} lacks the LSC issuer {certs.common_name(lsc.issuer) or '(no CN)'!r}"
