"""Random bytes to every upload path never crash a node and never change its state (hypothesis)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.agent import NodeAgent, NodeConfig
from node.catalog import RELEASES, Role
from node.clock import SimClock
from node.errors import CertsimError
from replication.topics import Topics
from replication.transport import BrokerAddress

PATHS = [
    ("upload", {"store": "tomcat-trust"}),
    ("upload", {"store": "CAPF-trust"}),
    ("identity_upload", {"unit": "tomcat"}),
    ("identity_upload", {"unit": "CallManager-ECDSA"}),
    ("identity_upload", {"unit": "CAPF"}),
]
PEM_WRAPS = [b"", b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PKCS7-----\n", b"\x30\x82\x01\x00"]


class Node:
    """A publisher agent in its own event loop; no broker is reachable, requests go straight to ``handle``."""

    def __init__(self, tmp: Path) -> None:
        self.runner = asyncio.Runner()
        config = NodeConfig(
            lab="fuzz",
            name="cucm1",
            role=Role.CUCM,
            publisher=True,
            fqdn="cucm1.lab.example",
            db_path=tmp / "cucm1.sqlite",
            topics=Topics("certsim/fuzz/0"),
            release=RELEASES["15"],
        )
        clock = SimClock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), rate=1)
        self.agent = NodeAgent(config, clock=clock, broker=BrokerAddress.parse("mqtt://127.0.0.1:9"), secret=b"k" * 32)
        self.runner.run(self.agent.start())
        self.runner.run(self.agent.handle("csr_gen", {"unit": "tomcat"}))

    def state(self) -> Any:
        async def go() -> Any:
            rows = await self.agent.handle("list", {})
            idents = await self.agent.handle("identity_list", {})
            csrs = await self.agent.handle("csr_list", {})
            return (
                sorted((r["store"], r["name"], r["sha256"]) for r in rows),
                sorted((r["unit"], r["sha256"]) for r in idents),
                sorted((r["unit"], r["sha256"]) for r in csrs),
                await self.agent.store.outbox_count(),
            )

        return self.runner.run(go())

    def close(self) -> None:
        self.runner.run(self.agent.stop())
        self.runner.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("fuzz"))
    try:
        yield n
    finally:
        n.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    prefix=st.sampled_from(PEM_WRAPS),
    body=st.binary(max_size=2048),
    as_b64=st.booleans(),
)
def test_random_bytes_never_crash_or_change_a_node(
    node: Node, path: tuple[str, dict[str, Any]], prefix: bytes, body: bytes, as_b64: bool
) -> None:
    """R-OP-UPLOAD-2: whatever arrives on the trust- or identity-upload path, the node answers with a clear
    error (never an internal one), keeps running, and changes nothing."""
    op, base = path
    data = prefix + (base64.b64encode(body) if as_b64 else body)
    before = node.state()
    with pytest.raises(CertsimError) as info:
        node.runner.run(node.agent.handle(op, {**base, "data": base64.b64encode(data).decode()}))
    assert info.value.message and "internal" not in info.value.code
    assert node.agent.running
    assert node.state() == before
