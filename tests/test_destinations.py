"""Outcomes leave through destinations; what cannot be delivered is kept, never lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import ManualClock
from tests.conftest import BrokerFactory
from tests.helpers import stream_length_at_least, stream_records, wait_until
from tests.servers import LambdaHttpFunction, free_port

H = "python:tests.handlers.async_handlers"


@pytest.fixture
def webhook() -> Iterator[LambdaHttpFunction]:
    """A webhook that fails twice with 503 (Retry-After: 0) and then accepts."""

    def respond(event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if len(hook.calls) <= 2:
            return 503, {"Retry-After": "0"}, b"busy"
        return 204, {}, b""

    hook = LambdaHttpFunction(respond).start()
    yield hook
    hook.stop()


@pytest.fixture
def broken_webhook() -> Iterator[LambdaHttpFunction]:
    hook = LambdaHttpFunction(lambda event, headers: (500, {}, b"down")).start()
    yield hook
    hook.stop()


async def test_webhook_gets_the_record_after_retrying_5xx(
    make_broker: BrokerFactory, webhook: LambdaHttpFunction
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": webhook.server_url}}}
    )
    request_id = await broker.invoke_async("orders", {"n": 1})

    async def delivered() -> bool:
        return len(webhook.calls) == 3 and (await broker.queue_depth("orders"))["outbox"] == 0

    await wait_until(delivered)
    _, record, headers = webhook.calls[-1]
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"
    assert headers["x-sluice-request-id"] == request_id
    assert await broker.dead_letters.count("orders") == 0


async def test_failed_delivery_is_kept_in_the_dead_letter_store(
    make_broker: BrokerFactory, broken_webhook: LambdaHttpFunction
) -> None:
    broker = await make_broker(delivery_retries=2)
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": broken_webhook.server_url}}}
    )
    request_id = await broker.invoke_async("orders", {"n": 1})

    async def kept() -> bool:
        return await broker.dead_letters.count("orders") == 1

    await wait_until(kept)
    (entry,) = await broker.dead_letters.list("orders")
    assert entry["kind"] == "delivery_failed"
    assert entry["target"] == broken_webhook.server_url
    assert entry["requestId"] == request_id
    assert entry["record"]["requestContext"]["condition"] == "Success"
    assert "500" in entry["errors"][0]
    assert len(broken_webhook.calls) == 2
    assert (await broker.stats("orders"))["DestinationDeliveryFailures"] == 1
    assert (await broker.queue_depth("orders"))["outbox"] == 0


async def test_dead_letter_queue_and_on_failure_destination_both_receive(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:fail", dead_letter_target="redis-stream:dlq")
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": "redis-stream:failed"}},
        },
    )
    request_id = await broker.invoke_async("orders", {"orderId": "A-1002"})
    await wait_until(lambda: stream_length_at_least(redis_client, "dlq", 1))
    await wait_until(lambda: stream_length_at_least(redis_client, "failed", 1))
    ((_, message),) = await redis_client.xrange("dlq")
    assert json.loads(message[b"payload"]) == {"orderId": "A-1002"}  # the event as-is
    assert message[b"RequestID"].decode() == request_id
    assert message[b"ErrorCode"] == b"200"
    assert message[b"ErrorMessage"] == b"stock service unavailable"
    (record,) = await stream_records(redis_client, "failed")
    assert record["requestContext"]["condition"] == "RetriesExhausted"


async def test_unreachable_aws_dead_letter_queue_is_kept_in_the_store(
    make_broker: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    sqs = "arn:aws:sqs:us-east-1:000000000000:orders-dlq"
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:fail", dead_letter_target=sqs)
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    request_id = await broker.invoke_async("orders", {"n": 1})

    async def both_kept() -> bool:
        return await broker.dead_letters.count("orders") == 2

    await wait_until(both_kept)
    kinds = {e["kind"]: e for e in await broker.dead_letters.list("orders")}
    assert kinds["function_failed"]["requestId"] == request_id
    assert kinds["delivery_failed"]["target"] == sqs
    assert (await broker.stats("orders"))["DeadLetterErrors"] == 1


async def test_dead_letter_store_retention_is_bounded_by_count(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dead_letter_max_count=3)
    await broker.put_function("orders", f"{H}:fail")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    ids = [await broker.invoke_async("orders", {"n": n}) for n in range(5)]

    async def all_ended() -> bool:
        return (await broker.stats("orders")).get("AsyncEventsDropped", 0) == 5

    await wait_until(all_ended)
    kept = await broker.dead_letters.list("orders")
    assert len(kept) == 3 and {e["requestId"] for e in kept} <= set(ids)


@pytest.fixture
def slow_webhook() -> Iterator[LambdaHttpFunction]:
    def respond(event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(1.2)  # slower than the delivery lease below
        return 204, {}, b""

    hook = LambdaHttpFunction(respond).start()
    yield hook
    hook.stop()


async def test_slow_delivery_keeps_its_lease_and_is_not_sent_twice(
    make_broker: BrokerFactory, slow_webhook: LambdaHttpFunction, clock: ManualClock
) -> None:
    broker = await make_broker(delivery_lease_s=0.3)
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": slow_webhook.server_url}}}
    )
    await broker.invoke_async("orders", {"n": 1})

    async def delivering() -> bool:
        return len(slow_webhook.calls) == 1

    await wait_until(delivering)
    for _ in range(6):  # time passes while the POST is in progress: lease renewals keep up
        clock.advance(0.2)
        await asyncio.sleep(0.2)

    async def delivered() -> bool:
        return (await broker.queue_depth("orders"))["outbox"] == 0

    await wait_until(delivered)
    assert len(slow_webhook.calls) == 1


async def test_dead_letter_store_retention_is_bounded_by_age(
    make_broker: BrokerFactory, clock: ManualClock
) -> None:
    broker = await make_broker(dead_letter_max_age_s=60)
    await broker.put_function("orders", f"{H}:fail")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    old = await broker.invoke_async("orders", {"n": 1})

    async def dropped(n: int) -> bool:
        return (await broker.stats("orders")).get("AsyncEventsDropped", 0) == n

    await wait_until(lambda: dropped(1))
    clock.advance(61)
    new = await broker.invoke_async("orders", {"n": 2})
    await wait_until(lambda: dropped(2))
    assert [e["requestId"] for e in await broker.dead_letters.list("orders")] == [new]
    assert old != new


@pytest.fixture
def throttled_hook() -> Iterator[LambdaHttpFunction]:
    def respond(event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if len(hook.calls) == 1:
            return 429, {"Retry-After": "0.2"}, b"slow down"
        return 204, {}, b""

    hook = LambdaHttpFunction(respond).start()
    yield hook
    hook.stop()


async def test_webhook_429_is_retried_after_retry_after(
    make_broker: BrokerFactory, throttled_hook: LambdaHttpFunction
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": throttled_hook.server_url}}}
    )
    await broker.invoke_async("orders", {"n": 1})

    async def delivered() -> bool:
        return (
            len(throttled_hook.calls) == 2 and (await broker.queue_depth("orders"))["outbox"] == 0
        )

    await wait_until(delivered)
    first, second = throttled_hook.calls[0][0], throttled_hook.calls[1][0]
    assert second - first >= 0.2  # waited as the 429 asked
    assert await broker.dead_letters.count("orders") == 0


async def test_success_without_on_success_sends_nothing(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok", dead_letter_target="redis-stream:dlq")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnFailure": {"Destination": "redis-stream:failed"}}}
    )
    await broker.invoke_async("orders", {"n": 1})

    async def succeeded() -> bool:
        return (await broker.stats("orders")).get("Succeeded") == 1

    await wait_until(succeeded)
    assert await redis_client.exists("dlq", "failed") == 0
    assert (await broker.queue_depth("orders"))["outbox"] == 0
