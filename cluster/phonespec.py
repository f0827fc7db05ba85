"""The ``phones:`` part of a lab file: a population of simulated phones plus named ones.

```yaml
phones:
  count: 200          # SEP000000000001 ... registered round-robin to the Unified CM nodes
  model: "8845"
  secure: false       # an encrypted security profile: TLS registration with an LSC (R-PHONE-6)
  nodes: [cucm-sub1]  # optional: where the population registers (default: every Unified CM node)
  named:
    - {name: SEP00AABBCCDD01, model: "8865", secure: true, node: cucm-pub, auth_string: "12345"}
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PHONES = 20_000
PHONE_KEYS = {"count", "model", "secure", "nodes", "named"}
NAMED_KEYS = {"name", "model", "secure", "node", "auth_string"}
_SEP = re.compile(r"SEP[0-9A-F]{12}")


class PhoneSpecError(ValueError):
    """A ``phones:`` section that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class NamedPhone:
    name: str
    model: str
    secure: bool
    node: str | None = None
    auth_string: str | None = None  # CAPF authentication string configured for it (R-PHONE-6)


@dataclass(frozen=True)
class PhonesSpec:
    count: int = 0
    model: str = "8845"
    secure: bool = False
    nodes: tuple[str, ...] = ()
    named: tuple[NamedPhone, ...] = ()

    def phones(self, cucm_nodes: Sequence[str]) -> list[NamedPhone]:
        """Every phone with its node: the population round-robin over ``nodes`` (or every Unified CM node)."""
        targets = list(self.nodes or cucm_nodes)
        out = [
            NamedPhone(f"SEP{i:012X}", self.model, self.secure, targets[(i - 1) % len(targets)])
            for i in range(1, self.count + 1)
        ]
        for i, p in enumerate(self.named):
            out.append(p if p.node else NamedPhone(p.name, p.model, p.secure, targets[i % len(targets)], p.auth_string))
        return out


def _model(raw: Any, where: str) -> str:
    if not isinstance(raw, str | int) or isinstance(raw, bool) or not str(raw).strip():
        raise PhoneSpecError(f"{where}: 'model' is a phone model such as 8845")
    return str(raw)[:32]


def _flag(raw: Any, where: str, key: str) -> bool:
    if not isinstance(raw, bool):
        raise PhoneSpecError(f"{where}: '{key}' is true or false")
    return raw


def parse_phones(raw: Any, cucm_nodes: Sequence[str], source: str = "lab") -> PhonesSpec:
    """Validate a ``phones:`` mapping against the lab's Unified CM nodes."""
    where = f"{source}: phones"
    if raw is None:
        return PhonesSpec()
    if not isinstance(raw, Mapping):
        raise PhoneSpecError(f"{where} must be a mapping such as {{count: 200, model: 8845, secure: false}}")
    unknown = set(raw) - PHONE_KEYS
    if unknown:
        raise PhoneSpecError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    if not cucm_nodes:
        raise PhoneSpecError(f"{where}: phones register to Unified CM nodes and this lab has none")
    count = raw.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_PHONES:
        raise PhoneSpecError(f"{where}: 'count' is a number from 0 to {MAX_PHONES}")
    nodes = raw.get("nodes", [])
    if not isinstance(nodes, list) or any(n not in cucm_nodes for n in nodes):
        raise PhoneSpecError(f"{where}: 'nodes' lists Unified CM nodes of this lab ({', '.join(cucm_nodes)})")
    named_raw = raw.get("named", [])
    if not isinstance(named_raw, list):
        raise PhoneSpecError(f"{where}: 'named' is a list of phones")
    model = _model(raw.get("model", "8845"), where)
    secure = _flag(raw.get("secure", False), where, "secure")
    named: list[NamedPhone] = []
    seen = {f"SEP{i:012X}" for i in range(1, count + 1)}
    for i, item in enumerate(named_raw, start=1):
        w = f"{where}: named phone {i}"
        if not isinstance(item, Mapping) or "name" not in item:
            raise PhoneSpecError(f"{w} must be a mapping with a 'name' (SEP and 12 hex digits)")
        extra = set(item) - NAMED_KEYS
        if extra:
            raise PhoneSpecError(f"{w}: unknown key(s) {', '.join(sorted(map(str, extra)))}")
        name = str(item["name"])
        if not _SEP.fullmatch(name):
            raise PhoneSpecError(f"{w}: name must be SEP and 12 upper-case hex digits (got {name[:40]!r})")
        if name in seen:
            raise PhoneSpecError(f"{w}: {name} is defined twice")
        seen.add(name)
        node = item.get("node")
        if node is not None and node not in cucm_nodes:
            raise PhoneSpecError(f"{w}: node must be a Unified CM node of this lab ({', '.join(cucm_nodes)})")
        auth = item.get("auth_string")
        if auth is not None and not (isinstance(auth, str | int) and re.fullmatch(r"[0-9]{4,10}", str(auth))):
            raise PhoneSpecError(f"{w}: auth_string is 4 to 10 digits, as CAPF requires")
        named.append(
            NamedPhone(
                name,
                _model(item.get("model", model), w),
                _flag(item.get("secure", secure), w, "secure"),
                None if node is None else str(node),
                None if auth is None else str(auth),
            )
        )
    return PhonesSpec(count, model, secure, tuple(str(n) for n in nodes), tuple(named))
