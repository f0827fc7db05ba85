"""Many clusters in one lab: the lab file's clusters list, isolation on one broker, and class up/status/down."""

from __future__ import annotations

import base64
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.classroom import classroom
from cluster.lab import Lab
from cluster.labca import LabCA
from cluster.labfile import LabFileError, load_lab, parse_clusters
from scenarios import shipped_dir
from tests.cluster.test_cli_e2e import certsim

DEMO_LAB = shipped_dir() / "labs" / "demo.yaml"

TWO_CLUSTERS = yaml.safe_load(
    textwrap.dedent(
        """\
        lab: pair
        release: "15"
        front_doors: {enabled: false}
        nodes:                                   # the default every cluster gets
          - {name: cucm-pub, role: cucm}
          - {name: cucm-sub1, role: cucm}
        clusters:
          - {cluster: east, security_password: "east-cluster-pw"}
          - cluster: west
            security_password: "west-cluster-pw"
            release: "12.5"
            nodes:
              - {name: pub, role: cucm}
              - {name: sub, role: cucm}
              - {name: imp, role: imp}
        """
    )
)


def test_a_one_cluster_lab_file_stays_valid() -> None:
    """Every lab file written before clusters existed reads as one cluster, the same spec as load_lab."""
    multi = parse_clusters(yaml.safe_load(DEMO_LAB.read_text()), "demo.yaml")
    assert not multi.multi
    assert multi.clusters == (load_lab(DEMO_LAB),)


def test_clusters_take_defaults_and_their_own_name_password_release_nodes_and_addresses() -> None:
    """Top-level keys are defaults; each cluster has its own password, release, publisher and loopback addresses."""
    multi = parse_clusters(TWO_CLUSTERS, "pair.yaml")
    assert multi.multi and multi.name == "pair" and multi.names == ("east", "west")
    east, west = multi.clusters
    assert (east.security_password, west.security_password) == ("east-cluster-pw", "west-cluster-pw")
    assert (east.release.name, west.release.name) == ("15", "12.5")
    assert [n.name for n in west.nodes] == ["pub", "sub", "imp"]
    assert [n.publisher for n in west.nodes] == [True, False, True]  # R-NODE-1, per cluster
    assert [n.address for n in east.nodes] == ["127.0.0.11", "127.0.0.12"]
    assert [n.address for n in west.nodes] == ["127.0.1.11", "127.0.1.12", "127.0.1.13"]
    assert not east.front_doors.enabled and not west.front_doors.enabled


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["clusters"].append({"cluster": "east", "security_password": "another-pw"}),
            "two clusters use the name 'east'",
        ),
        (
            lambda r: r["clusters"][1].update(nodes=[{"name": "p", "address": "127.0.0.11"}]),
            "node address '127.0.0.11'",
        ),
        (lambda r: r["clusters"][0].update(colour="blue"), "unknown key(s) colour"),
        (lambda r: r["clusters"][0].pop("security_password"), "security_password"),
        (lambda r: r.update(clusters=[]), "'clusters' must be a non-empty list"),
        (lambda r: r.update(lab="Not A Name"), "'lab' must be a lowercase name"),
    ],
)
def test_bad_cluster_lists_are_refused_with_the_reason(change: Any, message: str) -> None:
    raw = json.loads(json.dumps(TWO_CLUSTERS))
    change(raw)
    with pytest.raises(LabFileError, match=None) as info:
        parse_clusters(raw, "pair.yaml")
    assert message in str(info.value)


def test_a_classroom_copies_the_template_with_a_password_per_student() -> None:
    """class up's lab: student01.., the template's nodes each, every cluster with a distinct password."""
    multi = parse_clusters(classroom(DEMO_LAB, 12), "class")
    assert multi.names == tuple(f"student{i:02d}" for i in range(1, 13))
    assert len({c.security_password for c in multi.clusters}) == 12
    assert all([n.name for n in c.nodes] == list(load_lab(DEMO_LAB).node_names) for c in multi.clusters)
    assert len({n.address for c in multi.clusters for n in c.nodes}) == 12 * 4


async def test_clusters_on_one_broker_never_see_each_others_traffic_or_stores(
    tmp_path: Path, broker_url: str | None
) -> None:
    """Isolation: an upload in one cluster reaches its nodes only; the other cluster's nodes receive no
    envelope of it (they would count it as rejected: another key) and hold nothing of it."""
    multi = parse_clusters(TWO_CLUSTERS, "pair.yaml")
    east = Lab(multi.cluster("east"), tmp_path / "east", broker_url=broker_url)
    await east.start()
    assert east.broker is not None
    west = Lab(multi.cluster("west"), tmp_path / "west", broker_url=broker_url or east.broker.url)
    try:
        await west.start()
        assert east.topics.root != west.topics.root and east.secret != west.secret
        root = LabCA(east.clock).create_ca("OnlyEast")
        data = base64.b64encode(root.pem()).decode()
        await east.request("cucm-pub", "upload", {"store": "tomcat-trust", "data": data})
        assert (await east.converge()).converged and (await west.converge()).converged
        assert "OnlyEast" in {r["name"] for r in await east.request("cucm-sub1", "list", {"store": "tomcat-trust"})}
        for node in west.spec.node_names:
            assert "OnlyEast" not in {r["name"] for r in await west.request(node, "list", {})}
            status = await west.request(node, "status")
            assert not status["rejected"], status["rejected"]
        assert {p.name for p in (tmp_path / "west" / "nodes").iterdir()} & {"cucm-pub.sqlite"} == set()
    finally:
        await west.stop()
        await east.stop()


@pytest.mark.slow
def test_class_up_status_down_with_workers(tmp_path: Path, broker_url: str | None) -> None:
    """certsim class up: 3 student clusters over 2 worker processes on one broker; every certsim verb
    reaches a cluster with --lab; class status has one line per cluster; class down stops every process."""
    template = tmp_path / "tmpl.yaml"
    template.write_text(
        yaml.safe_dump(
            {
                "lab": "tmpl",
                "security_password": "template-password",
                "front_doors": {"enabled": False},
                "nodes": [{"name": "cucm-pub", "role": "cucm"}, {"name": "cucm-sub1", "role": "cucm"}],
            }
        )
    )
    home = tmp_path / "home"
    args = ["class", "up", "--clusters", "3", "--template", str(template), "--workers", "2"]
    up = certsim(*args, *(["--broker", broker_url] if broker_url else []), home=home)
    assert "3 clusters, 6 nodes, 2 process(es)" in up.stdout
    try:
        state = json.loads((home / "labs" / "class" / "class.json").read_text())
        assert len(set(state["workers"])) == 2
        certsim("ca", "create", "ClassRoot", "--lab", "student01", home=home)
        pem = home / "labs" / "class" / "clusters" / "student01" / "ca" / "ClassRoot.pem"
        certsim(
            "cert", "upload", "--lab", "student01", "--node", "cucm-pub", "--store", "tomcat-trust", str(pem), home=home
        )
        status = json.loads(certsim("class", "status", "--json", home=home).stdout)
        rows = {r["cluster"]: r for r in status["clusters"]}
        assert set(rows) == {"student01", "student02", "student03"}
        assert all(r["up"] == r["nodes"] == 2 for r in rows.values())

        def holds(cluster: str, node: str) -> bool:
            out = certsim("cert", "list", "--lab", cluster, "--node", node, "--cn", "ClassRoot", "--json", home=home)
            return any(r["name"] == "ClassRoot" for r in json.loads(out.stdout))

        assert holds("student01", "cucm-sub1")  # R-REPL-1 inside the cluster
        assert not holds("student02", "cucm-sub1") and not holds("student03", "cucm-pub")
        lines = certsim("class", "status", home=home).stdout.splitlines()
        assert [line.split()[0] for line in lines] == ["student01", "student02", "student03"]
    finally:
        down = certsim("class", "down", home=home, check=False)
    assert down.returncode == 0, down.stderr
    assert not (home / "labs" / "class" / "class.json").exists()
    assert not list((home / "labs" / "class" / "clusters").glob("*/running.json"))
    gone = certsim("cert", "list", "--lab", "student01", "--node", "cucm-pub", home=home, check=False)
    assert gone.returncode != 0 and "no lab is running" in gone.stderr


def _scenario(tmp_path: Path, cluster: str | None) -> Path:
    (tmp_path / "pair.yaml").write_text(yaml.safe_dump(TWO_CLUSTERS))
    body: dict[str, Any] = {
        "scenario": "west-only",
        "lab": "pair.yaml",
        "steps": [
            {"ca": {"create": "WestRoot", "cn": "certsim West Root"}},
            {"upload": {"node": "pub", "store": "tomcat-trust", "cert": "WestRoot"}},
            {"expect": {"rule": "R-REPL-1", "store": "tomcat-trust", "nodes": "all", "has": "WestRoot"}},
        ],
    }
    if cluster is not None:
        body["cluster"] = cluster
    path = tmp_path / "west.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


async def test_a_scenario_targets_one_cluster_of_a_multi_cluster_lab(tmp_path: Path, broker_url: str | None) -> None:
    """R-REPL-1 on the cluster the scenario names (west: its own nodes pub, sub, imp and release 12.5)."""
    from cluster.runs import run_scenario
    from cluster.scenario import load_scenario

    scenario = load_scenario(_scenario(tmp_path, "west"))
    assert scenario.lab.name == "west" and scenario.lab.release.name == "12.5"
    report = await run_scenario(scenario, tmp_path / "results", broker_url=broker_url)
    assert report.result.verdict == "valid", report.result.reason


@pytest.mark.parametrize(("cluster", "message"), [(None, "name one with 'cluster:'"), ("north", "no cluster 'north'")])
def test_a_scenario_on_several_clusters_must_name_a_known_one(
    tmp_path: Path, cluster: str | None, message: str
) -> None:
    from cluster.scenario import ScenarioError, load_scenario

    with pytest.raises(ScenarioError) as info:
        load_scenario(_scenario(tmp_path, cluster))
    assert message in str(info.value)


def test_node_run_in_a_lab_directory_without_lab_json_says_it_starts_a_new_instance(tmp_path: Path) -> None:
    """Beyond one machine: a node's topics are named by the instance id in lab.json, so ``node run`` in a
    directory without one (another machine, nothing copied) says, before it starts, that it will not meet
    nodes running elsewhere and what to copy."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a port nothing listens on: the note comes before any connection
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fresh = tmp_path / "elsewhere"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "node",
            "run",
            "--lab-file",
            str(DEMO_LAB),
            "--node",
            "cucm-sub2",
            "--broker",
            f"mqtt://127.0.0.1:{port}",
            "--lab-dir",
            str(fresh),
        ],
        env={**os.environ, "CERTSIM_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert first.startswith(f"note: {fresh} has no lab.json"), first
    assert "starts a new instance of lab demo" in first and "copy lab.json from their lab directory" in first
