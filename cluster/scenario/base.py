"""What every step kind shares: the step record, the step-kind record, argument checks and durations.

Step-kind modules (``steps_*``) import from here, never from the runner, so the runner can list
them in one table (:mod:`cluster.scenario.kinds`) without modules importing each other in a circle.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cluster.labfile import LabSpec
from node.catalog import STORES, UNITS
from node.safetext import safe_text

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

_DURATION = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the step and the problem, on one line
    (what the file said is shown escaped: node.safetext)."""

    def __init__(self, message: str) -> None:
        super().__init__(safe_text(message))


@dataclass(frozen=True)
class Step:
    index: int
    kind: str
    args: Any
    rule: str | None = None
    expect_error: str | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return f"step {self.index} ({self.kind})"


@dataclass(frozen=True)
class StepKind:
    """A step kind defined in a ``steps_*`` module (certificate operations, faults, time...).

    ``validate(args, lab, label)`` raises ``ScenarioError`` before the lab starts;
    ``run(runner, step)`` performs the action and returns a JSON-safe result.
    """

    validate: Callable[[Any, LabSpec, str], None]
    run: Callable[[Runner, Step], Awaitable[Any]]
    may_fail: bool = True  # whether ``expect_error`` is allowed on it
    check: bool = False  # an expectation: an AssertionError from ``run`` fails the step (verdict invalid)
    defines: tuple[str, ...] = ()  # argument keys whose values name new lab CA certificates
    uses: tuple[str, ...] = ()  # argument keys whose values name lab CA certificates (or ``unit@node``)
    # lab CA references anywhere else in the arguments: (field path, reference) pairs, checked like ``uses``
    refs: Callable[[Any, LabSpec], Iterable[tuple[str, Any]]] | None = None


def parse_duration(raw: Any) -> dt.timedelta:
    """``30d``, ``12h``, ``90s``, ``2w``, ``10d1h`` or a number of seconds."""
    if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
        return dt.timedelta(seconds=float(raw))
    if not _DURATION.match(str(raw)):
        raise ScenarioError(f"'{raw}' is not a duration such as 90s, 15m, 12h, 30d, 2w or 10d1h")
    parts = _DURATION_PART.findall(str(raw))
    return dt.timedelta(seconds=sum(float(n) * _UNITS_S[unit] for n, unit in parts))


def need_args(args: Any, keys: Sequence[str], label: str, optional: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(args, Mapping):
        raise ScenarioError(f"{label}: expected a mapping with {', '.join(keys)}")
    missing = [k for k in keys if k not in args]
    if missing:
        raise ScenarioError(f"{label}: missing {', '.join(missing)}")
    unknown = set(args) - set(keys) - set(optional)
    if unknown:
        raise ScenarioError(f"{label}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    return args


def check_node(lab: LabSpec, name: Any, label: str, key: str = "") -> None:
    """A node of the lab; the message names the field's path (``steps[3].upload.node``) when ``key`` is given."""
    if name not in lab.node_names:
        where = f"{label}.{key}" if key else label
        raise ScenarioError(f"{where}: unknown node '{name}'; nodes: {', '.join(lab.node_names)}")


def check_step_nodes(a: Mapping[str, Any], lab: LabSpec, label: str, *, one_of: bool = False) -> None:
    """Validate a step's ``node:`` / ``nodes:`` (names or ``all``); ``one_of``: exactly one of the two."""
    if one_of and ("node" in a) == ("nodes" in a):
        raise ScenarioError(f"{label}: give one of 'node' or 'nodes'")
    for key in ("nodes", "node"):
        for name in as_list(a.get(key)):
            if name != "all":
                check_node(lab, name, label, key)


def step_nodes(runner: Runner, a: Mapping[str, Any]) -> list[str]:
    """The nodes a step names with ``node:`` / ``nodes:``; ``all`` (or neither) is every running node.
    None at all is an error: a step (above all an expectation) on no node would check nothing."""
    wanted = [str(n) for n in as_list(a.get("nodes")) + as_list(a.get("node"))]
    running: list[str] = runner.lab.running_nodes()
    nodes = running if not wanted or "all" in wanted else wanted
    if not nodes:
        raise ScenarioError("no node is running, so this step would check nothing")
    return nodes


def number(
    a: Mapping[str, Any],
    key: str,
    label: str,
    lo: float,
    hi: float,
    *,
    integer: bool = False,
    what: str = "",
) -> None:
    """Refuse a value that is not a number (``integer``: a whole number) from ``lo`` to ``hi``;
    the message names the field's path, e.g. ``steps[3].wait.seconds``."""
    if key not in a:
        return
    value = a[key]
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (not integer or isinstance(value, int))
    if not ok or not lo <= value <= hi:
        raise ScenarioError(f"{label}.{key}: must be {kind}{what} from {lo:g} to {hi:g} (got {value!r})")


def check_store(store: Any, label: str, *, units: bool = True) -> None:
    """A trust store name (``units``: or an identity unit) from the catalog."""
    known = set(STORES) | (set(UNITS) if units else set())
    if not isinstance(store, str) or store not in known:
        what = "store or unit" if units else "trust store"
        raise ScenarioError(f"{label}.store: unknown {what} {store!r}; known: {', '.join(sorted(known))}")


def check_ref(ref: Any, known: set[str], lab: LabSpec, label: str) -> None:
    """A certificate reference: a lab CA name defined by an earlier step, or ``<unit>@<node>``."""
    if not isinstance(ref, str):
        raise ScenarioError(f"{label}: a certificate reference is a name, got {ref!r}")
    if "@" in ref:
        unit, node = ref.split("@", 1)
        if unit not in UNITS:
            raise ScenarioError(f"{label}: unknown unit '{unit}' in '{ref}'; known: {', '.join(sorted(UNITS))}")
        check_node(lab, node, label)
        return
    if ref not in known:
        defined = ", ".join(sorted(known)) or "none yet"
        raise ScenarioError(f"{label}: unknown certificate '{ref}'; earlier ca/sign steps define: {defined}")


def pem_refs(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """The ``{pem: NAME}`` placeholders inside a request body or input (``json.certificate.pem``)."""
    if isinstance(value, Mapping):
        if "pem" in value:
            yield f"{path}.pem", value["pem"]
            return
        for k, v in value.items():
            yield from pem_refs(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from pem_refs(v, f"{path}[{i}]")


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
