"""``redis-stream:NAME`` event source mappings on a real redis-server (spec §8, §9.2, §10.5).

The function is a small HTTP server following the Lambda Invoke contract; its ``answer``
decides, per test, what it replies. Entry ids are written by the tests from the
ManualClock (``<ms>-<n>``), so record ages are exact and advancing the clock ages them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import Broker, ManualClock
from broker.records import iso_ms
from tests.conftest import BrokerFactory
from tests.helpers import stream_records, until
from tests.servers import Answer, LambdaHttpFunction, free_port, function_error, ok

Event = dict[str, Any]
STREAM = "clicks"
SOURCE = f"redis-stream:{STREAM}"
SHARD = "shardId-000000000000"


class Function:
    """The function under test: records each event; ``answer(event)`` decides the reply."""

    def __init__(self) -> None:
        self.answer: Callable[[Event], Answer] = lambda _event: ok()
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self.server = LambdaHttpFunction(self._respond).start()

    def _respond(self, event: Event, headers: dict[str, str]) -> Answer:
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            return self.answer(event)

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.server.calls]

    def batches(self) -> list[list[str]]:
        """The entry ids of each invocation, in order."""
        return [[r["redisStream"]["sequenceNumber"] for r in e["Records"]] for e in self.events]

    def delivered(self) -> list[str]:
        return [entry_id for batch in self.batches() for entry_id in batch]


@pytest.fixture
def function() -> Iterator[Function]:
    fn = Function()
    yield fn
    fn.server.stop()


BROKER_SETTINGS: dict[str, Any] = {
    "run_pollers": True,
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_retry_backoff_s": 0.01,
    "stream_retry_backoff_max_s": 0.05,
}


@pytest.fixture
async def broker(make_broker: BrokerFactory, function: Function) -> AsyncIterator[Broker]:
    broker = await make_broker(**BROKER_SETTINGS)
    await broker.put_function("clicks", function.server.url, timeout_s=2)
    yield broker


async def add(
    client: aioredis.Redis, clock: ManualClock, *bodies: Any, age_s: float = 0, **fields: str
) -> list[str]:
    """XADD one entry per body (JSON ``data``), with ids from the clock minus ``age_s``."""
    last = await client.xrevrange(STREAM, count=1)
    ms = int((clock.now() - age_s) * 1000)
    previous = last[0][0].decode().split("-") if last else ["0", "0"]
    n = int(previous[1]) + 1 if int(previous[0]) == ms else 0
    ids = []
    async with client.pipeline(transaction=True) as pipe:
        for i, body in enumerate(bodies):
            pipe.xadd(STREAM, {"data": json.dumps(body), **fields}, id=f"{ms}-{n + i}")
        ids = [raw.decode() for raw in await pipe.execute()]
    return ids


async def map_stream(broker: Broker, **fields: Any) -> str:
    body = {
        "EventSourceArn": SOURCE,
        "FunctionName": "clicks",
        "StartingPosition": "TRIM_HORIZON",
        **fields,
    }
    return str((await broker.mappings.create(body))["UUID"])


async def checkpoint(broker: Broker, uuid: str) -> str | None:
    raw = await broker.redis.hget(broker.keys.mapping_checkpoint(uuid), SHARD)
    return None if raw is None else raw.decode()


async def stats(broker: Broker, uuid: str) -> dict[str, int]:
    raw = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    return {k.decode(): int(v) for k, v in raw.items()}


async def test_record_shape_is_the_documented_one(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    (entry_id,) = await add(redis_client, clock, {"kind": "order"}, tenant="acme")
    await map_stream(broker)
    await until(lambda: function.events)
    (record,) = function.events[0]["Records"]
    assert list(record) == [
        "eventSource",
        "eventSourceARN",
        "eventID",
        "eventName",
        "eventVersion",
        "redisStream",
    ]
    assert record["eventSource"] == "sluice:redis-stream"
    assert record["eventSourceARN"] == SOURCE
    assert record["eventID"] == f"{STREAM}:{entry_id}"
    assert record["eventName"] == "sluice:redis-stream:record"
    assert record["eventVersion"] == "1.0"
    assert record["redisStream"] == {
        "streamName": STREAM,
        "entryId": entry_id,
        "sequenceNumber": entry_id,
        "approximateArrivalTimestamp": int(clock.now() * 1000) / 1000,
        "fields": {"tenant": "acme"},
        "data": base64.b64encode(b'{"kind": "order"}').decode(),
    }
    assert list(record["redisStream"]) == [
        "streamName",
        "entryId",
        "sequenceNumber",
        "approximateArrivalTimestamp",
        "fields",
        "data",
    ]


async def test_order_is_kept_across_batches_of_batch_size(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    ids = await add(redis_client, clock, *range(25))
    uuid = await map_stream(broker, BatchSize=10)
    await until(lambda: len(function.delivered()) == 25)
    assert function.delivered() == ids
    assert [len(batch) for batch in function.batches()] == [10, 10, 5]
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    mapping = await broker.mappings.get(uuid)
    assert mapping["LastProcessingResult"] == "OK"


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_window_gathers_records_arriving_apart_into_one_batch(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    first = await add(redis_client, clock, *range(5))
    uuid = await map_stream(broker, BatchSize=100, MaximumBatchingWindowInSeconds=5)
    await until(lambda: _at_least(stats(broker, uuid), "polled", 5))
    clock.advance(0.001)
    second = await add(redis_client, clock, *range(5, 10))  # read inside the same window
    await until(lambda: function.events, timeout=20)
    assert function.batches() == [first + second]


async def _at_least(values: Any, key: str, n: int) -> bool:
    return bool((await values).get(key, 0) >= n)


async def test_latest_reads_only_entries_added_after_the_mapping_starts(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    old = await add(redis_client, clock, "old-1", "old-2")
    uuid = await map_stream(broker, StartingPosition="LATEST")
    await until(lambda: checkpoint(broker, uuid))  # LATEST pinned at the first start
    assert await checkpoint(broker, uuid) == old[-1]
    clock.advance(1)
    new = await add(redis_client, clock, "new-1", "new-2")
    await until(lambda: len(function.delivered()) == 2)
    assert function.delivered() == new


async def test_trim_horizon_reads_from_the_start(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    ids = await add(redis_client, clock, "a", "b", "c")
    await map_stream(broker, StartingPosition="TRIM_HORIZON")
    await until(lambda: len(function.delivered()) == 3)
    assert function.delivered() == ids


async def test_at_timestamp_reads_entries_from_that_time_on(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    await add(redis_client, clock, "too-early", age_s=100)
    at = await add(redis_client, clock, "at", age_s=50)
    later = await add(redis_client, clock, "later", age_s=10)
    await map_stream(
        broker, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=clock.now() - 50
    )
    await until(lambda: len(function.delivered()) == 2)
    assert function.delivered() == at + later


async def test_filtered_out_records_are_skipped_and_the_checkpoint_passes_them(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    bodies = [{"kind": "sale"}, {"kind": "refund"}, {"kind": "sale"}, {"kind": "refund"}]
    ids = await add(redis_client, clock, *bodies, {"kind": "sale"}, {"kind": "sale"})
    pattern = json.dumps({"data": {"kind": ["refund"]}})
    uuid = await map_stream(broker, FilterCriteria={"Filters": [{"Pattern": pattern}]})
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    assert function.delivered() == [ids[1], ids[3]]
    counters = await stats(broker, uuid)
    assert counters["polled"] == 6 and counters["filtered_out"] == 4


async def test_nothing_passing_the_filter_invokes_nothing_and_advances(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    ids = await add(redis_client, clock, {"kind": "sale"}, {"kind": "sale"})
    pattern = json.dumps({"data": {"kind": ["refund"]}})
    uuid = await map_stream(broker, FilterCriteria={"Filters": [{"Pattern": pattern}]})
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    assert function.events == []


async def test_a_restart_resumes_after_the_checkpoint(
    broker: Broker,
    make_broker: BrokerFactory,
    redis_client: aioredis.Redis,
    clock: ManualClock,
    function: Function,
) -> None:
    """Stopped mid-stream, a new broker on the same Redis loses nothing and re-delivers at
    most the batch in flight at the stop; entries added while none runs are read too."""
    function.delay_s = 0.05
    ids = await add(redis_client, clock, *range(30))
    uuid = await map_stream(broker, BatchSize=3)
    await until(lambda: len(function.delivered()) >= 9)
    await broker.stop()
    stopped_at = len(function.events)
    assert await checkpoint(broker, uuid) == function.delivered()[-1]  # the last batch finished
    clock.advance(1)
    ids += await add(redis_client, clock, *range(30, 35))
    await make_broker(key_prefix=broker.settings.key_prefix, **BROKER_SETTINGS)
    await until(lambda: len(set(function.delivered())) == 35, timeout=30)
    assert list(dict.fromkeys(function.delivered())) == ids
    resumed = function.batches()[stopped_at:]
    assert resumed[0][0] == ids[ids.index(function.batches()[stopped_at - 1][-1]) + 1]
    assert len(function.delivered()) == 35  # nothing delivered twice


async def test_maximum_retry_attempts_then_on_failure_record(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    """MaximumRetryAttempts 2: exactly 3 invocations, then the record (spec §9.2 shape)."""
    function.answer = lambda e: (
        function_error() if e["Records"][0]["redisStream"]["fields"]["poison"] == "1" else ok()
    )
    ids = await add(redis_client, clock, "a", "b", "c", poison="1")
    uuid = await map_stream(
        broker,
        MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": "redis-stream:failures"}},
    )
    await until(lambda: stream_records(redis_client, "failures"))
    (record,) = await stream_records(redis_client, "failures")
    assert function.batches() == [ids, ids, ids]
    last_request_id = function.server.calls[-1][2]["x-sluice-request-id"]
    mapping = await broker.mappings.get(uuid)
    arrival = iso_ms(int(clock.now() * 1000) / 1000)
    assert record == {
        "requestContext": {
            "requestId": last_request_id,
            "functionArn": mapping["FunctionArn"],
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": iso_ms(clock.now()),
        "RedisStreamBatchInfo": {
            "shardId": SHARD,
            "startSequenceNumber": ids[0],
            "endSequenceNumber": ids[-1],
            "approximateArrivalOfFirstRecord": arrival,
            "approximateArrivalOfLastRecord": arrival,
            "batchSize": 3,
            "streamArn": SOURCE,
        },
    }
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "RedisStreamBatchInfo",
    ]
    (entry,) = await broker.dead_letters.list("clicks")
    assert entry["kind"] == "stream_batch_failed" and entry["record"] == record
    assert entry["source"]["startSequenceNumber"] == ids[0]
    assert [r["redisStream"]["entryId"] for r in json.loads(entry["payload"])["Records"]] == ids
    # The stream goes on after the discarded batch.
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    clock.advance(1)
    after = await add(redis_client, clock, "d", poison="0")
    await until(lambda: function.delivered()[-1:] == after)
    assert len(function.events) == 4


async def test_bisect_isolates_a_poison_record(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    def answer(event: Event) -> Answer:
        poisoned = any(r["redisStream"]["data"] == _b64("poison") for r in event["Records"])
        return function_error() if poisoned else ok()

    function.answer = answer
    ids = await add(redis_client, clock, *["ok"] * 5, "poison", "ok", "ok")
    uuid = await map_stream(
        broker,
        BisectBatchOnFunctionError=True,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": "redis-stream:failures"}},
    )
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    assert [len(batch) for batch in function.batches()] == [8, 4, 4, 2, 1, 1, 2]
    (record,) = await stream_records(redis_client, "failures")
    info = record["RedisStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (ids[5], ids[5])
    assert info["batchSize"] == 1 and record["requestContext"]["approximateInvokeCount"] == 1
    assert sorted(set(function.delivered())) == sorted(ids)


def _b64(body: Any) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()


async def test_report_batch_item_failures_resume_from_the_lowest_failed(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    ids = await add(redis_client, clock, *range(6))

    def answer(event: Event) -> Answer:
        if len(function.events) > 1:
            return ok({"batchItemFailures": []})
        failed = [ids[4], ids[2]]  # not in order: the lowest one counts
        return ok({"batchItemFailures": [{"itemIdentifier": i} for i in failed]})

    function.answer = answer
    uuid = await map_stream(broker, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    assert function.batches() == [ids, ids[2:]]


INVALID_RESPONSES: list[Callable[[list[str]], Any]] = [
    lambda ids: {"batchItemFailures": [{"itemIdentifier": "123"}]},
    lambda ids: {"batchItemFailures": [{"itemIdentifier": ""}]},
    lambda ids: {"batchItemFailures": [{"itemIdentifier": None}]},
    lambda ids: {"foo": [{"itemIdentifier": ids[1]}]},
]


@pytest.mark.parametrize(
    "invalid", INVALID_RESPONSES, ids=["unknown-id", "empty-id", "null-id", "wrong-key"]
)
async def test_invalid_partial_responses_retry_the_whole_batch(
    broker: Broker,
    redis_client: aioredis.Redis,
    clock: ManualClock,
    function: Function,
    invalid: Callable[[list[str]], Any],
) -> None:
    ids = await add(redis_client, clock, *range(3))
    function.answer = lambda e: ok(invalid(ids)) if len(function.events) == 1 else ok("")
    uuid = await map_stream(broker, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))
    assert function.batches() == [ids, ids]


async def test_records_past_their_age_go_on_failure_before_the_rest(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    """Too old at the first read: discarded without an invocation (count 1, no response
    context); the fresh record behind them is delivered."""
    old = await add(redis_client, clock, "old-1", "old-2", age_s=120)
    fresh = await add(redis_client, clock, "fresh")
    uuid = await map_stream(
        broker,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": "redis-stream:failures"}},
    )
    await until(lambda: _equals(checkpoint(broker, uuid), fresh[0]))
    assert function.batches() == [fresh]
    (record,) = await stream_records(redis_client, "failures")
    assert list(record) == ["requestContext", "version", "timestamp", "RedisStreamBatchInfo"]
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    info = record["RedisStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"], info["batchSize"]) == (
        old[0],
        old[1],
        2,
    )


async def test_a_failing_batch_expires_when_the_clock_passes_its_age(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    function.answer = lambda e: function_error()
    ids = await add(redis_client, clock, "a", "b")
    uuid = await map_stream(
        broker,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": "redis-stream:failures"}},
    )
    await until(lambda: len(function.events) >= 3)  # retried while young (-1: no limit)
    clock.advance(61)
    await until(lambda: stream_records(redis_client, "failures"))
    (record,) = await stream_records(redis_client, "failures")
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == len(function.events)
    assert "responseContext" not in record
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))


async def test_a_failed_on_failure_delivery_keeps_the_dead_letter_entry(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    function.answer = lambda e: function_error()
    ids = await add(redis_client, clock, "a")
    target = f"http://127.0.0.1:{free_port()}/nobody-listens"
    uuid = await map_stream(
        broker, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": target}}
    )
    await until(lambda: _at_least(stats(broker, uuid), "on_failure_delivery_failed", 1))
    (entry,) = await broker.dead_letters.list("clicks")
    assert entry["kind"] == "stream_batch_failed" and entry["target"] == target
    assert entry["errors"][-1] == f"OnFailure delivery to {target} failed after retries"
    await until(lambda: _equals(checkpoint(broker, uuid), ids[-1]))


async def test_disable_enable_and_delete_apply_within_seconds(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    before = await add(redis_client, clock, "before")
    uuid = await map_stream(broker)
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: _equals(checkpoint(broker, uuid), before[0]), timeout=10)
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: not pollers.polling(uuid), timeout=10)
    clock.advance(1)
    during = await add(redis_client, clock, "while-disabled")
    await pollers.refresh()
    assert not pollers.polling(uuid) and function.delivered() == before
    await broker.mappings.update(uuid, {"Enabled": True})  # resumes from its checkpoint
    await until(lambda: function.delivered() == before + during, timeout=10)
    await broker.mappings.delete(uuid)
    await until(lambda: not pollers.polling(uuid), timeout=10)
    assert await broker.redis.get(broker.keys.mapping_lease(uuid)) is None


async def test_a_record_too_large_for_any_invocation_is_discarded_alone(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    """Spec §11.3: an entry past the 6 MB payload limit cannot be invoked; it goes on
    failure as RetryAttemptsExhausted with batchSize 1 and the stream moves on."""
    huge = await add(redis_client, clock, "x" * 5_000_000)  # 6.7 MB once base64-encoded
    after = await add(redis_client, clock, "small")
    uuid = await map_stream(
        broker, DestinationConfig={"OnFailure": {"Destination": "redis-stream:failures"}}
    )
    await until(lambda: _equals(checkpoint(broker, uuid), after[0]))
    assert function.batches() == [after]
    (record,) = await stream_records(redis_client, "failures")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    info = record["RedisStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["batchSize"]) == (huge[0], 1)


async def test_a_poller_that_lost_its_lease_cannot_move_the_checkpoint(
    broker: Broker, redis_client: aioredis.Redis, clock: ManualClock, function: Function
) -> None:
    """Another process owns the mapping now (this one stalled past its lease): whatever
    this poller still delivers, the checkpoint stays the new owner's to move."""
    first = await add(redis_client, clock, "a")
    uuid = await map_stream(broker)
    await until(lambda: _equals(checkpoint(broker, uuid), first[0]))
    await redis_client.set(broker.keys.mapping_lease(uuid), "another-process")
    clock.advance(1)
    await add(redis_client, clock, "b")
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: not pollers.polling(uuid), timeout=10)
    assert await checkpoint(broker, uuid) == first[0]
    assert await redis_client.get(broker.keys.mapping_lease(uuid)) == b"another-process"
