"""A `sluice serve` subprocess for API tests, driven only through boto3 (and the AWS CLI)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import redis.asyncio as aioredis
from botocore.config import Config
from botocore.exceptions import ClientError

from broker import Broker
from tests.conftest import settings_for_tests
from tests.process_helpers import ServeLauncher
from tests.servers import RedisServer

H = "python:tests.handlers.async_handlers"


def aws_error(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    """(HTTP status, error code, message) of a boto3 ``ClientError``."""
    response = raised.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


@dataclass
class Api:
    endpoint_url: str
    key_prefix: str
    launcher: ServeLauncher

    def client(self, *, validate: bool = True, endpoint_url: str | None = None) -> Any:
        return boto3.client(
            "lambda",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                retries={"max_attempts": 1, "mode": "standard"},
                parameter_validation=validate,
                read_timeout=30,
            ),
        )


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    launcher = ServeLauncher(
        redis_url=redis_server.url,
        key_prefix=f"api{uuid.uuid4().hex[:6]}",
        log_dir=tmp_path_factory.mktemp("serve"),
        flags=["--worker-processes", "1", "--retry-base-delay", "3600"],
    )
    try:
        serve = asyncio.run(launcher.start())
        yield Api(serve.endpoint_url, launcher.key_prefix, launcher)
    finally:
        launcher.close()


@pytest.fixture
def lam(api: Api) -> Any:
    return api.client()


@pytest.fixture
def lam_unvalidated(api: Api) -> Any:
    """A client that sends what botocore would refuse, to see the server's own errors."""
    return api.client(validate=False)


MakeFunction = Callable[..., Awaitable[str]]


@pytest.fixture
async def producer(api: Api, redis_server: RedisServer) -> AsyncIterator[Broker]:
    """A broker on the serve's Redis and prefix: for set-up and for looking at queues."""
    client = aioredis.Redis(port=redis_server.port)
    yield Broker(settings_for_tests(key_prefix=api.key_prefix), client, dispatch=False)
    await client.aclose()


@pytest.fixture
def make_function(producer: Broker) -> MakeFunction:
    """Creates functions with unique names straight in Redis (there is no CreateFunction)."""

    async def make(handler: str = "ok", **config: Any) -> str:
        name = f"fn-{uuid.uuid4().hex[:8]}"
        await producer.put_function(name, f"{H}:{handler}", **config)
        return name

    return make
