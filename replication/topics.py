"""Topic layout under a lab's root; each lab has its own root so labs can share one broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    root: str  # e.g. certsim/demo/3f2a9c1e: lab name plus the lab directory's instance id

    @property
    def repl(self) -> str:
        """Broadcast: changes, barriers and digests (one topic, so each sender's order holds)."""
        return f"{self.root}/repl"

    def node(self, name: str) -> str:
        """Directed replication traffic to one node (state transfers, shared identities)."""
        return f"{self.root}/node/{name}/sync"

    def ctl(self, name: str) -> str:
        """Control requests to one node (kept apart so a replication partition leaves it administrable)."""
        return f"{self.root}/node/{name}/ctl"

    def node_all(self, name: str) -> str:
        return f"{self.root}/node/{name}/+"

    def reply(self, client: str) -> str:
        """Answers to one control client."""
        return f"{self.root}/reply/{client}"

    def presence(self, name: str) -> str:
        """Retained online/offline flag of a node (offline is its MQTT will)."""
        return f"{self.root}/presence/{name}"

    @property
    def clock(self) -> str:
        """Retained: the lab clock's offset, so nodes in other processes jump with it."""
        return f"{self.root}/clock"

    @property
    def presence_all(self) -> str:
        return f"{self.root}/presence/+"
