"""replication.envelope: only messages sealed with the cluster secret are accepted."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.hmac import HMAC
from hypothesis import given, settings
from hypothesis import strategies as st

from replication.envelope import (
    MAX_ENVELOPE_BYTES,
    PROTOCOL_VERSION,
    Envelope,
    EnvelopeError,
    derive_key,
    open_envelope,
    open_secret,
    open_shared,
    seal_secret,
)
from replication.records import records_from_json

PASSWORD = "cisco-lab-secret"
LAB = "demo"


@pytest.fixture(scope="module")
def key() -> bytes:
    return derive_key(PASSWORD, LAB)


@pytest.fixture
def envelope() -> Envelope:
    return Envelope(
        kind="records",
        sender="cucm-pub",
        body={"records": [{"s": "tomcat-trust", "n": "Lab_Root_CA"}], "n": 1},
        to="cucm-sub1",
        sent_ms=1_767_225_600_000,
        msg_id="0123456789abcdef",
    )


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def wire(mac: str, signed: bytes) -> bytes:
    """The sealed layout, written out here independently of the production code."""
    return b'{"m":"' + mac.encode() + b'","s":' + signed + b"}"


def seal_raw(fields: dict[str, Any], key: bytes) -> bytes:
    """Seal arbitrary fields with a valid MAC, to reach the checks that follow authentication."""
    h = HMAC(key, hashes.SHA256())
    h.update(_canonical(fields))
    return wire(h.finalize().hex(), _canonical(fields))


def opened_raw(payload: bytes) -> tuple[str, dict[str, Any]]:
    raw = json.loads(payload)
    return raw["m"], raw["s"]


def reason_of(payload: bytes, key: bytes) -> str:
    with pytest.raises(EnvelopeError) as info:
        open_envelope(payload, key)
    assert str(info.value).startswith(f"{info.value.reason}: ")
    return info.value.reason


# --- round trip ------------------------------------------------------------------------------


def test_seal_open_round_trip(envelope: Envelope, key: bytes) -> None:
    assert open_envelope(envelope.seal(key), key) == envelope


def test_broadcast_round_trip(key: bytes) -> None:
    env = Envelope(kind="hello", sender="imp-pub", body={})
    opened = open_envelope(env.seal(key), key)
    assert opened == env
    assert opened.to is None
    assert len(env.msg_id) == 16
    assert Envelope(kind="hello", sender="imp-pub", body={}).msg_id != env.msg_id


def test_sealed_payload_is_json_with_the_mac_over_the_signed_part(envelope: Envelope, key: bytes) -> None:
    payload = envelope.seal(key)
    mac, raw = opened_raw(payload)
    assert raw["v"] == PROTOCOL_VERSION
    assert (raw["k"], raw["f"], raw["t"], raw["i"], raw["ts"]) == (
        "records",
        "cucm-pub",
        "cucm-sub1",
        "0123456789abcdef",
        1_767_225_600_000,
    )
    assert len(mac) == 64
    assert payload == seal_raw(raw, key)  # MAC = HMAC-SHA256 over the canonical signed part, as laid out
    assert envelope.seal(key) == payload  # deterministic


_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=8), _json, max_size=5),
    kind=st.text(min_size=1, max_size=12),
    sender=st.text(min_size=1, max_size=12),
    to=st.none() | st.text(max_size=12),
    sent_ms=st.integers(min_value=0, max_value=2**53),
)
def test_property_round_trip(body: dict[str, Any], kind: str, sender: str, to: str | None, sent_ms: int) -> None:
    key = derive_key(PASSWORD, LAB)
    env = Envelope(kind=kind, sender=sender, body=body, to=to, sent_ms=sent_ms)
    assert open_envelope(env.seal(key), key) == env


# --- refusals --------------------------------------------------------------------------------


def test_altered_body_fails_the_mac(envelope: Envelope, key: bytes) -> None:
    mac, raw = opened_raw(envelope.seal(key))
    raw["b"]["n"] = 2
    assert reason_of(wire(mac, _canonical(raw)), key) == "bad-mac"


def test_altered_header_fails_the_mac(envelope: Envelope, key: bytes) -> None:
    mac, raw = opened_raw(envelope.seal(key))
    raw["f"] = "intruder"
    assert reason_of(wire(mac, _canonical(raw)), key) == "bad-mac"


def test_altered_mac_fails(envelope: Envelope, key: bytes) -> None:
    mac, raw = opened_raw(envelope.seal(key))
    mac = ("0" if mac[0] != "0" else "1") + mac[1:]
    assert reason_of(wire(mac, _canonical(raw)), key) == "bad-mac"


def test_the_mac_is_checked_before_the_signed_part_is_parsed(envelope: Envelope, key: bytes) -> None:
    """An unauthenticated signed part is never parsed: garbage under a wrong MAC is 'bad-mac', not 'malformed'."""
    assert reason_of(wire("0" * 64, b"{not json"), key) == "bad-mac"


def test_the_same_json_laid_out_otherwise_is_refused(envelope: Envelope, key: bytes) -> None:
    """The MAC covers the bytes as sent: an equivalent JSON text with other spacing or key order is refused."""
    mac, raw = opened_raw(envelope.seal(key))
    spaced = json.dumps({"m": mac, "s": raw}).encode()
    reordered = json.dumps({"s": raw, "m": mac}, separators=(",", ":")).encode()
    assert reason_of(spaced, key) == "malformed"
    assert reason_of(reordered, key) == "malformed"


def test_wrong_key_fails(envelope: Envelope, key: bytes) -> None:
    assert reason_of(envelope.seal(derive_key("another-secret", LAB)), key) == "bad-mac"
    assert reason_of(envelope.seal(derive_key(PASSWORD, "other-lab")), key) == "bad-mac"


@pytest.mark.parametrize("payload", [b"not json at all", b"\xff\xfe\x00", b'{"k": ', b""])
def test_non_json_is_malformed(payload: bytes, key: bytes) -> None:
    assert reason_of(payload, key) == "malformed"


@pytest.mark.parametrize("payload", [b"[1, 2, 3]", b'"text"', b"42", b"null"])
def test_json_that_is_not_an_object_is_malformed(payload: bytes, key: bytes) -> None:
    assert reason_of(payload, key) == "malformed"


def test_missing_mac_is_unsigned(envelope: Envelope, key: bytes) -> None:
    _mac, raw = opened_raw(envelope.seal(key))
    assert reason_of(_canonical({"s": raw}), key) == "unsigned"
    assert reason_of(_canonical({"m": 1234, "s": raw}), key) == "unsigned"
    assert reason_of(_canonical(raw), key) == "unsigned"  # the version-1 layout (fields and MAC side by side)


def test_oversize_is_refused_before_parsing(key: bytes) -> None:
    assert reason_of(b"{" + b" " * MAX_ENVELOPE_BYTES + b"}", key) == "oversize"


def test_other_protocol_version_is_refused(key: bytes) -> None:
    fields = {"v": PROTOCOL_VERSION + 1, "k": "hello", "f": "a", "t": None, "i": "x", "ts": 0, "b": {}}
    assert reason_of(seal_raw(fields, key), key) == "version"


@pytest.mark.parametrize(
    "change",
    [
        {"k": None},
        {"f": 5},
        {"i": None},
        {"t": 7},
        {"ts": "now"},
        {"b": []},
        {"b": None},
    ],
)
def test_authentic_but_malformed_fields(change: dict[str, Any], key: bytes) -> None:
    fields = {"v": PROTOCOL_VERSION, "k": "hello", "f": "a", "t": None, "i": "x", "ts": 0, "b": {}, **change}
    assert reason_of(seal_raw(fields, key), key) == "malformed"


def test_each_kind_of_refusal_has_its_own_reason(envelope: Envelope, key: bytes) -> None:
    """A tampered/forged envelope (body, MAC or key), non-JSON, a missing MAC and an oversize payload
    are told apart in the logs. Tampering cases share 'bad-mac': a MAC cannot tell which part changed."""
    mac, sealed = opened_raw(envelope.seal(key))
    altered_body = wire(mac, _canonical({**sealed, "b": {"n": 99}}))
    altered_mac = wire("f" * 64, _canonical(sealed))
    unsigned = {"s": sealed}
    reasons = {
        "altered-body": reason_of(altered_body, key),
        "altered-mac": reason_of(altered_mac, key),
        "wrong-key": reason_of(envelope.seal(derive_key("wrong-password", LAB)), key),
        "non-json": reason_of(b"<xml/>", key),
        "missing-mac": reason_of(_canonical(unsigned), key),
        "oversize": reason_of(b"x" * (MAX_ENVELOPE_BYTES + 1), key),
    }
    assert {reasons["altered-body"], reasons["altered-mac"], reasons["wrong-key"]} == {"bad-mac"}
    distinct = [reasons["altered-body"], reasons["non-json"], reasons["missing-mac"], reasons["oversize"]]
    assert len(set(distinct)) == 4


def test_non_ascii_mac_is_refused_not_crashing(envelope: Envelope, key: bytes) -> None:
    mac, raw = opened_raw(envelope.seal(key))
    assert reason_of(wire("\u00e9" * 64, _canonical(raw)), key) == "malformed"  # not 64 bytes where the MAC goes
    assert reason_of(envelope.seal(key).replace(mac.encode(), b"\xe9" * 64), key) == "bad-mac"


# --- key derivation --------------------------------------------------------------------------


def test_derive_key_is_deterministic_and_32_bytes() -> None:
    k = derive_key(PASSWORD, LAB)
    assert isinstance(k, bytes)
    assert len(k) == 32
    assert derive_key.__wrapped__(PASSWORD, LAB) == k  # the cache does not change the answer


def test_derive_key_differs_by_password_and_by_lab() -> None:
    base = derive_key(PASSWORD, LAB)
    assert derive_key(PASSWORD + "!", LAB) != base
    assert derive_key(PASSWORD, LAB + "2") != base
    assert derive_key(LAB, PASSWORD) != base


# --- secrets inside envelopes (private key material) ----------------------------------------------


def test_key_material_is_encrypted_not_only_macd() -> None:
    """Issue 10 item 3: private key material in a body is AEAD-encrypted with a key derived from the
    cluster secret; the sealed envelope does not contain it, and a member opens it for its context."""
    key = derive_key("pw", "lab")
    material = b"-----BEGIN PRIVATE KEY-----\nsecret-bits\n-----END PRIVATE KEY-----\n"
    text = seal_secret(key, material, "authz-key:signing:v1")
    payload = Envelope("authz-keys", "pub", {"keys": [{"material": text}]}).seal(key)
    assert b"secret-bits" not in payload
    assert base64.b64encode(material) not in payload
    assert open_secret(key, text, "authz-key:signing:v1") == material


@pytest.mark.parametrize(
    ("password", "context", "mangle"),
    [
        ("other-cluster", "authz-key:signing:v1", False),  # not a member
        ("pw", "authz-key:encryption:v1", False),  # moved to another key
        ("pw", "authz-key:signing:v1", True),  # altered
    ],
)
def test_key_material_does_not_open_for_others(password: str, context: str, mangle: bool) -> None:
    sealed = seal_secret(derive_key("pw", "lab"), b"material", "authz-key:signing:v1")
    if mangle:
        raw = bytearray(base64.b64decode(sealed))
        raw[-1] ^= 1
        sealed = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(EnvelopeError, match="cannot decrypt"):
        open_secret(derive_key(password, "lab"), sealed, context)


def test_json_nested_too_deep_is_malformed_not_a_crash(envelope: Envelope, key: bytes) -> None:
    """A hostile payload nested beyond the parser's depth is refused as malformed (it used to escape as
    RecursionError and reset the bus connection through the fault layer's kind sniffing)."""
    from replication.faults import LinkFaults

    deep = b"[" * 200_000
    assert reason_of(deep, key) == "malformed"
    mac, _raw = opened_raw(envelope.seal(key))
    assert reason_of(wire(mac, deep + b"]"), key) == "bad-mac"  # authenticated first: never parsed
    assert LinkFaults(drop_next=1).drops(wire(mac, b"[" * 200_000 + b"}")) is False


# --- one opening shared by the nodes of a process ------------------------------------------------


def test_shared_opening_serves_the_same_bytes_and_key_only(envelope: Envelope, key: bytes) -> None:
    """Authenticity: the nodes of a process share the opened copy of the same bytes under the same key;
    a node with another key still checks the MAC itself and refuses; a refusal is never kept."""
    payload = envelope.seal(key)
    first = open_shared(payload, key)
    assert first == envelope
    assert open_shared(bytes(bytearray(payload)), key) is first  # (a copy of the bytes, as each client gets)
    with pytest.raises(EnvelopeError, match="bad-mac"):
        open_shared(payload, derive_key("another-password", LAB))
    altered = payload.replace(b"Lab_Root_CA", b"Lab_Root_CB")
    for _ in range(2):
        with pytest.raises(EnvelopeError, match="bad-mac"):
            open_shared(altered, key)


def test_records_of_a_shared_body_are_parsed_once_and_checked(key: bytes) -> None:
    """The parsed records of one body are shared (immutable); a body that is not a list of objects is a
    TypeError (the node refuses it as a bad body), not an AttributeError."""
    raw = [{"s": "tomcat-trust", "n": "A", "v": [1, 0, "n"], "d": None, "o": "n"}]
    first, again = records_from_json(raw), records_from_json(raw)
    assert first == again and first[0] is again[0] and first is not again
    assert records_from_json([dict(raw[0])])[0] == first[0]
    for bad in ({"s": "x"}, ["not an object"], None):
        with pytest.raises(TypeError, match="not a list of objects"):
            records_from_json(bad)
