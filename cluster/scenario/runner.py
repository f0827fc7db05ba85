"""Scenario files: a lab, then steps (actions and expectations), run against real nodes.

Parsing checks the whole file before a lab starts, so a typo costs nothing. Every action
goes through the control path; every expectation waits for the cluster to settle (barrier
plus equal digests) and then checks each node, naming the rule it proves.

Verdicts: ``valid`` (exit 0) every expectation held; ``invalid`` (1) one failed;
``unknown`` (2) the run could not decide (an action failed unexpectedly, a timeout).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from cluster import userfiles
from cluster.labca import LabCA
from cluster.labfile import ClustersSpec, LabFileError, LabSpec, load_clusters, parse_clusters
from cluster.scenario.base import (
    ScenarioError,
    Step,
    as_list,
    check_node,
    check_ref,
    check_store,
    need_args,
    number,
    parse_duration,
)
from cluster.scenario.kinds import BUILTIN, EXPECT_KEYS, EXTRA_STEPS
from node import certs
from node.catalog import STORES, UNITS, KeyAlgo
from node.clock import MAX_ADVANCE
from node.errors import CertsimError

if TYPE_CHECKING:
    from cluster.ocsp import OcspResponder

ACTIONS = tuple(k for k in BUILTIN if k != "expect")  # the runner's own actions (expect is its own check)
ERROR_EXPECTING = ("upload", "delete", "start", "stop")  # actions that may carry expect_error
EXIT_CODES = {"valid": 0, "invalid": 1, "unknown": 2}


def step_kinds() -> tuple[str, ...]:
    """Every step kind a scenario may use: the runner's own, then the table's (cluster.scenario.kinds)."""
    return (*ACTIONS, "expect", *EXTRA_STEPS)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    lab: LabSpec
    steps: tuple[Step, ...]
    path: Path | None = None
    settle_timeout: float = 30.0


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file (bounded, UTF-8, checked YAML: cluster.userfiles)."""
    try:
        raw = userfiles.load_yaml_file(path, "scenario")
    except userfiles.UserFileError as exc:
        raise ScenarioError(str(exc)) from None
    return parse_scenario(raw, path)


MAX_WAIT_S = 3600.0  # one wait step: an hour of wall time is already longer than any run should idle
MAX_COUNT = 100_000  # entries an expectation can count in one store
MAX_DAYS = 36_500  # a lab CA certificate's lifetime: a hundred years
KEY_SIZES = {"RSA": (1024, 2048, 3072, 4096), "EC": (256, 384, 521)}
SCENARIO_KEYS = {"scenario", "description", "lab", "cluster", "steps", "settle_timeout"}


def parse_scenario(raw: Any, path: Path | None = None) -> Scenario:
    """Validate a whole scenario before any lab starts: every field's type and range, and every node,
    store, unit and lab CA name a step uses (a CA name must be made by an earlier step)."""
    where = str(path or "scenario")
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: a scenario is a mapping with 'scenario', 'lab' and 'steps'")
    unknown = set(map(str, raw)) - SCENARIO_KEYS
    if unknown:
        known = ", ".join(sorted(SCENARIO_KEYS))
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {known}")
    name = str(raw.get("scenario") or (path.stem if path else "scenario"))
    lab_raw = raw.get("lab")
    try:
        if isinstance(lab_raw, str):
            base = path.parent if path else Path.cwd()
            multi = load_clusters((base / lab_raw).resolve())
        else:
            multi = parse_clusters(lab_raw, source=f"{where}: lab")
        lab = _target_cluster(multi, raw.get("cluster"), where)
    except LabFileError as exc:
        raise ScenarioError(str(exc)) from None
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(f"{where}: 'steps' must be a non-empty list")
    steps = tuple(_parse_step(i, s, lab, where) for i, s in enumerate(steps_raw, start=1))
    _check_names(steps, lab, where)
    settle = raw.get("settle_timeout", 30)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 < settle <= MAX_WAIT_S:
        raise ScenarioError(f"{where}: settle_timeout: must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return Scenario(name, str(raw.get("description", "")).strip(), lab, steps, path, float(settle))


def _target_cluster(multi: ClustersSpec, cluster: Any, where: str) -> LabSpec:
    """The cluster a scenario runs on: the lab's only one, or the one ``cluster:`` names in a lab of several."""
    if cluster is None and not multi.multi:
        return multi.clusters[0]
    if not isinstance(cluster, str):
        raise LabFileError(f"{where}: the lab has clusters {', '.join(multi.names)}; name one with 'cluster:'")
    return multi.cluster(cluster)


def _label(where: str, index: int, kind: str | None = None) -> str:
    """The path of a step in messages: ``file.yaml: steps[3].wait`` (steps count from 1, as in results)."""
    return f"{where}: steps[{index}]" + (f".{kind}" if kind else "")


def _parse_step(index: int, raw: Any, lab: LabSpec, where: str) -> Step:
    label = _label(where, index)
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{label}: must be a mapping such as {{upload: {{...}}}}")
    kinds = [k for k in raw if k in step_kinds()]
    if len(kinds) != 1:
        raise ScenarioError(
            f"{label}: must have exactly one of: {', '.join(step_kinds())} (got {', '.join(map(str, raw))})"
        )
    kind = str(kinds[0])
    label = _label(where, index, kind)
    extra = set(map(str, raw)) - {kind, "rule", "expect_error", "note"}
    if extra:
        raise ScenarioError(f"{label}: unknown key(s) {', '.join(sorted(extra))}")
    args = raw[kind]
    rule = raw.get("rule")
    expect_error = raw.get("expect_error")
    if kind == "expect" and isinstance(args, Mapping) and "rule" in args:
        rule = args.get("rule")
    for key, value in (("rule", rule), ("expect_error", expect_error), ("note", raw.get("note"))):
        if value is not None and not isinstance(value, str | int | float):
            raise ScenarioError(f"{_label(where, index)}.{key}: must be text (got {type(value).__name__})")
    may_fail = kind in ERROR_EXPECTING or (kind in EXTRA_STEPS and EXTRA_STEPS[kind].may_fail)
    if expect_error is not None and not may_fail:
        raise ScenarioError(f"{label}: expect_error does not apply to {kind} steps")
    try:
        if kind in EXTRA_STEPS:
            EXTRA_STEPS[kind].validate(args, lab, label)
        else:
            _validate_args(kind, args, lab, label)
    except ScenarioError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:  # a value of the wrong type
        raise ScenarioError(f"{label}: a value has the wrong type or range ({type(exc).__name__}: {exc})") from None
    return Step(
        index,
        kind,
        args,
        None if rule is None else str(rule),
        None if expect_error is None else str(expect_error),
        str(raw.get("note", "")),
    )


_BUILTIN_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (keys that define lab CA names, keys that use them)
    "ca": (("create", "issue"), ("issuer",)),
    "upload": ((), ("cert", "certs")),
    "delete": ((), ("cert",)),
    "expect": ((), ("has", "lacks")),
}


def _check_names(steps: Sequence[Step], lab: LabSpec, where: str) -> None:
    """Every lab CA name a step uses is defined by an earlier step (``ca``, ``sign``...), before the lab starts."""
    known: set[str] = set()
    for step in steps:
        kind = _expect_delegate(step.args) if step.kind == "expect" else None
        kind = kind or step.kind
        refs = None
        if kind in EXTRA_STEPS:
            defines, uses, refs = EXTRA_STEPS[kind].defines, EXTRA_STEPS[kind].uses, EXTRA_STEPS[kind].refs
        else:
            defines, uses = _BUILTIN_NAMES.get(kind, ((), ()))
        a = step.args if isinstance(step.args, Mapping) else {}
        label = _label(where, step.index, step.kind)
        for key in uses:
            for ref in as_list(a.get(key)):
                check_ref(ref, known, lab, f"{label}.{key}")
        for path, ref in refs(step.args, lab) if refs is not None else ():
            check_ref(ref, known, lab, f"{label}.{path}")
        known.update(str(n) for key in defines for n in as_list(a.get(key)))


def _validate_args(kind: str, args: Any, lab: LabSpec, label: str) -> None:
    if kind in ("stop", "start", "resync"):
        check_node(lab, args, label)
    elif kind == "advance":
        if parse_duration(args) > MAX_ADVANCE:
            raise ScenarioError(f"{label}: one advance moves the clock at most {MAX_ADVANCE.days} days")
    elif kind == "expect" and (delegate := _expect_delegate(args)) is not None:
        EXTRA_STEPS[delegate].validate(args, lab, label)
    else:
        _VALIDATORS[kind](args, lab, label)


def _v_ca(args: Any, _lab: LabSpec, label: str) -> None:
    """Key type and size, lifetime and names of a lab CA step: refused, never silently replaced (DSA is not RSA)."""
    a = need_args(
        args,
        [],
        label,
        ["create", "issue", "issuer", "cn", "san", "key_type", "key_size", "days", "starts_in_days", "ocsp"],
    )
    if ("create" in a) == ("issue" in a):
        raise ScenarioError(f"{label}: give one of 'create' (a CA) or 'issue' (a leaf certificate)")
    if "issue" in a and "issuer" not in a:
        raise ScenarioError(f"{label}: 'issue' needs an 'issuer'")
    key_type = str(a.get("key_type", "RSA")).upper()
    if key_type not in KEY_SIZES:
        raise ScenarioError(f"{label}.key_type: must be RSA or EC (got {a['key_type']!r})")
    if "key_size" in a and a["key_size"] not in KEY_SIZES[key_type]:
        sizes = ", ".join(map(str, KEY_SIZES[key_type]))
        raise ScenarioError(f"{label}.key_size: a {key_type} key has {sizes} bits (got {a['key_size']!r})")
    number(a, "days", label, 1, MAX_DAYS, integer=True, what=" of days")
    number(a, "starts_in_days", label, -MAX_DAYS, MAX_DAYS, what=" of days")
    for key in ("create", "issue", "issuer", "cn"):
        if key in a and not isinstance(a[key], str | int):
            raise ScenarioError(f"{label}.{key}: must be a name (got {a[key]!r})")


def _v_upload(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "store"], label, ["cert", "certs", "chain", "format", "pem", "raw", "raw_b64"])
    check_node(lab, a["node"], label, "node")
    check_store(a["store"], label)
    if sum(k in a for k in ("cert", "certs", "pem", "raw", "raw_b64")) != 1:
        raise ScenarioError(f"{label}: give one of cert, certs, pem, raw or raw_b64")
    if a.get("format", "pem") not in ("pem", "der", "pkcs7", "pkcs7-der"):
        raise ScenarioError(f"{label}.format: must be pem, der, pkcs7 or pkcs7-der")
    for key in ("pem", "raw", "raw_b64"):
        if key in a and not isinstance(a[key], str):
            raise ScenarioError(f"{label}.{key}: must be text")


def _v_delete(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "store"], label, ["name", "cert"])
    check_node(lab, a["node"], label, "node")
    check_store(a["store"], label)
    if ("name" in a) == ("cert" in a):
        raise ScenarioError(f"{label}: give one of 'name' or 'cert'")


def _v_wait(args: Any, _lab: LabSpec, label: str) -> None:
    if args != "converged" and not (isinstance(args, Mapping) and set(args) <= {"converged", "seconds"}):
        raise ScenarioError(f"{label}: wait takes 'converged' or {{seconds: N}}")
    if isinstance(args, Mapping):
        number(args, "seconds", label, 0, MAX_WAIT_S, what=" of seconds")


def _v_list(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node"], label, ["store", "usage", "cn", "key_type", "expires_before", "expires_after"])
    check_node(lab, a["node"], label, "node")
    if "store" in a:
        check_store(a["store"], label)


def _v_expect(args: Any, lab: LabSpec, label: str) -> None:
    """An expectation must be able to fail: a known store, held by at least one node it looks at."""
    a = need_args(args, ["store"], label, ["rule", "nodes", "node", "has", "lacks", "count", "settle"])
    if not any(k in a for k in ("has", "lacks", "count")):
        raise ScenarioError(f"{label}: an expectation needs has, lacks or count")
    for key in ("has", "lacks"):
        if key in a and not as_list(a[key]):
            raise ScenarioError(f"{label}.{key}: names no certificate, so it would check nothing")
    check_store(a["store"], label)
    store = str(a["store"])
    number(a, "count", label, 0, MAX_COUNT, integer=True)
    if "settle" in a and not isinstance(a["settle"], bool):
        raise ScenarioError(f"{label}.settle: must be true or false")
    named = as_list(a.get("nodes", [])) + ([a["node"]] if "node" in a else [])
    for n in named:
        if n != "all":
            check_node(lab, n, label, "node" if "node" in a else "nodes")
            if n not in _holders(lab, store):
                raise ScenarioError(f"{label}.node: '{n}' has no '{store}' (not on a {lab.node(n).role.value} node)")
    if (not named or "all" in named) and not _holders(lab, store):
        raise ScenarioError(f"{label}.store: no node of this lab has '{store}': the check would check nothing")


_VALIDATORS: dict[str, Callable[[Any, LabSpec, str], None]] = {
    "ca": _v_ca,
    "upload": _v_upload,
    "delete": _v_delete,
    "wait": _v_wait,
    "list": _v_list,
    "expect": _v_expect,
}


def _holders(lab: LabSpec, store: str) -> list[str]:
    """The lab's nodes whose role has this store or unit (catalog)."""
    roles = STORES[store].roles if store in STORES else (UNITS[store].roles if store in UNITS else set())
    return [n.name for n in lab.nodes if n.role in roles]


def _expect_delegate(args: Any) -> str | None:
    """The step kind an ``expect:`` hands its check to (``phones:`` and ``link:`` expectations)."""
    if isinstance(args, Mapping):
        return next((kind for key, kind in EXPECT_KEYS.items() if key in args), None)
    return None


# -------------------------------------------------------------------------------------------
# running


@dataclass
class StepResult:
    index: int
    kind: str
    status: str  # ok | failed | error | unknown
    sim: str
    rule: str | None = None
    detail: str = ""
    result: Any = None


@dataclass
class RunResult:
    scenario: str
    verdict: str
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def expectations(self) -> list[StepResult]:
        return [s for s in self.steps if s.kind.startswith("expect") or s.rule is not None]


StepCallback = Callable[[StepResult], None]


class Runner:
    """Runs a scenario's steps against a started ``cluster.lab.Lab``."""

    def __init__(self, scenario: Scenario, lab: Any, on_step: StepCallback | None = None) -> None:
        self.scenario = scenario
        self.lab = lab
        self.ca = LabCA(lab.clock)
        self.ocsp: OcspResponder | None = None  # the lab CA's OCSP responder, started on first use (steps_ocsp)
        self.on_step = on_step
        self.identity_cache: dict[tuple[str, str], str] = {}
        self.memory: dict[str, Any] = {}  # what steps leave for later steps (burst acknowledgements, ...)
        self.cleanups: list[Callable[[], Awaitable[None]]] = []

    async def ocsp_responder(self) -> OcspResponder:
        """The scenario CA's OCSP responder on a free loopback port (R-OCSP-1): started by the first step
        that needs it (``ocsp``, ``revoke``, a ``ca`` step with ``ocsp: true``...), stopped after the run."""
        if self.ocsp is None:
            from cluster.ocsp import OcspResponder  # noqa: PLC0415 - aiohttp's server only when a scenario uses OCSP

            responder = OcspResponder(self.ca, self.lab.clock)
            await responder.start()
            self.ocsp = responder
            self.cleanups.append(responder.stop)
        return self.ocsp

    async def run(self) -> RunResult:
        try:
            return await self._run_all()
        finally:
            for cleanup in reversed(self.cleanups):
                await cleanup()

    async def _run_all(self) -> RunResult:
        result = RunResult(self.scenario.name, "valid")
        for step in self.scenario.steps:
            try:
                outcome = await self._run_step(step)
            except (CertsimError, ScenarioError, TimeoutError) as exc:
                message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                outcome = StepResult(step.index, step.kind, "error", self._now(), step.rule, message)
            except (TypeError, ValueError, KeyError, LookupError, OverflowError) as exc:
                # a value validation let through: the run cannot decide, it must not end in a traceback
                message = f"{type(exc).__name__}: {exc}"
                outcome = StepResult(step.index, step.kind, "error", self._now(), step.rule, message)
            result.steps.append(outcome)
            self.lab.history.record(
                {
                    "event": "step",
                    "step": step.index,
                    "kind": step.kind,
                    "status": outcome.status,
                    "rule": step.rule,
                    "detail": outcome.detail,
                    "sim": outcome.sim,
                }
            )
            if self.on_step is not None:
                self.on_step(outcome)
            if outcome.status == "error":
                result.verdict = "unknown"
                result.reason = f"{step.label} could not run: {outcome.detail}"
                break
            if outcome.status == "failed":
                result.verdict = "invalid"
                result.reason = result.reason or f"{step.label} failed: {outcome.detail}"
            elif outcome.status == "unknown" and result.verdict == "valid":
                result.verdict = "unknown"
                result.reason = f"{step.label}: {outcome.detail}"
        return result

    def _now(self) -> str:
        return certs.iso(self.lab.clock.now())

    def _ok(self, step: Step, detail: str = "", result: Any = None, status: str = "ok") -> StepResult:
        return StepResult(step.index, step.kind, status, self._now(), step.rule, detail, result)

    async def _run_step(self, step: Step) -> StepResult:
        delegate = _expect_delegate(step.args) if step.kind == "expect" else None
        if step.kind == "expect" and delegate is None:
            return await self._expect(step)
        if step.expect_error is not None:
            return await self._expect_failure(step)
        if delegate is not None or (step.kind in EXTRA_STEPS and EXTRA_STEPS[step.kind].check):
            try:
                result = await (EXTRA_STEPS[delegate].run(self, step) if delegate else self._action(step))
            except AssertionError as exc:
                return self._ok(step, str(exc), status="failed")
            return self._ok(step, _summary(step, result), result)
        result = await self._action(step)
        return self._ok(step, _summary(step, result), result)

    async def _action(self, step: Step) -> Any:
        a = step.args
        if step.kind in EXTRA_STEPS:
            return await EXTRA_STEPS[step.kind].run(self, step)
        if step.kind == "ca":
            ocsp_url = (await self.ocsp_responder()).url if a.get("ocsp") else None  # the responder URI in AIA
            return await asyncio.to_thread(self._ca, a, ocsp_url)
        if step.kind == "upload":
            data = self._upload_data(a)
            return await self.lab.request(
                a["node"], "upload", {"store": a["store"], "data": base64.b64encode(data).decode()}
            )
        if step.kind == "delete":
            name = a.get("name") or certs.entry_name(self.ca.get(a["cert"]).cert)
            return await self.lab.request(a["node"], "delete", {"store": a["store"], "name": name})
        if step.kind == "stop":
            await self.lab.stop_node(a)
            return {"stopped": a}
        if step.kind == "start":
            await self.lab.start_node(a)
            return {"started": a}
        if step.kind == "resync":
            return await self.lab.request(a, "resync")
        if step.kind == "advance":
            await self.lab.advance(parse_duration(a))
            return {"sim_time": self._now()}
        if step.kind == "wait":
            if isinstance(a, Mapping) and "seconds" in a:
                await asyncio.sleep(float(a["seconds"]))
                return {"waited": a["seconds"]}
            conv = await self.lab.converge(timeout=self.scenario.settle_timeout)
            if not conv.converged:
                raise TimeoutError(
                    f"the cluster did not converge within {self.scenario.settle_timeout:g} s: {conv.detail}"
                )
            return {"converged_in_s": round(conv.seconds, 3)}
        if step.kind == "list":
            args = {k: v for k, v in a.items() if k != "node"}
            return await self.lab.request(a["node"], "list", args)
        raise ScenarioError(f"{step.label}: unknown step")

    def _ca(self, a: Mapping[str, Any], ocsp_url: str | None = None) -> dict[str, Any]:
        algo = KeyAlgo.EC if str(a.get("key_type", "RSA")).upper() == "EC" else KeyAlgo.RSA
        size = int(a.get("key_size", 256 if algo is KeyAlgo.EC else 2048))
        cn = None if a.get("cn") is None else str(a["cn"])
        starts = float(a.get("starts_in_days", 0))
        if "create" in a:
            issuer = None if a.get("issuer") is None else str(a["issuer"])
            days = int(a.get("days", 3650))
            issued = self.ca.create_ca(
                str(a["create"]),
                issuer=issuer,
                cn=cn,
                key_algo=algo,
                key_size=size,
                days=days,
                starts_in_days=starts,
                ocsp_url=ocsp_url,
            )
        else:
            issued = self.ca.issue(
                str(a["issue"]),
                issuer=str(a["issuer"]),
                cn=cn,
                san=[str(n) for n in as_list(a.get("san"))],
                key_algo=algo,
                key_size=size,
                days=int(a.get("days", 365)),
                starts_in_days=starts,
                ocsp_url=ocsp_url,
            )
        return {
            "name": issued.name,
            "cn": certs.common_name(issued.cert.subject),
            "ca": issued.is_ca,
            "not_after": certs.iso(issued.cert.not_valid_after_utc),
        }

    def _upload_data(self, a: Mapping[str, Any]) -> bytes:
        if "pem" in a:
            return str(a["pem"]).encode()
        if "raw" in a:
            return str(a["raw"]).encode()
        if "raw_b64" in a:
            return base64.b64decode(str(a["raw_b64"]))
        names = as_list(a.get("certs") or a.get("cert"))
        items = [self.ca.get(str(n)) for n in names]
        fmt = a.get("format", "pem")
        chain = bool(a.get("chain", False))
        if fmt == "der":
            if len(items) != 1 or chain:
                raise ScenarioError("format der carries exactly one certificate and no chain; use pkcs7-der")
            return items[0].der()
        if fmt in ("pkcs7", "pkcs7-der"):
            bundle = [c for i in items for c in ([i.cert, *i.chain] if chain else [i.cert])]
            enc = serialization.Encoding.DER if fmt == "pkcs7-der" else serialization.Encoding.PEM
            return pkcs7.serialize_certificates(bundle, enc)
        return b"".join(i.pem(with_chain=chain) for i in items)

    async def _expect_failure(self, step: Step) -> StepResult:
        """The action must fail with the given text and change nothing on any node."""
        before = await self._snapshot()
        try:
            result = await self._action(step)
        except CertsimError as exc:
            after = await self._snapshot()
            wanted = str(step.expect_error).lower()
            if wanted not in exc.message.lower():
                return self._ok(
                    step,
                    f"failed, but with '{exc.message}' instead of '{step.expect_error}'",
                    status="failed",
                )
            if before != after:
                return self._ok(step, f"refused ('{exc.message}') but state changed on some node", status="failed")
            return self._ok(step, f"refused as expected: {exc.message}")
        return self._ok(
            step,
            f"succeeded ({_summary(step, result)}) but an error containing '{step.expect_error}' was expected",
            result,
            status="failed",
        )

    async def _snapshot(self) -> dict[str, list[tuple[str, str, str]]]:
        await self.lab.converge(timeout=self.scenario.settle_timeout)
        snap: dict[str, list[tuple[str, str, str]]] = {}
        for node in self.lab.running_nodes():
            rows = await self.lab.request(node, "list", {})
            snap[node] = sorted((r["store"], r["name"], r["sha256"]) for r in rows)
        return snap

    async def _resolve(self, ref: str) -> tuple[str, str]:
        """(entry name, sha256) of a reference: a lab CA name, or ``<unit>@<node>`` for a node's identity."""
        if "@" in ref:
            unit, node = ref.split("@", 1)
            rows = await self.lab.request(node, "list", {"store": unit, "usage": "identity"})
            if not rows:
                raise ScenarioError(f"node '{node}' has no '{unit}' identity certificate")
            return str(rows[0]["name"]), str(rows[0]["sha256"])
        issued = self.ca.get(ref)
        return certs.entry_name(issued.cert), certs.fingerprint(issued.cert)

    async def _expect(self, step: Step) -> StepResult:
        a = step.args
        store = str(a["store"])
        converged = True
        if a.get("settle", True):
            conv = await self.lab.converge(timeout=self.scenario.settle_timeout)
            converged = conv.converged
        nodes = self._target_nodes(a, store)
        if not nodes:
            raise ScenarioError(f"no running node holds '{store}', so this expectation would check nothing")
        has = [await self._resolve(str(r)) for r in as_list(a.get("has"))]
        lacks = [await self._resolve(str(r)) for r in as_list(a.get("lacks"))]
        problems: list[str] = []
        entries = 0
        for node in nodes:
            rows = await self.lab.request(node, "list", {"store": store})
            entries += len(rows)
            held = {(r["name"], r["sha256"]) for r in rows}
            held_names = {r["name"] for r in rows}
            problems += [f"{node} lacks {store}/{n}" for n, fp in has if (n, fp) not in held]
            problems += [f"{node} still holds {store}/{n}" for n, _fp in lacks if n in held_names]
            if "count" in a and len(rows) != int(a["count"]):
                problems.append(f"{node} holds {len(rows)} in {store}, expected {a['count']}")
        what = " ".join(
            p
            for p in (
                f"has {', '.join(n for n, _ in has)}" if has else "",
                f"lacks {', '.join(n for n, _ in lacks)}" if lacks else "",
                f"count {a['count']}" if "count" in a else "",
            )
            if p
        )
        checked = {"nodes": nodes, "store": store, "entries": entries}  # what the expectation looked at
        if problems:
            return self._ok(step, "; ".join(problems), checked, status="failed")
        if not converged:
            return self._ok(
                step,
                f"{store} {what} on {', '.join(nodes)}, but the cluster had not converged",
                checked,
                status="unknown",
            )
        return self._ok(step, f"{store} {what} on {', '.join(nodes)} ({entries} entries checked)", checked)

    def _target_nodes(self, a: Mapping[str, Any], store: str) -> list[str]:
        wanted = as_list(a.get("nodes")) + ([a["node"]] if "node" in a else [])
        running = self.lab.running_nodes()
        if not wanted or "all" in wanted:
            roles = STORES[store].roles if store in STORES else (UNITS[store].roles if store in UNITS else set())
            return [n for n in running if self.scenario.lab.node(n).role in roles]
        return [str(n) for n in wanted]


def _summary(step: Step, result: Any) -> str:
    if not isinstance(result, Mapping):
        return f"{len(result)} certificates" if isinstance(result, list) else ""
    if step.kind == "upload":
        parts = [f"{k} {', '.join(result[k])}" for k in ("added", "replaced", "unchanged") if result.get(k)]
        return f"{step.args['node']} {result.get('store')}: " + "; ".join(parts + list(result.get("notes", [])))
    if step.kind == "delete":
        where = "every node" if result.get("replicated") else "this node only"
        return f"{step.args['node']} deleted {result.get('store')}/{result.get('deleted')} ({where})"
    return ", ".join(f"{k}={v}" for k, v in result.items())
