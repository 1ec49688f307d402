"""``/metrics`` and ``/readyz`` on a real redis-server: known traffic, then a scrape parsed
with prometheus-client's own parser and exact values asserted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from broker import Broker, ManualClock
from broker.api import create_asgi
from tests.conftest import BrokerFactory, settings_for_tests
from tests.helpers import add_aged, stream_checkpoint_is, until
from tests.servers import LambdaHttpFunction, RedisServer, start_redis

H = "python:tests.handlers.async_handlers"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def client_for(broker: Broker) -> httpx.AsyncClient:
    """The served ASGI app (fast path and middleware included), in process."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_asgi(broker)), base_url="http://sluice"
    )


async def scrape(broker: Broker) -> Samples:
    """Every sample of one ``/metrics`` scrape: (sample name, labels) -> value."""
    async with client_for(broker) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def broken_webhook() -> Iterator[LambdaHttpFunction]:
    hook = LambdaHttpFunction(lambda event, headers: (500, {}, b"down")).start()
    yield hook
    hook.stop()


async def test_async_counters_count_known_traffic_exactly(
    make_broker: BrokerFactory, broken_webhook: LambdaHttpFunction
) -> None:
    broker = await make_broker(delivery_retries=1)
    # orders: fails, no retries; its OnFailure destination and its DLQ both refuse.
    await broker.put_function("orders", f"{H}:fail", dead_letter_target=broken_webhook.server_url)
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": broken_webhook.server_url}},
        },
    )
    await broker.put_function("audit", f"{H}:ok")
    # retrying: fails once, then waits for a retry the ManualClock never reaches.
    await broker.put_function("retrying", f"{H}:fail")
    for n in range(3):
        await broker.invoke_async("orders", {"n": n})
    for n in range(2):
        await broker.invoke_async("audit", {"n": n})
    await broker.invoke_async("retrying", {"n": 0})

    async def settled() -> bool:
        orders, audit = await broker.queue_depth("orders"), await broker.queue_depth("audit")
        retrying = await broker.queue_depth("retrying")
        return (
            orders == {"ready": 0, "delayed": 0, "inflight": 0, "outbox": 0, "dead": 9}
            and (await broker.stats("audit")).get("Succeeded") == 2
            and audit["inflight"] == 0
            and retrying["delayed"] == 1
        )

    await until(settled)
    samples = await scrape(broker)

    def fn(name: str, function: str) -> float:
        return value(samples, name, function=function)

    assert fn("sluice_async_events_received_total", "orders") == 3
    assert fn("sluice_async_events_received_total", "audit") == 2
    assert fn("sluice_async_events_received_total", "retrying") == 1
    assert fn("sluice_async_events_dropped_total", "orders") == 3
    assert fn("sluice_async_events_dropped_total", "audit") == 0
    assert fn("sluice_async_invocations_total", "orders") == 3
    assert fn("sluice_async_invocation_errors_total", "orders") == 3
    assert fn("sluice_async_invocations_total", "audit") == 2
    assert fn("sluice_async_invocation_errors_total", "audit") == 0
    assert fn("sluice_async_throttles_total", "orders") == 0
    assert fn("sluice_dead_letter_errors_total", "orders") == 3
    assert fn("sluice_destination_delivery_failures_total", "orders") == 3
    assert fn("sluice_async_events_retried_total", "retrying") == 1
    finished = {
        (function, condition): value(
            samples, "sluice_async_events_finished_total", function=function, condition=condition
        )
        for function in ("orders", "audit")
        for condition in ("Success", "RetriesExhausted", "EventAgeExceeded")
    }
    assert finished == {
        ("orders", "Success"): 0,
        ("orders", "RetriesExhausted"): 3,
        ("orders", "EventAgeExceeded"): 0,
        ("audit", "Success"): 2,
        ("audit", "RetriesExhausted"): 0,
        ("audit", "EventAgeExceeded"): 0,
    }
    # 3 function_failed entries and 6 delivery_failed ones (OnFailure and DLQ per event).
    assert fn("sluice_dead_letter_entries", "orders") == 9
    for function in ("orders", "audit", "retrying"):
        depth = await broker.queue_depth(function)
        for state in ("ready", "delayed", "inflight", "outbox"):
            gauge = value(samples, "sluice_queue_events", function=function, state=state)
            assert gauge == depth[state], (function, state)
    assert value(samples, "sluice_queue_events", function="retrying", state="delayed") == 1


async def test_queue_gauges_show_ready_events_and_the_age_of_the_next(
    make_broker: BrokerFactory, clock: ManualClock
) -> None:
    producer = await make_broker(dispatch=False)  # nothing claims: the events stay ready
    await producer.put_function("parked", f"{H}:ok")
    await producer.invoke_async("parked", {"n": 1})
    clock.advance(2)
    await producer.invoke_async("parked", {"n": 2})
    clock.advance(5)
    samples = await scrape(producer)
    assert value(samples, "sluice_queue_events", function="parked", state="ready") == 2
    assert value(samples, "sluice_queue_events", function="parked", state="delayed") == 0
    assert value(samples, "sluice_queue_next_event_age_seconds", function="parked") == 7.0
    assert value(samples, "sluice_async_events_received_total", function="parked") == 2


async def test_no_function_and_no_mapping_still_scrapes(make_broker: BrokerFactory) -> None:
    broker = await make_broker(dispatch=False)
    samples = await scrape(broker)
    assert not any(labels for _, labels in samples)


STREAM_SETTINGS: dict[str, Any] = {
    "run_pollers": True,
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_retry_backoff_s": 0.01,
    "stream_retry_backoff_max_s": 0.05,
}
SHARD = "shardId-000000000000"


async def test_mapping_counters_and_iterator_age_from_a_stream_poller(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    broker = await make_broker(**STREAM_SETTINGS)
    await broker.put_function("clicks", f"{H}:ok")
    await broker.put_function("poison", f"{H}:fail")
    kinds = ["sale", "refund", "sale", "refund", "sale"]
    good = await add_aged(redis_client, clock, "clicks", *({"kind": k} for k in kinds), age_s=3)
    bad = await add_aged(redis_client, clock, "poison", {"n": 1}, {"n": 2}, age_s=1)
    pattern = json.dumps({"data": {"kind": ["refund"]}})
    filtered = await broker.mappings.create(
        {
            "EventSourceArn": "redis-stream:clicks",
            "FunctionName": "clicks",
            "StartingPosition": "TRIM_HORIZON",
            "FilterCriteria": {"Filters": [{"Pattern": pattern}]},
        }
    )
    failing = await broker.mappings.create(
        {
            "EventSourceArn": "redis-stream:poison",
            "FunctionName": "poison",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 0,
        }
    )
    await until(lambda: stream_checkpoint_is(broker, filtered["UUID"], good[-1]))
    await until(lambda: stream_checkpoint_is(broker, failing["UUID"], bad[-1]))
    samples = await scrape(broker)

    def esm(name: str, mapping: dict[str, Any], function: str) -> float:
        labels = {"mapping": mapping["UUID"], "function": function}
        return value(samples, name, **labels, source=mapping["EventSourceArn"])

    assert esm("sluice_esm_polled_events_total", filtered, "clicks") == 5
    assert esm("sluice_esm_filtered_out_events_total", filtered, "clicks") == 3
    assert esm("sluice_esm_invoked_events_total", filtered, "clicks") == 2
    assert esm("sluice_esm_invocations_total", filtered, "clicks") == 1
    assert esm("sluice_esm_failed_invoke_events_total", filtered, "clicks") == 0
    assert esm("sluice_esm_on_failure_events_total", filtered, "clicks") == 0
    assert esm("sluice_esm_polled_events_total", failing, "poison") == 2
    assert esm("sluice_esm_invoked_events_total", failing, "poison") == 2
    assert esm("sluice_esm_failed_invocations_total", failing, "poison") == 1
    assert esm("sluice_esm_failed_invoke_events_total", failing, "poison") == 2
    assert esm("sluice_esm_on_failure_events_total", failing, "poison") == 2
    # No on-failure destination: the discarded records count as dropped, none as delivered.
    assert esm("sluice_esm_dropped_events_total", failing, "poison") == 2
    assert esm("sluice_esm_on_failure_delivered_events_total", failing, "poison") == 0
    assert esm("sluice_esm_retried_batches_total", failing, "poison") == 0
    # IteratorAge: the last record's age as its batch was sent, from the clock.
    ages = {
        uuid: value(
            samples,
            "sluice_esm_iterator_age_milliseconds",
            mapping=uuid,
            function=function,
            source=source,
            shard=SHARD,
        )
        for uuid, function, source in (
            (filtered["UUID"], "clicks", "redis-stream:clicks"),
            (failing["UUID"], "poison", "redis-stream:poison"),
        )
    }
    assert ages == {filtered["UUID"]: 3000, failing["UUID"]: 1000}
    info = value(
        samples,
        "sluice_esm_info",
        mapping=filtered["UUID"],
        function="clicks",
        source="redis-stream:clicks",
        state="Enabled",
    )
    assert info == 1


async def test_readyz_answers_200_when_started_and_redis_answers(
    make_broker: BrokerFactory,
) -> None:
    broker = await make_broker(dispatch=False)
    async with client_for(broker) as client:
        ready, health = await client.get("/readyz"), await client.get("/healthz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ok"})
    assert (health.status_code, health.json()) == (200, {"status": "ok"})


async def test_readyz_answers_503_before_the_broker_starts(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    broker = Broker(settings_for_tests(), redis_client, clock=clock, dispatch=False)
    async with client_for(broker) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reason": "broker not started"}


@pytest.fixture
async def broker_without_redis(clock: ManualClock) -> AsyncIterator[Broker]:
    """A started broker whose redis-server has since stopped."""
    server: RedisServer = start_redis()
    client = aioredis.Redis(port=server.port)
    broker = Broker(settings_for_tests(), client, clock=clock, dispatch=False)
    await broker.start()
    server.stop()
    yield broker
    await broker.stop()
    await client.aclose()


async def test_readyz_answers_503_with_a_reason_when_redis_is_gone(
    broker_without_redis: Broker,
) -> None:
    async with client_for(broker_without_redis) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["reason"] == "redis unreachable"
    assert body["error"]  # redis-py's error, or no answer within the time limit


async def test_metrics_fail_the_scrape_when_redis_is_gone(broker_without_redis: Broker) -> None:
    async with client_for(broker_without_redis) as client:
        response = await client.get("/metrics")
    assert response.status_code == 500
    assert response.headers["x-amzn-ErrorType"] == "ServiceException"
    assert "could not read its metrics from Redis" in response.json()["Message"]
