"""A crashed process's claims are leases: they expire and another process takes over."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from broker import ManualClock
from broker.queue import SettleOp
from tests.conftest import BrokerFactory
from tests.helpers import stream_length_at_least, stream_records, wait_until

H = "python:tests.handlers.async_handlers"


async def test_in_flight_event_of_a_dead_claimer_is_reclaimed_after_the_lease(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    producer = await make_broker(dispatch=False, visibility_grace_s=30)
    await producer.put_function("orders", f"{H}:ok", timeout_s=3)
    await producer.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": "redis-stream:ok"}}}
    )
    request_id = await producer.invoke_async("orders", {"n": 1})
    # A process claims the event and dies without settling it.
    claim = await producer.queue.claim("orders", clock.now(), 10, 33.0, "dead-process")
    assert [rid for rid, _ in claim.events] == [request_id]
    await make_broker(key_prefix=producer.settings.key_prefix)
    clock.advance(32.9)  # the lease (timeout 3 s + 30 s) still holds: nobody may run it
    assert (await producer.queue_depth("orders"))["inflight"] == 1
    clock.advance(0.2)
    await wait_until(lambda: stream_length_at_least(redis_client, "ok", 1))
    (record,) = await stream_records(redis_client, "ok")
    assert record["requestContext"]["requestId"] == request_id
    assert (await producer.stats("orders"))["Reclaimed"] == 1
    # The dead process's late settle is refused: its lease is gone.
    stats_before = await producer.stats("orders")
    late = await producer.queue.settle(
        "orders",
        clock.now(),
        [(SettleOp("finish", request_id), "dead-process", {"Succeeded": 1})],
        dead_max_age_s=60,
        dead_max_count=10,
        outbox_lease_s=60,
    )
    assert late == [False]
    assert await producer.stats("orders") == stats_before  # its counters are not applied


async def test_undelivered_outbox_entry_of_a_dead_deliverer_is_delivered_by_another(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    producer = await make_broker(dispatch=False)
    await producer.put_function("orders", f"{H}:ok")
    request_id = await producer.invoke_async("orders", {"n": 1})
    await producer.queue.claim("orders", clock.now(), 10, 60.0, "dead-process")
    entry = {
        "v": 1,
        "function": "orders",
        "request_id": request_id,
        "condition": "Success",
        "record": {"requestContext": {"requestId": request_id, "approximateInvokeCount": 1}},
        "payload": "{}",
        "targets": [{"kind": "record", "target": "redis-stream:ok"}],
    }
    # The event ended and its outbox entry was written, then the process died.
    await producer.queue.settle(
        "orders",
        clock.now(),
        [(SettleOp("finish", request_id, outbox=json.dumps(entry)), "dead-process", {})],
        dead_max_age_s=60,
        dead_max_count=10,
        outbox_lease_s=5.0,
    )
    await make_broker(key_prefix=producer.settings.key_prefix, delivery_lease_s=0.2)
    clock.advance(5.1)
    await wait_until(lambda: stream_length_at_least(redis_client, "ok", 1))
    (record,) = await stream_records(redis_client, "ok")
    assert record["requestContext"]["requestId"] == request_id

    async def outbox_empty() -> bool:  # the entry goes just after the delivery lands
        return (await producer.queue_depth("orders"))["outbox"] == 0

    await wait_until(outbox_empty)
