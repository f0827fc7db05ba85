"""The catalog: every table of facts about units, trust stores and replication, in one place.

Everything else (installation, uploads, replication, the CLI) reads these tables; nothing
else hard-codes a unit or store name. Rule IDs refer to DOMAIN.md. A release profile is a
variation of this data (R-REPL-9), not a scattering of ``if`` statements.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier


class Role(StrEnum):
    """What kind of server a node is (R-NODE-1)."""

    CUCM = "cucm"
    IMP = "imp"


class KeyAlgo(StrEnum):
    """Key algorithm of an identity unit (R-UNIT-1: -ECDSA units are EC, all others RSA)."""

    RSA = "RSA"
    EC = "EC"


class Usage(StrEnum):
    """Whether a certificate is a node's own identity or a trusted certificate (R-OP-LIST)."""

    IDENTITY = "identity"
    TRUST = "trust"


class KU(StrEnum):
    """X.509 key-usage bits, named as DOMAIN.md abbreviates them."""

    DS = "digital_signature"
    KE = "key_encipherment"
    DE = "data_encipherment"
    KCS = "key_cert_sign"
    KA = "key_agreement"


class EKU(StrEnum):
    """Extended key usages the product uses."""

    SERVER = "server"
    CLIENT = "client"
    IPSEC = "ipsec"


EKU_OIDS: dict[EKU, ObjectIdentifier] = {
    EKU.SERVER: ExtendedKeyUsageOID.SERVER_AUTH,  # 1.3.6.1.5.5.7.3.1
    EKU.CLIENT: ExtendedKeyUsageOID.CLIENT_AUTH,  # 1.3.6.1.5.5.7.3.2
    EKU.IPSEC: ObjectIdentifier("1.3.6.1.5.5.7.3.5"),  # ipsecEndSystem
}

RSA_KEY_SIZES: tuple[int, ...] = (2048, 3072, 4096)
DEFAULT_RSA_KEY_SIZE = 2048
MAX_CLUSTER_NODES = 21  # R-NODE-1
IDENTITY_VALIDITY_DAYS = 1825  # self-signed identity certificates: five years, as the product issues them


@dataclass(frozen=True)
class UnitSpec:
    """An identity unit: which key it carries, its extensions, and where its CA chain is trusted."""

    name: str
    roles: frozenset[Role]
    key_algo: KeyAlgo
    eku: tuple[EKU, ...]
    ku: tuple[KU, ...]
    multi_server: bool  # R-OP-CSR-1: one CSR on the publisher with every node in the SAN
    trust_store: str | None  # the `<unit>-trust` store that holds its CA chain (R-OP-UPLOAD-1)
    publisher_only: bool = False  # CAPF lives on the first node only
    publisher_issued: bool = False  # ITLRecovery, AUTHZ: the publisher issues one and shares it
    is_ca: bool = False  # CAPF signs phone LSCs, so its self-signed certificate is a CA
    cn_suffix: str = ""  # distinguishes units that share a trust store (tomcat vs tomcat-ECDSA)
    cn_prefix: str = ""


_CUCM = frozenset({Role.CUCM})
_IMP = frozenset({Role.IMP})
_BOTH = frozenset({Role.CUCM, Role.IMP})
_SCE = (EKU.SERVER, EKU.CLIENT)
_SCI = (EKU.SERVER, EKU.CLIENT, EKU.IPSEC)
_FULL_KU = (KU.DS, KU.KE, KU.DE, KU.KA)

# DOMAIN.md "Key usage per unit" (the source's CSR extension lists are authoritative).
UNITS: dict[str, UnitSpec] = {
    u.name: u
    for u in (
        UnitSpec("tomcat", _BOTH, KeyAlgo.RSA, _SCI, _FULL_KU, True, "tomcat-trust"),
        UnitSpec("tomcat-ECDSA", _BOTH, KeyAlgo.EC, _SCI, _FULL_KU, True, "tomcat-trust", cn_suffix="-EC"),
        UnitSpec("CallManager", _CUCM, KeyAlgo.RSA, _SCE, _FULL_KU, True, "CallManager-trust"),
        UnitSpec("CallManager-ECDSA", _CUCM, KeyAlgo.EC, _SCE, _FULL_KU, True, "CallManager-trust", cn_suffix="-EC"),
        UnitSpec("ipsec", _BOTH, KeyAlgo.RSA, _SCI, _FULL_KU, False, "ipsec-trust"),
        UnitSpec("TVS", _CUCM, KeyAlgo.RSA, _SCE, (KU.DS, KU.KE, KU.DE), False, "TVS-trust", cn_prefix="TVS-"),
        UnitSpec(
            "CAPF",
            _CUCM,
            KeyAlgo.RSA,
            (EKU.SERVER,),
            (KU.DS, KU.KCS),
            False,
            "CAPF-trust",
            publisher_only=True,
            is_ca=True,
            cn_prefix="CAPF-",
        ),
        UnitSpec(
            "ITLRecovery",
            _CUCM,
            KeyAlgo.RSA,
            _SCE,
            (KU.DS, KU.KE, KU.DE),
            False,
            None,
            publisher_issued=True,
            cn_prefix="ITLRECOVERY_",
        ),
        UnitSpec(
            "AUTHZ",
            _CUCM,
            KeyAlgo.RSA,
            _SCE,
            (KU.DS,),
            False,
            None,
            publisher_issued=True,
            cn_prefix="AUTHZ_",
        ),
        UnitSpec("cup", _IMP, KeyAlgo.RSA, _SCI, _FULL_KU, False, "cup-trust"),
        UnitSpec("cup-ECDSA", _IMP, KeyAlgo.EC, _SCI, _FULL_KU, False, "cup-trust", cn_suffix="-EC"),
        UnitSpec("cup-xmpp", _IMP, KeyAlgo.RSA, _SCI, _FULL_KU, True, "cup-xmpp-trust", cn_prefix="xmpp-"),
        UnitSpec(
            "cup-xmpp-ECDSA",
            _IMP,
            KeyAlgo.EC,
            _SCI,
            _FULL_KU,
            True,
            "cup-xmpp-trust",
            cn_prefix="xmpp-",
            cn_suffix="-EC",
        ),
        UnitSpec("cup-xmpp-s2s", _IMP, KeyAlgo.RSA, _SCI, _FULL_KU, True, "cup-xmpp-trust", cn_prefix="s2s-"),
        UnitSpec(
            "cup-xmpp-s2s-ECDSA",
            _IMP,
            KeyAlgo.EC,
            _SCI,
            _FULL_KU,
            True,
            "cup-xmpp-trust",
            cn_prefix="s2s-",
            cn_suffix="-EC",
        ),
    )
}


@dataclass(frozen=True)
class StoreSpec:
    """A trust store and what the cluster does with its uploads and deletions."""

    name: str
    roles: frozenset[Role]
    replicate_add: bool  # R-REPL-1 / R-REPL-2 / R-REPL-7
    replicate_delete: bool  # R-REPL-3
    ca_also_into: tuple[str, ...] = ()  # R-REPL-4: a CA uploaded here is also placed in these stores


# DOMAIN.md role table plus the replication rules R-REPL-1..4 and R-REPL-7.
STORES: dict[str, StoreSpec] = {
    s.name: s
    for s in (
        StoreSpec("tomcat-trust", _BOTH, replicate_add=True, replicate_delete=True),  # R-REPL-1, R-REPL-3
        StoreSpec("CallManager-trust", _CUCM, replicate_add=True, replicate_delete=True),  # R-REPL-1, -3
        StoreSpec("Phone-SAST-trust", _CUCM, replicate_add=True, replicate_delete=True),  # R-REPL-1, -3
        StoreSpec(  # R-REPL-2 (adds local), R-REPL-3 (deletes everywhere), R-REPL-4
            "CAPF-trust",
            _CUCM,
            replicate_add=False,
            replicate_delete=True,
            ca_also_into=("CallManager-trust",),
        ),
        StoreSpec("ipsec-trust", _BOTH, replicate_add=False, replicate_delete=False),  # R-REPL-7
        StoreSpec("TVS-trust", _CUCM, replicate_add=False, replicate_delete=False),
        StoreSpec("Phone-trust", _CUCM, replicate_add=False, replicate_delete=False),
        StoreSpec("Phone-VPN-trust", _CUCM, replicate_add=False, replicate_delete=False),
        StoreSpec("Phone-CTL-trust", _CUCM, replicate_add=False, replicate_delete=False),
        StoreSpec("cup-trust", _IMP, replicate_add=False, replicate_delete=False),
        StoreSpec("cup-xmpp-trust", _IMP, replicate_add=False, replicate_delete=False),
    )
}

# R-REPL-5: each node's own certificate of these units is placed in this trust store cluster-wide.
PEER_TRUST_UNITS: dict[str, str] = {"tomcat": "tomcat-trust", "tomcat-ECDSA": "tomcat-trust"}


class DeleteMode(StrEnum):
    """How a deletion from a store whose deletions replicate is carried out."""

    TOMBSTONE = "tombstone"  # 11.0 and later: the deletion propagates and is never undone (R-REPL-9)
    LOCAL = "local"  # before 11.0: removed on one node only; resync brings it back (R-REPL-9)


@dataclass(frozen=True)
class ReleaseProfile:
    """Behaviour that differs between product releases."""

    name: str
    delete_mode: DeleteMode
    resync_interval_s: int = 1800  # R-REPL-6
    tombstone_retention_s: int = 30 * 86400
    description: str = ""
    # R-PHONE-1: the identity whose key signs the ITL. Up to 11.5 the TFTP node's CallManager
    # certificate; from 12.0 the ITLRecovery certificate (Cisco TAC 214231 "Certificate
    # Regeneration Process for CUCM"; Security Guide release 15, "ITL file").
    itl_signer: str = "ITLRecovery"


RELEASES: dict[str, ReleaseProfile] = {
    p.name: p
    for p in (
        ReleaseProfile("15", DeleteMode.TOMBSTONE, description="current releases: deletions propagate"),
        ReleaseProfile("14", DeleteMode.TOMBSTONE, description="deletions propagate"),
        ReleaseProfile("12.5", DeleteMode.TOMBSTONE, description="deletions propagate"),
        ReleaseProfile(
            "10.5",
            DeleteMode.LOCAL,
            description="pre-11.0: deletions apply to one node and resync resurrects them;"
            " the ITL is signed by the TFTP node's CallManager certificate",
            itl_signer="CallManager",
        ),
    )
}
DEFAULT_RELEASE = "15"


@dataclass(frozen=True)
class StorePolicy:
    """What replication does with one store under one release profile."""

    replicate_add: bool
    replicate_delete: bool
    tombstone: bool  # whether a deletion leaves a tombstone that outranks older copies


def store_policy(store: str, release: ReleaseProfile) -> StorePolicy:
    """The replication policy of ``store`` under ``release`` (R-REPL-1..3, R-REPL-7, R-REPL-9)."""
    spec = STORES[store]
    if release.delete_mode is DeleteMode.LOCAL:
        return StorePolicy(replicate_add=spec.replicate_add, replicate_delete=False, tombstone=False)
    return StorePolicy(
        replicate_add=spec.replicate_add,
        replicate_delete=spec.replicate_delete,
        tombstone=spec.replicate_delete,
    )


def units_for(role: Role, *, publisher: bool) -> tuple[UnitSpec, ...]:
    """Identity units a node of ``role`` holds (CAPF and publisher-issued units on the publisher)."""
    return tuple(
        u for u in UNITS.values() if role in u.roles and (publisher or not (u.publisher_only or u.publisher_issued))
    )


def stores_for(role: Role) -> tuple[StoreSpec, ...]:
    """Trust stores a node of ``role`` has."""
    return tuple(s for s in STORES.values() if role in s.roles)


def replicated_stores() -> tuple[str, ...]:
    """Stores whose adds or deletes ever travel on the bus (anything else is node-local)."""
    return tuple(s.name for s in STORES.values() if s.replicate_add or s.replicate_delete)


# ---------------------------------------------------------------------------------------------
# Certificate operations: services, what they load, enterprise parameters (R-SVC-1, R-OP-*)


@dataclass(frozen=True)
class ServiceSpec:
    """A feature or network service and what it loads when it starts (R-SVC-1).

    ``loads`` names identity units (only those the node holds count) and ``extra`` names
    other loaded material: ``authz-keys`` (the OAuth keys) or ``param:<enterprise parameter>``.
    A running service keeps what it loaded until it is restarted (R-OP-UPLOAD-4).
    """

    name: str
    roles: frozenset[Role]
    loads: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    publisher_only: bool = False
    restart_s: float = 1.0  # simulated seconds a restart takes
    forces_resync: bool = False  # restarting the Intercluster Sync Agent forces anti-entropy (R-REPL-6)


HTTPS_CIPHERS = "HTTPS Ciphers"
PHONE_INTERACTION = "Phone Interaction on Certificate Update"
AUTHZ_KEYS = "authz-keys"

# R-SVC-1 (the source's Table 3 plus vendor notes), read the other way round: the units each
# service loads. The services to restart after a unit changes are the services that load it.
SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        # tomcat: WebServices; EC ciphers on its interface follow the HTTPS ciphers parameter (R-OP-ECDSA)
        ServiceSpec("Cisco Tomcat", _BOTH, ("tomcat", "tomcat-ECDSA"), (f"param:{HTTPS_CIPHERS}",), restart_s=2.0),
        ServiceSpec("Cisco CallManager", _CUCM, ("CallManager", "CallManager-ECDSA")),
        ServiceSpec("Cisco CTIManager", _CUCM, ("CallManager", "CallManager-ECDSA")),
        # TFTP serves the CallManager, CAPF, TVS and ITLRecovery certificates in its files and a cached
        # copy of tomcat (R-OP-UPLOAD-4: restart TFTP after a tomcat upload)
        ServiceSpec("Cisco TFTP", _CUCM, ("tomcat", "CallManager", "CallManager-ECDSA", "CAPF", "TVS", "ITLRecovery")),
        ServiceSpec(
            "Cisco Trust Verification Service",
            _CUCM,
            ("CallManager", "CallManager-ECDSA", "CAPF", "TVS", "ITLRecovery"),
        ),
        ServiceSpec("Cisco Certificate Authority Proxy Function", _CUCM, ("CAPF",), publisher_only=True),
        ServiceSpec("Cisco DRF Local", _BOTH, ("tomcat", "ipsec")),
        ServiceSpec("Cisco DRF Master", _BOTH, ("tomcat", "ipsec"), publisher_only=True),
        ServiceSpec("IPsec Services", _BOTH, ("ipsec",)),
        ServiceSpec("Cisco Intercluster Sync Agent", _BOTH, forces_resync=True),
        ServiceSpec("Cisco Certificate Expiry Monitor", _BOTH),
        # R-OP-AUTHZ: restart XCP Authentication after the AUTHZ certificate (signing key) changes
        ServiceSpec("Cisco XCP Authentication Service", _IMP, ("cup-xmpp", "cup-xmpp-ECDSA"), (AUTHZ_KEYS,)),
        ServiceSpec("Cisco XCP Router", _IMP, ("cup-xmpp", "cup-xmpp-ECDSA", "cup-xmpp-s2s", "cup-xmpp-s2s-ECDSA")),
        ServiceSpec("Cisco SIP Proxy", _IMP, ("cup", "cup-ECDSA")),
        ServiceSpec("Cisco Presence Engine", _IMP, ("cup", "cup-ECDSA")),
    )
}


def services_for(role: Role, *, publisher: bool) -> tuple[ServiceSpec, ...]:
    """Services a node of ``role`` runs (CAPF and DRF Master on the publisher only)."""
    return tuple(s for s in SERVICES.values() if role in s.roles and (publisher or not s.publisher_only))


# R-OP-REGEN-2: after these units change, the CTL file must be updated (if one is configured)
CTL_UNITS: frozenset[str] = frozenset({"CAPF", "ITLRecovery", "CallManager", "CallManager-ECDSA"})
# R-OP-REGEN-3: a change of the TVS, CAPF or TFTP (CallManager) certificate resets phones per the parameter
PHONE_RESET_UNITS: frozenset[str] = frozenset({"TVS", "CAPF", "CallManager", "CallManager-ECDSA"})
# R-OP-AUTHZ: the AUTHZ certificate's key is the OAuth signing key
AUTHZ_UNIT = "AUTHZ"


@dataclass(frozen=True)
class ParamSpec:
    """A cluster-wide enterprise parameter the certificate operations read."""

    name: str
    values: tuple[str, ...]
    default: str
    rule: str


PARAMS: dict[str, ParamSpec] = {
    p.name: p
    for p in (
        ParamSpec(
            PHONE_INTERACTION,
            ("Reset Phones Automatically", "Reset Phones Manually"),
            "Reset Phones Automatically",
            "R-OP-REGEN-3",
        ),
        ParamSpec(HTTPS_CIPHERS, ("RSA Ciphers Only", "All Ciphers"), "RSA Ciphers Only", "R-OP-ECDSA"),
    )
}

# R-OP-CSR-1: key sizes a CSR or a regenerated certificate may use, per key algorithm
EC_KEY_SIZES: tuple[int, ...] = (256, 384, 521)
DEFAULT_EC_KEY_SIZE = 256
