"""Scenario steps for OCSP (R-OCSP-1..4): node settings, the lab CA's responder, revocation, checks.

The responder is the scenario runner's (``Runner.ocsp_responder``): an HTTP responder on
loopback for the scenario's lab CA, started by the first step that needs it and stopped at
the end of the run. Steps:

- ``ocsp: {node|nodes, enabled, responder: lab|certificate|URL, interval, cc_mode}`` sets a
  node's Certificate Revocation settings (any subset). ``responder: lab`` configures the
  runner's responder URI; ``certificate`` takes the URI from each certificate's AIA (``ca``
  steps put it there with ``ocsp: true``). ``nodes: all`` means every running node.
- ``revoke: {cert: NAME, reason: keyCompromise}`` revokes a lab CA certificate at the
  responder (``reason`` optional, RFC 5280 names).
- ``ocsp_responder: {forget: NAME}`` makes the responder lose a certificate (it answers
  unknown); ``{signer: ca|delegated|trusted, ca: CA, as: NAME}`` chooses who signs CA's
  responses (R-OCSP-2), ``as`` naming the signing certificate for later ``upload`` steps;
  ``{state: down|up}`` stops or restarts it.
- ``ocsp_check: NODE`` or ``{node|nodes}`` checks every certificate of the node(s) now.
- ``expect_ocsp: {node|nodes, cert: NAME|UNIT@NODE, status: good|revoked|unknown|none, store,
  within: SECONDS}`` expects the listed status of a certificate (``none``: not checked), waiting
  up to ``within`` seconds (default 15) for a scheduled check to show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cluster.labca import Issued
from cluster.labfile import LabSpec
from cluster.scenario.base import (
    ScenarioError,
    Step,
    StepKind,
    check_node,
    check_step_nodes,
    check_store,
    need_args,
    parse_duration,
    step_nodes,
)
from node import certs

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

STATUSES = ("good", "revoked", "unknown", "none")
SIGNERS = ("ca", "delegated", "trusted")
DEFAULT_WITHIN_S = 15.0


# --- ocsp: settings ---------------------------------------------------------------------------


def _v_ocsp(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["node", "nodes", "enabled", "responder", "interval", "cc_mode"])
    check_step_nodes(a, lab, label, one_of=True)
    if len(set(a) - {"node", "nodes"}) == 0:
        raise ScenarioError(f"{label}: give at least one of enabled, responder, interval, cc_mode")
    for flag in ("enabled", "cc_mode"):
        if flag in a and not isinstance(a[flag], bool):
            raise ScenarioError(f"{label}: {flag} is true or false")
    responder = a.get("responder", "lab")
    if not isinstance(responder, str) or not (responder in ("lab", "certificate") or responder.startswith("http://")):
        raise ScenarioError(f"{label}: responder is 'lab', 'certificate' or an http:// URI")
    if "interval" in a:
        parse_duration(a["interval"])


async def _ocsp(runner: Runner, step: Step) -> Any:
    a = step.args
    args: dict[str, Any] = {k: a[k] for k in ("enabled", "cc_mode") if k in a}
    if "interval" in a:
        args["interval"] = parse_duration(a["interval"]).total_seconds()
    if "responder" in a:
        responder = str(a["responder"])
        if responder == "lab":
            args["url"] = (await runner.ocsp_responder()).url
        else:
            args["url"] = None if responder == "certificate" else responder
    elif a.get("enabled"):
        args["url"] = (await runner.ocsp_responder()).url  # enabling without a choice: the lab's responder
    summary: dict[str, Any] = {}
    for node in step_nodes(runner, a):
        result = await runner.lab.request(node, "ocsp_set", args)
        statuses = {str(r["name"]): r["status"] for r in result.get("checked", [])}
        summary[node] = statuses or result["settings"]
    return summary


# --- revoke and the responder ------------------------------------------------------------------


def _v_revoke(args: Any, lab: LabSpec, label: str) -> None:
    need_args(args, ["cert"], label, ["reason"])


async def _revoke(runner: Runner, step: Step) -> Any:
    a = step.args
    responder = await runner.ocsp_responder()
    revocation = responder.revoke(str(a["cert"]), str(a.get("reason", "unspecified")))
    return {
        "revoked": a["cert"],
        "serial": f"{revocation.serial:x}",
        "ca": revocation.ca_name,
        "at": certs.iso(revocation.at),
        "reason": revocation.reason.value,
    }


def _v_responder(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, [], label, ["forget", "signer", "ca", "as", "state"])
    chosen = [k for k in ("forget", "signer", "state") if k in a]
    if len(chosen) != 1:
        raise ScenarioError(f"{label}: give one of forget, signer or state")
    if "signer" in a:
        if a["signer"] not in SIGNERS or "ca" not in a:
            raise ScenarioError(f"{label}: signer is {', '.join(SIGNERS)} and needs 'ca'")
    elif "ca" in a or "as" in a:
        raise ScenarioError(f"{label}: 'ca' and 'as' go with 'signer'")
    if "state" in a and a["state"] not in ("down", "up"):
        raise ScenarioError(f"{label}: state is 'down' or 'up'")


async def _responder(runner: Runner, step: Step) -> Any:
    from cluster.ocsp import SignerMode  # noqa: PLC0415 - aiohttp's server only for scenarios that use OCSP

    a = step.args
    responder = await runner.ocsp_responder()
    if "forget" in a:
        serial = responder.forget(str(a["forget"]))
        return {"forgotten": a["forget"], "serial": f"{serial:x}"}
    if "state" in a:
        if a["state"] == "down":
            await responder.stop()
        else:
            await responder.start()
        return {"responder": a["state"], "url": responder.url}
    ca_name = str(a["ca"])
    responder.set_signer(ca_name, SignerMode(str(a["signer"])))
    signing = responder.signer_certificate(ca_name)
    if "as" in a:
        name = str(a["as"])
        held = runner.ca.items.get(name)
        if held is not None and held.cert != signing:
            raise ScenarioError(f"{step.label}: the lab CA already has a certificate named '{name}'")
        runner.ca.items[name] = Issued(name, signing, None)  # for upload steps; not a CA, no chain
    return {"ca": ca_name, "signer": a["signer"], "signing_cn": certs.common_name(signing.subject)}


# --- checks -------------------------------------------------------------------------------------


def _v_ocsp_check(args: Any, lab: LabSpec, label: str) -> None:
    if isinstance(args, str):
        check_node(lab, args, label)
        return
    check_step_nodes(need_args(args, [], label, ["node", "nodes"]), lab, label, one_of=True)


async def _ocsp_check(runner: Runner, step: Step) -> Any:
    a: Mapping[str, Any] = {"node": step.args} if isinstance(step.args, str) else step.args
    summary = {}
    for node in step_nodes(runner, a):
        result = await runner.lab.request(node, "ocsp_check", {})
        summary[node] = {str(r["name"]): r["status"] for r in result["checked"]}
    return summary


def _v_expect_ocsp(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["cert", "status"], label, ["node", "nodes", "store", "within"])
    check_step_nodes(a, lab, label, one_of=True)
    if "store" in a:
        check_store(a["store"], label)
    if a["status"] not in STATUSES:
        raise ScenarioError(f"{label}: status is one of {', '.join(STATUSES)}")
    within = a.get("within", DEFAULT_WITHIN_S)
    if not isinstance(within, int | float) or within < 0:
        raise ScenarioError(f"{label}: within is a number of seconds")


async def _statuses(runner: Runner, node: str, sha: str, store: str | None) -> list[str]:
    rows = await runner.lab.request(node, "list", {"store": store} if store else {})
    return [str(r["ocsp"]).lower() for r in rows if r["sha256"] == sha]


async def _expect_ocsp(runner: Runner, step: Step) -> Any:
    """Every named node lists the certificate with the status; waits for scheduled checks to show it."""
    a = step.args
    _name, sha = await runner._resolve(str(a["cert"]))
    want = str(a["status"]).lower()
    store = None if a.get("store") is None else str(a["store"])
    nodes = step_nodes(runner, a)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(a.get("within", DEFAULT_WITHIN_S))
    while True:
        seen = {node: await _statuses(runner, node, sha, store) for node in nodes}
        wrong = {node: found for node, found in seen.items() if not found or any(s != want for s in found)}
        if not wrong:
            return {"cert": a["cert"], "status": want, "nodes": nodes}
        if loop.time() >= deadline:
            detail = "; ".join(
                f"{node} {'lists it as ' + ', '.join(found) if found else 'does not hold it'}"
                for node, found in wrong.items()
            )
            raise AssertionError(f"{a['cert']} should be {want}: {detail}")
        await asyncio.sleep(0.2)


STEPS: Mapping[str, StepKind] = {
    "ocsp": StepKind(_v_ocsp, _ocsp),
    "revoke": StepKind(_v_revoke, _revoke, uses=("cert",)),
    "ocsp_responder": StepKind(_v_responder, _responder, defines=("as",), uses=("ca", "forget")),
    "ocsp_check": StepKind(_v_ocsp_check, _ocsp_check),
    "expect_ocsp": StepKind(_v_expect_ocsp, _expect_ocsp, may_fail=False, check=True, uses=("cert",)),
}
