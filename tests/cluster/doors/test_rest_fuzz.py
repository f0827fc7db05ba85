"""REST door fuzz (issue 14): a corpus of random and mutated requests, generated here from a seed,
never gets a 5xx, always a one-line JSON error, and changes nothing on any node."""

from __future__ import annotations

import json
import random
from typing import Any

from cluster.labca import LabCA
from node.safetext import is_safe
from tests.cluster.doors.test_rest import Api, lab_with_doors
from tests.conftest import LabFactory

PATHS = ["csr", "trust/certificates", "identity/certificates", "trust/certificate", "snapshot/server", "nothing"]
KEYS = ["service", "certificates", "description", "altNames", "hashAlgorithm", "keyType", "keyLength", "distribution"]


def _value(rng: random.Random, pem: str, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 2 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False, -1, 0, 10**30, 1.5e300])
    if pick == 2:
        return "".join(chr(rng.randrange(0, 0x3000)) for _ in range(rng.randrange(0, 12)))
    if pick == 3:  # a certificate with a few characters changed
        chars = list(pem)
        for _ in range(rng.randrange(1, 5)):
            chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 127))
        return "".join(chars)
    if pick == 4:
        return rng.choice(["tomcat-nope", "SHA1", "DSA", "Multi", "\x1b[2J", "[/]"])
    if pick == 5:
        return ""
    if pick in (6, 7):
        return [_value(rng, pem, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(KEYS): _value(rng, pem, depth + 1) for _ in range(rng.randrange(0, 4))}


async def test_rest_door_fuzz(make_lab: LabFactory) -> None:
    lab = await lab_with_doors(make_lab)
    api = Api(lab.doors["cucm1"])
    pem = LabCA(lab.clock).create_ca("FuzzRoot").pem().decode()
    rng = random.Random(14)
    before = {n: await lab.request(n, "list", {}) for n in lab.running_nodes()}
    problems = []
    for _ in range(60):
        path = rng.choice(PATHS)
        body = {rng.choice(KEYS): _value(rng, pem) for _ in range(rng.randrange(0, 5))}
        if rng.random() < 0.2:
            raw: bytes | None = json.dumps(body).encode()[: rng.randrange(1, 40)]  # cut short: not JSON
        else:
            raw = None
        status, answer, _ = await api.call("POST", path, None if raw else body, raw=raw)
        message = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        if status >= 500 or status < 400 or not message or "\n" in message or not is_safe(message):
            problems.append(f"POST {path} {body!r:.80}: {status} {answer!r:.200}")
    assert not problems, "\n".join(problems)
    assert {n: await lab.request(n, "list", {}) for n in lab.running_nodes()} == before
