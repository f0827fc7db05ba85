"""The embedded broker survives clients that connect while others subscribe (amqtt 0.12.1 race, issue 14)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiomqtt

from cluster.broker import EmbeddedBroker, SnapshotDict


async def _connect_while_another_client_subscribes(*, patched: bool) -> list[BaseException]:
    """Drive amqtt's real connection handler into the race deterministically: while it awaits the
    retained publish for one topic filter, another client's subscription adds a filter."""
    broker = EmbeddedBroker()
    await broker.start()
    amqtt: Any = broker._broker
    if not patched:
        amqtt._subscriptions = dict(amqtt._subscriptions)  # amqtt as released
    errors: list[BaseException] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context.get("exception") or Exception("?")))
    original = amqtt._publish_retained_messages_for_subscription

    async def meanwhile(subscription: Any, session: Any) -> None:
        amqtt._subscriptions.setdefault(f"other/{len(amqtt._subscriptions)}", [])  # a SUBSCRIBE arrives now
        await original(subscription, session)

    amqtt._publish_retained_messages_for_subscription = meanwhile
    try:
        host, port = broker.address.host, broker.address.port
        async with aiomqtt.Client(host, port, identifier="seed", username="u") as seed:
            await seed.subscribe("seed/#", qos=1)
            await seed.subscribe("seed2/#", qos=1)
            async with aiomqtt.Client(host, port, identifier="late", username="u", timeout=3) as late:
                await late.subscribe("late/reply", qos=1)
                await late.publish("late/reply", b"pong", qos=1)
                async with asyncio.timeout(3):
                    async for message in late.messages:
                        assert message.payload == b"pong"
                        break
    except (aiomqtt.MqttError, TimeoutError) as exc:
        errors.append(exc)
    finally:
        loop.set_exception_handler(previous)
        await broker.stop()
    return errors


async def test_client_connecting_during_a_subscription_is_served() -> None:
    """With the patched subscription table, a client that connects while the filters change is served."""
    assert await _connect_while_another_client_subscribes(patched=True) == []


async def test_unpatched_amqtt_still_has_the_race() -> None:
    """The cause, reproduced: amqtt 0.12.1's handler raises 'dictionary changed size during iteration'.
    When this fails, a fixed amqtt is installed: pin it and drop cluster.broker.SnapshotDict."""
    errors = await _connect_while_another_client_subscribes(patched=False)
    assert any(isinstance(e, RuntimeError) and "changed size during iteration" in str(e) for e in errors), errors


def test_snapshot_dict_iterates_a_copy() -> None:
    table = SnapshotDict({"a": 1})
    for key in table:
        table[key + "x"] = 2  # would raise on a plain dict
    for key, _value in table.items():
        table[key + "y"] = 3
    assert sorted(table) == ["a", "ax", "axy", "ay"]
