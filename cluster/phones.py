"""The simulated phones of a running lab: a population of state machines, not agents.

Each phone holds real ITL/CTL bytes and boots through ``node.phone.boot``; its TFTP node
signs its files (``node.agent_phones``: keys never leave the nodes), its node's TVS vouches
for its cluster's certificates, and its node's CallManager-trust judges its LSC. What the
lab adds: which certificates the cluster has now (asked from every Unified CM node, the
cluster database's view in the real product), the phones' state in ``<lab dir>/phones.json``,
and the "Phone Interaction on Certificate Update" behaviour (R-PHONE-4): after a node
reports a regenerated or uploaded CallManager, TVS or CAPF certificate, every phone resets
when the parameter says "Reset Phones Automatically".

A phone asks the TVS of its own node only (its Unified CM group has one server here).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cluster.lab import Lab
from cluster.phonespec import NamedPhone
from node import certs, phone, trustlist
from node.catalog import PARAMS, PHONE_INTERACTION, PHONE_RESET_UNITS, Role
from node.errors import BadInput, CertsimError, NotFound, Refused, Unavailable
from node.phone import Phone, Registrar, State, TftpOffer, Tvs
from node.trustlist import ClusterCerts

PHONES_FILE = "phones.json"
CONFIG_BATCH = 100  # configuration files signed per request (one envelope stays well under the bus limit)
AUTOMATIC = "Reset Phones Automatically"
CHANGE_OPS = frozenset({"regen", "identity_upload", "drs_restore"})


@dataclass(frozen=True)
class NodeView:
    """What the lab knows of one Unified CM node's phone-facing certificates."""

    name: str
    running: bool
    publisher: bool
    certs: Mapping[str, bytes]
    ctl: bytes | None


def _b64(v: bytes | None) -> str | None:
    return None if v is None else base64.b64encode(v).decode()


def _unb64(v: str | None) -> bytes | None:
    return None if v is None else base64.b64decode(v)


def _phone_json(p: Phone, files: dict[str, str]) -> dict[str, Any]:
    """One phone; its ITL and CTL go to ``files`` by sha256 (hundreds of phones share a few files)."""

    def b64(data: bytes | None) -> str | None:
        if data is None:
            return None
        sha = hashlib.sha256(data).hexdigest()
        files.setdefault(sha, base64.b64encode(data).decode())
        return sha

    return {
        "name": p.name,
        "model": p.model,
        "node": p.node,
        "secure": p.secure,
        "itl": b64(p.itl),
        "ctl": b64(p.ctl),
        "config_sha": p.config_sha,
        "lsc": _b64(p.lsc),
        "state": p.state.value,
        "reason": p.reason,
        "history": list(p.history[-20:]),
    }


def _phone_from(raw: Mapping[str, Any], files: Mapping[str, str]) -> Phone:
    def unb(sha: str | None) -> bytes | None:
        return None if sha is None else base64.b64decode(files[sha])

    return Phone(
        str(raw["name"]),
        str(raw["model"]),
        str(raw["node"]),
        bool(raw["secure"]),
        unb(raw.get("itl")),
        unb(raw.get("ctl")),
        raw.get("config_sha"),
        _unb64(raw.get("lsc")),
        State(raw.get("state", "unregistered")),
        str(raw.get("reason", "")),
        tuple(raw.get("history", [])),
    )


def _config_body(p: Phone, node: str) -> bytes:
    """A phone's configuration file (SEP<MAC>.cnf.xml): which node it registers to, its security mode."""
    mode = "encrypted" if p.secure else "non-secure"
    return (
        f'<device name="{p.name}" model="{p.model}"><callManager>{node}</callManager>'
        f"<deviceSecurityMode>{mode}</deviceSecurityMode></device>"
    ).encode()


class PhoneFleet:
    """The phones of one running lab."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.path = lab.lab_dir / PHONES_FILE
        self.phones: dict[str, Phone] = {}
        self.auth: dict[str, str | None] = {}
        self.seen: dict[str, str] = {}  # unit@node -> sha256 of what phones were last offered
        self.serial = 1
        self.lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.events: collections.deque[str] = collections.deque(maxlen=200)
        self._attached: weakref.WeakSet[Any] = weakref.WeakSet()
        self._material: dict[str, NodeView] = {}
        self._itl_served: dict[str, bytes] = {}  # node -> the last ITL its TFTP was given
        self.booted = False
        self._load()

    # -- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        spec = self.lab.spec.phones
        cucm = [n.name for n in self.lab.spec.nodes if n.role is Role.CUCM]
        wanted: list[NamedPhone] = spec.phones(cucm) if cucm else []
        self.auth = {p.name: p.auth_string for p in wanted}
        if self.path.exists():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            files = raw.get("files", {})
            self.phones = {p["name"]: _phone_from(p, files) for p in raw.get("phones", [])}
            self.seen = dict(raw.get("seen", {}))
            self.serial = int(raw.get("serial", 1))
            self.booted = True
        for p in wanted:
            if p.name not in self.phones:
                self.phones[p.name] = Phone(p.name, p.model, str(p.node), p.secure)
                self.booted = False

    def save(self) -> None:
        files: dict[str, str] = {}
        phones = [_phone_json(p, files) for p in self.phones.values()]
        data = {"phones": phones, "files": files, "seen": self.seen, "serial": self.serial}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(self.path)

    # -- certificate updates reach phones (R-PHONE-4) -----------------------------------

    def attach(self) -> None:
        """Listen to every in-process node for certificate changes (nodes started later too)."""
        for agent in self.lab.agents.values():
            if agent not in self._attached:
                agent.listeners.append(self._on_event)
                self._attached.add(agent)

    def _on_event(self, line: dict[str, Any]) -> None:
        if line.get("event") == "op" and line.get("ok") and line.get("op") in CHANGE_OPS:
            task = asyncio.get_running_loop().create_task(self._auto_reset(str(line.get("node"))))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait for automatic resets still running (a scenario expectation calls this first)."""
        self.attach()
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def _auto_reset(self, node: str) -> None:
        try:
            await self._auto_reset_locked(node)
        except (CertsimError, TimeoutError) as exc:  # a node went away mid-reset: say so, never crash the lab
            self.events.append(f"automatic phone reset after a change on {node} failed: {exc}")

    async def _auto_reset_locked(self, node: str) -> None:
        async with self.lock:
            view = await self._view()
            changed = self._changed(view)
            if not changed:
                return
            mode = await self._param()
            if mode != AUTOMATIC:
                self.events.append(f"{', '.join(changed)} changed on {node}: phones reset manually (R-OP-REGEN-3)")
                return
            self.events.append(f"{', '.join(changed)} changed on {node}: every phone resets automatically (R-PHONE-4)")
            await self._reset_locked(list(self.phones), view)

    async def _param(self) -> str:
        for name in self.lab.running_nodes():
            if self.lab.spec.node(name).role is Role.CUCM:
                with contextlib.suppress(CertsimError):
                    got = await self.lab.request(name, "param_get", {"name": PHONE_INTERACTION})
                    return str(got.get("value", AUTOMATIC))
        return PARAMS[PHONE_INTERACTION].default

    def _changed(self, view: Mapping[str, NodeView]) -> list[str]:
        """R-OP-REGEN-3: the TVS, CAPF or TFTP (CallManager) certificates that changed since phones last reset."""
        now = self._shas(view)
        return sorted(
            k
            for k, sha in now.items()
            if k.split("@", 1)[0] in PHONE_RESET_UNITS and k in self.seen and self.seen[k] != sha
        )

    @staticmethod
    def _shas(view: Mapping[str, NodeView]) -> dict[str, str]:
        return {
            f"{unit}@{v.name}": certs.der_sha256(der)
            for v in view.values()
            for unit, der in v.certs.items()
            if unit in PHONE_RESET_UNITS or unit == "ITLRecovery"
        }

    # -- what the cluster serves ---------------------------------------------------------

    async def _view(self) -> dict[str, NodeView]:
        running = set(self.lab.running_nodes())
        out: dict[str, NodeView] = {}
        for n in self.lab.spec.nodes:
            if n.role is not Role.CUCM:
                continue
            if n.name in running:
                raw = await self.lab.request(n.name, "phone_material", {})
                mat = {u: base64.b64decode(d) for u, d in raw["certs"].items()}
                ctl = base64.b64decode(raw["ctl"]) if raw.get("ctl") else None
                self._material[n.name] = NodeView(n.name, True, n.publisher, mat, ctl)
                out[n.name] = self._material[n.name]
            else:
                known = self._material.get(n.name)
                out[n.name] = NodeView(
                    n.name, False, n.publisher, known.certs if known else {}, known.ctl if known else None
                )
        return out

    @staticmethod
    def cluster_certs(view: Mapping[str, NodeView]) -> ClusterCerts:
        pub = next((v for v in view.values() if v.publisher), None)
        return ClusterCerts(
            {v.name: v.certs["CallManager"] for v in view.values() if "CallManager" in v.certs},
            {v.name: v.certs["TVS"] for v in view.values() if "TVS" in v.certs},
            (pub.name, pub.certs["CAPF"]) if pub and "CAPF" in pub.certs else None,
            (pub.name, pub.certs["ITLRecovery"]) if pub and "ITLRecovery" in pub.certs else None,
        )

    @staticmethod
    def _ctl(view: Mapping[str, NodeView]) -> bytes | None:
        pub = next((v for v in view.values() if v.publisher), None)
        return pub.ctl if pub else None

    # -- resets ---------------------------------------------------------------------------

    async def reset(self, names: Iterable[str] | None = None, *, reset_file: bytes | None = None) -> dict[str, Any]:
        """Reset phones (every one by default): each fetches its files and boots (R-PHONE-1/2)."""
        self.attach()
        await self.settle()
        chosen = self._select(names)
        async with self.lock:
            view = await self._view()
            await self._reset_locked(chosen, view, reset_file=reset_file)
        return self.summary(chosen)

    def _select(self, names: Iterable[str] | None) -> list[str]:
        if names is None:
            return list(self.phones)
        chosen = list(names)
        unknown = [n for n in chosen if n not in self.phones]
        if unknown:
            raise NotFound(f"no phone named {', '.join(unknown[:5])}; this lab has {len(self.phones)} phones")
        return chosen

    async def _reset_locked(
        self, names: list[str], view: Mapping[str, NodeView], *, reset_file: bytes | None = None
    ) -> None:
        cluster = self.cluster_certs(view)
        vouches = cluster.all_shas()
        ctl = self._ctl(view)
        by_node: dict[str, list[str]] = collections.defaultdict(list)
        for name in names:
            by_node[self.phones[name].node].append(name)
        self.serial += 1
        for node, members in by_node.items():
            nv = view.get(node)
            if nv is None or not nv.running or "CallManager" not in nv.certs:
                for name in members:
                    p = self.phones[name]
                    self.phones[name] = replace(
                        p, state=State.UNREGISTERED, reason=f"TFTP and Unified CM node {node} is not running"
                    )
                continue
            itl = await self._itl_of(node, cluster, view)
            if itl is None:
                for name in members:
                    p = self.phones[name]
                    self.phones[name] = replace(
                        p, state=State.UNREGISTERED, reason=f"TFTP on {node} has no ITL: {self._itl_signer_down()}"
                    )
                continue
            configs: list[bytes] = []
            for start in range(0, len(members), CONFIG_BATCH):
                batch = [self.phones[n] for n in members[start : start + CONFIG_BATCH]]
                bodies = [base64.b64encode(_config_body(p, node)).decode() for p in batch]
                got = await self.lab.request(node, "tftp_sign", {"kind": "SGN", "bodies": bodies}, timeout=60)
                configs += [base64.b64decode(f) for f in got["files"]]
            tvs_der = nv.certs.get("TVS")
            tvs = [Tvs(node, certs.der_sha256(tvs_der), vouches)] if tvs_der else []
            problems = await self._lsc_verdicts(node, [self.phones[n] for n in members if self.phones[n].secure])
            registrar = Registrar(node, certs.der_sha256(nv.certs["CallManager"]), problems.get)
            for name, cfg in zip(members, configs, strict=True):
                offer = TftpOffer(node, itl, cfg, ctl, reset_file)
                self.phones[name] = phone.boot(self.phones[name], offer, tvs, registrar)
        self.seen.update(self._shas(view))
        self.save()

    def _itl_signer_node(self, node: str) -> str:
        """The node whose key signs ``node``'s ITL: ``node`` itself (its CallManager key, before
        12.0) or the publisher (the ITLRecovery key, from 12.0), as ``ReleaseProfile.itl_signer`` says."""
        if trustlist.signer_unit(trustlist.FileKind.ITL, self.lab.spec.release) != "ITLRecovery":
            return node
        pub = next((n.name for n in self.lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)
        return pub or node

    def _itl_signer_down(self) -> str:
        return "the publisher, whose ITLRecovery key signs it (release 12.0 and later), is not running"

    async def _itl_of(self, node: str, cluster: ClusterCerts, view: Mapping[str, NodeView]) -> bytes | None:
        """The ITLFile.tlv ``node``'s TFTP serves now (R-PHONE-1): signed by the node's CallManager
        key before release 12.0, by the publisher's ITLRecovery key from 12.0 (Cisco TAC 214231).
        While the signer is down the TFTP serves the last ITL it was given (None if there is none)."""
        signer = self._itl_signer_node(node)
        if not (signer in view and view[signer].running):
            return self._itl_served.get(node)
        records = [
            {"role": r.role.value, "host": r.host, "cert": base64.b64encode(r.cert_der).decode()}
            for r in trustlist.itl_records(node, cluster)
        ]
        got = await self.lab.request(signer, "tftp_sign", {"kind": "ITL", "records": records, "serial": self.serial})
        itl = self._itl_served[node] = base64.b64decode(got["file"])
        return itl

    async def show_itl(self, node: str) -> dict[str, Any]:
        """`show itl` on ``node``: the ITL its TFTP serves, with its signer and records."""
        if node not in self.lab.spec.node_names or self.lab.spec.node(node).role is not Role.CUCM:
            raise NotFound(f"'{node}' is not a Unified CM node of this lab")
        async with self.lock:
            view = await self._view()
            if not view[node].running:
                raise Unavailable(f"node '{node}' is not running")
            itl = await self._itl_of(node, self.cluster_certs(view), view)
        if itl is None:
            raise Unavailable(f"TFTP on '{node}' has no ITL: {self._itl_signer_down()}")
        return trustlist.describe(trustlist.parse(itl))

    async def _lsc_verdicts(self, node: str, phones: list[Phone]) -> dict[bytes | None, str | None]:
        """R-PHONE-6 / R-LINK-4: each distinct LSC judged against the node's CallManager-trust."""
        out: dict[bytes | None, str | None] = {}
        if not phones:
            return out
        rows = await self.lab.request(node, "list", {"store": "CallManager-trust"})
        fetched: dict[str, x509.Certificate] = {}
        now = self.lab.clock.now()
        for p in phones:
            if p.lsc in out:
                continue
            issuer = certs.dn_text(x509.load_der_x509_certificate(p.lsc).issuer) if p.lsc else ""
            for r in rows:
                if r["subject"] == issuer and r["name"] not in fetched:
                    got = await self.lab.request(
                        node, "download", {"store": "CallManager-trust", "name": r["name"], "format": "der"}
                    )
                    fetched[r["name"]] = x509.load_der_x509_certificate(base64.b64decode(got["data"]))
            out[p.lsc] = phone.lsc_problem(p.lsc, list(fetched.values()), now, f"CallManager-trust on {node}")
        return out

    async def erase(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        """Settings > Security > Reset Security Settings on each phone, then it reboots (R-PHONE-3)."""
        chosen = self._select(names)
        for name in chosen:
            self.phones[name] = self.phones[name].erased()
        return await self.reset(chosen)

    async def itl_reset(self, source: str, *, recovery_key_file: bytes | None = None) -> dict[str, Any]:
        """`utils itl reset localkey|remotekey`: a file signed with the ITLRecovery key, then every phone
        resets; phones whose ITL still holds that ITLRecovery certificate drop their ITL (R-PHONE-3)."""
        if source not in ("localkey", "remotekey"):
            raise BadInput("utils itl reset takes localkey or remotekey")
        pub = next((n.name for n in self.lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)
        if pub is None:
            raise NotFound("this lab has no Unified CM publisher")
        if source == "remotekey":
            if recovery_key_file is None:
                raise Refused(
                    "utils itl reset remotekey needs a backup holding the ITLRecovery key (certsim backup create)"
                )
            reset = recovery_key_file
        else:
            got = await self.lab.request(pub, "tftp_sign", {"kind": "ITL-RESET"})
            reset = base64.b64decode(got["file"])
        result = await self.reset(reset_file=reset)
        result["itl_reset"] = source
        return result

    async def ctl(self, action: str) -> dict[str, Any]:
        """`utils ctl set-cluster mixed-mode|non-secure-mode`, `utils ctl update CTLFile` (R-PHONE-5)."""
        pub = next((n.name for n in self.lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)
        if pub is None:
            raise NotFound("this lab has no Unified CM publisher")
        await self.settle()
        async with self.lock:
            view = await self._view()
            records = [
                {"role": r.role.value, "host": r.host, "cert": base64.b64encode(r.cert_der).decode()}
                for r in trustlist.ctl_records(self.cluster_certs(view))
            ]
            self.serial += 1
            if action == "mixed-mode":
                got = await self.lab.request(
                    pub, "ctl_set_mode", {"mode": "mixed", "records": records, "serial": self.serial}
                )
            elif action == "non-secure-mode":
                got = await self.lab.request(pub, "ctl_set_mode", {"mode": "non-secure"})
            elif action == "update":
                current = await self.lab.request(pub, "ctl_get", {})
                if current["mode"] != "mixed":
                    raise Refused("the cluster is not in mixed mode: run utils ctl set-cluster mixed-mode first")
                got = await self.lab.request(pub, "ctl_update", {"records": records, "serial": self.serial})
            else:
                raise BadInput("ctl action is mixed-mode, non-secure-mode or update")
            self.save()
        return {k: v for k, v in dict(got).items() if k != "file"}

    async def capf_install(self, names: Iterable[str] | None = None, *, entered: str | None = None) -> dict[str, Any]:
        """CAPF issues an LSC to each phone that gives the authentication string configured for it
        (R-PHONE-6); ``entered`` is what the user types on the phone (default: the configured one)."""
        chosen = self._select(names)
        pub = next((n.name for n in self.lab.spec.nodes if n.publisher and n.role is Role.CUCM), None)
        if pub is None:
            raise NotFound("this lab has no Unified CM publisher")
        installed, refused = [], []
        for name in chosen:
            key = phone.phone_key()
            pem = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            expected = self.auth.get(name)
            args = {"phone": name, "public_key": base64.b64encode(pem).decode(), "expected": expected}
            args["auth_string"] = entered if entered is not None else expected
            try:
                got = await self.lab.request(pub, "capf_issue", args)
            except Refused as exc:
                refused.append(f"{name}: {exc.message}")
                continue
            self.phones[name] = replace(self.phones[name], lsc=base64.b64decode(got["lsc"]))
            installed.append(name)
        self.save()
        result = await self.reset(installed) if installed else self.summary([])
        result.update({"installed": len(installed), "refused": refused[:20]})
        return result

    # -- views ----------------------------------------------------------------------------

    def summary(self, names: Iterable[str] | None = None) -> dict[str, Any]:
        chosen = list(self.phones) if names is None else list(names)
        counts = collections.Counter(self.phones[n].state.value for n in chosen)
        reasons = collections.Counter(
            self.phones[n].reason for n in chosen if self.phones[n].state is not State.REGISTERED
        )
        return {
            "phones": len(chosen),
            "states": dict(counts),
            "reasons": dict(reasons.most_common(5)),
            "events": list(self.events)[-5:],
        }

    def rows(self, *, node: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        return [
            _row(p)
            for p in self.phones.values()
            if not (node and p.node != node) and not (state and p.state.value != state)
        ]

    def show(self, name: str) -> dict[str, Any]:
        p = self.phones.get(name)
        if p is None:
            raise NotFound(f"no phone named {name!r}")
        return {
            **_row(p),
            "itl": None if p.itl_file is None else trustlist.describe(p.itl_file),
            "ctl": None if p.ctl_file is None else trustlist.describe(p.ctl_file),
            "lsc_issuer": None if p.lsc is None else certs.common_name(x509.load_der_x509_certificate(p.lsc).issuer),
            "history": list(p.history[-10:]),
        }


def _row(p: Phone) -> dict[str, Any]:
    itl = p.itl_file
    return {
        "name": p.name,
        "model": p.model,
        "node": p.node,
        "secure": p.secure,
        "state": p.state.value,
        "reason": p.reason,
        "itl_signer": None if itl is None else itl.signed_by[:16],
        "ctl": p.ctl is not None,
        "lsc": p.lsc is not None,
    }


_FLEETS: weakref.WeakKeyDictionary[Lab, PhoneFleet] = weakref.WeakKeyDictionary()


async def fleet(lab: Lab) -> PhoneFleet:
    """The lab's phones; the first call powers them on (each boots from its TFTP node)."""
    f = _FLEETS.get(lab)
    if f is None:
        f = _FLEETS[lab] = PhoneFleet(lab)
    f.attach()
    if not f.booted:
        f.booted = True
        await f.reset()
    return f
