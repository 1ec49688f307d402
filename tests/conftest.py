from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import Broker, ManualClock, Settings
from tests.servers import RedisServer, start_redis

pytest_plugins = ["tests.api_fixtures"]  # a `sluice serve` to drive with boto3

BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_server.port)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def settings_for_tests(**overrides: Any) -> Settings:
    """Settings for tests: short waits everywhere so nothing waits a minute."""
    values: dict[str, Any] = {
        "key_prefix": f"t{uuid.uuid4().hex[:6]}",
        "worker_processes": 2,
        "poll_interval_s": 0.05,
        "delivery_backoff_s": 0.01,
        "drain_timeout_s": 5.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def make_broker(
    redis_client: aioredis.Redis, clock: ManualClock
) -> AsyncIterator[BrokerFactory]:
    brokers: list[Broker] = []

    async def factory(**overrides: Any) -> Broker:
        dispatch = overrides.pop("dispatch", True)
        broker = Broker(
            settings_for_tests(**overrides), redis_client, clock=clock, dispatch=dispatch
        )
        await broker.start()
        brokers.append(broker)
        return broker

    yield factory
    for broker in brokers:
        await broker.stop(drain_timeout_s=2.0)
