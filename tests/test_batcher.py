"""Concurrent invoke_async calls are stored together, each answered only once stored."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from broker import TooManyRequestsError
from tests.conftest import BrokerFactory

H = "python:tests.handlers.async_handlers"


async def test_concurrent_calls_share_one_round_trip_and_all_are_stored(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    before = int(
        (await redis_client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    )
    ids = await asyncio.gather(*(broker.invoke_async("orders", {"n": n}) for n in range(200)))
    after = int(
        (await redis_client.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0)
    )
    assert len(set(ids)) == 200
    assert (await broker.queue_depth("orders"))["ready"] == 200
    assert after - before <= 5  # one enqueue script per loop turn, not 200


async def test_a_refused_batch_refuses_every_caller_and_stores_none(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dispatch=False, max_queue_depth=10)
    await broker.put_function("orders", f"{H}:ok")
    results = await asyncio.gather(
        *(broker.invoke_async("orders", {"n": n}) for n in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, TooManyRequestsError) for r in results)
    assert (await broker.queue_depth("orders"))["ready"] == 0
    with pytest.raises(TooManyRequestsError):
        await asyncio.gather(*(broker.invoke_async("orders", {}) for _ in range(11)))
