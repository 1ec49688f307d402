"""Nothing accepted disappears: unreadable events, deletes, drains and odd responses."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys

import pytest
import redis.asyncio as aioredis

from broker import InvalidRequestContentError, ManualClock, ResourceConflictError
from tests.conftest import BrokerFactory
from tests.helpers import stream_length_at_least, stream_records, wait_until

H = "python:tests.handlers.async_handlers"


async def test_unreadable_envelope_is_dead_lettered_not_reclaimed_forever(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")
    fk = broker.keys.for_function("orders")
    await redis_client.hset(fk.events, "bad-1", '{"v": 99, "from": "the future"}')
    await redis_client.rpush(fk.ready, "bad-1")
    await broker.invoke_async("orders", {"n": 1})  # wakes the dispatcher

    async def settled() -> bool:
        stats = await broker.stats("orders")
        return stats.get("Unreadable") == 1 and stats.get("Succeeded") == 1

    await wait_until(settled)
    assert await broker.dead_letters.count("orders") == 1
    entry = await broker.dead_letters.get("orders", "bad-1")
    assert entry is not None and entry["condition"] == "UnreadableEnvelope"
    assert entry["payload"] == '{"v": 99, "from": "the future"}'
    assert (await broker.queue_depth("orders"))["inflight"] == 0


async def test_deleting_a_function_with_queued_events_is_refused(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    await broker.invoke_async("orders", {"n": 1})
    with pytest.raises(ResourceConflictError) as refused:
        await broker.delete_function("orders")
    assert refused.value.status == 409 and "ready 1" in refused.value.message
    assert (await broker.get_function("orders")).name == "orders"


async def test_payload_that_is_not_utf8_is_invalid_request_content(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    with pytest.raises(InvalidRequestContentError):
        await broker.invoke_async("orders", b'{"a": "\xff"}')
    assert (await broker.queue_depth("orders"))["ready"] == 0


async def test_oversized_python_response_is_a_function_error(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:huge")
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": "redis-stream:failed"}},
        },
    )
    await broker.invoke_async("orders", {"bytes": 7_000_000})
    await wait_until(lambda: stream_length_at_least(redis_client, "failed", 1), 20)
    (record,) = await stream_records(redis_client, "failed")
    assert record["responsePayload"]["errorType"] == "Function.ResponseSizeTooLarge"
    assert record["responsePayload"]["errorMessage"] == (
        "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
    )


async def test_drain_timeout_stops_the_call_before_giving_its_event_back(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:sleepy", timeout_s=60)
    await broker.invoke_async("orders", {"sleep_s": 60})

    async def running() -> bool:
        return (await broker.queue_depth("orders"))["inflight"] == 1 and bool(
            multiprocessing.active_children()
        )

    await wait_until(running)
    await broker.stop(drain_timeout_s=0.5)
    # The call was stopped (its worker killed), then the event went back to the queue as a
    # rejected attempt: retried later, without using up a retry.
    assert multiprocessing.active_children() == []
    depth = await broker.queue_depth("orders")
    assert depth["inflight"] == 0 and depth["delayed"] == 1
    stats = await broker.stats("orders")
    assert "Errors" not in stats and "Invocations" not in stats


async def test_dead_letter_age_limit_applies_without_new_failures(
    make_broker: BrokerFactory, clock: ManualClock
) -> None:
    broker = await make_broker(dead_letter_max_age_s=60, delivery_lease_s=0.3)
    await broker.put_function("orders", f"{H}:fail")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    await broker.invoke_async("orders", {"n": 1})

    async def count_is(n: int) -> bool:
        return await broker.dead_letters.count("orders") == n

    await wait_until(lambda: count_is(1))
    clock.advance(61)
    await wait_until(lambda: count_is(0))


async def test_heartbeat_survives_a_redis_error_and_keeps_leases(
    make_broker: BrokerFactory, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = await make_broker(visibility_grace_s=0.3)
    await broker.put_function("orders", f"{H}:sleepy", timeout_s=2)
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    await broker.invoke_async("orders", {"sleep_s": 1.5})

    async def inflight() -> bool:
        return (await broker.queue_depth("orders"))["inflight"] == 1

    await wait_until(inflight)
    real_get = broker.functions.get
    failures = iter([True])

    async def flaky_get(name: str) -> object:
        # One Redis error, seen by the heartbeat (the claim loop has its own handling).
        if sys._getframe(1).f_code.co_name == "_heartbeat_loop" and next(failures, False):
            raise ConnectionError("Redis restarting")
        return await real_get(name)

    monkeypatch.setattr(broker.functions, "get", flaky_get)
    for _ in range(8):  # 4 s pass while the call runs: far past the 2.3 s lease
        clock.advance(0.5)
        await asyncio.sleep(0.1)

    async def finished() -> bool:
        return (await broker.stats("orders")).get("Succeeded") == 1

    await wait_until(finished)
    stats = await broker.stats("orders")
    assert stats["Invocations"] == 1 and "Reclaimed" not in stats
