"""The checker: after a run, are the replication properties true on every node? (pure)

It compares what every node holds at the end with what the acknowledged operations say it
must hold (DESIGN.md "Replication"):

- convergence: nodes agree on every replicated store;
- locality: an entry of a store whose uploads do not replicate is only on the node that made it;
- no resurrection: nothing deleted by an acknowledged deletion is held in a version older
  than that deletion (R-REPL-9), unless the release profile resurrects by design (10.5);
- nothing lost: the newest acknowledged upload of every name is held wherever it must be,
  unless a newer operation (acknowledged or not) superseded it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from node.catalog import STORES, DeleteMode, ReleaseProfile, Role, store_policy
from replication.hlc import Version


@dataclass(frozen=True)
class Held:
    """One entry a node holds at the end."""

    store: str
    name: str
    version: Version
    sha256: str
    origin: str


@dataclass(frozen=True)
class Op:
    """An acknowledged operation and the version the node gave it."""

    kind: str  # "upload" | "delete"
    node: str
    store: str
    name: str
    version: Version


@dataclass(frozen=True)
class Violation:
    prop: str  # convergence | locality | resurrection | lost
    node: str
    store: str
    entry: str
    detail: str


@dataclass
class Verdict:
    verdict: str  # valid | invalid | unknown
    violations: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "counts": self.counts,
            "violations": [asdict(v) for v in self.violations[:200]],
            "notes": self.notes,
        }


def check(
    held: Mapping[str, Sequence[Held]],
    roles: Mapping[str, Role],
    ops: Iterable[Op],
    release: ReleaseProfile,
    *,
    converged: bool = True,
    maybe_deleted: Iterable[tuple[str, str]] = (),
) -> Verdict:
    """Check the four properties over every node's final holdings.

    ``maybe_deleted`` lists (store, name) of deletions that were sent but not acknowledged (their
    node died under them): they may or may not have happened, so absence is not a loss there.
    """
    unsure = set(maybe_deleted)
    ops = list(ops)
    violations: list[Violation] = []
    notes: list[str] = []
    has_store = {n: {s for s, spec in STORES.items() if roles[n] in spec.roles} for n in held}
    index = {n: {(h.store, h.name): h for h in rows} for n, rows in held.items()}

    # Convergence: per replicated store, every node that has it holds the same (name, version, sha).
    divergent = 0
    for store in STORES:
        if not store_policy(store, release).replicate_add:
            continue
        views = {
            n: frozenset((h.name, h.version, h.sha256) for h in rows if h.store == store)
            for n, rows in held.items()
            if store in has_store[n]
        }
        if len(set(views.values())) > 1:
            names = {name for view in views.values() for name, _v, _s in view}
            for name in sorted(names):
                versions = {n: next((v for nm, v, _s in view if nm == name), None) for n, view in views.items()}
                if len(set(versions.values())) > 1:
                    divergent += 1
                    missing = sorted(n for n, v in versions.items() if v is None)
                    seen = ", ".join(f"{n}: {v}" for n, v in versions.items())
                    violations.append(
                        Violation("convergence", ",".join(missing) or "*", store, name, f"versions differ: {seen}")
                    )

    # Locality: entries of stores whose uploads stay local were made by the node holding them.
    for node, rows in held.items():
        for h in rows:
            if not store_policy(h.store, release).replicate_add and h.origin != node:
                violations.append(Violation("locality", node, h.store, h.name, f"made on {h.origin}, not here"))

    # Expected state from acknowledged operations: per node, per (store, name), the newest op.
    newest: dict[tuple[str, str, str], Op] = {}
    for op in ops:
        policy = store_policy(op.store, release)
        if op.kind == "upload":
            targets = [n for n in held if op.store in has_store[n]] if policy.replicate_add else [op.node]
        else:
            targets = [n for n in held if op.store in has_store[n]] if policy.replicate_delete else [op.node]
        for node in targets:
            key = (node, op.store, op.name)
            if node in held and (key not in newest or op.version > newest[key].version):
                newest[key] = op

    resurrected = lost = 0
    resurrect_expected = release.delete_mode is DeleteMode.LOCAL
    for (node, store, name), op in sorted(newest.items()):
        found = index[node].get((store, name))
        if op.kind == "delete":
            if found is not None and found.version < op.version:
                resurrected += 1
                if not resurrect_expected:
                    violations.append(
                        Violation(
                            "resurrection",
                            node,
                            store,
                            name,
                            f"deleted at {op.version} by {op.node}, held again at {found.version}",
                        )
                    )
        elif (found is None and (store, name) not in unsure) or (found is not None and found.version < op.version):
            if resurrect_expected and found is None:
                continue  # a local deletion under 10.5 may legitimately remove it here
            lost += 1
            violations.append(
                Violation(
                    "lost",
                    node,
                    store,
                    name,
                    f"upload acknowledged at {op.version} by {op.node}; holds {found.version if found else 'nothing'}",
                )
            )
    if resurrect_expected and resurrected:
        notes.append(f"release {release.name}: {resurrected} resurrected entries are the profile's expected behaviour")
    if not converged:
        notes.append("the cluster did not converge before the check")
    counts = {
        "operations": len(ops),
        "lost": lost,
        "resurrected": resurrected,
        "divergent": divergent,
        "violations": len(violations),
    }
    verdict = "invalid" if violations else ("valid" if converged else "unknown")
    return Verdict(verdict, violations, counts, notes)


def parse_rows(rows: Iterable[Mapping[str, Any]]) -> list[Held]:
    """Trust rows of a node's ``list`` answer as ``Held`` entries."""
    return [
        Held(str(r["store"]), str(r["name"]), Version.parse(str(r["version"])), str(r["sha256"]), str(r["origin"]))
        for r in rows
        if r.get("usage") == "trust"
    ]


def by_node(items: Iterable[tuple[str, Held]]) -> dict[str, list[Held]]:
    out: dict[str, list[Held]] = defaultdict(list)
    for node, h in items:
        out[node].append(h)
    return out
