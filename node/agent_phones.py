"""What a Unified CM node does for phones: its TFTP signs files, its CAPF issues LSCs, its CTL.

The I/O half of ``node.trustlist`` and ``node.phone``: private keys never leave the node.
The lab asks a node to sign a file (configuration files with the TFTP node's CallManager key;
the ITL with that key before release 12.0 and with the publisher's ITLRecovery key from 12.0, as
the release profile says; the CTL and the bulk ITL reset file with the ITLRecovery key)
and gets the signed bytes back; what goes into each list is the pure core's rule
(``trustlist.itl_records`` / ``ctl_records``), fed with the cluster's current certificates.

Operations (its ``EXTENSION``): phone_material, tftp_sign, ctl_update, ctl_set_mode, ctl_get,
capf_issue. Rule IDs refer to DOMAIN.md (R-PHONE-1, R-PHONE-3, R-PHONE-5, R-PHONE-6).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from node import certs, phone, trustlist
from node.catalog import Role as NodeRole
from node.errors import BadInput, NotFound, Refused
from node.extension import Extension, b64_arg
from node.store import Identity, NodeStore
from node.trustlist import FileKind, Role, TrustRecord

if TYPE_CHECKING:
    from node.agent import NodeAgent


PHONE_UNITS = ("CallManager", "TVS", "CAPF", "ITLRecovery")
CTL_META = "ctl_file"  # the CTL file the cluster serves in mixed mode (publisher), base64
MAX_BODIES = 5000  # configuration files one request signs


def _require_cucm(agent: NodeAgent) -> None:
    if agent.config.role is not NodeRole.CUCM:
        raise NotFound("phones register to Unified CM nodes; this is an IM and Presence node")


def _require_publisher(agent: NodeAgent, what: str) -> None:
    if not agent.config.publisher:
        raise Refused(f"{what} runs on the publisher (the first node), which holds the ITLRecovery and CAPF keys")


async def _identity(agent: NodeAgent, unit: str) -> Identity:
    ident = (await agent.store.identities()).get(unit)
    if ident is None:
        raise NotFound(f"this node has no '{unit}' identity certificate")
    return ident


async def op_phone_material(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    """The node's phone-facing certificates (public parts only) and, on the publisher, its CTL."""
    _require_cucm(agent)
    # inside the store's transaction lock: one connection serves every request, so a plain read could
    # see a concurrent restore's identities half written (CallManager restored, TVS not yet)
    async with agent.store.transaction():
        ids = await agent.store.identities()
        ctl = await agent.store.get_meta(CTL_META)
    return {
        "node": agent.name,
        "fqdn": agent.config.fqdn,
        "publisher": agent.config.publisher,
        "certs": {u: base64.b64encode(ids[u].cert_der).decode() for u in PHONE_UNITS if u in ids},
        "ctl": ctl,
    }


def _records(raw: object) -> list[TrustRecord]:
    if not isinstance(raw, list):
        raise BadInput("records must be a list of {role, host, cert}")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadInput("a record is {role, host, cert}")
        try:
            role = Role(str(item.get("role")))
        except ValueError:
            raise BadInput(f"unknown record role {item.get('role')!r}") from None
        der = base64.b64decode(str(item.get("cert") or ""), validate=True)
        certs.load_certificates(der)
        out.append(TrustRecord(role, str(item.get("host") or ""), der))
    return out


Signer = tuple[Role, x509.Certificate, certs.PrivateKey]


async def _signer(agent: NodeAgent, kind: FileKind) -> Signer:
    """The key ``trustlist.signer_unit`` names; ITLRecovery is the publisher's. (Loading an RSA key costs
    milliseconds: once per request.)"""
    unit = trustlist.signer_unit(kind, agent.config.release)
    if unit == "ITLRecovery":
        _require_publisher(agent, f"signing the {kind.value} file")
    ident = await _identity(agent, unit)
    return trustlist.SIGNER_ROLES[unit], x509.load_der_x509_certificate(ident.cert_der), _load_key(ident.key_pem)


_KEYS: collections.OrderedDict[str, certs.PrivateKey] = collections.OrderedDict()
KEY_MEMORY = 64  # signing keys kept loaded: loading (and checking) an RSA key takes ~100 ms


def _load_key(pem: bytes) -> certs.PrivateKey:
    sha = hashlib.sha256(pem).hexdigest()
    key = _KEYS.get(sha)
    if key is None:
        key = _KEYS[sha] = certs.load_key(pem)
        while len(_KEYS) > KEY_MEMORY:
            _KEYS.popitem(last=False)
    return key


async def _sign(agent: NodeAgent, kind: FileKind, records: list[TrustRecord], body: bytes, serial: int) -> bytes:
    role, cert, key = await _signer(agent, kind)
    return trustlist.build(kind, role, cert, key, records=records, body=body, serial=serial)


async def op_tftp_sign(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """Sign an ITL (records), configuration files (bodies) or a bulk ITL reset file with the key
    ``trustlist.signer_unit`` names for the lab's release (R-PHONE-1, R-PHONE-3)."""
    _require_cucm(agent)
    try:
        kind = FileKind(str(args.get("kind")))
    except ValueError:
        raise BadInput(f"unknown file kind {args.get('kind')!r}; known: ITL, SGN, ITL-RESET") from None
    if kind is FileKind.CTL:
        raise BadInput("the CTL is made by ctl_update (utils ctl update CTLFile)")
    serial = int(args.get("serial", 1))
    if kind is FileKind.CONFIG:
        bodies = args.get("bodies")
        if not isinstance(bodies, list) or len(bodies) > MAX_BODIES:
            raise BadInput(f"bodies must be a list of at most {MAX_BODIES} base64 configuration files")
        role, cert, key = await _signer(agent, kind)
        raw = [base64.b64decode(str(b)) for b in bodies]
        files = await asyncio.to_thread(
            lambda: [trustlist.build(kind, role, cert, key, body=b, serial=serial) for b in raw]
        )
        return {"files": [base64.b64encode(f).decode() for f in files]}
    signed = await _sign(agent, kind, _records(args.get("records", [])), b"", serial)
    return {"file": base64.b64encode(signed).decode()}


async def op_ctl_update(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """`utils ctl update CTLFile` (and set-cluster mixed-mode): a tokenless CTL signed with the
    ITLRecovery key, kept on the publisher and served to phones (R-PHONE-5)."""
    _require_cucm(agent)
    _require_publisher(agent, "utils ctl")
    records = _records(args.get("records"))
    serial = int(args.get("serial", 1))
    signed = await _sign(agent, FileKind.CTL, records, b"", serial)
    text = base64.b64encode(signed).decode()

    async def write(store: NodeStore) -> None:
        await store.set_meta(CTL_META, text)

    await agent.commit(extra=write)
    agent.log.info("ctl-updated", records=len(records), serial=serial)
    return {"file": text, **trustlist.describe(trustlist.parse(signed))}


async def op_ctl_set_mode(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """`utils ctl set-cluster mixed-mode|non-secure-mode`."""
    mode = str(args.get("mode") or "")
    if mode == "mixed":
        result = await op_ctl_update(agent, args)
        return {"mode": "mixed", **result}
    if mode != "non-secure":
        raise BadInput("mode is 'mixed' or 'non-secure'")
    _require_cucm(agent)
    _require_publisher(agent, "utils ctl")

    async def write(store: NodeStore) -> None:
        await store.execute("DELETE FROM meta WHERE key=?", (CTL_META,))

    await agent.commit(extra=write)
    return {"mode": "non-secure"}


async def op_ctl_get(agent: NodeAgent, _args: dict[str, Any]) -> dict[str, Any]:
    """`show ctl`."""
    _require_cucm(agent)
    raw = await agent.store.get_meta(CTL_META)
    if raw is None:
        return {"mode": "non-secure", "file": None}
    return {"mode": "mixed", "file": raw, **trustlist.describe(trustlist.parse(base64.b64decode(raw)))}


async def op_capf_issue(agent: NodeAgent, args: dict[str, Any]) -> dict[str, Any]:
    """CAPF issues an LSC to a phone that proves the authentication string configured for it (R-PHONE-6)."""
    _require_cucm(agent)
    _require_publisher(agent, "CAPF")
    name = str(args.get("phone") or "")
    if not name:
        raise BadInput("no phone name given")
    expected = args.get("expected")
    given = args.get("auth_string")
    if expected is not None and str(given) != str(expected):
        raise Refused(f"CAPF refused {name}: the authentication string does not match the one configured")
    pem = b64_arg(args, "public_key")
    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BadInput("public_key is not a PEM public key") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise BadInput("phones here carry EC P-256 keys")
    capf = await _identity(agent, "CAPF")
    cert = x509.load_der_x509_certificate(capf.cert_der)
    lsc = phone.issue_lsc(name, public, cert, _load_key(capf.key_pem), agent.clock.now())
    agent.log.info("capf-lsc-issued", phone=name, issuer=certs.common_name(cert.subject))
    return {"phone": name, "lsc": base64.b64encode(certs.der_of(lsc)).decode(), "issuer": certs.fingerprint(cert)}


EXTENSION = Extension(
    name="phones",
    ops={
        "phone_material": op_phone_material,
        "tftp_sign": op_tftp_sign,
        "ctl_update": op_ctl_update,
        "ctl_set_mode": op_ctl_set_mode,
        "ctl_get": op_ctl_get,
        "capf_issue": op_capf_issue,
    },
)
