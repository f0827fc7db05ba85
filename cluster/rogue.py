"""A rogue MQTT client: sniffs a lab's bus and floods it with forged, altered and replayed envelopes.

It is not a cluster member: it does not know the cluster security password. Everything it
sends must be refused by every node (DESIGN.md property 5).
"""

from __future__ import annotations

import json
import random
import secrets
from collections import Counter
from dataclasses import dataclass, field

from replication.envelope import Envelope, derive_key, lay_out, signed_part
from replication.topics import Topics
from replication.transport import BrokerAddress, Bus

KINDS = ("forged", "altered", "replayed")


@dataclass
class RogueClient:
    """Connects to the lab's broker like any client; no ACL stops it from publishing."""

    broker: BrokerAddress
    topics: Topics
    lab: str
    seed: int = 0
    captured: list[bytes] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    captured_control: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, genuine ctl envelope)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 - an attack schedule, not security
        self._attacking = False
        # A few guessed passwords, derived once: scrypt costs ~50 ms a key, the attack is about volume.
        self._guesses = [derive_key(f"guess-{i}-{self.seed}", self.lab) for i in range(4)]
        self._bus = Bus(
            self.broker,
            client_id=f"rogue-{secrets.token_hex(4)}",
            subscriptions=[self.topics.repl, self.topics.ctl("+")],
            on_message=self._sniff,
            clean_session=True,
        )

    async def start(self) -> None:
        self._bus.start()
        if not await self._bus.wait_connected(10):
            raise ConnectionError(f"rogue client cannot reach {self.broker.url}")

    async def stop(self) -> None:
        await self._bus.stop()

    async def _sniff(self, topic: str, payload: bytes) -> None:
        if self._attacking:
            return
        if b'"k":"change"' in payload:
            self.captured.append(payload)
        elif b'"k":"ctl"' in payload and (topic, payload) not in self.captured_control:
            self.captured_control.append((topic, payload))

    async def replay_control(self, op: str | None = None) -> int:
        """Send every captured control request (of ``op``, or all) again, unchanged; returns how many."""
        self._attacking = True
        sent = 0
        for topic, payload in list(self.captured_control):
            if op is None or signed_part(payload)[1].get("b", {}).get("op") == op:
                await self._bus.publish(topic, payload, qos=1)
                sent += 1
        self.sent["replayed-control"] += sent
        return sent

    def _forged(self) -> bytes:
        """A well-formed change envelope sealed with a guessed password."""
        guess = self._guesses[self._rng.randrange(len(self._guesses))]
        record = {
            "s": "tomcat-trust",
            "n": f"rogue-{self._rng.randrange(10**6)}",
            "v": [2**40, 0, "cucm-pub"],
            "d": "MIIB",
            "o": "cucm-pub",
        }
        return Envelope("change", "cucm-pub", {"records": [record]}, sent_ms=2**40).seal(guess)

    def _altered(self) -> bytes:
        """A captured genuine envelope with its body changed (its MAC no longer matches)."""
        if not self.captured:
            return self._forged()
        mac, raw = signed_part(self._rng.choice(self.captured))
        raw["b"]["records"] = [dict(r, v=[r["v"][0] + 10**9, 0, r["v"][2]]) for r in raw["b"]["records"]]
        return lay_out(mac, json.dumps(raw).encode())

    def _replayed(self) -> bytes:
        """A captured genuine envelope, sent again unchanged."""
        return self._rng.choice(self.captured) if self.captured else self._forged()

    async def attack(self, count: int, kinds: tuple[str, ...] = KINDS) -> Counter[str]:
        """Publish ``count`` hostile envelopes, cycling through ``kinds``; returns how many of each."""
        self._attacking = True  # stop sniffing: our own envelopes come back on the topic
        makers = {"forged": self._forged, "altered": self._altered, "replayed": self._replayed}
        for i in range(count):
            kind = kinds[i % len(kinds)]
            await self._bus.publish(self.topics.repl, makers[kind](), qos=1)
            self.sent[kind] += 1
        return self.sent
