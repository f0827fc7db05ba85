"""Certificate operations, pure: CSRs, CA-signed identity uploads, regeneration, services, OAuth tokens.

Everything here is a plain function over ``cryptography`` objects and frozen dataclasses, so
the rules are tested without a broker or a database; ``node.agent_certops`` applies the
plans in one transaction. Rule IDs refer to DOMAIN.md.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import verification

from node import certs
from node.catalog import (
    CTL_UNITS,
    DEFAULT_EC_KEY_SIZE,
    DEFAULT_RSA_KEY_SIZE,
    EC_KEY_SIZES,
    KU,
    PARAMS,
    PHONE_INTERACTION,
    PHONE_RESET_UNITS,
    RSA_KEY_SIZES,
    UNITS,
    KeyAlgo,
    Role,
    ServiceSpec,
    UnitSpec,
    units_for,
)
from node.errors import BadInput, NotFound, Refused
from node.safetext import safe_text

CONNECT_FAILURE = "Connection to the Server cannot be established (unable to connect to Remote Node)"
MAX_CHAIN_DEPTH = 8
TOKEN_PREFIX = "certsim1"  # noqa: S105 - a format tag, not a secret
TOKEN_LIFETIME_S = 3600


# ---------------------------------------------------------------------------------------------
# units and key sizes


def identity_unit(role: Role, publisher: bool, name: str, *, op: str) -> UnitSpec:
    """The spec of an identity unit this node holds, or an error naming why not (R-OP-CSR-1, R-OP-REGEN-1)."""
    unit = UNITS.get(name)
    if unit is None:
        if name.endswith("-trust"):
            raise NotFound(f"'{name}' is a trust store; {op} works on identity units such as '{name[:-6]}'")
        raise NotFound(f"unknown identity unit '{name}'; known: {', '.join(sorted(UNITS))}")
    if role not in unit.roles:
        have = ", ".join(u.name for u in units_for(role, publisher=publisher))
        raise NotFound(f"a {role.value} node has no '{name}' identity certificate; it has: {have}")
    if unit.publisher_only and not publisher:
        raise Refused(f"{name}: the CSR and the application certificate exist on the first node (publisher) only")
    if unit.publisher_issued and not publisher:
        raise Refused(f"{name} is issued by the publisher and shared; run {op} on the publisher")
    return unit


def choose_key_size(unit: UnitSpec, requested: Any, current_bits: int | None, *, regen: bool) -> int:
    """R-UNIT-1 / R-OP-REGEN-1: RSA 2048/3072/4096 (regen: the current length, 3072 or 4096), EC curves."""
    if requested in (None, ""):
        if current_bits:
            return current_bits
        return DEFAULT_EC_KEY_SIZE if unit.key_algo is KeyAlgo.EC else DEFAULT_RSA_KEY_SIZE
    try:
        size = int(requested)
    except (TypeError, ValueError):
        raise BadInput(f"key size '{requested}' is not a number") from None
    if unit.key_algo is KeyAlgo.EC:
        if size not in EC_KEY_SIZES:
            raise BadInput(f"{unit.name} carries an EC key; key size {size} is not one of {EC_KEY_SIZES}")
        return size
    allowed = RSA_KEY_SIZES
    if regen:
        allowed = tuple(sorted({s for s in (current_bits, 3072, 4096) if s}))
    if size not in allowed:
        what = "regenerate with the same key length or 3072 / 4096" if regen else "RSA keys are"
        raise BadInput(f"{unit.name}: key size {size} is not allowed; {what} {', '.join(map(str, allowed))}")
    return size


# ---------------------------------------------------------------------------------------------
# CSR (R-OP-CSR-1)


@dataclass(frozen=True)
class NodeInfo:
    name: str
    fqdn: str
    role: str


@dataclass(frozen=True)
class PendingCSR:
    """A CSR waiting for its signed certificate; its private key never leaves the node (except
    a multi-server key, which the publisher shares with the nodes in its SAN)."""

    unit: str
    csr_pem: bytes
    key_pem: bytes
    multi_server: bool = False
    nodes: tuple[str, ...] = ()

    @property
    def csr(self) -> x509.CertificateSigningRequest:
        return x509.load_pem_x509_csr(self.csr_pem)


def csr_cn(unit: UnitSpec, fqdn: str, *, multi_server: bool) -> str:
    """The CSR's CN: the unit's usual CN, with ``-ms`` for a multi-server certificate as the product names it."""
    cn = certs.unit_cn(unit, fqdn)
    if not multi_server:
        return cn
    host, _, domain = cn.partition(".")
    return f"{host}-ms.{domain}" if domain else f"{host}-ms"


def csr_san(unit: UnitSpec, fqdn: str, peers: Iterable[NodeInfo], role: Role, *, multi_server: bool) -> list[str]:
    """SAN of a CSR: this node's FQDN, and for a multi-server CSR every node of the same role (R-OP-CSR-1)."""
    if not multi_server:
        return [fqdn]
    return [fqdn, *sorted({p.fqdn for p in peers if p.role == role.value and p.fqdn != fqdn})]


def check_multi_server(unit: UnitSpec, *, publisher: bool) -> None:
    if not unit.multi_server:
        multi = ", ".join(u.name for u in UNITS.values() if u.multi_server)
        raise Refused(f"{unit.name} is not a multi-server unit; multi-server CSRs exist for {multi}")
    if not publisher:
        raise Refused(f"a multi-server CSR for {unit.name} is generated on the publisher, which lists every node")


def build_unit_csr(
    unit: UnitSpec,
    cn: str,
    san: Sequence[str],
    key: certs.PrivateKey,
    subject_fields: certs.SubjectFields,
    *,
    include_ou: bool = True,
    hash_name: str = "SHA256",
) -> x509.CertificateSigningRequest:
    """A real PKCS#10 request with the unit's key usage, EKU and SAN (R-OP-CSR-1)."""
    return certs.build_csr(
        subject=subject_fields.name(cn, with_ou=include_ou),
        key=key,
        extensions=certs.unit_extensions(unit, san),
        hash_name=hash_name,
    )


_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)(\*\.)?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
MAX_EXTRA_ALT_NAMES = 100


def check_alt_names(raw: Any) -> list[str]:
    """Extra SAN host names for a CSR (the GUI's "Other Domains"): DNS names, optionally ``*.`` wildcards,
    at most :data:`MAX_EXTRA_ALT_NAMES`; duplicates (any case) dropped."""
    if raw is None:
        return []
    if not isinstance(raw, list | tuple) or not all(isinstance(a, str) for a in raw):
        raise BadInput("altNames must be a list of host names")
    names = list(dict.fromkeys(a.strip().lower() for a in raw if a.strip()))
    if len(names) > MAX_EXTRA_ALT_NAMES:
        raise BadInput(f"{len(names)} extra host names; a CSR takes at most {MAX_EXTRA_ALT_NAMES}")
    bad = [a for a in names if not _DNS_NAME.fullmatch(a)]
    if bad:
        raise BadInput(f"not a host name: {safe_text(bad[0])!r}; altNames are DNS names such as voice.example.com")
    return names


def check_csr_hash(unit: UnitSpec, raw: Any) -> str:
    """The CSR's signature hash: SHA256 for RSA units; SHA256, SHA384 or SHA512 for EC units (as the product offers)."""
    if raw is None:
        return "SHA256"
    name = str(raw).upper().replace("-", "")
    allowed = ("SHA256",) if unit.key_algo is KeyAlgo.RSA else ("SHA256", "SHA384", "SHA512")
    if name not in allowed:
        raise BadInput(
            f"a {unit.name} CSR ({unit.key_algo.value} key) is signed with {' or '.join(allowed)}, not '{raw}'"
        )
    return name


# ---------------------------------------------------------------------------------------------
# identity upload (R-OP-UPLOAD-1..3, R-KU-1)


@dataclass(frozen=True)
class IdentityPlan:
    unit: str
    leaf: x509.Certificate
    csr: PendingCSR
    chain: tuple[x509.Certificate, ...]  # verified path above the leaf, up to the trusted root
    flags: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def end_certificate(uploaded: Sequence[x509.Certificate]) -> x509.Certificate:
    """The one certificate of an upload that issues no other: the application certificate."""
    if len(uploaded) == 1:
        return uploaded[0]
    ends = [
        c
        for c in uploaded
        if not any(o is not c and o.issuer == c.subject and not certs.is_self_signed(o) for o in uploaded)
    ]
    if not ends:
        raise BadInput(
            "the chain has a loop: every certificate in it issues another one, so there is no application certificate"
        )
    if len(ends) > 1:
        names = ", ".join(certs.common_name(c.subject) or "?" for c in ends)
        raise Refused(f"the upload holds {len(ends)} unrelated end certificates ({names}); upload one at a time")
    return ends[0]


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust: Sequence[x509.Certificate],
    now: dt.datetime,
    store_name: str,
) -> list[x509.Certificate]:
    """The verified path from ``leaf`` to an anchor in ``trust`` (the unit's trust store), or ``Refused``.

    The product is lenient about end-entity extensions (a CAPF certificate is a CA, a
    self-signed Tomcat certificate is its own anchor): ``ExtensionPolicy.permit_all()`` for
    the leaf, the web-PKI defaults for CAs.
    """
    if not trust:
        raise Refused(
            f"the issuing CA is not trusted: {store_name} is empty; upload the CA root (then any intermediate) "
            f"to {store_name} first (R-OP-UPLOAD-3)"
        )
    try:
        builder = (
            verification.PolicyBuilder()
            .store(verification.Store(list(trust)))
            .time(now)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        verified = builder.build_client_verifier().verify(leaf, list(intermediates))
    except verification.VerificationError as exc:
        raise Refused(
            f"the issuing CA of '{certs.common_name(leaf.subject)}' is not trusted: its chain does not verify "
            f"against {store_name} ({exc}); upload the CA root (then any intermediate) to {store_name} first "
            "(R-OP-UPLOAD-3)"
        ) from None
    return list(verified.chain[1:])


def served_chain(leaf: x509.Certificate, trust: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """The intermediates a TLS server presents after ``leaf``, as the product's Tomcat serves an uploaded
    CA-signed certificate: each issuer found in the unit's trust store whose signature verifies, up to
    but without the self-signed root (a client trusting only the root can then verify the leaf).
    Empty for a self-signed leaf."""
    chain: list[x509.Certificate] = []
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        issuer = next(
            (c for c in trust if c.subject == current.issuer and c != current and certs.signed_by(current, c)), None
        )
        if issuer is None or issuer.subject == issuer.issuer or issuer in chain:
            break
        chain.append(issuer)
        current = issuer
    return chain


def plan_identity_upload(
    unit: UnitSpec,
    uploaded: Sequence[x509.Certificate],
    pending: Mapping[str, PendingCSR],
    trust: Sequence[x509.Certificate],
    now: dt.datetime,
) -> IdentityPlan:
    """Check a CA-signed certificate (or chain with one) for ``unit`` before anything changes.

    Refuses, naming the reason: a CA-only upload (it belongs in ``<unit>-trust``, R-OP-UPLOAD-1),
    a wildcard CN, the wrong key type, a certificate outside its validity, no pending CSR or
    a key that does not match it (or matches another unit's CSR), an issuer chain that does
    not verify against the unit's trust store, or a CA in that chain that is not itself in the
    store (R-OP-UPLOAD-3). Flags a certificate that lost the data-encipherment bit (R-KU-1).
    """
    store_name = unit.trust_store
    if store_name is None:
        raise Refused(f"{unit.name} is issued by the cluster and cannot be replaced by a CA-signed certificate")
    leaf = end_certificate(uploaded)
    cn = certs.common_name(leaf.subject) or ""
    if certs.is_ca(leaf) and not unit.is_ca:
        raise Refused(
            f"the upload holds only CA certificates ('{cn}' is a CA); a CA root or a chain of CA certificates "
            f"goes to '{store_name}', an application certificate to '{unit.name}' (R-OP-UPLOAD-1)"
        )
    if "*" in cn or any("*" in n for n in certs.cert_san(leaf)):
        raise Refused(f"'{cn}' is a wildcard certificate; a node's {unit.name} certificate names its own host")
    kt, bits = certs.key_type(leaf)
    if kt != unit.key_algo.value:
        raise Refused(
            f"{unit.name} carries an {unit.key_algo.value} key (R-UNIT-1) but this certificate has an {kt} key "
            f"({bits} bits); -ECDSA units take EC certificates, the others RSA"
        )
    problem = certs.validity_problem(leaf, now)
    if problem:
        raise Refused(f"the certificate '{cn}' is {problem}")
    leaf_key = certs.public_key_bytes(_public(leaf))
    csr = pending.get(unit.name)
    if csr is None or certs.public_key_bytes(_public_csr(csr.csr)) != leaf_key:
        for other in pending.values():
            if other.unit != unit.name and certs.public_key_bytes(_public_csr(other.csr)) == leaf_key:
                raise Refused(
                    f"this certificate was issued for the CSR of '{other.unit}', not '{unit.name}'; "
                    f"upload it to '{other.unit}'"
                )
        if csr is None:
            raise Refused(
                f"there is no pending CSR for {unit.name} on this node; generate a CSR, have it signed, then upload "
                "the signed certificate (R-OP-UPLOAD-3)"
            )
        raise Refused(
            f"the certificate's public key does not match the pending CSR for {unit.name} (R-OP-UPLOAD-3); "
            "it was signed for another request"
        )
    intermediates = [c for c in uploaded if c is not leaf]
    chain = verify_chain(leaf, intermediates, trust, now, store_name)
    trusted = {certs.fingerprint(c) for c in trust}
    for ca in chain:
        if certs.fingerprint(ca) not in trusted:
            raise Refused(
                f"the intermediate CA '{certs.common_name(ca.subject)}' is not in {store_name}; upload the root "
                f"and then each intermediate to {store_name} before the signed certificate (R-OP-UPLOAD-3)"
            )
    flags: list[str] = []
    notes: list[str] = []
    if KU.DE in unit.ku and KU.DE.value not in certs.key_usage_bits(leaf):
        flags.append("R-KU-1")
        notes.append(
            "R-KU-1: the CA dropped the data-encipherment key usage the CSR asked for; "
            "the certificate was installed but is flagged"
        )
    return IdentityPlan(unit.name, leaf, csr, tuple(chain), tuple(flags), tuple(notes))


def _public(cert: x509.Certificate) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"unsupported public key type {type(key).__name__}")
    return key


def _public_csr(csr: x509.CertificateSigningRequest) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    key = csr.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise BadInput(f"unsupported public key type {type(key).__name__}")
    return key


def key_matches(cert: x509.Certificate, key: certs.PrivateKey) -> bool:
    return certs.public_key_bytes(_public(cert)) == certs.public_key_bytes(key.public_key())


def ku1_flagged(unit: str, cert: x509.Certificate, source: str) -> bool:
    """R-KU-1: a CA-signed identity certificate that lost the data-encipherment bit its unit needs."""
    spec = UNITS.get(unit)
    return (
        spec is not None
        and source == "ca-signed"
        and KU.DE in spec.ku
        and KU.DE.value not in certs.key_usage_bits(cert)
    )


# ---------------------------------------------------------------------------------------------
# regenerate (R-OP-REGEN-1..3) and what to do afterwards (R-SVC-1)


def regen_start(old: x509.Certificate | None, now: dt.datetime) -> dt.datetime:
    """Validity start of a regenerated certificate: now, but always after the one it replaces, so the
    same-name rule (R-REPL-8) lets it replace the old copy in peers' tomcat-trust."""
    start = now.replace(microsecond=0)
    if old is not None and start <= old.not_valid_before_utc:
        start = old.not_valid_before_utc + dt.timedelta(seconds=1)
    return start


def services_loading(unit: str, services: Iterable[ServiceSpec]) -> list[str]:
    """R-SVC-1: the services of a node that load ``unit`` and must be restarted after it changes."""
    return [s.name for s in services if unit in s.loads]


def after_change_advice(
    unit: str, services: Iterable[ServiceSpec], params: Mapping[str, str], *, regenerated: bool
) -> dict[str, Any]:
    """What the product tells the administrator after a certificate changed (R-SVC-1, R-OP-REGEN-2/3, R-OP-AUTHZ)."""
    restart = services_loading(unit, services)
    phone = params.get(PHONE_INTERACTION, PARAMS[PHONE_INTERACTION].default)
    advice: dict[str, Any] = {
        "restart": restart,
        "message": (
            f"Successfully regenerated certificate for {unit}." if regenerated else f"Successfully uploaded {unit}."
        ),
        "hint": f"Please restart services related to {unit} for the new certificate to become active.",
        "ctl_update_needed": unit in CTL_UNITS,  # R-OP-REGEN-2
        "backup_due": True,  # R-OP-REGEN-2: a new backup must contain the new certificate
        "phones": None,
        "restart_elsewhere": [],
    }
    if unit in PHONE_RESET_UNITS:  # R-OP-REGEN-3
        advice["phones"] = "reset automatically" if phone == "Reset Phones Automatically" else "reset manually"
    if unit == "AUTHZ":  # R-OP-AUTHZ
        advice["restart_elsewhere"] = ["Cisco XCP Authentication Service on every IM and Presence node"]
    if unit in ("tomcat", "tomcat-ECDSA"):
        advice["notes"] = ["R-OP-UPLOAD-4: restart Cisco TFTP too, or it keeps serving the cached old tomcat"]
    return advice


# ---------------------------------------------------------------------------------------------
# services: what each loaded at start versus what is current (R-SVC-1, R-OP-UPLOAD-4, R-OP-ECDSA)


@dataclass(frozen=True)
class ServiceState:
    name: str
    state: str  # running | restarting
    loaded: Mapping[str, str]  # item -> sha256 of what the service loaded at its last start
    started_ms: int


def material_sha(value: bytes | str) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


def current_items(spec: ServiceSpec, identities: Mapping[str, str], extras: Mapping[str, str]) -> dict[str, str]:
    """What ``spec`` would load now: the sha256 of each unit it uses that the node holds, and its extras."""
    items = {u: identities[u] for u in spec.loads if u in identities}
    items.update({x: extras[x] for x in spec.extra if x in extras})
    return items


def pending_items(state: ServiceState, current: Mapping[str, str]) -> list[str]:
    """Items whose current value differs from what the service loaded: it needs a restart to use them."""
    return sorted(k for k, v in current.items() if state.loaded.get(k) != v)


def param_item(name: str) -> str:
    return f"param:{name}"


MAX_DESCRIPTION = 255  # characters of a certificate's Description(friendly name), as the product's field


def check_description(raw: Any) -> str:
    """A certificate's Description(friendly name): text of at most 255 characters on one line (no control
    characters), surrounding blanks removed; the same refusal for every door, before anything is changed."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise BadInput("the description must be text")
    text = raw.strip()
    if len(text) > MAX_DESCRIPTION:
        raise BadInput(f"the description is {len(text)} characters; the limit is {MAX_DESCRIPTION}")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise BadInput("the description must be one line of text without control characters")
    return text


def check_param(name: Any, value: Any) -> tuple[str, str]:
    spec = PARAMS.get(str(name))
    if spec is None:
        raise NotFound(f"unknown enterprise parameter '{name}'; known: {', '.join(sorted(PARAMS))}")
    if value not in spec.values:
        raise BadInput(f"'{value}' is not a value of '{spec.name}'; use one of: {', '.join(spec.values)}")
    return spec.name, str(value)


# ---------------------------------------------------------------------------------------------
# OAuth keys and tokens (R-OP-AUTHZ)


@dataclass(frozen=True)
class AuthzKey:
    kind: str  # encryption (symmetric, 32 bytes) | signing (RSA private key PEM)
    material: bytes
    version: str  # the HLC version that made it; also the token key id


AUTHZ_KINDS = ("encryption", "signing")


def check_authz_kind(kind: Any) -> str:
    if kind not in AUTHZ_KINDS:
        raise BadInput(f"authz key kind must be encryption or signing, not '{kind}'")
    return str(kind)


def authz_keys_sha(keys: Mapping[str, AuthzKey]) -> str:
    return material_sha("|".join(f"{k}:{keys[k].version}" for k in sorted(keys)))


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64u_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise BadInput("token refused: it is not a certsim token (bad encoding)") from None


def issue_token(key: AuthzKey, claims: Mapping[str, Any], now: dt.datetime) -> str:
    """A token signed with the cluster's current key: refresh tokens HMAC-SHA256 with the encryption
    key, access tokens RSA (PKCS#1 v1.5, SHA-256) with the signing key."""
    body = {**claims, "iat": int(now.timestamp()), "exp": int(now.timestamp()) + TOKEN_LIFETIME_S}
    payload = _b64u(json.dumps(body, sort_keys=True).encode())
    head = f"{TOKEN_PREFIX}.{key.kind}.{_b64u(key.version.encode())}.{payload}"
    if key.kind == "encryption":
        sig = hmac.new(key.material, head.encode(), hashlib.sha256).digest()
    else:
        private = certs.load_key(key.material)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise BadInput("the authz signing key must be RSA")
        sig = private.sign(head.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{_b64u(sig)}"


def verify_token(token: str, keys: Mapping[str, AuthzKey], now: dt.datetime) -> dict[str, Any]:
    """The token's claims, or ``Refused`` when it was made with a key that has since been regenerated,
    its signature is wrong, or it expired (R-OP-AUTHZ)."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 5 or parts[0] != TOKEN_PREFIX or parts[1] not in AUTHZ_KINDS:
        raise BadInput("token refused: it is not a certsim token")
    kind = parts[1]
    version = _b64u_decode(parts[2]).decode(errors="replace")
    key = keys.get(kind)
    if key is None:
        raise Refused(f"token refused: this node has no authz {kind} key yet")
    if key.version != version:
        raise Refused(
            f"token refused: it was made with an authz {kind} key that has been regenerated; "
            "tokens made with the old keys stop working (R-OP-AUTHZ)"
        )
    head = ".".join(parts[:4]).encode()
    sig = _b64u_decode(parts[4])
    if kind == "encryption":
        ok = hmac.compare_digest(sig, hmac.new(key.material, head, hashlib.sha256).digest())
    else:
        private = certs.load_key(key.material)
        if not isinstance(private, rsa.RSAPrivateKey):
            raise Refused("token refused: the authz signing key is not RSA")
        try:
            private.public_key().verify(sig, head, padding.PKCS1v15(), hashes.SHA256())
            ok = True
        except (InvalidSignature, TypeError, ValueError):
            ok = False
    if not ok:
        raise Refused("token refused: its signature does not verify")
    try:
        claims = json.loads(_b64u_decode(parts[3]))
    except ValueError:
        raise BadInput("token refused: its payload is not JSON") from None
    if not isinstance(claims, dict):
        raise BadInput("token refused: its payload is not an object")
    if int(claims.get("exp", 0)) < int(now.timestamp()):
        raise Refused("token refused: it has expired")
    return claims
