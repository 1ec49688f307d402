"""What Kinesis and DynamoDB Streams mappings share, each test run once per source against
moto's standalone server (spec §9.2, §12 63-72): retries and the on-failure record, record
age, bisect, partial failures, ParallelizationFactor, the lifecycle (tumbling windows:
``test_stream_windows.py``).

``source`` is a Kinesis stream or a DynamoDB table (:class:`tests.stream_helpers.Source`,
fixtures in ``tests/stream_fixtures.py``);
the function is a small HTTP server following the Lambda Invoke contract whose ``answer``
decides, per test, what it replies. moto stamps records with the wall clock, so tests of
record age and windows set the broker's ManualClock to now and advance it from there. What
only one source has stays in ``test_kinesis_poller.py`` and ``test_dynamodb_poller.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from uuid import uuid4

import pytest

from broker import Broker, ManualClock
from broker.records import iso_ms
from tests.conftest import BrokerFactory, aws_client
from tests.helpers import until
from tests.servers import Answer, function_error, ok
from tests.stream_helpers import (
    FUNCTION,
    STREAM_BROKER_SETTINGS,
    Event,
    Source,
    StreamFunction,
    batch_info,
    checkpoint,
    equals,
    make_queue,
    map_source,
    received,
    stats,
    stored_batch_info,
    stream_broker,
)

ON_FAILURE_KEYS = ["requestContext", "responseContext", "version", "timestamp"]


def _on_failure(queue_arn: str) -> dict[str, Any]:
    return {"OnFailure": {"Destination": queue_arn}}


async def test_order_is_kept_across_batches(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    sequences = source.put(*[f"item-{n}" for n in range(23)])
    uuid = await map_source(broker, source.arn, BatchSize=5)
    await until(lambda: len(function.delivered()) == 23)
    assert function.delivered() == sequences
    assert all(len(batch) <= 5 for batch in function.batches())
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), sequences[-1]))
    counted = await stats(broker, uuid)
    assert counted["polled"] == 23 and counted["invoked_records"] == 23


# -- failures ---------------------------------------------------------------------------------


async def test_retries_then_the_on_failure_record_in_sqs(
    broker: Broker, aws: str, source: Source, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 63, 71 and the §9.2 example: MaximumRetryAttempts 2 -> 3 invocations, then
    RetryAttemptsExhausted with approximateInvokeCount 3 and the batch info (Kinesis arrivals
    in milliseconds, DynamoDB's in whole seconds); the shard goes on."""
    queue_url, queue_arn = make_queue(aws, f"failures-{uuid4().hex[:6]}")
    function.answer = lambda e: (
        function_error() if source.data(e["Records"][0]) == "poison" else ok()
    )
    sequences = source.put("poison", "b", "c")
    uuid = await map_source(
        broker, source.arn, MaximumRetryAttempts=2, DestinationConfig=_on_failure(queue_arn)
    )
    (record,) = await received(aws, queue_url)
    assert function.batches() == [sequences] * 3
    mapping = await broker.mappings.get(uuid)
    assert list(record) == [*ON_FAILURE_KEYS, source.batch_info_key]
    assert list(record["requestContext"]) == [
        "requestId",
        "functionArn",
        "condition",
        "approximateInvokeCount",
    ]
    info = record[source.batch_info_key]
    assert list(info) == list(stored_batch_info(source))
    assert record == {
        "requestContext": {
            "requestId": function.request_id(),
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
        source.batch_info_key: batch_info(source, function.events[-1]["Records"]),
    }
    assert info == stored_batch_info(source)
    assert re.fullmatch(source.arrival_pattern, info["approximateArrivalOfLastRecord"])
    assert function.request_id(0) != function.request_id()
    after = source.put("d")
    await until(lambda: function.delivered()[-1:] == after)
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), after[0]))
    counted = await stats(broker, uuid)  # OnFailureDestinationDeliveredEventCount
    assert counted["on_failure_delivered"] == 3 and "dropped" not in counted


async def test_the_on_failure_record_in_sns_and_s3(
    broker: Broker, aws: str, source: Source, function: StreamFunction
) -> None:
    """Spec §12 71: SNS gets the record as the message; S3 gets it, with the event as a
    ``payload`` string, at aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>."""
    function.answer = lambda _e: function_error()
    queue_url, queue_arn = make_queue(aws, f"from-sns-{uuid4().hex[:6]}")
    sns = aws_client("sns", aws)
    topic = sns.create_topic(Name=f"failures-{uuid4().hex[:6]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    s3 = aws_client("s3", aws)
    bucket = f"failures-{uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    to_sns, to_s3 = source, source.another()
    sns_sequences = to_sns.put("a", "b")
    s3_sequences = to_s3.put("c")
    await map_source(
        broker, to_sns.arn, MaximumRetryAttempts=0, DestinationConfig=_on_failure(topic)
    )
    s3_uuid = await map_source(
        broker,
        to_s3.arn,
        MaximumRetryAttempts=0,
        DestinationConfig=_on_failure(f"arn:aws:s3:::{bucket}"),
    )
    (envelope,) = await received(aws, queue_url)
    record = json.loads(envelope["Message"])
    assert envelope["TopicArn"] == topic
    assert list(record) == [*ON_FAILURE_KEYS, source.batch_info_key]  # no payload
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    info = record[source.batch_info_key]
    assert info == stored_batch_info(to_sns)
    assert info["startSequenceNumber"] == sns_sequences[0] and info["batchSize"] == 2

    async def stored() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    await until(stored)
    (key,) = await stored()
    assert re.fullmatch(
        rf"aws/lambda/{s3_uuid}/{re.escape(to_s3.shard_id)}/\d{{4}}/\d\d/\d\d/"
        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}",
        key,
    )
    body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert list(body) == [*ON_FAILURE_KEYS, source.batch_info_key, "payload"]
    assert key.split("/")[4:7] == body["timestamp"][:10].split("-")
    assert body[source.batch_info_key] == stored_batch_info(to_s3)
    assert isinstance(body["payload"], str)
    payload = json.loads(body["payload"])
    (invoked,) = [e for e in function.events if e["Records"][0]["eventSourceARN"] == to_s3.arn]
    assert payload == invoked
    assert [source.sequence(r) for r in payload["Records"]] == s3_sequences


async def test_retries_until_the_oldest_record_is_too_old(
    broker: Broker, aws: str, source: Source, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 64: retries without limit until the records pass MaximumRecordAgeInSeconds
    (the clock advanced), then RecordAgeExceeded without responseContext."""
    clock.set(time.time())
    queue_url, queue_arn = make_queue(aws, f"age-{uuid4().hex[:6]}")
    function.answer = lambda _e: function_error()
    sequences = source.put("a", "b")
    await map_source(
        broker, source.arn, MaximumRecordAgeInSeconds=60, DestinationConfig=_on_failure(queue_arn)
    )
    await until(lambda: len(function.events) >= 3)
    clock.advance(61)
    (record,) = await received(aws, queue_url)
    assert list(record) == ["requestContext", "version", "timestamp", source.batch_info_key]
    context = record["requestContext"]
    assert context["condition"] == "RecordAgeExceeded"
    assert context["approximateInvokeCount"] == len(function.events)
    assert record[source.batch_info_key]["startSequenceNumber"] == sequences[0]
    assert record[source.batch_info_key]["batchSize"] == 2


async def test_records_too_old_when_read_are_not_invoked(
    broker: Broker, aws: str, source: Source, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 65: discarded without an invocation, approximateInvokeCount 1."""
    clock.set(time.time() + 120)
    queue_url, queue_arn = make_queue(aws, f"old-{uuid4().hex[:6]}")
    sequences = source.put("a", "b")
    uuid = await map_source(
        broker, source.arn, MaximumRecordAgeInSeconds=60, DestinationConfig=_on_failure(queue_arn)
    )
    (record,) = await received(aws, queue_url)
    assert "responseContext" not in record
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record[source.batch_info_key] == stored_batch_info(source)
    assert record[source.batch_info_key]["endSequenceNumber"] == sequences[-1]
    assert function.events == []
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), sequences[-1]))


async def test_bisect_isolates_a_poison_record(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    """Spec §12 66: halves down to the poison record alone; splitting uses no retries."""

    def answer(event: Event) -> Answer:
        poisoned = any(source.data(r) == "poison" for r in event["Records"])
        return function_error() if poisoned else ok()

    function.answer = answer
    sequences = source.put("a", "b", "c", "d", "poison", "f", "g", "h")
    uuid = await map_source(
        broker, source.arn, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1
    )
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), sequences[-1]))
    poison = sequences[4]
    # Halves of 8: [a-d] ok, [poison-h] fails; [poison, f] fails; [poison] fails twice
    # (MaximumRetryAttempts 1: bisecting used none), then it is discarded; f, g-h go on.
    assert function.batches() == [
        sequences,
        sequences[:4],
        sequences[4:],
        sequences[4:6],
        [poison],
        [poison],
        [sequences[5]],
        sequences[6:],
    ]
    delivered_ok = [s for b in function.batches() if poison not in b for s in b]
    assert sorted(delivered_ok) == sorted(s for s in sequences if s != poison)
    (entry,) = await broker.dead_letters.list(FUNCTION)
    info = entry["record"][source.batch_info_key]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (poison, poison)
    assert entry["record"]["requestContext"]["approximateInvokeCount"] == 2


async def test_partial_failure_resumes_at_the_lowest_reported(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    """Spec §12 67: [seq5, seq3] -> the retry starts at seq3; earlier records not re-sent."""
    sequences = source.put(*[f"item-{n}" for n in range(6)])
    calls = 0

    def answer(event: Event) -> Answer:
        nonlocal calls
        calls += 1
        if calls > 1:
            return ok()
        failed = [{"itemIdentifier": sequences[5]}, {"itemIdentifier": sequences[3]}]
        return ok({"batchItemFailures": failed})

    function.answer = answer
    uuid = await map_source(broker, source.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), sequences[-1]))
    assert function.batches() == [sequences, sequences[3:]]


@pytest.mark.parametrize("reply", ["", [], None, {}, {"batchItemFailures": []}])
async def test_success_responses_checkpoint_the_batch(
    broker: Broker, source: Source, function: StreamFunction, reply: Any
) -> None:
    """Spec §12 68."""
    body = b"" if reply == "" else json.dumps(reply).encode()
    function.answer = lambda _e: (200, {}, body)
    sequences = source.put("a", "b")
    uuid = await map_source(broker, source.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), sequences[-1]))
    assert function.batches() == [sequences]


async def test_last_processing_result_and_iterator_age(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    """LastProcessingResult follows the latest batch; the iterator age of each shard is a
    gauge in the mapping's stats."""
    function.answer = lambda e: function_error() if source.data(e["Records"][0]) == "bad" else ok()
    uuid = await map_source(broker, source.arn, MaximumRetryAttempts=0)

    async def result() -> str:
        return str((await broker.mappings.get(uuid))["LastProcessingResult"])

    await until(lambda: equals(result(), "No records processed"))
    source.put("bad")
    await until(lambda: equals(result(), "PROBLEM: Function call failed"))
    source.put("good")
    await until(lambda: equals(result(), "OK"))
    age = (await stats(broker, uuid))[f"iterator_age_ms:{source.shard_id}"]
    assert 0 <= age < 60_000


# -- parallelization, windows ----------------------------------------------------------------


async def test_parallelization_factor_keeps_order_per_key(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    """Spec §12 69: up to 3 batches of the shard at once, never two holding the same
    partition or item key, order per key kept; the checkpoint ends at the last record."""
    function.delay_s = 0.05
    keys = [f"user-{n}" for n in range(9)]
    sent: dict[str, list[str]] = {key: [] for key in keys}
    for n in range(6):
        for key in keys:
            sent[key] += source.put(f"{key}/{n}", key=key)
    uuid = await map_source(broker, source.arn, BatchSize=4, ParallelizationFactor=3)
    everything = [s for key in keys for s in sent[key]]
    await until(lambda: len(function.delivered()) == len(everything), timeout=30)
    assert sorted(function.delivered(), key=int) == sorted(everything, key=int)
    for key in keys:
        order = [
            source.sequence(r)
            for e in function.events
            for r in e["Records"]
            if source.key(r) == key
        ]
        assert order == sent[key]
    assert 1 < function.peak <= 3
    assert function.key_clashes == 0
    last = max(everything, key=int)
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), last))


# -- lifecycle --------------------------------------------------------------------------------


async def test_disable_then_enable_resumes_after_the_checkpoint(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    """Spec §12 72: no replay, no gap."""
    first = source.put("a", "b")
    uuid = await map_source(broker, source.arn)
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), first[-1]))
    await broker.mappings.update(uuid, {"Enabled": False})
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: not pollers.polling(uuid))
    during = source.put("c", "d")
    await broker.mappings.update(uuid, {"Enabled": True})
    await until(lambda: len(function.delivered()) == 4)
    assert function.delivered() == [*first, *during]
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), during[-1]))


async def test_a_restart_resumes_after_the_checkpoint(
    make_broker: BrokerFactory, source: Source, function: StreamFunction
) -> None:
    """A stop mid-stream loses nothing and re-delivers at most the batch in flight."""
    function.delay_s = 0.05
    sequences = source.put(*[f"item-{n}" for n in range(40)])
    broker = await stream_broker(make_broker, function)
    uuid = await map_source(broker, source.arn, BatchSize=4)
    await until(lambda: len(function.events) >= 3)
    await broker.stop(drain_timeout_s=2.0)
    stopped_at = len(function.events)
    saved = await checkpoint(broker, uuid, source.shard_id)
    assert saved is not None
    again = await make_broker(key_prefix=broker.settings.key_prefix, **STREAM_BROKER_SETTINGS)
    assert again is not None
    await until(lambda: function.delivered()[-1:] == sequences[-1:], timeout=30)
    before, after = function.batches()[:stopped_at], function.batches()[stopped_at:]
    assert after[0][0] == sequences[sequences.index(saved) + 1]
    redelivered = {s for b in before for s in b} & {s for b in after for s in b}
    assert len(redelivered) <= 4  # at most the batch in flight
    assert sorted({*function.delivered()}, key=int) == sequences


async def test_a_consumer_that_lost_its_shard_lease_cannot_move_the_checkpoint(
    broker: Broker, source: Source, function: StreamFunction
) -> None:
    first = source.put("a")
    uuid = await map_source(broker, source.arn)
    await until(lambda: equals(checkpoint(broker, uuid, source.shard_id), first[0]))
    lease = broker.keys.shard_lease(uuid, source.shard_id)
    await broker.redis.set(lease, "another-process")
    source.put("b")
    await asyncio.sleep(1.0)
    assert await checkpoint(broker, uuid, source.shard_id) == first[0]
    assert await broker.redis.get(lease) == b"another-process"
