"""Replicated records (what travels on the bus and sits in a node's stores) and their digests.

The rules for merging them live in ``replication.core``.
"""

from __future__ import annotations

import base64
import collections
import functools
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
    start_ms: int = 0  # the certificate's validity start (R-REPL-8 orders same-name entries by it)
    replaces: Version | None = None  # on a put: the latest deletion of its name it carries (replication.core)

    def with_start(self, start_ms: int) -> Record:
        """This record with its validity start (``dataclasses.replace`` costs several times more, per
        record per receiving node). Kept with the record: the nodes of a process share the records of
        a broadcast (``records_from_json``), so all of them get the one copy the first one made."""
        if start_ms == self.start_ms:
            return self
        started: Record | None = self.__dict__.get("_started")
        if started is None or started.start_ms != start_ms:
            started = Record(self.store, self.name, self.version, self.der, self.origin, start_ms, self.replaces)
            started.__dict__["sha256"] = self.sha256  # the same certificate: its digest is computed once
            self.__dict__["_started"] = started
        return started

    @property
    def is_tombstone(self) -> bool:
        return self.der is None

    @property
    def key(self) -> tuple[str, str]:
        return self.store, self.name

    @functools.cached_property
    def sha256(self) -> str | None:
        """SHA-256 of the certificate (what digests compare), None for a tombstone. Kept: the index asks
        for it on every merge, and the nodes of a process share the records of a broadcast."""
        return None if self.der is None else hashlib.sha256(self.der).hexdigest()

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "s": self.store,
            "n": self.name,
            "v": self.version.to_json(),
            "d": None if self.der is None else base64.b64encode(self.der).decode(),
            "o": self.origin,
        }
        if self.replaces is not None:
            raw["r"] = self.replaces.to_json()
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Record:
        store, name, origin, der = raw.get("s"), raw.get("n"), raw.get("o"), raw.get("d")
        if not isinstance(store, str) or not isinstance(name, str) or not isinstance(origin, str):
            raise TypeError("record lacks store, name or origin")
        if der is not None and not isinstance(der, str):
            raise TypeError("record certificate is not base64 text")
        replaces = raw.get("r")
        return cls(
            store=store,
            name=name,
            version=Version.from_json(raw.get("v")),
            der=None if der is None else base64.b64decode(der, validate=True),
            origin=origin,
            replaces=None if replaces is None else Version.from_json(replaces),
        )


_PARSED_KEPT = 64
_parsed: collections.OrderedDict[int, tuple[object, list[Record]]] = collections.OrderedDict()


def records_from_json(raw: object) -> list[Record]:
    """The records of a message body (``Record.from_json`` of each). The nodes of one process share
    an opened broadcast (``envelope.open_shared``), so the list parsed for the first serves the
    others (Records are immutable); the cache holds the raw list, so its ``id`` stays its own."""
    found = _parsed.get(id(raw))
    if found is not None and found[0] is raw:
        return list(found[1])
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise TypeError("records are not a list of objects")
    records = [Record.from_json(r) for r in raw]
    _parsed[id(raw)] = (raw, records)
    if len(_parsed) > _PARSED_KEPT:
        _parsed.popitem(last=False)
    return list(records)


def store_digests(records: Iterable[Record]) -> dict[str, str]:
    """A digest per store of a node's replicated view; equal digests mean equal stores."""
    return digests_of((r.store, r.name, r.version, r.sha256) for r in records)


def digests_of(items: Iterable[tuple[str, str, Version, str | None]]) -> dict[str, str]:
    """``store_digests`` from (store, name, version, SHA-256 of the DER or None for a tombstone)."""
    lines: dict[str, list[str]] = defaultdict(list)
    for store, name, version, sha in items:
        kind = "T" if sha is None else "E:" + sha
        lines[store].append(f"{name}\x00{version}\x00{kind}")
    return {store: hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:32] for store, items in lines.items()}
