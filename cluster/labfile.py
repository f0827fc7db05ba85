"""Lab files (YAML): what a lab is made of, validated into frozen dataclasses with clear errors.

A lab file, in the spirit of containerlab's topology files::

    lab: demo
    security_password: "cisco-lab-secret"   # the cluster security password
    release: "15"                           # behaviour profile (catalog.RELEASES)
    domain: lab.example                     # default domain for node FQDNs
    clock: {start: 2026-01-01T00:00:00Z, rate: 1}
    os_admin: {user: admin, password: "certsim-admin"}  # the OS administrator of every node's front doors
    front_doors: {enabled: true, ssh_port: 22, https_port: 443}   # lab-wide defaults
    nodes:
      - {name: cucm-pub, role: cucm, address: 127.0.0.11}   # the first cucm node is the publisher
      - {name: cucm-sub1, role: cucm, https_port: 8443}     # per-node ports override the lab's
      - {name: imp-pub, role: imp}

Front doors (``cluster.doors.frontdoors``): every node listens for SSH (the platform CLI) and HTTPS
(the certmgr REST API) on its own loopback ``address`` (127.0.0.0/8). A node without one gets
``127.0.0.<11 + i>``, ``i`` its position in ``nodes`` (0-based), so the demo lab's cucm-pub is
127.0.0.11. Port 0 asks for any free port; a port that cannot be bound (in use, or below 1024
without privilege) falls back to a free one, reported in the log and ``certsim lab status``.
``os_admin`` defaults to ``admin`` / ``certsim-admin`` (the lab listens on loopback only);
its password is never logged or shown.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import userfiles
from cluster.doors.auth import Credentials
from cluster.phonespec import PhoneSpecError, PhonesSpec, parse_phones
from node.catalog import MAX_CLUSTER_NODES, RELEASES, ReleaseProfile, Role
from node.certs import SubjectFields
from node.safetext import safe_text

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # used with fullmatch: '$' would admit a trailing newline
_FQDN = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*")
MIN_PASSWORD = 8
LAB_KEYS = {
    "lab",
    "security_password",
    "release",
    "domain",
    "clock",
    "subject",
    "nodes",
    "description",
    "rsa_key_size",
    "os_admin",
    "front_doors",
    "phones",
}
NODE_KEYS = {"name", "role", "publisher", "fqdn", "address", "ssh_port", "https_port"}
FRONT_DOOR_KEYS = {"enabled", "ssh_port", "https_port"}
DEFAULT_SSH_PORT = 22
DEFAULT_HTTPS_PORT = 443
DEFAULT_OS_ADMIN = Credentials("admin", "certsim-admin")
FIRST_DEFAULT_HOST = 11  # nodes without an address get 127.0.0.<11 + position>
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class LabFileError(ValueError):
    """A lab file that cannot be used; the message says where and why, on one line (what the file
    said is shown escaped: node.safetext)."""

    def __init__(self, message: str) -> None:
        super().__init__(safe_text(message))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    role: Role
    publisher: bool
    fqdn: str
    address: str = ""  # loopback address of its front doors ("" only in specs built by hand)
    ssh_port: int = DEFAULT_SSH_PORT  # 0: any free port
    https_port: int = DEFAULT_HTTPS_PORT


@dataclass(frozen=True)
class FrontDoorSpec:
    """Whether a served lab (``certsim lab up``, ``certsim node run``) opens its nodes' SSH and HTTPS
    front doors, and the lab-wide default ports."""

    enabled: bool = True
    ssh_port: int = DEFAULT_SSH_PORT
    https_port: int = DEFAULT_HTTPS_PORT


@dataclass(frozen=True)
class LabSpec:
    name: str
    security_password: str
    release: ReleaseProfile
    nodes: tuple[NodeSpec, ...]
    clock_start: dt.datetime | None = None
    clock_rate: float = 1.0
    subject: SubjectFields = SubjectFields()  # noqa: RUF009 - frozen, so one shared default is safe
    description: str = ""
    rsa_key_size: int = 2048
    os_admin: Credentials = DEFAULT_OS_ADMIN
    front_doors: FrontDoorSpec = FrontDoorSpec()
    phones: PhonesSpec = PhonesSpec()  # noqa: RUF009 - frozen; the simulated phones (cluster.phonespec)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabFileError(f"lab '{self.name}' has no node '{name}'; nodes: {', '.join(self.node_names)}")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)


def hosts_lines(spec: LabSpec) -> list[str]:
    """``/etc/hosts`` lines for the lab's nodes: address, FQDN, short host name (and the node name
    when it differs), e.g. ``127.0.0.11  cucm-pub.lab.example cucm-pub``."""
    lines = []
    for n in spec.nodes:
        names = list(dict.fromkeys([n.fqdn, n.fqdn.split(".", 1)[0], n.name]))
        lines.append(f"{n.address}  {' '.join(names)}")
    return lines


def load_lab(path: Path) -> LabSpec:
    """Read and validate a lab file (bounded, UTF-8, checked YAML: cluster.userfiles)."""
    try:
        raw = userfiles.load_yaml_file(path, "lab")
    except userfiles.UserFileError as exc:
        raise LabFileError(str(exc)) from None
    return parse_lab(raw, source=str(path))


def parse_lab(raw: Any, source: str = "lab") -> LabSpec:
    """Validate a lab mapping (from YAML or inline in a scenario)."""
    if not isinstance(raw, Mapping):
        raise LabFileError(f"{source}: a lab must be a mapping with 'lab', 'security_password' and 'nodes'")
    unknown = set(raw) - LAB_KEYS
    if unknown:
        raise LabFileError(
            f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(LAB_KEYS))}"
        )
    name = raw.get("lab")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LabFileError(f"{source}: 'lab' must be a lowercase name of letters, digits and '-' (got {name!r})")
    password = raw.get("security_password")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise LabFileError(f"{source}: 'security_password' must be a string of at least {MIN_PASSWORD} characters")
    release_name = str(raw.get("release", "15"))
    release = RELEASES.get(release_name)
    if release is None:
        raise LabFileError(f"{source}: unknown release '{release_name}'; known: {', '.join(RELEASES)}")
    domain = raw.get("domain", "lab.example")
    if not isinstance(domain, str) or not _FQDN.fullmatch(domain):
        raise LabFileError(f"{source}: 'domain' must be a DNS domain (got {domain!r})")
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, list) or not nodes_raw:
        raise LabFileError(f"{source}: 'nodes' must be a non-empty list")
    doors = _parse_front_doors(raw.get("front_doors"), source)
    nodes = _parse_nodes(nodes_raw, domain, source, doors)
    clock_start, clock_rate = _parse_clock(raw.get("clock"), source)
    key_size = raw.get("rsa_key_size", 2048)
    if key_size not in (2048, 3072, 4096):
        raise LabFileError(f"{source}: 'rsa_key_size' must be 2048, 3072 or 4096")
    return LabSpec(
        name=name,
        security_password=password,
        release=release,
        nodes=nodes,
        clock_start=clock_start,
        clock_rate=clock_rate,
        subject=_parse_subject(raw.get("subject"), source),
        description=str(raw.get("description", "")),
        rsa_key_size=int(key_size),
        os_admin=_parse_os_admin(raw.get("os_admin"), source),
        front_doors=doors,
        phones=_parse_phones(raw.get("phones"), nodes, source),
    )


def _parse_phones(raw: Any, nodes: tuple[NodeSpec, ...], source: str) -> PhonesSpec:
    try:
        return parse_phones(raw, [n.name for n in nodes if n.role is Role.CUCM], source)
    except PhoneSpecError as exc:
        raise LabFileError(str(exc)) from None


def _parse_nodes(nodes_raw: list[Any], domain: str, source: str, doors: FrontDoorSpec) -> tuple[NodeSpec, ...]:
    if len(nodes_raw) > MAX_CLUSTER_NODES:
        raise LabFileError(
            f"{source}: {len(nodes_raw)} nodes; a cluster has at most {MAX_CLUSTER_NODES} servers (R-NODE-1)"
        )
    parsed: list[dict[str, Any]] = []
    for i, item in enumerate(nodes_raw, start=1):
        where = f"{source}: nodes[{i}]"  # counted from 1, as people count nodes
        if not isinstance(item, Mapping):
            raise LabFileError(f"{where}: must be a mapping with 'name' and 'role'")
        unknown = set(item) - NODE_KEYS
        if unknown:
            raise LabFileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise LabFileError(f"{where}: 'name' must be lowercase letters, digits and '-' (got {name!r})")
        try:
            role = Role(str(item.get("role", "cucm")).lower())
        except ValueError:
            raise LabFileError(f"{where} ({name}): role must be 'cucm' or 'imp'") from None
        fqdn = item.get("fqdn", f"{name}.{domain}")
        if not isinstance(fqdn, str) or not _FQDN.fullmatch(fqdn):
            raise LabFileError(f"{where} ({name}): 'fqdn' is not a valid host name: {fqdn!r}")
        publisher = item.get("publisher")
        if publisher is not None and not isinstance(publisher, bool):
            raise LabFileError(f"{where} ({name}): 'publisher' must be true or false")
        address = _parse_address(item.get("address", f"127.0.0.{FIRST_DEFAULT_HOST + i - 1}"), f"{where} ({name})")
        parsed.append(
            {
                "name": name,
                "role": role,
                "fqdn": fqdn,
                "publisher": publisher,
                "address": address,
                "ssh_port": _parse_port(item.get("ssh_port", doors.ssh_port), f"{where} ({name}): 'ssh_port'"),
                "https_port": _parse_port(item.get("https_port", doors.https_port), f"{where} ({name}): 'https_port'"),
            }
        )
    for key in ("name", "fqdn", "address"):
        seen: set[str] = set()
        for p in parsed:
            folded = p[key].lower()  # DNS names are case-insensitive
            if folded in seen:
                hint = " (a node without 'address' gets 127.0.0.<11 + its position>)" if key == "address" else ""
                raise LabFileError(f"{source}: two nodes have the {key} '{p[key]}'{hint}")
            seen.add(folded)
    for role in Role:
        members = [p for p in parsed if p["role"] is role]
        if not members:
            continue
        flagged = [p for p in members if p["publisher"]]
        if len(flagged) > 1:
            raise LabFileError(
                f"{source}: more than one {role.value} publisher: {', '.join(p['name'] for p in flagged)}"
            )
        _check_publisher_flags(members, role, source)
        for p in members:
            p["publisher"] = p is members[0]  # R-NODE-1: the first node (of its role) is the publisher
    if not any(p["role"] is Role.CUCM for p in parsed):
        raise LabFileError(
            f"{source}: a cluster needs a Unified CM (cucm) publisher; IM&P nodes join a Unified CM cluster"
        )
    return tuple(
        NodeSpec(p["name"], p["role"], p["publisher"], p["fqdn"], p["address"], p["ssh_port"], p["https_port"])
        for p in parsed
    )


def _check_publisher_flags(members: list[dict[str, Any]], role: Role, source: str) -> None:
    """R-NODE-1: the first node of a role is its publisher; a ``publisher:`` flag may only agree."""
    first = members[0]
    if first["publisher"] is False:
        raise LabFileError(
            f"{source}: '{first['name']}' is the first {role.value} node, so it is the publisher (R-NODE-1);"
            " remove 'publisher: false' or list the publisher first"
        )
    for p in members[1:]:
        if p["publisher"]:
            raise LabFileError(
                f"{source}: '{p['name']}' has 'publisher: true' but the first {role.value} node"
                f" '{first['name']}' is the publisher (R-NODE-1); list the publisher first"
            )


def _parse_address(raw: Any, where: str) -> str:
    """A node's front-door address: an IPv4 address in 127.0.0.0/8 (every one of them reaches this host
    on Linux), neither the network nor the broadcast address."""
    try:
        address = ipaddress.IPv4Address(str(raw).strip())
    except ValueError:
        raise LabFileError(f"{where}: 'address' must be an IPv4 address in 127.0.0.0/8 (got {raw!r})") from None
    if address not in _LOOPBACK or address in (_LOOPBACK.network_address, _LOOPBACK.broadcast_address):
        raise LabFileError(
            f"{where}: 'address' {address} is not a loopback host address; use one in 127.0.0.1-127.255.255.254"
        )
    return str(address)


def _parse_port(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= 65535:
        raise LabFileError(f"{where} must be a port number from 0 (any free port) to 65535 (got {raw!r})")
    return raw


def _parse_front_doors(raw: Any, source: str) -> FrontDoorSpec:
    if raw is None:
        return FrontDoorSpec()
    if not isinstance(raw, Mapping):
        raise LabFileError(f"{source}: 'front_doors' must be a mapping with enabled, ssh_port and/or https_port")
    unknown = set(raw) - FRONT_DOOR_KEYS
    if unknown:
        raise LabFileError(
            f"{source}: unknown front_doors key(s) {', '.join(sorted(map(str, unknown)))};"
            f" known: {', '.join(sorted(FRONT_DOOR_KEYS))}"
        )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise LabFileError(f"{source}: front_doors 'enabled' must be true or false")
    return FrontDoorSpec(
        enabled,
        _parse_port(raw.get("ssh_port", DEFAULT_SSH_PORT), f"{source}: front_doors 'ssh_port'"),
        _parse_port(raw.get("https_port", DEFAULT_HTTPS_PORT), f"{source}: front_doors 'https_port'"),
    )


def _parse_os_admin(raw: Any, source: str) -> Credentials:
    """The OS administrator both front doors accept; errors never repeat the password."""
    if raw is None:
        return DEFAULT_OS_ADMIN
    if not isinstance(raw, Mapping) or set(raw) - {"user", "password"}:
        raise LabFileError(f"{source}: 'os_admin' must be a mapping with 'user' and 'password'")
    user = raw.get("user", DEFAULT_OS_ADMIN.user)
    if not isinstance(user, str) or not _USER.fullmatch(user):
        raise LabFileError(f"{source}: os_admin 'user' must be a lowercase login name (got {user!r})")
    password = raw.get("password")
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise LabFileError(f"{source}: os_admin 'password' must be a string of at least {MIN_PASSWORD} characters")
    return Credentials(user, password)


def _parse_clock(raw: Any, source: str) -> tuple[dt.datetime | None, float]:
    if raw is None:
        return None, 1.0
    if not isinstance(raw, Mapping):
        raise LabFileError(f"{source}: 'clock' must be a mapping with 'start' and/or 'rate'")
    start = raw.get("start")
    parsed: dt.datetime | None = None
    if start is not None:
        if isinstance(start, dt.datetime):
            parsed = start
        elif isinstance(start, dt.date):
            parsed = dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC)
        else:
            try:
                parsed = dt.datetime.fromisoformat(str(start).replace("Z", "+00:00"))
            except ValueError:
                raise LabFileError(f"{source}: clock start {start!r} is not an ISO date-time") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
    rate = raw.get("rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise LabFileError(f"{source}: clock rate must be a positive number")
    return parsed, float(rate)


def _parse_subject(raw: Any, source: str) -> SubjectFields:
    if raw is None:
        return SubjectFields()
    if not isinstance(raw, Mapping):
        raise LabFileError(f"{source}: 'subject' must be a mapping (organization, org_unit, locality, state, country)")
    fields = {"organization", "org_unit", "locality", "state", "country"}
    unknown = set(raw) - fields
    if unknown:
        raise LabFileError(f"{source}: unknown subject field(s) {', '.join(sorted(map(str, unknown)))}")
    country = str(raw.get("country", "US"))
    if len(country) != 2:
        raise LabFileError(f"{source}: subject country must be a two-letter code")
    return SubjectFields(**{k: str(v) for k, v in raw.items()})


# ---------------------------------------------------------------------------------------------
# Several clusters in one lab file (a classroom): a top-level 'clusters:' list


CLUSTERS_KEY = "clusters"
CLUSTER_ITEM_KEYS = (LAB_KEYS - {"lab"}) | {"cluster"}
MAX_CLUSTERS = 250  # cluster c gets default node addresses 127.0.<c>.<11 + position>


@dataclass(frozen=True)
class ClustersSpec:
    """What a lab file describes: one cluster (a classic lab file) or several under ``clusters:``.

    Each cluster is a full :class:`LabSpec` of its own name, security password, release, publisher, nodes
    and addresses; running, its nodes share the lab's broker and processes but never its bus traffic or
    stores (topics and keys come from the cluster's name and password, databases live per cluster)."""

    name: str
    clusters: tuple[LabSpec, ...]
    multi: bool
    raw: tuple[Mapping[str, Any], ...]  # each cluster as a one-cluster lab mapping (its copy in the lab dir)

    def cluster(self, name: str) -> LabSpec:
        for spec in self.clusters:
            if spec.name == name:
                return spec
        raise LabFileError(f"lab '{self.name}' has no cluster '{name}'; clusters: {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.clusters)


def load_clusters(path: Path) -> ClustersSpec:
    """Read a lab file of one cluster or of several (``clusters:``)."""
    try:
        raw = userfiles.load_yaml_file(path, "lab")
    except userfiles.UserFileError as exc:
        raise LabFileError(str(exc)) from None
    return parse_clusters(raw, source=str(path))


def parse_clusters(raw: Any, source: str = "lab") -> ClustersSpec:
    """A one-cluster lab mapping as today, or ``lab`` + ``clusters: [...]`` where every other top-level key
    (release, domain, nodes, front_doors ...) is a default each cluster may override; each item names its
    ``cluster`` and normally its own ``security_password``."""
    if not isinstance(raw, Mapping) or CLUSTERS_KEY not in raw:
        spec = parse_lab(raw, source)
        return ClustersSpec(spec.name, (spec,), multi=False, raw=(dict(raw),))
    name = raw.get("lab")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LabFileError(f"{source}: 'lab' must be a lowercase name of letters, digits and '-' (got {name!r})")
    defaults = {k: v for k, v in raw.items() if k not in ("lab", CLUSTERS_KEY)}
    unknown = set(defaults) - LAB_KEYS
    if unknown:
        raise LabFileError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
    items = raw[CLUSTERS_KEY]
    if not isinstance(items, list) or not items:
        raise LabFileError(f"{source}: 'clusters' must be a non-empty list of clusters")
    if len(items) > MAX_CLUSTERS:
        raise LabFileError(f"{source}: {len(items)} clusters; a lab holds at most {MAX_CLUSTERS}")
    specs: list[LabSpec] = []
    mappings: list[Mapping[str, Any]] = []
    for c, item in enumerate(items):
        where = f"{source}: cluster {c + 1}"
        if not isinstance(item, Mapping):
            raise LabFileError(f"{where} must be a mapping with 'cluster' and 'security_password'")
        unknown = set(item) - CLUSTER_ITEM_KEYS
        if unknown:
            raise LabFileError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        merged: dict[str, Any] = {**defaults, **{k: v for k, v in item.items() if k != "cluster"}}
        merged["lab"] = item.get("cluster")
        if isinstance(merged.get("nodes"), list):  # default front-door addresses per cluster: 127.0.<c>.<11 + i>
            merged["nodes"] = [
                {"address": f"127.0.{c}.{FIRST_DEFAULT_HOST + i}", **n} if isinstance(n, Mapping) else n
                for i, n in enumerate(merged["nodes"])
            ]
        specs.append(parse_lab(merged, f"{where} ({merged['lab']})"))
        mappings.append(merged)
    for what, values in (
        ("name", [s.name for s in specs]),
        ("node address", [n.address for s in specs for n in s.nodes]),
    ):
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise LabFileError(f"{source}: two clusters use the {what} '{value}'")
            seen.add(value)
    return ClustersSpec(name, tuple(specs), multi=True, raw=tuple(mappings))
