"""Scenario steps for phones, CTL, DRS backups and TLS links (R-PHONE-*, R-DRS-*, R-LINK-*).

Actions:
- ``phones: {reset: all|[names]|<node>}``, ``{erase_itl: all|[names]}``, ``{itl_reset: localkey|remotekey}``,
  ``{capf: all|[names], auth_string: "12345"}`` (what the user types; default the configured one)
- ``ctl: mixed-mode|non-secure-mode|update`` (`utils ctl set-cluster ...`, `utils ctl update CTLFile`)
- ``backup: {create: NAME}``, ``backup: {restore: NAME, nodes: [..]}``
- ``trust_identity: {from, unit, node, store}``: download a node's identity certificate, upload it as trust
- ``link: {kind, from, to, trusts}``: one TLS handshake, recorded (no verdict)

Checks, written as ``expect:`` with these keys (``cluster.scenario.runner`` hands them here):
- ``expect: {phones: all|[names]|{node: X}, state: registered, count: N, reason: "text"}``;
  ``counts: {registered: 3, registered-old-config: 3}`` (``locked`` is registered-old-config)
- ``expect: {link: {kind, from: node|all|[nodes], to, trusts}, ok: true|false, missing: "text"}``
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from cluster.labfile import LabSpec
from cluster.scenario.base import ScenarioError, Step, StepKind, as_list, check_node, check_store, need_args
from node.catalog import UNITS, Role
from node.phone import State

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

STATE_NAMES = {s.value: s for s in State} | {"locked": State.LOCKED}
PHONE_ACTIONS = ("reset", "erase_itl", "itl_reset", "capf")


def _phone_names(lab: LabSpec) -> set[str]:
    cucm = [n.name for n in lab.nodes if n.role is Role.CUCM]
    return {p.name for p in lab.phones.phones(cucm)} if cucm else set()


def _check_selection(sel: Any, lab: LabSpec, label: str) -> None:
    if sel == "all":
        return
    if isinstance(sel, Mapping):
        need_args(sel, ["node"], label)
        check_node(lab, sel["node"], label, "node")
        return
    names = _phone_names(lab)
    unknown = [str(n) for n in as_list(sel) if n not in names]
    if unknown or not as_list(sel):
        raise ScenarioError(
            f"{label}: phones are 'all', {{node: NAME}} or names of the lab's phones (unknown: {unknown})"
        )


def _select(runner: Runner, fleet: Any, sel: Any) -> list[str] | None:
    if sel == "all":
        return None
    if isinstance(sel, Mapping):
        return [p.name for p in fleet.phones.values() if p.node == sel["node"]]
    return [str(n) for n in as_list(sel)]


async def _fleet(runner: Runner) -> Any:
    from cluster.phones import fleet  # noqa: PLC0415 - only scenarios with phones load the fleet

    return await fleet(runner.lab)


# --- phones -----------------------------------------------------------------------------


def _v_phones(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, [*PHONE_ACTIONS, "auth_string"])
    acts = [k for k in PHONE_ACTIONS if k in a]
    if len(acts) != 1:
        raise ScenarioError(f"{label}: give one of {', '.join(PHONE_ACTIONS)}")
    if not _phone_names(lab):
        raise ScenarioError(f"{label}: the lab has no phones (add phones: to the lab file)")
    if "itl_reset" in a and a["itl_reset"] not in ("localkey", "remotekey"):
        raise ScenarioError(f"{label}: itl_reset is localkey or remotekey")
    if "itl_reset" not in a:
        _check_selection(a[acts[0]], lab, label)


async def _phones(runner: Runner, step: Step) -> Any:
    a = step.args
    f = await _fleet(runner)
    if "reset" in a:
        return await f.reset(_select(runner, f, a["reset"]))
    if "erase_itl" in a:
        return await f.erase(_select(runner, f, a["erase_itl"]))
    if "capf" in a:
        entered = None if a.get("auth_string") is None else str(a["auth_string"])
        return await f.capf_install(_select(runner, f, a["capf"]), entered=entered)
    if a["itl_reset"] == "remotekey":
        from cluster import backup  # noqa: PLC0415

        return await f.itl_reset("remotekey", recovery_key_file=await backup.remotekey_reset_file(runner.lab))
    return await f.itl_reset("localkey")


def _v_ctl(args: Any, _lab: LabSpec, label: str) -> None:
    if args not in ("mixed-mode", "non-secure-mode", "update"):
        raise ScenarioError(f"{label}: ctl is mixed-mode, non-secure-mode or update")


async def _ctl(runner: Runner, step: Step) -> Any:
    f = await _fleet(runner)
    return await f.ctl(str(step.args))


def _v_expect_phones(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["phones"], label, ["rule", "state", "count", "counts", "reason"])
    if not _phone_names(lab):
        raise ScenarioError(f"{label}.phones: the lab has no phones, so this would check nothing")
    _check_selection(a["phones"], lab, label)
    if "state" not in a and "counts" not in a:
        raise ScenarioError(f"{label}: a phone expectation needs state (and count) or counts")
    for s in ([a["state"]] if "state" in a else []) + list(a.get("counts", {}) or {}):
        if s not in STATE_NAMES:
            raise ScenarioError(f"{label}: unknown phone state {s!r}; known: {', '.join(STATE_NAMES)}")


async def _expect_phones(runner: Runner, step: Step) -> Any:
    a = step.args
    f = await _fleet(runner)
    await f.settle()
    names = _select(runner, f, a["phones"])
    names = list(f.phones) if names is None else names
    phones = [f.phones[n] for n in names]
    if not phones:
        raise ScenarioError(f"{step.label}: no phone matches {a['phones']!r}, so this would check nothing")
    problems: list[str] = []
    if "state" in a:
        want = STATE_NAMES[a["state"]]
        matching = [p for p in phones if p.state is want]
        expected = int(a["count"]) if "count" in a else len(phones)
        if len(matching) != expected:
            others = [p for p in phones if p.state is not want][:3]
            problems.append(
                f"{len(matching)} of {len(phones)} phones are {want.value}, expected {expected}"
                + "".join(f"; {p.name} is {p.state.value}: {p.reason}" for p in others)
            )
        if "reason" in a and not all(str(a["reason"]).lower() in p.reason.lower() for p in matching):
            odd = next(p for p in matching if str(a["reason"]).lower() not in p.reason.lower())
            problems.append(f"{odd.name}'s reason is {odd.reason!r}, expected it to mention {a['reason']!r}")
    for s, n in (a.get("counts") or {}).items():
        got = sum(1 for p in phones if p.state is STATE_NAMES[s])
        if got != int(n):
            problems.append(f"{got} phones are {STATE_NAMES[s].value}, expected {n}")
    if problems:
        raise AssertionError("; ".join(problems))
    return f.summary(names)


# --- CTL trust exchange, backups -----------------------------------------------------------


def _v_trust_identity(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["from", "unit", "node", "store"], label)
    check_node(lab, a["from"], label, "from")
    check_node(lab, a["node"], label, "node")
    if a["unit"] not in UNITS:
        raise ScenarioError(f"{label}.unit: unknown unit {a['unit']!r}; known: {', '.join(sorted(UNITS))}")
    check_store(a["store"], label, units=False)


async def _trust_identity(runner: Runner, step: Step) -> Any:
    """Download ``unit`` of node ``from`` and upload it to ``store`` on ``node`` (e.g. CAPF into CAPF-trust)."""
    a = step.args
    got = await runner.lab.request(a["from"], "download", {"store": a["unit"], "format": "pem"})
    return await runner.lab.request(a["node"], "upload", {"store": a["store"], "data": got["data"]})


def _v_backup(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["create", "restore", "nodes"])
    if ("create" in a) == ("restore" in a):
        raise ScenarioError(f"{label}: give one of create or restore")
    for n in as_list(a.get("nodes")):
        check_node(lab, n, label, "nodes")


async def _backup(runner: Runner, step: Step) -> Any:
    from cluster import backup  # noqa: PLC0415

    a = step.args
    if "create" in a:
        return await backup.create(runner.lab, str(a["create"]))
    nodes = [str(n) for n in as_list(a.get("nodes"))] or None
    result = await backup.restore(runner.lab, str(a["restore"]), nodes)
    return {"backup": result["backup"], "taken_at": result["taken_at"], "nodes": sorted(result["restored"])}


# --- TLS links ------------------------------------------------------------------------------


def _v_link_spec(raw: Any, lab: LabSpec, label: str) -> None:
    a = need_args(raw, ["kind", "from", "to"], label, ["trusts"])
    if a["kind"] not in ("tomcat", "sip", "ldap", "imp"):
        raise ScenarioError(f"{label}.kind: link kind is tomcat, sip, ldap or imp (got {a['kind']!r})")
    for n in as_list(a["from"]):
        if n != "all":
            check_node(lab, n, label, "from")
    if a["kind"] in ("tomcat", "imp"):
        check_node(lab, a["to"], label, "to")
    if not isinstance(a["to"], str) or not a["to"]:
        raise ScenarioError(f"{label}.to: names a node, <cluster>/<node> (sip) or a lab CA certificate")
    if not isinstance(a.get("trusts", []), list):
        raise ScenarioError(f"{label}.trusts: a list of lab CA names or <unit>@<node>")


def _link_refs(raw: Any, lab: LabSpec, path: str) -> Iterator[tuple[str, Any]]:
    """Lab CA names a link uses: ``to`` of an LDAP server or SIP gateway (not a node), and ``trusts``."""
    if not isinstance(raw, Mapping):
        return
    to = raw.get("to")
    if raw.get("kind") in ("sip", "ldap") and isinstance(to, str) and "/" not in to and to not in lab.node_names:
        yield f"{path}to", to
    trusts = raw.get("trusts")
    for ref in trusts if isinstance(trusts, list) else []:
        yield f"{path}trusts", ref


def _link_sources(runner: Runner, raw: Mapping[str, Any]) -> list[str]:
    wanted = [str(n) for n in as_list(raw["from"])]
    if "all" not in wanted:
        return wanted
    roles = {Role.CUCM} if raw["kind"] == "sip" else ({Role.IMP} if raw["kind"] == "imp" else {Role.CUCM, Role.IMP})
    running = runner.lab.running_nodes()
    return [n for n in running if runner.scenario.lab.node(n).role in roles and n != raw.get("to")]


async def _links(runner: Runner, raw: Mapping[str, Any]) -> list[Any]:
    from cluster.links import LinkSpec, check_link  # noqa: PLC0415 - ssl servers only when a scenario checks links

    await runner.lab.converge(timeout=runner.scenario.settle_timeout)
    results = []
    for src in _link_sources(runner, raw):
        spec = LinkSpec.from_args({**raw, "from": src}, runner.lab.spec.node_names)
        results.append(await check_link(runner.lab, spec, runner.ca))
    return results


def _v_link(args: Any, lab: LabSpec, label: str) -> None:
    _v_link_spec(args, lab, label)


async def _link(runner: Runner, step: Step) -> Any:
    return [r.to_json() for r in await _links(runner, step.args)]


def _v_expect_link(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["link", "ok"], label, ["rule", "missing"])
    if not isinstance(a["ok"], bool):
        raise ScenarioError(f"{label}: ok is true or false")
    _v_link_spec(a["link"], lab, label)


async def _expect_link(runner: Runner, step: Step) -> Any:
    a = step.args
    results = await _links(runner, a["link"])
    if not results:
        raise ScenarioError(f"{step.label}: no running node matched the link's 'from', so this would check nothing")
    problems = []
    for r in results:
        if r.ok != a["ok"]:
            problems.append(f"{r.client} -> {r.server}: {'connected' if r.ok else 'failed'} ({r.detail}; {r.missing})")
        elif not r.ok and "missing" in a and str(a["missing"]).lower() not in (r.missing or "").lower():
            problems.append(f"{r.client} -> {r.server} failed, but named {r.missing!r}, not {a['missing']!r}")
    if problems:
        raise AssertionError("; ".join(problems))
    return [f"{r.client} -> {r.server}: {r.detail}" + (f" ({r.missing})" if r.missing else "") for r in results]


STEPS: dict[str, StepKind] = {
    "phones": StepKind(_v_phones, _phones),
    "ctl": StepKind(_v_ctl, _ctl),
    "trust_identity": StepKind(_v_trust_identity, _trust_identity),
    "backup": StepKind(_v_backup, _backup),
    "link": StepKind(_v_link, _link, may_fail=False, refs=lambda a, lab: _link_refs(a, lab, "")),
    "expect_phones": StepKind(_v_expect_phones, _expect_phones, may_fail=False, check=True),
    "expect_link": StepKind(
        _v_expect_link,
        _expect_link,
        may_fail=False,
        check=True,
        refs=lambda a, lab: _link_refs(a.get("link") if isinstance(a, Mapping) else None, lab, "link."),
    ),
}
# ``expect:`` steps whose arguments carry one of these keys are checks of this module
EXPECT_KEYS = {"phones": "expect_phones", "link": "expect_link"}
