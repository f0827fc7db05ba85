"""Scenario steps that use a node's real front doors: ``ssh:`` (the platform CLI) and ``rest:``
(the certmgr REST API over HTTPS).

Front doors are opened on demand: the first ``ssh:`` or ``rest:`` step of a run opens them for
every running node (``cluster.doors.frontdoors.enable_front_doors``) and every node started later
gets them with its agent, so scenarios without these steps never pay for them. A lab file
with ``front_doors: {enabled: false}`` refuses these steps when the scenario is parsed. Put a
front-door step before the change whose "served until restart" effect you check: the doors
learn Tomcat's key pairs from the moment they open (``cluster.doors.frontdoors.TomcatTls``).

Lab-CA certificates go into requests as ``{pem: NAME}`` (``chain: true`` appends its issuers):
anywhere inside a ``rest:`` ``json`` body, or as a line of an ``ssh:`` ``input``.

Both are checks: a broken expectation fails the step (verdict invalid).
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from cluster.doors.frontdoors import FrontDoors, enable_front_doors, served_certificate
from cluster.doors.rest import API_ROOT, basic_auth_header
from cluster.labfile import LabSpec
from cluster.scenario.base import ScenarioError, Step, StepKind, as_list, check_node, need_args, pem_refs
from node import certs
from node.errors import Unavailable

if TYPE_CHECKING:
    from cluster.scenario.runner import Runner

REST_EXPECT = {"status", "json", "contains", "not_contains", "count", "has_cert", "lacks_cert", "served", "not_served"}
SSH_EXPECT = {"exit", "contains", "not_contains", "refused"}
WALL_TIMEOUT_S = 90.0  # one request or command, wall seconds (a CSR or a restart takes a while)


# ---------------------------------------------------------------------------------------------
# validation (before the lab starts)


def _check_doors(lab: LabSpec, label: str) -> None:
    if not lab.front_doors.enabled:
        raise ScenarioError(f"{label}: this lab disables its front doors (front_doors: {{enabled: false}})")


def _check_pem_refs(value: Any, label: str) -> None:
    """``{pem: NAME, chain: bool}`` placeholders must be well formed wherever they are."""
    if isinstance(value, Mapping):
        if "pem" in value:
            if set(value) - {"pem", "chain"} or not isinstance(value["pem"], str):
                raise ScenarioError(f"{label}: a certificate reference is {{pem: NAME}} or {{pem: NAME, chain: true}}")
            if not isinstance(value.get("chain", False), bool):
                raise ScenarioError(f"{label}: 'chain' of {{pem: {value['pem']}}} must be true or false")
            return
        for v in value.values():
            _check_pem_refs(v, label)
    elif isinstance(value, list):
        for v in value:
            _check_pem_refs(v, label)


def _check_auth(a: Mapping[str, Any], label: str) -> None:
    if "auth" in a:
        auth = need_args(a["auth"], [], f"{label} auth", ["user", "password"])
        if not all(isinstance(v, str) for v in auth.values()):
            raise ScenarioError(f"{label}: auth user and password are strings")


def _check_expect(a: Mapping[str, Any], known: set[str], label: str) -> Mapping[str, Any]:
    expect = a.get("expect", {})
    if not isinstance(expect, Mapping):
        raise ScenarioError(f"{label}: expect is a mapping ({', '.join(sorted(known))})")
    unknown = set(expect) - known
    if unknown:
        raise ScenarioError(f"{label}: unknown expectation(s) {', '.join(sorted(map(str, unknown)))}")
    return expect


def _v_rest(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "path"], label, ["method", "json", "auth", "expect"])
    check_node(lab, a["node"], label, "node")
    _check_doors(lab, label)
    if str(a.get("method", "GET")).upper() not in ("GET", "POST", "PUT", "DELETE"):
        raise ScenarioError(f"{label}: method is GET or POST (PUT and DELETE to see them refused)")
    if not isinstance(a["path"], str) or not a["path"]:
        raise ScenarioError(f"{label}: path is a string such as 'csr' or 'trust/certificate?service=tomcat'")
    _check_pem_refs(a.get("json"), label)
    _check_auth(a, label)
    expect = _check_expect(a, REST_EXPECT, label)
    if "status" in expect and not isinstance(expect["status"], int):
        raise ScenarioError(f"{label}: expect.status is an HTTP status code")
    if "json" in expect and not isinstance(expect["json"], Mapping):
        raise ScenarioError(f"{label}: expect.json is a mapping of fields the response must carry")


def _v_ssh(args: Any, lab: LabSpec, label: str) -> None:
    a = need_args(args, ["node", "command"], label, ["input", "auth", "expect"])
    check_node(lab, a["node"], label, "node")
    _check_doors(lab, label)
    if not isinstance(a["command"], str) or not a["command"].strip():
        raise ScenarioError(f"{label}: command is one platform command such as 'show cert list own'")
    if "input" in a and not isinstance(a["input"], str | list | Mapping):
        raise ScenarioError(f"{label}: input is a line or a list of lines (and {{pem: NAME}} certificates)")
    _check_pem_refs(as_list(a.get("input")), label)
    _check_auth(a, label)
    expect = _check_expect(a, SSH_EXPECT, label)
    if "exit" in expect and expect["exit"] not in (0, 1):
        raise ScenarioError(f"{label}: expect.exit is 0 (success) or 1 (executed unsuccessfully)")


# ---------------------------------------------------------------------------------------------
# running


async def _doors(runner: Runner, node: str) -> FrontDoors:
    lab = runner.lab
    if node not in lab.running_nodes():
        raise Unavailable(f"node '{node}' is not running; its front doors are closed")
    if node not in lab.doors:
        await enable_front_doors(lab)
    doors: FrontDoors = lab.doors[node]
    await doors.tls.wait_idle()  # a Tomcat restart that just finished may still be swapping the certificate
    return doors


def _pem(runner: Runner, ref: Mapping[str, Any]) -> str:
    return runner.ca.get(str(ref["pem"])).pem(with_chain=bool(ref.get("chain", False))).decode()


def _fill(runner: Runner, value: Any) -> Any:
    """The body with every ``{pem: NAME}`` replaced by that lab-CA certificate's PEM."""
    if isinstance(value, Mapping):
        if "pem" in value:
            return _pem(runner, value)
        return {k: _fill(runner, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(runner, v) for v in value]
    return value


async def _sha(runner: Runner, ref: str) -> str:
    return (await runner._resolve(ref))[1]  # a lab CA name, or <unit>@<node> (the node's current identity)


def _certificates_in(body: Any) -> set[str]:
    """SHA-256 of every PEM certificate found in ``certificate`` fields of a JSON answer."""
    found: set[str] = set()
    if isinstance(body, Mapping):
        for k, v in body.items():
            if k == "certificate" and isinstance(v, str) and "BEGIN CERTIFICATE" in v:
                found |= {certs.fingerprint(c) for c in certs.load_certificates(v.encode())}
            else:
                found |= _certificates_in(v)
    elif isinstance(body, list):
        for v in body:
            found |= _certificates_in(v)
    return found


def _subset(want: Any, got: Any, where: str) -> list[str]:
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            return [f"{where or 'the answer'} is not an object"]
        problems: list[str] = []
        for k, v in want.items():
            if k not in got:
                problems.append(f"no field {where}{k}")
            else:
                problems += _subset(v, got[k], f"{where}{k}.")
        return problems
    if want != got:
        return [f"{where.rstrip('.')} is {got!r}, expected {want!r}"]
    return []


def _texts(raw: Any) -> list[str]:
    return [str(t) for t in as_list(raw)]


async def _call(url: str, method: str, body: Any, header: str) -> tuple[int, str]:
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # the served certificate is checked separately, by fingerprint
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WALL_TIMEOUT_S)) as session,
        session.request(method, url, json=body, ssl=insecure, headers={"Authorization": header}) as response,
    ):
        return response.status, await response.text()


async def _check_answer(runner: Runner, expect: Mapping[str, Any], status: int, text: str, answer: Any) -> list[str]:
    problems: list[str] = []
    want_status = int(expect.get("status", 200))
    if status != want_status:
        message = answer.get("message") if isinstance(answer, Mapping) else text[:200]
        problems.append(f"HTTP {status} ({message}), expected {want_status}")
    if "json" in expect:
        problems += _subset(expect["json"], answer, "")
    problems += [f"the answer lacks '{t}'" for t in _texts(expect.get("contains")) if t not in text]
    problems += [f"the answer contains '{t}'" for t in _texts(expect.get("not_contains")) if t in text]
    if "count" in expect and (not isinstance(answer, list) or len(answer) != int(expect["count"])):
        got = len(answer) if isinstance(answer, list) else "no array"
        problems.append(f"{got} elements, expected {expect['count']}")
    if "has_cert" in expect or "lacks_cert" in expect:
        held = _certificates_in(answer)
        for ref in _texts(expect.get("has_cert")):
            if await _sha(runner, ref) not in held:
                problems.append(f"no certificate {ref}")
        for ref in _texts(expect.get("lacks_cert")):
            if await _sha(runner, ref) in held:
                problems.append(f"certificate {ref} listed")
    return problems


async def _check_served(runner: Runner, expect: Mapping[str, Any], doors: FrontDoors) -> tuple[str, list[str]]:
    """R-OP-UPLOAD-4: which certificate a new HTTPS connection is shown."""
    served = await served_certificate(doors.https.host, doors.https.port)
    sha = certs.fingerprint(served)
    problems: list[str] = []
    for ref in _texts(expect.get("served")):
        if await _sha(runner, ref) != sha:
            problems.append(f"HTTPS presents '{certs.common_name(served.subject)}' ({sha[:12]}…), not {ref}")
    for ref in _texts(expect.get("not_served")):
        if await _sha(runner, ref) == sha:
            problems.append(f"HTTPS presents {ref} already")
    return f"{certs.common_name(served.subject)} issued by {certs.common_name(served.issuer)}", problems


async def _rest(runner: Runner, step: Step) -> Any:
    """One HTTPS request to a node's certmgr API, then its expectations (R-OP-UPLOAD-4 via ``served``)."""
    a = step.args
    node = str(a["node"])
    doors = await _doors(runner, node)
    method = str(a.get("method", "GET")).upper()
    path = str(a["path"])
    url = f"https://{doors.https.host}:{doors.https.port}{path if path.startswith('/') else API_ROOT + path}"
    creds = runner.scenario.lab.os_admin
    auth = a.get("auth", {})
    header = basic_auth_header(str(auth.get("user", creds.user)), str(auth.get("password", creds.password)))
    body = _fill(runner, a["json"]) if "json" in a else None
    status, text = await _call(url, method, body, header)
    try:
        answer: Any = json.loads(text)
    except ValueError:
        answer = None
    expect = a.get("expect", {})
    problems = await _check_answer(runner, expect, status, text, answer)
    result: dict[str, Any] = {"request": f"{method} {path}", "status": status}
    if "served" in expect or "not_served" in expect:
        result["served"], more = await _check_served(runner, expect, doors)
        problems += more
    if status == 200 and method == "POST" and path.rstrip("/").endswith("csr") and isinstance(answer, Mapping):
        unit = str((body or {}).get("service", ""))
        runner.memory.setdefault("csrs", {})[(node, unit)] = str(answer.get("csr", ""))  # for a later sign: step
    if problems:
        raise AssertionError(f"{method} {path} on {node}: " + "; ".join(problems))
    if isinstance(answer, list):
        result["elements"] = len(answer)
    elif isinstance(answer, Mapping) and "message" in answer:
        result["message"] = answer["message"]
    return result


async def _ssh(runner: Runner, step: Step) -> Any:
    """One platform command over SSH (``ssh admin@node 'COMMAND'``), its input from ``input``."""
    import asyncssh  # noqa: PLC0415 - only runs that use the SSH door pay for importing it

    a = step.args
    node = str(a["node"])
    doors = await _doors(runner, node)
    listener = doors.ssh_listener
    if listener is None:
        raise Unavailable(f"{node} has no SSH door: {doors.describe()['ssh_note']}")
    creds = runner.scenario.lab.os_admin
    auth = a.get("auth", {})
    expect = a.get("expect", {})
    lines = [_pem(runner, x).strip() if isinstance(x, Mapping) else str(x) for x in as_list(a.get("input"))]
    stdin = "".join(f"{line}\n" for line in lines) + ("\n" if lines else "")
    command = str(a["command"])
    try:
        async with asyncssh.connect(
            listener.host,
            listener.port,
            username=str(auth.get("user", creds.user)),
            password=str(auth.get("password", creds.password)),
            known_hosts=None,  # the lab's own host key, made on first use
            client_keys=[],
            agent_path=None,
            preferred_auth="password",
            connect_timeout=WALL_TIMEOUT_S,
        ) as conn:
            # empty input: stdin from /dev/null, so the server sees EOF (asyncssh sends none for input="")
            run = conn.run(command, input=stdin, check=False) if stdin else conn.run(command, stdin=asyncssh.DEVNULL)
            done = await asyncio.wait_for(run, WALL_TIMEOUT_S)
    except asyncssh.PermissionDenied:
        if expect.get("refused"):
            return {"command": command, "refused": True}
        raise AssertionError(f"ssh {node}: the login was refused") from None
    if expect.get("refused"):
        raise AssertionError(f"ssh {node}: the login was accepted, expected a refusal")
    output = str(done.stdout or "") + str(done.stderr or "")
    problems = [f"the output lacks '{t}'" for t in _texts(expect.get("contains")) if t not in output]
    problems += [f"the output contains '{t}'" for t in _texts(expect.get("not_contains")) if t in output]
    want_exit = int(expect.get("exit", 0))
    if done.exit_status != want_exit:
        problems.append(f"exit status {done.exit_status}, expected {want_exit}")
    if problems:
        tail = output.strip()[-400:]
        raise AssertionError(f"ssh {node} '{command}': " + "; ".join(problems) + f"\n{tail}")
    last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
    return {"command": command, "exit": done.exit_status, "last_line": last[:200]}


def _rest_refs(args: Any, _lab: LabSpec) -> Iterator[tuple[str, Any]]:
    """Lab CA names a ``rest:`` step uses: ``{pem: NAME}`` in its body and the certificates it expects."""
    if not isinstance(args, Mapping):
        return
    yield from pem_refs(args.get("json"), "json")
    expect = args.get("expect")
    if isinstance(expect, Mapping):
        for key in ("has_cert", "lacks_cert", "served", "not_served"):
            yield from ((f"expect.{key}", ref) for ref in as_list(expect.get(key)))


def _ssh_refs(args: Any, _lab: LabSpec) -> Iterator[tuple[str, Any]]:
    if isinstance(args, Mapping):
        yield from pem_refs(as_list(args.get("input")), "input")


STEPS: Mapping[str, StepKind] = {
    "rest": StepKind(_v_rest, _rest, may_fail=False, check=True, refs=_rest_refs),
    "ssh": StepKind(_v_ssh, _ssh, may_fail=False, check=True, refs=_ssh_refs),
}
