"""Authenticated envelopes: every message on the bus is sealed with the cluster secret.

The key is derived from the lab's cluster security password with scrypt (the real
product's cluster secret plays this role), so only cluster members can change a trust
store over the bus. A forged or altered envelope fails its MAC and is refused.
"""

from __future__ import annotations

import base64
import collections
import functools
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PROTOCOL_VERSION = 2  # 2: the MAC covers the exact bytes of the signed part, checked before they are parsed
MAX_ENVELOPE_BYTES = 8 << 20  # a full state transfer of a large store fits; anything bigger is hostile


class EnvelopeError(Exception):
    """A payload that is not a valid envelope of this cluster; ``reason`` is a short log tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@functools.lru_cache(maxsize=16)
def derive_key(password: str, lab: str) -> bytes:
    """The 32-byte MAC key of a cluster, from its security password (scrypt, salted by lab name)."""
    kdf = Scrypt(salt=f"certsim-cluster-secret:{lab}".encode(), length=32, n=2**14, r=8, p=1)
    return kdf.derive(password.encode())


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 as 64 hex digits. (Not the stdlib's one-shot ``hmac.digest``: it releases the GIL
    on every call, and in a process hosting many nodes each release lets a database thread in first.)"""
    h = HMAC(key, hashes.SHA256())
    h.update(data)
    return h.finalize().hex().encode()


# A sealed payload is the JSON object {"m":"<MAC, 64 hex>","s":<signed part>} laid out exactly so:
# the receiver checks the MAC over the signed part's bytes as they arrived (no parse of anything
# unauthenticated, no re-encoding), and the payload is still JSON for tools that read the bus.
_HEAD = b'{"m":"'
_MID = b'","s":'
_MAC_END = len(_HEAD) + 64
_SIGNED_START = _MAC_END + len(_MID)


@dataclass(frozen=True)
class Envelope:
    """One message: who sent it, what kind, for whom (None = everyone), and its body."""

    kind: str
    sender: str
    body: dict[str, Any]
    to: str | None = None
    sent_ms: int = 0  # the sender's simulated time, for freshness checks
    msg_id: str = field(default_factory=lambda: secrets.token_hex(8))

    def _fields(self) -> dict[str, Any]:
        return {
            "v": PROTOCOL_VERSION,
            "k": self.kind,
            "f": self.sender,
            "t": self.to,
            "i": self.msg_id,
            "ts": self.sent_ms,
            "b": self.body,
        }

    def seal(self, key: bytes) -> bytes:
        signed = _canonical(self._fields())
        return lay_out(_mac(key, signed), signed)


def lay_out(mac_hex: bytes, signed: bytes) -> bytes:
    """The wire form of a signed part and its MAC (also for tools that tamper with envelopes on purpose)."""
    return b"".join((_HEAD, mac_hex, _MID, signed, b"}"))


def signed_part(payload: bytes) -> tuple[bytes, dict[str, Any]]:
    """(MAC, parsed signed part) of a payload in the sealed layout, NOT authenticated (for such tools)."""
    mac, signed = _split(payload)
    return mac, _json_object(signed)


def _split(payload: bytes) -> tuple[bytes, bytes]:
    """(MAC, signed part) of a payload in the sealed layout, or why it is not one."""
    if not (payload.startswith(_HEAD) and payload[_MAC_END:_SIGNED_START] == _MID and payload.endswith(b"}")):
        raise _unsealed(payload)
    return payload[len(_HEAD) : _MAC_END], payload[_SIGNED_START:-1]


def _json_object(text: bytes) -> dict[str, Any]:
    """``text`` parsed as a JSON object, or ``EnvelopeError('malformed')`` (nested too deep included)."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnvelopeError("malformed", f"not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise EnvelopeError("malformed", "not a JSON object")
    return raw


def _unsealed(payload: bytes) -> EnvelopeError:
    """Why a payload not laid out as a sealed envelope is refused (the reason is a log tag)."""
    try:
        raw = _json_object(payload)
    except EnvelopeError as exc:
        return exc
    if not isinstance(raw.get("m"), str):
        return EnvelopeError("unsigned", "no MAC")
    return EnvelopeError("malformed", "not laid out as a sealed envelope")


def open_envelope(payload: bytes, key: bytes) -> Envelope:
    """Parse and authenticate ``payload``; raises ``EnvelopeError`` for anything not sealed by ``key``."""
    if len(payload) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("oversize", f"{len(payload)} bytes")
    mac, signed = _split(payload)
    if not hmac.compare_digest(mac, _mac(key, signed)):
        raise EnvelopeError("bad-mac", "MAC does not match the cluster secret")
    raw = _json_object(signed)  # (only a member gets here: it was sealed so)
    if raw.get("v") != PROTOCOL_VERSION:
        raise EnvelopeError("version", f"protocol version {raw.get('v')!r}")
    kind, sender, to, msg_id, ts, body = (raw.get(k) for k in ("k", "f", "t", "i", "ts", "b"))
    if not (isinstance(kind, str) and isinstance(sender, str) and isinstance(msg_id, str)):
        raise EnvelopeError("malformed", "kind, sender or id missing")
    if to is not None and not isinstance(to, str):
        raise EnvelopeError("malformed", "bad recipient")
    if not isinstance(ts, int) or not isinstance(body, dict):
        raise EnvelopeError("malformed", "bad timestamp or body")
    return Envelope(kind=kind, sender=sender, body=body, to=to, sent_ms=ts, msg_id=msg_id)


# The nodes one process hosts all receive the same bytes of a broadcast. Opening them is a pure
# function of the bytes and the key, so the first node's result (its MAC checked with its own key)
# serves the others holding the same key: twenty receivers pay for one MAC and one parse.
SHARED_OPEN_MAX_BYTES = 64 << 10  # a change or a digest; a big state transfer is opened by each node
SHARED_OPEN_KEPT = 64
_opened: collections.OrderedDict[tuple[bytes, bytes], Envelope] = collections.OrderedDict()


def open_shared(payload: bytes, key: bytes) -> Envelope:
    """``open_envelope``, shared by the nodes of a process. The envelope and its body are shared
    too: read them, never change them."""
    if len(payload) > SHARED_OPEN_MAX_BYTES:
        return open_envelope(payload, key)
    cache_key = (payload, key)
    env = _opened.get(cache_key)
    if env is None:
        env = open_envelope(payload, key)  # (a refused payload is not kept: each node refuses and logs it)
        _opened[cache_key] = env
        if len(_opened) > SHARED_OPEN_KEPT:
            _opened.popitem(last=False)
    return env


# --- secrets inside envelopes -----------------------------------------------------------------
# The MAC proves who sent an envelope, but anyone on the broker can read it. Private key material
# (a multi-server identity's key, the AUTHZ keys) is therefore encrypted as well: AES-256-GCM
# with a key derived (HKDF) from the cluster secret, bound to what it is (associated data).

NONCE_BYTES = 12


@functools.lru_cache(maxsize=16)
def _aead_key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"certsim-aead-v1").derive(secret)


def seal_secret(secret: bytes, plaintext: bytes, context: str) -> str:
    """Encrypt ``plaintext`` for cluster members (base64 text for a JSON body); ``context`` names
    what it is (e.g. ``authz-key:signing``) and must match when it is opened."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_aead_key(secret)).encrypt(nonce, plaintext, context.encode())
    return base64.b64encode(nonce + sealed).decode()


def open_secret(secret: bytes, text: object, context: str) -> bytes:
    """The inverse of ``seal_secret``; ``EnvelopeError`` for anything not sealed by a member for ``context``."""
    if not isinstance(text, str):
        raise EnvelopeError("secret", "encrypted field missing")
    try:
        raw = base64.b64decode(text, validate=True)
        return AESGCM(_aead_key(secret)).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context.encode())
    except (ValueError, InvalidTag):
        raise EnvelopeError("secret", f"cannot decrypt {context}") from None
