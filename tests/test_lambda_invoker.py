"""``lambda:`` targets call another Lambda endpoint with boto3: here a second `sluice serve`."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.api_fixtures import Api, MakeFunction
from tests.conftest import BrokerFactory
from tests.helpers import stream_length_at_least, stream_records, wait_until


@pytest.fixture
def remote(api: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    """Point boto3's Lambda client at the serve under test, as a user would."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", api.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return api


async def test_sync_call_through_a_second_sluice(
    remote: Api, make_function: MakeFunction, make_broker: BrokerFactory
) -> None:
    target = await make_function("ok")
    broker = await make_broker(dispatch=False)
    await broker.put_function("proxy", f"lambda:{target}")
    result = await broker.invoke("proxy", {"n": 1})
    assert result.outcome == "success" and result.executed_version == "$LATEST"
    assert result.payload is not None and '"echo": {"n": 1}' in result.payload


async def test_function_error_is_passed_through_verbatim(
    remote: Api, make_function: MakeFunction, make_broker: BrokerFactory
) -> None:
    target = await make_function("fail")
    broker = await make_broker(dispatch=False)
    await broker.put_function("proxy", f"lambda:{target}")
    result = await broker.invoke("proxy", {})
    assert result.outcome == "function_error" and result.function_error == "Unhandled"
    assert "stock service unavailable" in (result.payload or "")


async def test_missing_remote_function_is_a_system_error(
    remote: Api, make_broker: BrokerFactory
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("proxy", "lambda:ghost")
    result = await broker.invoke("proxy", {})
    assert result.outcome == "system_error" and result.status_code == 404
    assert "ResourceNotFoundException" in result.error_message


async def test_async_event_runs_through_the_remote_function(
    remote: Api,
    make_function: MakeFunction,
    make_broker: BrokerFactory,
    redis_client: aioredis.Redis,
) -> None:
    target = await make_function("ok")
    broker = await make_broker()
    await broker.put_function("proxy", f"lambda:{target}")
    await broker.put_event_invoke_config(
        "proxy", {"DestinationConfig": {"OnSuccess": {"Destination": "redis-stream:proxied"}}}
    )
    request_id = await broker.invoke_async("proxy", {"n": 2})
    await wait_until(lambda: stream_length_at_least(redis_client, "proxied", 1))
    (record,) = await stream_records(redis_client, "proxied")
    body: dict[str, Any] = record["responsePayload"]
    assert record["requestContext"]["requestId"] == request_id
    assert body == {"accepted": True, "echo": {"n": 2}}


async def test_lambda_destination_outside_this_sluice_goes_through_boto3(
    remote: Api,
    make_function: MakeFunction,
    make_broker: BrokerFactory,
    producer: Any,
    redis_client: aioredis.Redis,
) -> None:
    target = await make_function("ok")  # lives on the other serve
    await producer.put_event_invoke_config(
        target, {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:got-{target}"}}}
    )
    broker = await make_broker()
    await broker.put_function(target, "python:tests.handlers.async_handlers:ok")  # same name
    await broker.put_function("orders", "python:tests.handlers.async_handlers:fail")
    other_account = f"arn:aws:lambda:us-east-1:111111111111:function:{target}"
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": other_account}},
        },
    )
    request_id = await broker.invoke_async("orders", {"n": 3})
    await wait_until(lambda: stream_length_at_least(redis_client, f"got-{target}", 1), 20)
    (record,) = await stream_records(redis_client, f"got-{target}")
    assert record["requestPayload"]["requestContext"]["requestId"] == request_id
