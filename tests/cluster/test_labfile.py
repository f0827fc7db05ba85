"""cluster.labfile: lab files are validated into frozen specs, and every refusal names the problem."""

from __future__ import annotations

import copy
import datetime as dt
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.doors.auth import Credentials
from cluster.labfile import FrontDoorSpec, LabFileError, LabSpec, NodeSpec, load_lab, parse_lab
from node.catalog import RELEASES, Role
from node.certs import SubjectFields

GOOD_YAML = textwrap.dedent(
    """\
    lab: demo
    security_password: "cisco-lab-secret"
    release: "14"
    domain: lab.example
    description: two Unified CM nodes and an IM&P pair
    rsa_key_size: 3072
    clock: {start: 2026-01-01T00:00:00Z, rate: 60}
    subject: {organization: Example Corp, country: FR}
    nodes:
      - {name: cucm-pub, role: cucm}
      - {name: cucm-sub1, role: cucm, fqdn: sub1.other.example}
      - {name: imp-pub, role: imp}
      - {name: imp-sub1, role: IMP}
    """
)


def good() -> dict[str, Any]:
    return {
        "lab": "demo",
        "security_password": "cisco-lab-secret",
        "nodes": [{"name": "cucm-pub", "role": "cucm"}, {"name": "cucm-sub1", "role": "cucm"}],
    }


def test_good_lab_file_parses(tmp_path: Path) -> None:
    """R-NODE-1 and R-NODE-2: the first cucm node is the publisher; every node has an FQDN."""
    path = tmp_path / "demo.yaml"
    path.write_text(GOOD_YAML, encoding="utf-8")
    lab = load_lab(path)
    assert lab.name == "demo"
    assert lab.security_password == "cisco-lab-secret"
    assert lab.release is RELEASES["14"]
    assert lab.description == "two Unified CM nodes and an IM&P pair"
    assert lab.rsa_key_size == 3072
    assert lab.clock_start == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert lab.clock_start is not None
    assert lab.clock_start.tzinfo is not None
    assert lab.clock_rate == 60.0
    assert lab.subject == SubjectFields(organization="Example Corp", country="FR")
    assert lab.nodes == (
        NodeSpec("cucm-pub", Role.CUCM, True, "cucm-pub.lab.example", "127.0.0.11"),
        NodeSpec("cucm-sub1", Role.CUCM, False, "sub1.other.example", "127.0.0.12"),
        NodeSpec("imp-pub", Role.IMP, True, "imp-pub.lab.example", "127.0.0.13"),  # IM&P has its own publisher
        NodeSpec("imp-sub1", Role.IMP, False, "imp-sub1.lab.example", "127.0.0.14"),
    )
    assert lab.node_names == ("cucm-pub", "cucm-sub1", "imp-pub", "imp-sub1")
    assert lab.node("imp-sub1").role is Role.IMP


def test_defaults() -> None:
    lab = parse_lab(good())
    assert lab.release is RELEASES["15"]
    assert lab.clock_start is None
    assert lab.clock_rate == 1.0
    assert lab.subject == SubjectFields()
    assert lab.rsa_key_size == 2048
    assert [n.fqdn for n in lab.nodes] == ["cucm-pub.lab.example", "cucm-sub1.lab.example"]
    assert [n.publisher for n in lab.nodes] == [True, False]


def test_lab_spec_is_frozen() -> None:
    lab = parse_lab(good())
    with pytest.raises(AttributeError):
        lab.name = "other"  # type: ignore[misc]


def test_publisher_flag_on_a_later_node_is_refused() -> None:
    """R-NODE-1: the first node is the publisher; 'publisher: true' on the second node is refused, not obeyed."""
    raw = good()
    raw["nodes"][1]["publisher"] = True
    with pytest.raises(LabFileError, match=r"'cucm-sub1' has 'publisher: true' but the first cucm node 'cucm-pub'"):
        parse_lab(raw)
    raw = good()
    raw["nodes"][0]["publisher"] = False
    with pytest.raises(LabFileError, match=r"'cucm-pub' is the first cucm node, so it is the publisher"):
        parse_lab(raw)
    raw = good()
    raw["nodes"][0]["publisher"] = True  # agreeing with the order is fine
    assert [n.publisher for n in parse_lab(raw).nodes] == [True, False]


@pytest.mark.parametrize(("yaml_release", "name"), [("10.5", "10.5"), ("12.5", "12.5"), ("15", "15"), ('"14"', "14")])
def test_release_given_as_a_yaml_number(yaml_release: str, name: str) -> None:
    """R-REPL-9: the release profile is chosen by name, even when YAML reads it as a number."""
    raw = good()
    raw["release"] = yaml.safe_load(f"r: {yaml_release}")["r"]
    assert parse_lab(raw).release is RELEASES[name]


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (dt.date(2026, 3, 1), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)),
        (dt.datetime(2026, 3, 1, 12), dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)),
        ("2026-03-01T12:00:00Z", dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)),
        ("2026-03-01T12:00:00+02:00", dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)),
    ],
)
def test_clock_start_is_timezone_aware(start: object, expected: dt.datetime) -> None:
    raw = {**good(), "clock": {"start": start}}
    lab = parse_lab(raw)
    assert lab.clock_start == expected
    assert lab.clock_start is not None
    assert lab.clock_start.tzinfo is not None


def test_twenty_one_nodes_is_the_limit() -> None:
    """R-NODE-1: a cluster of 21 servers is accepted."""
    raw = {**good(), "nodes": [{"name": f"cucm{i}", "role": "cucm"} for i in range(21)]}
    assert len(parse_lab(raw).nodes) == 21


def test_unknown_node_lookup() -> None:
    with pytest.raises(LabFileError, match=r"lab 'demo' has no node 'ghost'; nodes: cucm-pub, cucm-sub1"):
        parse_lab(good()).node("ghost")


# --- bad lab files ---------------------------------------------------------------------------


def _mutate(path: str, value: Any) -> dict[str, Any]:
    """good() with the value at ``path`` ("key", "nodes.0.role", "-key" to delete) replaced."""
    raw = copy.deepcopy(good())
    if path.startswith("-"):
        del raw[path[1:]]
        return raw
    target: Any = raw
    *parts, last = path.split(".")
    for part in parts:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return raw


def _imp(name: str) -> dict[str, str]:
    return {"name": name, "role": "imp"}


BAD_LABS: list[tuple[str, Any, str]] = [
    ("not-a-mapping", ["lab", "demo"], r"a lab must be a mapping"),
    ("missing-lab", _mutate("-lab", None), r"'lab' must be a lowercase name .*\(got None\)"),
    ("uppercase-lab-name", _mutate("lab", "Demo"), r"'lab' must be a lowercase name .*\(got 'Demo'\)"),
    (
        "short-password",
        _mutate("security_password", "cisco"),
        r"'security_password' must be .* at least 8 characters",
    ),
    ("missing-password", _mutate("-security_password", None), r"'security_password' must be a string"),
    ("numeric-password", _mutate("security_password", 12345678), r"'security_password' must be a string"),
    ("unknown-key", {**good(), "nodez": []}, r"unknown key\(s\) nodez; known: .*nodes"),
    ("unknown-node-key", _mutate("nodes.0.ip", "10.0.0.1"), r"nodes\[1\]: unknown key\(s\) ip"),
    ("unknown-role", _mutate("nodes.1.role", "cube"), r"nodes\[2\] \(cucm-sub1\): role must be 'cucm' or 'imp'"),
    ("duplicate-names", _mutate("nodes.1.name", "cucm-pub"), r"two nodes have the name 'cucm-pub'"),
    (
        "duplicate-fqdns",
        _mutate("nodes.1.fqdn", "cucm-pub.lab.example"),
        r"two nodes have the fqdn 'cucm-pub.lab.example'",
    ),
    (
        "two-cucm-publishers",
        {**good(), "nodes": [{**n, "publisher": True} for n in good()["nodes"]]},
        r"more than one cucm publisher: cucm-pub, cucm-sub1",
    ),
    (
        "two-imp-publishers",
        {
            **good(),
            "nodes": [*good()["nodes"], {**_imp("i1"), "publisher": True}, {**_imp("i2"), "publisher": True}],
        },
        r"more than one imp publisher: i1, i2",
    ),
    (
        "only-imp-nodes",
        {**good(), "nodes": [_imp("imp-pub"), _imp("imp-sub")]},
        r"needs a Unified CM \(cucm\) publisher",
    ),
    (
        "twenty-two-nodes",
        {**good(), "nodes": [{"name": f"cucm{i}"} for i in range(22)]},
        r"22 nodes; a cluster has at most 21 servers \(R-NODE-1\)",
    ),
    ("zero-clock-rate", {**good(), "clock": {"rate": 0}}, r"clock rate must be a positive number"),
    ("negative-clock-rate", {**good(), "clock": {"rate": -2}}, r"clock rate must be a positive number"),
    ("text-clock-rate", {**good(), "clock": {"rate": "fast"}}, r"clock rate must be a positive number"),
    ("clock-not-a-mapping", {**good(), "clock": "2026-01-01"}, r"'clock' must be a mapping"),
    (
        "bad-clock-start",
        {**good(), "clock": {"start": "next tuesday"}},
        r"clock start 'next tuesday' is not an ISO",
    ),
    ("unknown-release", {**good(), "release": "9.1"}, r"unknown release '9.1'; known: 15, 14, 12.5, 10.5"),
    (
        "bad-domain",
        {**good(), "domain": "lab_example!"},
        r"'domain' must be a DNS domain \(got 'lab_example!'\)",
    ),
    ("empty-nodes", _mutate("nodes", []), r"'nodes' must be a non-empty list"),
    ("nodes-not-a-list", _mutate("nodes", {"cucm-pub": "cucm"}), r"'nodes' must be a non-empty list"),
    (
        "node-not-a-mapping",
        _mutate("nodes.0", "cucm-pub"),
        r"nodes\[1\]: must be a mapping with 'name' and 'role'",
    ),
    (
        "bad-node-name",
        _mutate("nodes.0.name", "CUCM_1"),
        r"nodes\[1\]: 'name' must be lowercase .*\(got 'CUCM_1'\)",
    ),
    (
        "bad-fqdn",
        _mutate("nodes.0.fqdn", "cucm pub.example"),
        r"nodes\[1\] \(cucm-pub\): 'fqdn' is not a valid host name",
    ),
    (
        "publisher-not-bool",
        _mutate("nodes.0.publisher", "yes"),
        r"\(cucm-pub\): 'publisher' must be true or false",
    ),
    ("bad-rsa-key-size", {**good(), "rsa_key_size": 1024}, r"'rsa_key_size' must be 2048, 3072 or 4096"),
    ("subject-not-a-mapping", {**good(), "subject": "Example"}, r"'subject' must be a mapping"),
    ("unknown-subject-field", {**good(), "subject": {"email": "x@y"}}, r"unknown subject field\(s\) email"),
    ("bad-country", {**good(), "subject": {"country": "USA"}}, r"subject country must be a two-letter code"),
    # front doors (cluster.doors.frontdoors): addresses, ports, the OS administrator
    (
        "address-not-loopback",
        _mutate("nodes.0.address", "10.0.0.1"),
        r"nodes\[1\] \(cucm-pub\): 'address' 10.0.0.1 is not a loopback host address",
    ),
    ("address-not-ip", _mutate("nodes.0.address", "cucm-pub"), r"'address' must be an IPv4 address in 127.0.0.0/8"),
    ("address-ipv6", _mutate("nodes.0.address", "::1"), r"'address' must be an IPv4 address"),
    ("address-network", _mutate("nodes.0.address", "127.0.0.0"), r"127.0.0.0 is not a loopback host address"),
    ("address-broadcast", _mutate("nodes.0.address", "127.255.255.255"), r"is not a loopback host address"),
    (
        "duplicate-addresses",
        _mutate("nodes.1.address", "127.0.0.11"),
        r"two nodes have the address '127.0.0.11' \(a node without 'address' gets 127.0.0.<11 \+ its position>\)",
    ),
    ("ssh-port-too-big", _mutate("nodes.0.ssh_port", 70000), r"\(cucm-pub\): 'ssh_port' must be a port number"),
    ("https-port-text", _mutate("nodes.1.https_port", "443"), r"\(cucm-sub1\): 'https_port' must be a port number"),
    ("https-port-bool", _mutate("nodes.1.https_port", True), r"'https_port' must be a port number"),
    ("front-doors-not-a-mapping", {**good(), "front_doors": True}, r"'front_doors' must be a mapping"),
    ("front-doors-unknown-key", {**good(), "front_doors": {"port": 22}}, r"unknown front_doors key\(s\) port"),
    ("front-doors-enabled-text", {**good(), "front_doors": {"enabled": "yes"}}, r"'enabled' must be true or false"),
    ("front-doors-negative-port", {**good(), "front_doors": {"ssh_port": -1}}, r"front_doors 'ssh_port' must be"),
    ("os-admin-not-a-mapping", {**good(), "os_admin": "admin"}, r"'os_admin' must be a mapping"),
    ("os-admin-unknown-key", {**good(), "os_admin": {"password": "x" * 8, "uid": 0}}, r"'os_admin' must be a"),
    ("os-admin-bad-user", {**good(), "os_admin": {"user": "Admin!", "password": "x" * 8}}, r"os_admin 'user'"),
    ("os-admin-no-password", {**good(), "os_admin": {"user": "admin"}}, r"os_admin 'password' must be a string"),
]


@pytest.mark.parametrize(("raw", "pattern"), [c[1:] for c in BAD_LABS], ids=[c[0] for c in BAD_LABS])
def test_bad_lab_is_refused_naming_the_problem(raw: Any, pattern: str) -> None:
    """R-NODE-1 and the lab-file schema: each bad lab is refused with a message naming the problem."""
    with pytest.raises(LabFileError) as info:
        parse_lab(raw, source="demo.yaml")
    message = str(info.value)
    assert message.startswith("demo.yaml: ")
    assert re.search(pattern, message), message


def test_bad_cases_are_distinct() -> None:
    assert len({repr(c[1]) for c in BAD_LABS}) == len(BAD_LABS)
    assert parse_lab(good())  # the base every case mutates is itself valid


def test_load_lab_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LabFileError, match=r"cannot read lab file .*missing.yaml"):
        load_lab(tmp_path / "missing.yaml")


def test_load_lab_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("lab: demo\nnodes: [unclosed\n", encoding="utf-8")
    with pytest.raises(LabFileError, match=r"broken.yaml: not valid YAML"):
        load_lab(path)


def test_load_lab_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "short.yaml"
    path.write_text(GOOD_YAML.replace("cisco-lab-secret", "short"), encoding="utf-8")
    with pytest.raises(LabFileError, match=rf"^{re.escape(str(path))}: 'security_password'"):
        load_lab(path)


def test_lab_file_error_is_a_value_error() -> None:
    assert issubclass(LabFileError, ValueError)
    assert isinstance(parse_lab(good()), LabSpec)


# --- known bugs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        {**good(), "lab": "demo\n"},
        {**good(), "domain": "lab.example\n"},
        _mutate("nodes.0.fqdn", "cucm-pub.lab.example\n"),
        _mutate("nodes.0", {"name": "cucm-pub\n", "fqdn": "cucm-pub.lab.example"}),
    ],
    ids=["lab", "domain", "fqdn", "node-name"],
)
def test_names_with_a_trailing_newline_are_refused(raw: dict[str, Any]) -> None:
    with pytest.raises(LabFileError):
        parse_lab(raw)


@pytest.mark.parametrize("rate", [".nan", ".inf", "true"])
def test_non_finite_or_boolean_clock_rate_is_refused(rate: str) -> None:
    raw = {**good(), "clock": yaml.safe_load(f"{{rate: {rate}}}")}
    with pytest.raises(LabFileError, match="clock rate"):
        parse_lab(raw)


def test_fqdns_differing_only_in_case_are_duplicates() -> None:
    raw = _mutate("nodes.0.fqdn", "CUCM.lab.example")
    raw["nodes"][1]["fqdn"] = "cucm.lab.example"
    with pytest.raises(LabFileError, match="two nodes have the fqdn"):
        parse_lab(raw)


# --- front doors ------------------------------------------------------------------------------


def test_front_door_defaults() -> None:
    """Nodes without an address get 127.0.0.<11 + position>; ports 22 and 443; admin / certsim-admin."""
    lab = parse_lab({**good(), "nodes": [*good()["nodes"], _imp("imp-pub")]})
    assert [n.address for n in lab.nodes] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    assert {(n.ssh_port, n.https_port) for n in lab.nodes} == {(22, 443)}
    assert lab.front_doors == FrontDoorSpec(enabled=True, ssh_port=22, https_port=443)
    assert lab.os_admin == Credentials("admin", "certsim-admin")


def test_front_door_ports_lab_wide_and_per_node() -> None:
    """Lab-wide ports are defaults; a node's own ports win; 0 means any free port."""
    raw = {
        **good(),
        "front_doors": {"enabled": False, "ssh_port": 2222, "https_port": 0},
        "nodes": [
            {"name": "cucm-pub", "address": "127.0.1.1", "ssh_port": 0},
            {"name": "cucm-sub1", "https_port": 8443},
        ],
    }
    lab = parse_lab(raw)
    assert lab.front_doors == FrontDoorSpec(enabled=False, ssh_port=2222, https_port=0)
    pub, sub = lab.nodes
    assert (pub.address, pub.ssh_port, pub.https_port) == ("127.0.1.1", 0, 0)
    assert (sub.address, sub.ssh_port, sub.https_port) == ("127.0.0.12", 2222, 8443)


def test_os_admin_password_is_never_shown() -> None:
    """The OS administrator's password is not in the spec's repr, nor in a refusal."""
    secret = "s3cret-admin-pw"
    lab = parse_lab({**good(), "os_admin": {"user": "osadmin", "password": secret}})
    assert lab.os_admin.check("osadmin", secret)
    assert secret not in repr(lab.os_admin) and secret not in repr(lab)
    with pytest.raises(LabFileError) as info:
        parse_lab({**good(), "os_admin": {"user": "Bad User", "password": secret}})
    assert secret not in str(info.value)


def test_demo_lab_gives_every_node_an_address() -> None:
    from scenarios import shipped_dir

    lab = load_lab(shipped_dir() / "labs" / "demo.yaml")
    assert {n.name: n.address for n in lab.nodes} == {
        "cucm-pub": "127.0.0.11",
        "cucm-sub1": "127.0.0.12",
        "cucm-sub2": "127.0.0.13",
        "imp-pub": "127.0.0.14",
    }
