from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from broker import Broker, ManualClock, Settings
from tests.servers import RabbitServer, RedisServer, start_rabbitmq, start_redis

pytest_plugins = ["tests.api_fixtures", "tests.stream_fixtures"]

# Hermetic AWS: never ask an instance-metadata endpoint for credentials.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # a `sluice serve` to drive with boto3

BrokerFactory = Callable[..., Awaitable[Broker]]


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """CLI commands run in-process configure structlog (level, stream); every test starts
    from its defaults, so none depends on what ran before it."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's standalone server (real HTTP) for the AWS services."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("MOTO_ACCOUNT_ID", "000000000000")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sluice's boto3 clients talk to moto, as users point them anywhere: by environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return moto_url


def aws_client(service: str, url: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitServer]:
    server = start_rabbitmq()
    yield server
    server.stop()


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
        "run_pollers": False,  # tests of pollers turn them on
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
