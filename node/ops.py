"""What an administrative operation does, decided without I/O.

Each ``plan_*`` function takes the parsed input and the relevant current state and either
returns the changes to make or raises a ``CertsimError`` naming the problem, so a refused
operation changes nothing. The agent applies the plan in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

from node import certs
from node.catalog import STORES, UNITS, Role, StoreSpec, Usage, stores_for
from node.errors import BadInput, NotFound, Refused


@dataclass(frozen=True)
class Put:
    """Place ``der`` in ``store`` under ``name`` (replacing any entry of that name)."""

    store: str
    name: str
    der: bytes
    supersedes: bool = False  # the node's own certificate replaced by its successor, whatever its start


@dataclass(frozen=True)
class Remove:
    store: str
    name: str


@dataclass(frozen=True)
class UploadPlan:
    puts: tuple[Put, ...]
    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())


def check_store(role: Role, store: str) -> StoreSpec:
    """The spec of a trust store this node has, or a clear error."""
    spec = STORES.get(store)
    if spec is None:
        if store in UNITS:
            raise NotFound(
                f"'{store}' is an identity unit, not a trust store; trust stores are named like '{store}-trust'"
                if f"{store}-trust" in STORES
                else f"'{store}' is an identity unit, not a trust store"
            )
        raise NotFound(f"unknown trust store '{store}'; known: {', '.join(sorted(STORES))}")
    if role not in spec.roles:
        have = ", ".join(s.name for s in stores_for(role))
        raise NotFound(f"a {role.value} node has no '{store}' store; it has: {have}")
    return spec


def plan_trust_upload(
    role: Role,
    store: str,
    uploaded: Sequence[x509.Certificate],
    existing: Mapping[tuple[str, str], bytes],
    now: dt.datetime,
) -> UploadPlan:
    """Upload certificates to a trust store (R-OP-UPLOAD-1/2, R-REPL-4, R-REPL-8).

    ``existing`` maps (store, name) to the DER of the entries now held. Every certificate is
    checked before anything is planned, so one bad certificate refuses the whole upload.
    """
    spec = check_store(role, store)
    targets = [spec.name]
    puts: list[Put] = []
    added: list[str] = []
    replaced: list[str] = []
    unchanged: list[str] = []
    notes: list[str] = []
    seen_names: dict[str, bytes] = {}
    for index, cert in enumerate(uploaded, start=1):
        where = f"certificate {index} ({certs.common_name(cert.subject) or 'no CN'})"
        problem = certs.validity_problem(cert, now)
        if problem:  # accepted, as the product does, but every door shows why it cannot be used yet
            notes.append(f"warning: {where} is {problem}; it is stored but no service can use it until it is valid")
        name = certs.entry_name(cert)
        der = certs.der_of(cert)
        if seen_names.get(name, der) != der:
            raise Refused(f"{where}: two different certificates named '{name}' in one upload")
        seen_names[name] = der
        stores = targets + (list(spec.ca_also_into) if certs.is_ca(cert) and spec.ca_also_into else [])
        for target in stores:
            current = existing.get((target, name))
            if current == der:
                if target == store:
                    unchanged.append(name)
                continue
            if current is not None:
                _same_name_rule(target, name, cert, x509.load_der_x509_certificate(current))
                if target == store:
                    replaced.append(name)
            elif target == store:
                added.append(name)
            if target != store:
                notes.append(f"R-REPL-4: CA certificate {name} also placed in {target}")
            puts.append(Put(target, name, der))
    return UploadPlan(tuple(puts), tuple(added), tuple(replaced), tuple(unchanged), tuple(notes))


def _same_name_rule(store: str, name: str, new: x509.Certificate, old: x509.Certificate) -> None:
    """R-REPL-8: a same-name certificate with another serial replaces only if it starts later."""
    if new.not_valid_before_utc <= old.not_valid_before_utc:
        raise Refused(
            f"{store} already holds '{name}' (serial {old.serial_number:x}, valid from "
            f"{certs.iso(old.not_valid_before_utc)}); a certificate of the same name replaces it only if its "
            f"validity starts later, and this one starts {certs.iso(new.not_valid_before_utc)} (R-REPL-8)"
        )


def plan_trust_delete(role: Role, store: str, name: str, existing_names: set[str]) -> Remove:
    """Delete a trust certificate by name (R-OP-DELETE-1: identity certificates cannot be deleted)."""
    if store in UNITS:
        raise Refused(
            f"'{store}' holds the node's own identity certificate, which is system-generated and cannot be "
            "deleted; only trust certificates can be deleted (R-OP-DELETE-1)"
        )
    check_store(role, store)
    short = certs.normalize_name(name)
    if short not in existing_names:
        raise NotFound(f"no certificate named '{short}' in {store}")
    return Remove(store, short)


@dataclass(frozen=True)
class ListFilter:
    """Filters of ``cert list`` (R-OP-LIST). Empty fields match everything."""

    store: str | None = None
    usage: Usage | None = None
    cn: str | None = None  # case-insensitive substring of the common name
    key_type: str | None = None  # "RSA" or "EC"
    expires_before: dt.datetime | None = None
    expires_after: dt.datetime | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ListFilter:
        def when(key: str) -> dt.datetime | None:
            raw = args.get(key)
            return None if raw in (None, "") else parse_when(str(raw), key)

        usage = args.get("usage")
        key_type = args.get("key_type")
        if key_type not in (None, "", "RSA", "EC", "rsa", "ec"):
            raise BadInput(f"unknown key type '{key_type}'; use RSA or EC")
        try:
            parsed_usage = Usage(usage) if usage else None
        except ValueError:
            raise BadInput(f"unknown usage '{usage}'; use identity or trust") from None
        return cls(
            store=args.get("store") or None,
            usage=parsed_usage,
            cn=args.get("cn") or None,
            key_type=str(key_type).upper() if key_type else None,
            expires_before=when("expires_before"),
            expires_after=when("expires_after"),
        )

    def matches(self, store: str, usage: Usage, desc: Mapping[str, Any]) -> bool:
        if self.store is not None and store != self.store:
            return False
        if self.usage is not None and usage is not self.usage:
            return False
        if self.cn is not None and self.cn.lower() not in (desc.get("cn") or "").lower():
            return False
        if self.key_type is not None and desc.get("key_type") != self.key_type:
            return False
        not_after = dt.datetime.fromisoformat(str(desc["not_after"]).replace("Z", "+00:00"))
        if self.expires_before is not None and not_after >= self.expires_before:
            return False
        return not (self.expires_after is not None and not_after <= self.expires_after)


def parse_when(raw: str, what: str = "date") -> dt.datetime:
    """An ISO date or date-time (UTC when no zone is given)."""
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{what}: '{raw}' is not an ISO date such as 2027-01-31 or 2027-01-31T12:00:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
