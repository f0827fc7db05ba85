"""Replicated records and the rules for merging them: a last-writer-wins set with tombstones.

Per (store, name) a node keeps at most one live entry and at most one tombstone. An entry
is live only while its version is newer than the tombstone, so applying the same records in
any order, any number of times, gives the same result (convergence, idempotence), and a
deleted version can never come back (no resurrection, R-REPL-9).
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from replication.hlc import Version


@dataclass(frozen=True)
class Record:
    """One replicated fact: a certificate present in a store (``der``) or deleted from it (``der`` None)."""

    store: str
    name: str
    version: Version
    der: bytes | None
    origin: str

    @property
    def is_tombstone(self) -> bool:
        return self.der is None

    @property
    def key(self) -> tuple[str, str]:
        return self.store, self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "s": self.store,
            "n": self.name,
            "v": self.version.to_json(),
            "d": None if self.der is None else base64.b64encode(self.der).decode(),
            "o": self.origin,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Record:
        store, name, origin, der = raw.get("s"), raw.get("n"), raw.get("o"), raw.get("d")
        if not isinstance(store, str) or not isinstance(name, str) or not isinstance(origin, str):
            raise TypeError("record lacks store, name or origin")
        if der is not None and not isinstance(der, str):
            raise TypeError("record certificate is not base64 text")
        return cls(
            store=store,
            name=name,
            version=Version.from_json(raw.get("v")),
            der=None if der is None else base64.b64decode(der, validate=True),
            origin=origin,
        )


def put_wins(incoming: Version, entry: Version | None, tombstone: Version | None) -> bool:
    """Whether an incoming copy replaces what a node holds for one (store, name)."""
    return (entry is None or incoming > entry) and (tombstone is None or incoming > tombstone)


def tombstone_wins(incoming: Version, tombstone: Version | None) -> bool:
    """Whether an incoming deletion is newer than the tombstone a node holds."""
    return tombstone is None or incoming > tombstone


def entry_survives(entry: Version, tombstone: Version) -> bool:
    """An entry outlives a tombstone only if it was written after the deletion (a re-upload)."""
    return entry > tombstone


def store_digests(records: Iterable[Record]) -> dict[str, str]:
    """A digest per store of a node's replicated view; equal digests mean equal stores."""
    return digests_of(
        (r.store, r.name, r.version, None if r.der is None else hashlib.sha256(r.der).hexdigest()) for r in records
    )


def digests_of(items: Iterable[tuple[str, str, Version, str | None]]) -> dict[str, str]:
    """``store_digests`` from (store, name, version, SHA-256 of the DER or None for a tombstone)."""
    lines: dict[str, list[str]] = defaultdict(list)
    for store, name, version, sha in items:
        kind = "T" if sha is None else "E:" + sha
        lines[store].append(f"{name}\x00{version}\x00{kind}")
    return {store: hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:32] for store, items in lines.items()}
