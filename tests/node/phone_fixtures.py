"""A tiny cluster of phone-facing identities for the pure phone tests (EC keys: fast)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from node import certs, trustlist
from node.catalog import RELEASES, UNITS, KeyAlgo, ReleaseProfile
from node.phone import Registrar, TftpOffer, Tvs
from node.trustlist import ClusterCerts, FileKind, Role

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass
class Ident:
    cert: x509.Certificate
    key: certs.PrivateKey

    @property
    def der(self) -> bytes:
        return certs.der_of(self.cert)

    @property
    def sha(self) -> str:
        return certs.der_sha256(self.der)


def ident(unit: str, host: str, serial_hint: int = 0) -> Ident:
    key = certs.new_private_key(KeyAlgo.EC, 256)
    cert = certs.self_signed_identity(
        UNITS[unit], host, key, NOW + dt.timedelta(seconds=serial_hint), certs.SubjectFields(), validity_days=1825
    )
    return Ident(cert, key)


@dataclass
class MiniCluster:
    """Two Unified CM nodes: pub (CAPF, ITLRecovery) and sub. The ITL signer follows ``release``
    (10.5 by default: the TFTP node's CallManager; 12.5 and later: ITLRecovery)."""

    hosts: tuple[str, ...] = ("pub", "sub")
    release: ReleaseProfile = RELEASES["10.5"]
    cm: dict[str, Ident] = field(default_factory=dict)
    tvs: dict[str, Ident] = field(default_factory=dict)
    capf: Ident | None = None
    itlr: Ident | None = None
    generation: int = 0

    def __post_init__(self) -> None:
        for h in self.hosts:
            self.cm[h] = ident("CallManager", h)
            self.tvs[h] = ident("TVS", h)
        self.capf = ident("CAPF", "pub")
        self.itlr = ident("ITLRecovery", "pub")

    def regen(self, unit: str, host: str = "pub") -> None:
        self.generation += 1
        fresh = ident(unit, host, self.generation)
        if unit == "CallManager":
            self.cm[host] = fresh
        elif unit == "TVS":
            self.tvs[host] = fresh
        elif unit == "CAPF":
            self.capf = fresh
        else:
            self.itlr = fresh

    def certs(self) -> ClusterCerts:
        assert self.capf and self.itlr
        return ClusterCerts(
            {h: i.der for h, i in self.cm.items()},
            {h: i.der for h, i in self.tvs.items()},
            ("pub", self.capf.der),
            ("pub", self.itlr.der),
        )

    def itl(self, host: str = "pub") -> bytes:
        unit = trustlist.signer_unit(FileKind.ITL, self.release)
        signer = self.cm[host] if unit == "CallManager" else self.itlr
        assert signer is not None
        recs = trustlist.itl_records(host, self.certs())
        return trustlist.build(FileKind.ITL, trustlist.SIGNER_ROLES[unit], signer.cert, signer.key, records=recs)

    def ctl(self) -> bytes:
        assert self.itlr
        recs = trustlist.ctl_records(self.certs())
        return trustlist.build(FileKind.CTL, Role.ITL_RECOVERY, self.itlr.cert, self.itlr.key, records=recs)

    def config(self, host: str = "pub", text: bytes = b"<device/>") -> bytes:
        signer = self.cm[host]
        return trustlist.build(FileKind.CONFIG, Role.TFTP, signer.cert, signer.key, body=text)

    def reset_file(self, recovery: Ident | None = None) -> bytes:
        r = recovery or self.itlr
        assert r
        return trustlist.build(FileKind.ITL_RESET, Role.ITL_RECOVERY, r.cert, r.key)

    def offer(
        self, host: str = "pub", *, mixed: bool = False, reset: bytes | None = None, ctl: bytes | None = None
    ) -> TftpOffer:
        return TftpOffer(host, self.itl(host), self.config(host), ctl or (self.ctl() if mixed else None), reset)

    def tvs_services(self, reachable: bool = True) -> list[Tvs]:
        vouch = self.certs().all_shas()
        return [Tvs(h, i.sha, vouch, reachable) for h, i in self.tvs.items()]

    def registrar(self, host: str = "pub", lsc_problem: str | None = None) -> Registrar:
        return Registrar(host, self.cm[host].sha, lambda _lsc: lsc_problem)
