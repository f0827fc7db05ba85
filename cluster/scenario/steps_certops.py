"""Scenario steps for certificate operations: CSR, CA signing, identity upload, regenerate,
services, enterprise parameters, OAuth keys and tokens, the remote-node check, and checks.

They are listed in ``STEPS``, which ``cluster.scenario.kinds`` reads.
Actions go through the control path (``lab.request``); checks raise ``AssertionError`` so the
runner marks them failed (verdict invalid).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from cluster.labfile import LabSpec
from cluster.scenario.base import ScenarioError, Step, StepKind, as_list, check_node, need_args
from node import certs
from node.catalog import PARAMS, SERVICES, UNITS

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner


def _unit(a: Mapping[str, Any], label: str, key: str = "unit", known: Collection[str] = tuple(UNITS)) -> None:
    if a.get(key) not in known:
        raise ScenarioError(f"{label}.{key}: unknown unit '{a.get(key)}'; known: {', '.join(sorted(known))}")


def _some_nodes(a: Mapping[str, Any], lab: LabSpec, label: str) -> None:
    """``node:`` or ``nodes:`` naming at least one node of the lab: a check on no node would check nothing."""
    if not as_list(a.get("nodes")) + as_list(a.get("node")):
        raise ScenarioError(f"{label}: name the node(s) to check with 'node' or 'nodes'")
    for key in ("nodes", "node"):
        for n in as_list(a.get(key)):
            check_node(lab, n, label, key)


def _csrs(runner: Runner) -> dict[tuple[str, str], str]:
    return runner.memory.setdefault("csrs", {})  # type: ignore[no-any-return]


def _tokens(runner: Runner) -> dict[str, str]:
    return runner.memory.setdefault("tokens", {})  # type: ignore[no-any-return]


# --- csr -------------------------------------------------------------------------------------


def _v_csr(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "unit"], label, ["multi_server", "key_size", "include_ou"])
    check_node(lab, a["node"], label, "node")
    _unit(a, label)


async def _csr(runner: Runner, step: Step) -> Any:
    a = step.args
    args = {k: a[k] for k in ("unit", "multi_server", "key_size", "include_ou") if k in a}
    result = await runner.lab.request(a["node"], "csr_gen", args, timeout=30)
    _csrs(runner)[(str(a["node"]), str(a["unit"]))] = str(result["csr"])
    return {k: result[k] for k in ("unit", "subject", "san", "key_type", "key_bits", "multi_server")}


# --- sign ------------------------------------------------------------------------------------


def _v_sign(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["csr_of", "issuer", "as"], label, ["drop_data_encipherment", "days", "starts_in_days", "ocsp"])
    of = need_args(a["csr_of"], ["node", "unit"], f"{label} csr_of")
    check_node(lab, of["node"], label, "csr_of.node")
    _unit(of, label)


async def _sign(runner: Runner, step: Step) -> Any:
    a = step.args
    node, unit = str(a["csr_of"]["node"]), str(a["csr_of"]["unit"])
    pem = _csrs(runner).get((node, unit))
    if pem is None:
        pem = str((await runner.lab.request(node, "csr_get", {"unit": unit}))["csr"])
    ocsp_url = (await runner.ocsp_responder()).url if a.get("ocsp") else None  # R-OCSP-1: URI in the AIA
    issued = await asyncio.to_thread(
        runner.ca.sign_csr,
        str(a["as"]),
        issuer=str(a["issuer"]),
        csr_pem=pem.encode(),
        days=int(a.get("days", 365)),
        starts_in_days=float(a.get("starts_in_days", 0)),
        drop_data_encipherment=bool(a.get("drop_data_encipherment", False)),
        ocsp_url=ocsp_url,
    )
    return {
        "name": issued.name,
        "cn": certs.common_name(issued.cert.subject),
        "san": certs.cert_san(issued.cert),
        "key_usage": certs.key_usage_bits(issued.cert),
    }


# --- upload_identity -------------------------------------------------------------------------


def _v_upload_identity(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "unit"], label, ["cert", "certs", "chain", "format", "pem", "raw", "raw_b64"])
    check_node(lab, a["node"], label, "node")
    _unit(a, label)
    if sum(k in a for k in ("cert", "certs", "pem", "raw", "raw_b64")) != 1:
        raise ScenarioError(f"{label}: give one of cert, certs, pem, raw or raw_b64")


async def _upload_identity(runner: Runner, step: Step) -> Any:
    a = step.args
    data = runner._upload_data(a)  # the runner's own encoder of lab CA material
    result = await runner.lab.request(
        a["node"], "identity_upload", {"unit": a["unit"], "data": base64.b64encode(data).decode()}
    )
    return {k: result[k] for k in ("unit", "cn", "flags", "restart", "shared_with", "trust_updated")}


# --- regen, restart, param, authz, tokens -------------------------------------------------


def _v_regen(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "unit"], label, ["key_size"])
    check_node(lab, a["node"], label, "node")
    _unit(a, label)


async def _regen(runner: Runner, step: Step) -> Any:
    a = step.args
    args = {"unit": a["unit"], **({"key_size": a["key_size"]} if "key_size" in a else {})}
    result = await runner.lab.request(a["node"], "regen", args, timeout=30)
    keys = ("unit", "message", "restart", "ctl_update_needed", "backup_due", "phones", "trust_updated")
    return {k: result[k] for k in keys}


def _v_restart(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "service"], label, ["seconds"])
    check_node(lab, a["node"], label, "node")
    if a["service"] not in SERVICES:
        raise ScenarioError(f"{label}: unknown service '{a['service']}'; known: {', '.join(sorted(SERVICES))}")


async def _restart(runner: Runner, step: Step) -> Any:
    a = step.args
    args = {"name": a["service"], **({"seconds": a["seconds"]} if "seconds" in a else {})}
    result = await runner.lab.request(a["node"], "service_restart", args, timeout=60)
    return {"service": result["name"], "state": result["state"], "resync": result["resync"]}


def _v_param(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "name", "value"], label)
    check_node(lab, a["node"], label, "node")
    if a["name"] not in PARAMS:
        raise ScenarioError(f"{label}: unknown enterprise parameter '{a['name']}'; known: {', '.join(PARAMS)}")


async def _param(runner: Runner, step: Step) -> Any:
    a = step.args
    return await runner.lab.request(a["node"], "param_set", {"name": a["name"], "value": a["value"]})


def _v_authz(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "kind"], label)
    check_node(lab, a["node"], label, "node")
    if a["kind"] not in ("encryption", "signing"):
        raise ScenarioError(f"{label}: kind is encryption or signing")


async def _authz(runner: Runner, step: Step) -> Any:
    a = step.args
    result = await runner.lab.request(a["node"], "authz_regen", {"kind": a["kind"]}, timeout=30)
    return {"kind": result["kind"], "replicated_to": result["replicated_to"]}


def _v_token(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node"], label, ["issue", "verify", "type", "user"])
    check_node(lab, a["node"], label, "node")
    if ("issue" in a) == ("verify" in a):
        raise ScenarioError(f"{label}: give one of 'issue: NAME' or 'verify: NAME'")


async def _token(runner: Runner, step: Step) -> Any:
    a = step.args
    if "issue" in a:
        args = {"type": a.get("type", "access"), "user": a.get("user", "jabber-user")}
        result = await runner.lab.request(a["node"], "token_issue", args)
        _tokens(runner)[str(a["issue"])] = str(result["token"])
        return {"issued": a["issue"], "type": result["type"]}
    token = _tokens(runner).get(str(a["verify"]))
    if token is None:
        raise ScenarioError(f"{step.label}: no token named '{a['verify']}' was issued earlier")
    result = await runner.lab.request(a["node"], "token_verify", {"token": token})
    return {"verified": a["verify"], "valid": result["valid"]}


# --- the remote-node check and a hand exchange (R-TS-1) ----------------------------------


def _v_check_remote(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "peer", "expect"], label)
    check_node(lab, a["node"], label, "node")
    check_node(lab, a["peer"], label, "peer")
    if a["expect"] not in ("connects", "fails"):
        raise ScenarioError(f"{label}: expect is 'connects' or 'fails'")


async def _check_remote(runner: Runner, step: Step) -> Any:
    a = step.args
    result = await runner.lab.request(a["node"], "check_remote", {"peer": a["peer"]})
    want = a["expect"] == "connects"
    if bool(result["connected"]) != want:
        what = "connect" if want else "fail"
        raise AssertionError(
            f"{a['node']} -> {a['peer']} was expected to {what}: {result['message']} {result.get('reason', '')}"
        )
    return {"connected": result["connected"], "message": result["message"], "reason": result.get("reason", "")}


def _v_exchange(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["from", "to"], label, ["unit"])
    check_node(lab, a["from"], label, "from")
    check_node(lab, a["to"], label, "to")
    if "unit" in a:
        _unit(a, label, known=("tomcat", "tomcat-ECDSA"))


async def _exchange(runner: Runner, step: Step) -> Any:
    """Download a node's tomcat (or tomcat-ECDSA) certificate and upload it to a peer's tomcat-trust."""
    a = step.args
    unit = str(a.get("unit", "tomcat"))
    got = await runner.lab.request(a["from"], "download", {"store": unit, "format": "pem"})
    result = await runner.lab.request(a["to"], "upload", {"store": "tomcat-trust", "data": got["data"]})
    return {"from": a["from"], "to": a["to"], "added": result["added"], "unchanged": result["unchanged"]}


# --- checks ------------------------------------------------------------------------------


def _v_expect_identity(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(
        args,
        ["unit"],
        label,
        [
            "node",
            "nodes",
            "source",
            "flags",
            "cert",
            "same_as",
            "san_includes",
            "restart_pending",
            "csr_pending",
            "key_bits",
        ],
    )
    _unit(a, label)
    _some_nodes(a, lab, label)
    if "same_as" in a:
        check_node(lab, a["same_as"], label, "same_as")


async def _identity_row(runner: Runner, node: str, unit: str) -> dict[str, Any]:
    rows = await runner.lab.request(node, "identity_list", {})
    for row in rows:
        if row["unit"] == unit:
            return dict(row)
    raise AssertionError(f"{node} has no {unit} identity certificate")


async def _expect_identity(runner: Runner, step: Step) -> Any:
    a = step.args
    await runner.lab.converge(timeout=runner.scenario.settle_timeout)
    unit = str(a["unit"])
    nodes = [str(n) for n in as_list(a.get("nodes")) + ([a["node"]] if "node" in a else [])]
    want_sha = certs.fingerprint(runner.ca.get(str(a["cert"])).cert) if "cert" in a else None
    if "same_as" in a:
        want_sha = str((await _identity_row(runner, str(a["same_as"]), unit))["sha256"])
    problems: list[str] = []
    for node in nodes:
        row = await _identity_row(runner, node, unit)
        if "source" in a and row["source"] != a["source"]:
            problems.append(f"{node} {unit} is {row['source']}, expected {a['source']}")
        if "flags" in a and sorted(row["flags"]) != sorted(as_list(a["flags"])):
            problems.append(f"{node} {unit} flags {row['flags']}, expected {as_list(a['flags'])}")
        if want_sha is not None and row["sha256"] != want_sha:
            problems.append(f"{node} {unit} is not the expected certificate ({row['cn']})")
        missing = [n for n in as_list(a.get("san_includes")) if n not in row["san"]]
        if missing:
            problems.append(f"{node} {unit} SAN {row['san']} lacks {missing}")
        if "restart_pending" in a and sorted(row["restart_pending"]) != sorted(as_list(a["restart_pending"])):
            problems.append(
                f"{node} {unit}: restart pending for {row['restart_pending']}, expected {a['restart_pending']}"
            )
        if "csr_pending" in a and row["csr_pending"] != bool(a["csr_pending"]):
            problems.append(f"{node} {unit}: CSR pending is {row['csr_pending']}")
        if "key_bits" in a and row["key_bits"] != int(a["key_bits"]):
            problems.append(f"{node} {unit}: {row['key_bits']} bits, expected {a['key_bits']}")
    if problems:
        raise AssertionError("; ".join(problems))
    return {"unit": unit, "nodes": nodes}


def _v_expect_service(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["service"], label, ["node", "nodes", "restart_pending", "serves"])
    _some_nodes(a, lab, label)
    if a["service"] not in SERVICES:
        raise ScenarioError(f"{label}: unknown service '{a['service']}'")
    if "serves" in a:
        serves = need_args(a["serves"], ["unit", "of"], f"{label} serves")
        if serves["of"] not in ("current", "cached"):
            raise ScenarioError(f"{label}: serves.of is 'current' or 'cached'")
        _unit(serves, f"{label}.serves")


async def _expect_service(runner: Runner, step: Step) -> Any:
    """A service's restart-pending state, and which certificate it serves: ``serves: {unit, of: current}``
    (the node's current identity) or ``of: cached`` (an older copy it loaded before, R-OP-UPLOAD-4)."""
    a = step.args
    await runner.lab.converge(timeout=runner.scenario.settle_timeout)
    nodes = [str(n) for n in as_list(a.get("nodes")) + ([a["node"]] if "node" in a else [])]
    problems: list[str] = []
    for node in nodes:
        rows = {r["name"]: r for r in await runner.lab.request(node, "service_list", {})}
        row = rows.get(a["service"])
        if row is None:
            problems.append(f"{node} runs no {a['service']}")
            continue
        if "restart_pending" in a and row["restart_pending"] != bool(a["restart_pending"]):
            problems.append(f"{node} {a['service']}: restart pending is {row['restart_pending']} ({row['pending']})")
        if "serves" in a:
            unit = str(a["serves"]["unit"])
            current = await _identity_row(runner, node, unit)
            served = row["loaded"].get(unit)
            want_current = a["serves"]["of"] == "current"
            if (served == current["sha256"]) != want_current:
                which = "the current" if want_current else "an older (cached)"
                problems.append(f"{node} {a['service']} does not serve {which} {unit} certificate")
    if problems:
        raise AssertionError("; ".join(problems))
    return {"service": a["service"], "nodes": nodes}


def _v_expect_csr(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "unit"], label, ["present", "san_includes", "key_type"])
    check_node(lab, a["node"], label, "node")
    _unit(a, label)


async def _expect_csr(runner: Runner, step: Step) -> Any:
    a = step.args
    rows = {r["unit"]: r for r in await runner.lab.request(a["node"], "csr_list", {})}
    row = rows.get(a["unit"])
    present = bool(a.get("present", True))
    if (row is not None) != present:
        raise AssertionError(f"{a['node']} {'has no' if present else 'still has a'} CSR for {a['unit']}")
    if row is not None:
        missing = [n for n in as_list(a.get("san_includes")) if n not in row["san"]]
        if missing:
            raise AssertionError(f"{a['node']} {a['unit']} CSR SAN {row['san']} lacks {missing}")
        if "key_type" in a and row["key_type"] != a["key_type"]:
            raise AssertionError(f"{a['node']} {a['unit']} CSR has an {row['key_type']} key")
    return {"unit": a["unit"], "present": present}


STEPS: Mapping[str, StepKind] = {
    "csr": StepKind(_v_csr, _csr),
    "sign": StepKind(_v_sign, _sign, defines=("as",), uses=("issuer",)),
    "upload_identity": StepKind(_v_upload_identity, _upload_identity, uses=("cert", "certs")),
    "regen": StepKind(_v_regen, _regen),
    "restart": StepKind(_v_restart, _restart),
    "param": StepKind(_v_param, _param),
    "authz_regen": StepKind(_v_authz, _authz),
    "token": StepKind(_v_token, _token),
    "check_remote": StepKind(_v_check_remote, _check_remote, may_fail=False, check=True),
    "exchange": StepKind(_v_exchange, _exchange),
    "expect_identity": StepKind(_v_expect_identity, _expect_identity, may_fail=False, check=True, uses=("cert",)),
    "expect_service": StepKind(_v_expect_service, _expect_service, may_fail=False, check=True),
    "expect_csr": StepKind(_v_expect_csr, _expect_csr, may_fail=False, check=True),
}
