"""The async-invoke pipeline end to end on a real redis-server, with an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import ManualClock, TooManyRequestsError
from broker.core import Broker
from tests.conftest import BrokerFactory
from tests.helpers import stream_length_at_least, stream_records, wait_until
from tests.servers import LambdaHttpFunction

H = "python:tests.handlers.async_handlers"
ARN = "arn:aws:lambda:us-east-1:000000000000:function"
START = "2025-03-04T10:11:12.000Z"  # ManualClock's start, as records print it


async def configure(
    broker: Broker,
    name: str,
    target: str,
    *,
    retries: int | None = None,
    max_age: int | None = None,
    **function: Any,
) -> None:
    await broker.put_function(name, target, **function)
    body: dict[str, Any] = {
        "DestinationConfig": {
            "OnSuccess": {"Destination": f"redis-stream:{name}-ok"},
            "OnFailure": {"Destination": f"redis-stream:{name}-failed"},
        }
    }
    if retries is not None:
        body["MaximumRetryAttempts"] = retries
    if max_age is not None:
        body["MaximumEventAgeInSeconds"] = max_age
    await broker.put_event_invoke_config(name, body)


async def one_record(client: aioredis.Redis, stream: str, timeout_s: float = 10) -> dict[str, Any]:
    await wait_until(lambda: stream_length_at_least(client, stream, 1), timeout_s)
    (record,) = await stream_records(client, stream)
    return record


async def stat(broker: Broker, function: str, name: str) -> int:
    return (await broker.stats(function)).get(name, 0)


async def test_success_record_has_lambdas_shape_key_for_key(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:ok")
    request_id = await broker.invoke_async("orders", {"orderId": "A-1001"})
    record = await one_record(redis_client, "orders-ok")
    assert record == {
        "version": "1.0",
        "timestamp": START,
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{ARN}:orders:$LATEST",
            "condition": "Success",
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"orderId": "A-1001"},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
        "responsePayload": {"accepted": True, "echo": {"orderId": "A-1001"}},
    }
    assert list(record) == [
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    ]
    assert await broker.dead_letters.count("orders") == 0


async def test_failure_record_has_lambdas_shape_and_lands_in_dead_letter_store(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:fail", retries=0, aliases={"live": "7"})
    await broker.put_event_invoke_config(
        "orders",
        {
            "DestinationConfig": {"OnFailure": {"Destination": "redis-stream:live-failed"}},
            "MaximumRetryAttempts": 0,
        },
        qualifier="live",
    )
    request_id = await broker.invoke_async("orders", {"orderId": "A-1002"}, qualifier="live")
    # Configs are per qualifier: the alias's own config and destination apply.
    record = await one_record(redis_client, "live-failed")
    error = record["responsePayload"]
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{ARN}:orders:live",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 1,
    }
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "7",
        "functionError": "Unhandled",
    }
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert error["errorMessage"] == "stock service unavailable"
    assert error["errorType"] == "RuntimeError"
    assert error["requestId"] == request_id
    assert isinstance(error["stackTrace"], list) and error["stackTrace"]
    (entry,) = await broker.dead_letters.list("orders")
    assert entry["kind"] == "function_failed"
    assert entry["requestId"] == request_id and entry["attempts"] == 1
    assert entry["record"] == record and json.loads(entry["payload"]) == {"orderId": "A-1002"}
    assert (await broker.stats("orders"))["AsyncEventsDropped"] == 1


@pytest.mark.parametrize("retries", [0, 1, 2])
async def test_maximum_retry_attempts_give_invoke_counts_with_base_times_n_gaps(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock, retries: int
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:fail", retries=retries)
    request_id = await broker.invoke_async("orders", {"n": 1})
    delayed = broker.keys.for_function("orders").delayed
    for attempt in range(1, retries + 1):
        await wait_until(lambda a=attempt: _invocations_are(broker, a))
        await wait_until(lambda: _zcard_is(redis_client, delayed, 1))
        due_ms = await redis_client.zscore(delayed, request_id)
        gap = 60.0 * attempt  # retry n waits retry_base_delay * n (AWS: 60 s, then 120 s)
        assert due_ms == pytest.approx((clock.now() + gap) * 1000)
        clock.advance(gap - 0.5)
        await asyncio.sleep(0.2)  # half a second early: nothing may run
        assert await stat(broker, "orders", "Invocations") == attempt
        clock.advance(0.5)
    record = await one_record(redis_client, "orders-failed")
    assert record["requestContext"]["approximateInvokeCount"] == retries + 1
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["requestId"] == request_id
    assert record["responsePayload"]["requestId"] == request_id  # the same id on every attempt
    assert await stat(broker, "orders", "Invocations") == retries + 1


async def _invocations_are(broker: Broker, n: int) -> bool:
    return await stat(broker, "orders", "Invocations") == n


async def _zcard_is(client: aioredis.Redis, key: str, n: int) -> bool:
    return int(await client.zcard(key)) == n


async def test_event_age_exceeded_ends_a_futile_retry_at_once(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    producer = await make_broker(dispatch=False)
    await configure(producer, "orders", f"{H}:fail", retries=2, max_age=60)
    request_id = await producer.invoke_async("orders", {"n": 1})
    clock.advance(1)  # the first attempt fails a second after the event arrived
    await make_broker(key_prefix=producer.settings.key_prefix)
    record = await one_record(redis_client, "orders-failed")  # no clock advance needed
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["requestId"] == request_id


async def test_event_age_ninety_seconds_allows_exactly_two_executions(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:fail", retries=2, max_age=90)
    await broker.invoke_async("orders", {"n": 1})
    await wait_until(lambda: _invocations_are(broker, 1))
    clock.advance(60)
    record = await one_record(redis_client, "orders-failed")
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 2


async def test_event_older_than_maximum_age_is_dropped_without_running(
    redis_client: aioredis.Redis, make_broker: BrokerFactory, clock: ManualClock
) -> None:
    producer = await make_broker(dispatch=False)
    await configure(producer, "orders", f"{H}:ok", max_age=60)
    await producer.invoke_async("orders", {"n": 1})
    clock.advance(61)
    await make_broker(key_prefix=producer.settings.key_prefix)
    record = await one_record(redis_client, "orders-failed")
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record and "responsePayload" not in record


async def test_reserved_concurrency_zero_ends_events_without_running_them(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:ok")
    await broker.put_function_concurrency("orders", 0)
    request_id = await broker.invoke_async("orders", {"orderId": "A-1003"})
    record = await one_record(redis_client, "orders-failed")
    assert record == {
        "version": "1.0",
        "timestamp": START,
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{ARN}:orders:$LATEST",
            "condition": "ZeroReservedConcurrency",
            "approximateInvokeCount": 0,
        },
        "requestPayload": {"orderId": "A-1003"},
    }
    assert await stat(broker, "orders", "Invocations") == 0


async def test_timeout_kills_the_call_and_reports_sandbox_timedout(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:sleepy", retries=0, timeout_s=1)
    request_id = await broker.invoke_async("orders", {"sleep_s": 30})
    record = await one_record(redis_client, "orders-failed", timeout_s=15)
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "Sandbox.Timedout"
    assert record["responsePayload"]["errorMessage"] == (
        f"RequestId: {request_id} Error: Task timed out after 1.00 seconds"
    )


@pytest.fixture
def throttling_function() -> Iterator[LambdaHttpFunction]:
    def respond(event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if len(function.calls) <= 2:
            body = b'{"Type":"User","message":"Rate Exceeded."}'
            return 429, {"x-amzn-ErrorType": "TooManyRequestsException"}, body
        return 200, {"X-Amz-Executed-Version": "$LATEST"}, b'{"done": true}'

    function = LambdaHttpFunction(respond).start()
    yield function
    function.stop()


async def test_http_429_is_retried_without_using_up_retries(
    make_broker: BrokerFactory,
    redis_client: aioredis.Redis,
    clock: ManualClock,
    throttling_function: LambdaHttpFunction,
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", throttling_function.url, retries=0)
    request_id = await broker.invoke_async("orders", {"n": 1})
    for throttles in (1, 2):
        await wait_until(lambda t=throttles: _stat_is(broker, "Throttles", t))
        clock.advance(2.0**throttles + 1)  # past min(1 s * 2^k, 300 s) plus jitter
    record = await one_record(redis_client, "orders-ok")
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["responsePayload"] == {"done": True}
    assert len(throttling_function.calls) == 3
    assert {h["x-sluice-request-id"] for _, _, h in throttling_function.calls} == {request_id}
    stats = await broker.stats("orders")
    assert stats["Throttles"] == 2 and stats["Invocations"] == 1 and "Errors" not in stats


async def _stat_is(broker: Broker, name: str, n: int) -> bool:
    return await stat(broker, "orders", name) == n


async def test_admission_control_refuses_events_past_the_queue_cap(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dispatch=False, max_queue_depth=3)
    await broker.put_function("orders", f"{H}:ok")
    await broker.invoke_async_many("orders", [{"n": 1}, {"n": 2}])
    await broker.invoke_async("orders", {"n": 3})
    with pytest.raises(TooManyRequestsError) as refused:
        await broker.invoke_async("orders", {"n": 4})
    assert refused.value.code == "TooManyRequestsException" and refused.value.status == 429
    with pytest.raises(TooManyRequestsError):
        await broker.invoke_async_many("orders", [{"n": 5}, {"n": 6}])
    assert (await broker.queue_depth("orders"))["ready"] == 3
    assert (await broker.stats("orders"))["AsyncEventsReceived"] == 3


async def test_admission_control_refuses_events_when_redis_nears_maxmemory(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    used = int((await redis_client.info("memory"))["used_memory"])
    await redis_client.config_set("maxmemory", str(int(used * 1.05)))
    try:
        with pytest.raises(TooManyRequestsError):
            await broker.invoke_async("orders", {"n": 1})
    finally:
        await redis_client.config_set("maxmemory", "0")
    assert (await broker.queue_depth("orders"))["ready"] == 0


async def test_backpressure_claims_no_more_than_the_process_limit(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker(concurrency=2)
    await configure(broker, "orders", f"{H}:sleepy")
    await broker.invoke_async_many("orders", [{"sleep_s": 0.1}] * 10)
    inflight_key = broker.keys.for_function("orders").inflight
    most = 0
    while int(await redis_client.xlen("orders-ok")) < 10:
        most = max(most, int(await redis_client.zcard(inflight_key)))
        assert broker.dispatcher.running <= 2
        await asyncio.sleep(0.01)
    assert most == 2  # busy at the limit, never past it
    stats = await broker.stats("orders")
    assert "Throttles" not in stats  # being at our own limit is not a throttle


async def test_claims_rotate_so_a_backlog_cannot_starve_another_function(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker(concurrency=4)
    await configure(broker, "backlog", f"{H}:sleepy")
    await configure(broker, "quiet", f"{H}:ok")
    await broker.invoke_async_many("backlog", [{"sleep_s": 0.05}] * 200)
    await broker.invoke_async("quiet", {"n": 1})
    await one_record(redis_client, "quiet-ok")
    assert int(await redis_client.xlen("backlog-ok")) < 100


async def test_full_reserved_concurrency_does_not_spin_on_claims(
    make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    broker = await make_broker()
    await configure(broker, "orders", f"{H}:sleepy", reserved_concurrency=1)
    before = await _evalsha_calls(redis_client)
    await broker.invoke_async_many("orders", [{"sleep_s": 0.1}] * 5)
    await wait_until(lambda: stream_length_at_least(redis_client, "orders-ok", 5))
    calls = await _evalsha_calls(redis_client) - before
    # ~0.5 s of work: a few claims per settle and per poll, not a tight loop of thousands.
    assert calls < 150, calls


async def _evalsha_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
