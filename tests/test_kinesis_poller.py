"""Kinesis event source mappings against moto's standalone server (spec §9.2, §12 62-73).

The function is a small HTTP server following the Lambda Invoke contract; ``answer``
decides, per test, what it replies. moto's records arrive in wall-clock time, so tests of
record age and windows set the broker's ManualClock to now and advance it from there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pytest

from broker import Broker, ManualClock
from broker.records import iso_ms
from tests.conftest import BrokerFactory, aws_client
from tests.helpers import until
from tests.servers import Answer, function_error, ok
from tests.stream_helpers import (
    STREAM_BROKER_SETTINGS,
    Event,
    StreamFunction,
    checkpoint,
    make_queue,
    received,
    stats,
)

SHARD = "shardId-000000000000"


def _data(record: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(record["kinesis"]["data"]))


@pytest.fixture
def function() -> Iterator[StreamFunction]:
    fn = StreamFunction(
        sequence=lambda r: str(r["kinesis"]["sequenceNumber"]),
        key=lambda r: str(r["kinesis"]["partitionKey"]),
    )
    yield fn
    fn.server.stop()


@pytest.fixture
async def broker(
    aws: str, make_broker: BrokerFactory, function: StreamFunction
) -> AsyncIterator[Broker]:
    broker = await make_broker(**STREAM_BROKER_SETTINGS)
    await broker.put_function("clicks", function.server.url, timeout_s=2)
    yield broker


class Stream:
    """A Kinesis stream in moto, named per test."""

    def __init__(self, url: str, shards: int = 1) -> None:
        self.client = aws_client("kinesis", url)
        self.name = f"clicks-{uuid4().hex[:8]}"
        self.client.create_stream(StreamName=self.name, ShardCount=shards)
        summary = self.client.describe_stream_summary(StreamName=self.name)
        self.arn: str = summary["StreamDescriptionSummary"]["StreamARN"]

    def put(self, *bodies: Any, key: str = "k", hash_key: str | None = None) -> list[str]:
        """One PutRecord per body (JSON), in order; their sequence numbers."""
        sequences = []
        for body in bodies:
            extra = {"ExplicitHashKey": hash_key} if hash_key else {}
            answer = self.client.put_record(
                StreamName=self.name, Data=json.dumps(body).encode(), PartitionKey=key, **extra
            )
            sequences.append(answer["SequenceNumber"])
        return sequences

    def shards(self) -> list[dict[str, Any]]:
        return list(self.client.list_shards(StreamName=self.name)["Shards"])


@pytest.fixture
def stream(aws: str) -> Stream:
    return Stream(aws)


async def map_stream(broker: Broker, arn: str, **fields: Any) -> str:
    body = {"EventSourceArn": arn, "FunctionName": "clicks", "StartingPosition": "TRIM_HORIZON"}
    return str((await broker.mappings.create({**body, **fields}))["UUID"])


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# -- shape, order, starting positions ---------------------------------------------------------


async def test_record_shape_is_lambdas(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 62: data base64-encoded, eventID = shardId:sequenceNumber, keys in order."""
    (sequence,) = stream.put({"page": "/home"}, key="user-42")
    await map_stream(broker, stream.arn)
    await until(lambda: function.events)
    (record,) = function.events[0]["Records"]
    assert list(record) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    arrival = record["kinesis"].pop("approximateArrivalTimestamp")
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-42",
            "sequenceNumber": sequence,
            "data": base64.b64encode(b'{"page": "/home"}').decode(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/sluice",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream.arn,
    }
    assert isinstance(arrival, float) and abs(arrival - time.time()) < 60
    assert round(arrival, 3) == arrival


async def test_order_is_kept_across_batches(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    sequences = stream.put(*range(23))
    uuid = await map_stream(broker, stream.arn, BatchSize=5)
    await until(lambda: len(function.delivered()) == 23)
    assert function.delivered() == sequences
    assert all(len(batch) <= 5 for batch in function.batches())
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), sequences[-1]))
    counted = await stats(broker, uuid)
    assert counted["polled"] == 23 and counted["invoked_records"] == 23


async def test_latest_ignores_earlier_records_and_trim_horizon_replays_them(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """Spec §12 73."""
    early, late = Stream(aws), Stream(aws)
    early_old = early.put("old-1", "old-2")
    late.put("old-1", "old-2")
    latest = await map_stream(broker, late.arn, StartingPosition="LATEST")
    await map_stream(broker, early.arn)
    await until(lambda: len(function.delivered()) == 2)
    # LATEST pinned its start when it began: what comes now is read.
    await until(lambda: _equals(_has_checkpoint(broker, latest), True))
    new = late.put("new-1")
    await until(lambda: len(function.delivered()) == 3)
    assert sorted(function.delivered()) == sorted([*early_old, *new])
    seen = {r["eventSourceARN"]: _data(r) for e in function.events for r in e["Records"]}
    assert seen[late.arn] == "new-1"


async def _has_checkpoint(broker: Broker, uuid: str) -> bool:
    return await checkpoint(broker, uuid, SHARD) is not None


async def test_at_timestamp_reads_records_from_that_time_on(
    broker: Broker, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    clock.set(time.time() + 1)  # the timestamp must not be in the future
    stream.put("before")
    time.sleep(0.05)
    moment = time.time()
    time.sleep(0.05)
    after = stream.put("after")
    await map_stream(
        broker, stream.arn, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=moment
    )
    await until(lambda: function.delivered() == after)


async def test_filtered_out_records_are_skipped_and_checkpointed(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 78: JSON data filtered on decoded fields; non-JSON data skipped."""
    sequences = stream.put({"kind": "keep"}, {"kind": "drop"})
    raw = stream.client.put_record(StreamName=stream.name, Data=b"not json", PartitionKey="k")
    uuid = await map_stream(
        broker,
        stream.arn,
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]},
    )
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), raw["SequenceNumber"]))
    assert function.delivered() == sequences[:1]
    assert (await stats(broker, uuid))["filtered_out"] == 2


# -- failures ---------------------------------------------------------------------------------


def _batch_info(stream: Stream, sequences: list[str], arrivals: list[float]) -> dict[str, Any]:
    return {
        "shardId": SHARD,
        "startSequenceNumber": sequences[0],
        "endSequenceNumber": sequences[-1],
        "approximateArrivalOfFirstRecord": iso_ms(arrivals[0]),
        "approximateArrivalOfLastRecord": iso_ms(arrivals[-1]),
        "batchSize": len(sequences),
        "streamArn": stream.arn,
    }


def _arrivals(function: StreamFunction, sequences: list[str]) -> list[float]:
    found = {
        r["kinesis"]["sequenceNumber"]: r["kinesis"]["approximateArrivalTimestamp"]
        for e in function.events
        for r in e["Records"]
    }
    return [found[s] for s in sequences]


async def test_retries_then_the_on_failure_record_in_sqs(
    broker: Broker, aws: str, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 63: MaximumRetryAttempts 2 -> 3 invocations, then RetryAttemptsExhausted
    with approximateInvokeCount 3; the shard goes on."""
    queue_url, queue_arn = make_queue(aws, f"kin-failures-{uuid4().hex[:6]}")
    function.answer = lambda e: function_error() if _data(e["Records"][0]) == "poison" else ok()
    sequences = stream.put("poison", "b", "c")
    uuid = await map_stream(
        broker,
        stream.arn,
        MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    (record,) = await received(aws, queue_url)
    assert function.batches() == [sequences] * 3
    mapping = await broker.mappings.get(uuid)
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
    ]
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
        "KinesisBatchInfo": _batch_info(stream, sequences, _arrivals(function, sequences)),
    }
    after = stream.put("d")
    await until(lambda: function.delivered()[-1:] == after)
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), after[0]))


async def test_the_on_failure_record_in_sns_and_s3(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """SNS gets the record as the message; S3 gets it, with the event as a ``payload``
    string, at aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>."""
    function.answer = lambda _e: function_error()
    queue_url, queue_arn = make_queue(aws, f"from-sns-{uuid4().hex[:6]}")
    sns = aws_client("sns", aws)
    topic = sns.create_topic(Name=f"kin-failures-{uuid4().hex[:6]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    s3 = aws_client("s3", aws)
    bucket = f"kin-failures-{uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    to_sns, to_s3 = Stream(aws), Stream(aws)
    sns_sequences = to_sns.put("a", "b")
    s3_sequences = to_s3.put("c")
    await map_stream(
        broker,
        to_sns.arn,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": topic}},
    )
    s3_uuid = await map_stream(
        broker,
        to_s3.arn,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"arn:aws:s3:::{bucket}"}},
    )
    (envelope,) = await received(aws, queue_url)
    record = json.loads(envelope["Message"])
    assert envelope["TopicArn"] == topic
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == sns_sequences[0]
    assert record["KinesisBatchInfo"]["batchSize"] == 2
    assert "payload" not in record

    async def stored() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    await until(stored)
    (key,) = await stored()
    assert re.fullmatch(
        rf"aws/lambda/{s3_uuid}/{SHARD}/\d{{4}}/\d\d/\d\d/"
        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}",
        key,
    )
    body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert list(body) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
        "payload",
    ]
    assert key.split("/")[4:7] == body["timestamp"][:10].split("-")
    assert isinstance(body["payload"], str)
    delivered = json.loads(body["payload"])["Records"]
    assert [r["kinesis"]["sequenceNumber"] for r in delivered] == s3_sequences


async def test_retries_until_the_oldest_record_is_too_old(
    broker: Broker, aws: str, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 64: retries without limit until the records pass MaximumRecordAgeInSeconds
    (the clock advanced), then RecordAgeExceeded without responseContext."""
    clock.set(time.time())
    queue_url, queue_arn = make_queue(aws, f"kin-age-{uuid4().hex[:6]}")
    function.answer = lambda _e: function_error()
    sequences = stream.put("a", "b")
    await map_stream(
        broker,
        stream.arn,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    await until(lambda: len(function.events) >= 3)
    clock.advance(61)
    (record,) = await received(aws, queue_url)
    assert "responseContext" not in record
    context = record["requestContext"]
    assert context["condition"] == "RecordAgeExceeded"
    assert context["approximateInvokeCount"] == len(function.events)
    assert record["KinesisBatchInfo"]["startSequenceNumber"] == sequences[0]
    assert record["KinesisBatchInfo"]["batchSize"] == 2


async def test_records_too_old_when_read_are_not_invoked(
    broker: Broker, aws: str, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 65: discarded without an invocation, approximateInvokeCount 1."""
    clock.set(time.time() + 120)
    queue_url, queue_arn = make_queue(aws, f"kin-old-{uuid4().hex[:6]}")
    sequences = stream.put("a", "b")
    uuid = await map_stream(
        broker,
        stream.arn,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    (record,) = await received(aws, queue_url)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["KinesisBatchInfo"]["endSequenceNumber"] == sequences[-1]
    assert function.events == []
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), sequences[-1]))


async def test_bisect_isolates_a_poison_record(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 66: halves down to the poison record alone; splitting uses no retries."""

    def answer(event: Event) -> Answer:
        poisoned = any(_data(r) == "poison" for r in event["Records"])
        return function_error() if poisoned else ok()

    function.answer = answer
    sequences = stream.put("a", "b", "c", "d", "poison", "f", "g", "h")
    uuid = await map_stream(
        broker, stream.arn, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1
    )
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), sequences[-1]))
    poison = sequences[4]
    assert function.batches()[0] == sequences
    # Halves of 8: [a-d] ok, [poison-h] fails; [poison, f] fails; [poison] fails twice
    # (MaximumRetryAttempts 1: bisecting used none), then it is discarded; f, g-h go on.
    assert function.batches()[1:] == [
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
    (entry,) = await broker.dead_letters.list("clicks")
    assert entry["record"]["KinesisBatchInfo"]["startSequenceNumber"] == poison
    assert entry["record"]["requestContext"]["approximateInvokeCount"] == 2


async def test_partial_failure_resumes_at_the_lowest_reported(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 67: [seq5, seq3] -> the retry starts at seq3; earlier records not re-sent."""
    sequences = stream.put(*range(6))
    calls = 0

    def answer(event: Event) -> Answer:
        nonlocal calls
        calls += 1
        if calls > 1:
            return ok()
        failed = [{"itemIdentifier": sequences[5]}, {"itemIdentifier": sequences[3]}]
        return ok({"batchItemFailures": failed})

    function.answer = answer
    uuid = await map_stream(broker, stream.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), sequences[-1]))
    assert function.batches() == [sequences, sequences[3:]]


@pytest.mark.parametrize("reply", ["", [], None, {}, {"batchItemFailures": []}])
async def test_success_responses_checkpoint_the_batch(
    broker: Broker, stream: Stream, function: StreamFunction, reply: Any
) -> None:
    """Spec §12 68."""
    body = b"" if reply == "" else json.dumps(reply).encode()
    function.answer = lambda _e: (200, {}, body)
    sequences = stream.put("a", "b")
    uuid = await map_stream(broker, stream.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), sequences[-1]))
    assert function.batches() == [sequences]


# -- parallelization, windows ----------------------------------------------------------------


async def test_parallelization_factor_keeps_order_per_key(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 69: up to 3 batches of the shard at once, never two holding the same key,
    order per key kept; the checkpoint ends at the last record."""
    function.delay_s = 0.05
    keys = [f"user-{n}" for n in range(9)]
    sent: dict[str, list[str]] = {key: [] for key in keys}
    for n in range(6):
        for key in keys:
            sent[key] += stream.put(f"{key}/{n}", key=key)
    uuid = await map_stream(broker, stream.arn, BatchSize=4, ParallelizationFactor=3)
    everything = [s for key in keys for s in sent[key]]
    await until(lambda: len(function.delivered()) == len(everything), timeout=30)
    assert sorted(function.delivered(), key=int) == sorted(everything, key=int)
    for key in keys:
        order = [
            s
            for e in function.events
            for r in e["Records"]
            if r["kinesis"]["partitionKey"] == key
            for s in [r["kinesis"]["sequenceNumber"]]
        ]
        assert order == sent[key]
    assert 1 < function.peak <= 3
    assert function.key_clashes == 0
    last = max(everything, key=int)
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), last))


async def test_tumbling_window_carries_state_to_a_final_invocation(
    broker: Broker, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 70: each invocation gets the state the previous one returned; a response
    without ``state`` failed (retried); the window's end brings isFinalInvokeForWindow."""
    size = 900
    if size - time.time() % size < 20:  # too near a window's end to stay inside it
        time.sleep(size - time.time() % size + 0.1)
    clock.set(time.time())
    start = int(time.time() // size) * size
    answers = iter([ok({"no": "state"})])

    def answer(event: Event) -> Answer:
        forced = next(answers, None)
        if forced is not None:
            return forced
        count = event["state"].get("count", 0) + len(event["Records"])
        return ok({"state": {"count": count}})

    function.answer = answer
    stream.put("a", "b", "c")
    await map_stream(broker, stream.arn, BatchSize=2, TumblingWindowInSeconds=size)
    await until(lambda: len(function.events) >= 3)
    await until(lambda: sum(len(e["Records"]) for e in function.events[1:]) == 3)
    first, retried, second = function.events[:3]
    assert first["state"] == {} and retried["state"] == {}  # the stateless reply failed
    assert retried["Records"] == first["Records"]
    assert second["state"] == {"count": 2}
    assert first["window"] == {
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start + size)),
    }
    assert first["shardId"] == SHARD and first["eventSourceARN"] == stream.arn
    assert not any(
        e["isFinalInvokeForWindow"] or e["isWindowTerminatedEarly"] for e in function.events
    )
    clock.set(start + size + 1)
    await until(lambda: function.events[-1]["isFinalInvokeForWindow"])
    final = function.events[-1]
    assert final["Records"] == [] and final["state"] == {"count": 3}
    assert final["isWindowTerminatedEarly"] is False


async def test_a_state_over_1_mb_ends_the_window_early(
    broker: Broker, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    """Past 1 MB of state the window ends early: a final invocation with
    isWindowTerminatedEarly, then the same window goes on with a fresh state."""
    size = 900
    if size - time.time() % size < 20:
        time.sleep(size - time.time() % size + 0.1)
    clock.set(time.time())
    big = "x" * (1024 * 1024 + 1)

    def answer(event: Event) -> Answer:
        if event["isFinalInvokeForWindow"]:
            return ok({"state": {}})
        if _data(event["Records"][0]) == "grow":
            return ok({"state": {"blob": big}})
        return ok({"state": {"seen": len(event["Records"])}})

    function.answer = answer
    stream.put("grow")
    await map_stream(broker, stream.arn, BatchSize=1, TumblingWindowInSeconds=size)
    await until(lambda: len(function.events) >= 2)
    grow, final = function.events[:2]
    assert (grow["isFinalInvokeForWindow"], grow["isWindowTerminatedEarly"]) == (False, False)
    assert (final["isFinalInvokeForWindow"], final["isWindowTerminatedEarly"]) == (True, True)
    assert final["Records"] == [] and final["state"] == {"blob": big}
    assert final["window"] == grow["window"]
    stream.put("next")
    await until(lambda: len(function.events) >= 3)
    after = function.events[2]
    assert after["state"] == {} and after["window"] == grow["window"]
    assert after["isFinalInvokeForWindow"] is False


async def test_last_processing_result_and_iterator_age(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """LastProcessingResult follows the latest batch; the iterator age of each shard is a
    gauge in the mapping's stats."""
    function.answer = lambda e: function_error() if _data(e["Records"][0]) == "bad" else ok()
    uuid = await map_stream(broker, stream.arn, MaximumRetryAttempts=0)

    async def result() -> str:
        return str((await broker.mappings.get(uuid))["LastProcessingResult"])

    await until(lambda: _equals(result(), "No records processed"))
    stream.put("bad")

    await until(lambda: _equals(result(), "PROBLEM: Function call failed"))
    stream.put("good")
    await until(lambda: _equals(result(), "OK"))
    age = (await stats(broker, uuid))[f"iterator_age_ms:{SHARD}"]
    assert 0 <= age < 60_000


# -- lifecycle, shards, processes ------------------------------------------------------------


async def test_disable_then_enable_resumes_after_the_checkpoint(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 72: no replay, no gap."""
    first = stream.put("a", "b")
    uuid = await map_stream(broker, stream.arn)
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), first[-1]))
    await broker.mappings.update(uuid, {"Enabled": False})
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: not pollers.polling(uuid))
    during = stream.put("c", "d")
    await broker.mappings.update(uuid, {"Enabled": True})
    await until(lambda: len(function.delivered()) == 4)
    assert function.delivered() == [*first, *during]


def split_as_aws_does(stream: Stream, shard_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SplitShard with AWS's semantics, on moto's backend (the server runs in this process).

    moto 5.2.5's SplitShard re-puts the parent's records into the parent, and its PutRecord
    keeps routing to the first shard whose hash range matches, closed parents included, so
    a child never gets a record. AWS leaves the parent's records where they are, closes it,
    and routes new records to the open children: done here by hand, then read by Sluice
    over moto's HTTP API like any other shard."""
    from moto.kinesis.models import Shard, kinesis_backends
    from moto.kinesis.models import Stream as MotoStream

    moto_stream = kinesis_backends["000000000000"]["us-east-1"].streams[stream.name]
    parent = moto_stream.shards[shard_id]
    middle = (parent.starting_hash + parent.ending_hash) // 2
    last = max(s._shard_id for s in moto_stream.shards.values())
    for n, (low, high) in enumerate([(parent.starting_hash, middle), (middle, parent.ending_hash)]):
        child = Shard(last + 1 + n, low, high, parent=shard_id)
        moto_stream.shards[child.shard_id] = child
    parent.is_open = False
    routing = MotoStream.get_shard_for_key

    def open_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        open_shards = {k: v for k, v in self.shards.items() if v.is_open}
        every, self.shards = self.shards, open_shards
        try:
            return routing(self, partition_key, explicit_hash_key)
        finally:
            self.shards = every

    monkeypatch.setattr(MotoStream, "get_shard_for_key", open_shard_for_key)


async def test_a_split_shard_is_drained_before_its_children(
    broker: Broker, stream: Stream, function: StreamFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resharding: the parent's records first, then the children's (spec §9.2 (D)); the
    parent ends with SHARD_END, each child is checkpointed on its own."""
    function.delay_s = 0.1  # the parent takes a while: its children wait for it
    parent = stream.put(*range(10))
    split_as_aws_does(stream, SHARD, monkeypatch)
    listed = {s["ShardId"]: s for s in stream.shards()}
    assert "EndingSequenceNumber" in listed[SHARD]["SequenceNumberRange"]
    children = sorted(k for k, s in listed.items() if s.get("ParentShardId") == SHARD)
    low = stream.put("low-1", "low-2", hash_key="1")
    high = stream.put("high-1", hash_key=str(2**127 + 5))
    uuid = await map_stream(broker, stream.arn, BatchSize=2)
    await until(lambda: len(function.delivered()) == 13, timeout=30)
    delivered = [
        (r["eventID"].split(":")[0], _data(r)) for e in function.events for r in e["Records"]
    ]
    assert delivered[:10] == [(SHARD, n) for n in range(10)]
    assert sorted(delivered[10:]) == sorted(
        [(children[0], "low-1"), (children[0], "low-2"), (children[1], "high-1")]
    )
    assert [d for _, d in delivered if d in ("low-1", "low-2")] == ["low-1", "low-2"]
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), "SHARD_END"))
    await until(lambda: _equals(checkpoint(broker, uuid, children[0]), low[-1]))
    await until(lambda: _equals(checkpoint(broker, uuid, children[1]), high[-1]))
    assert len(parent) == 10


async def test_latest_reads_a_child_shard_from_when_the_mapping_started(
    broker: Broker, stream: Stream, function: StreamFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LATEST pins one moment for the whole mapping: a child shard made by resharding later
    is read from it, so records it got before its reader started are not skipped."""
    stream.put("before")
    uuid = await map_stream(broker, stream.arn, StartingPosition="LATEST")
    await until(lambda: _pinned(broker, uuid))
    function.delay_s = 0.2  # the parent is slow: its children wait
    parent = stream.put("p-1", "p-2", "p-3")
    split_as_aws_does(stream, SHARD, monkeypatch)
    children = stream.put("c-1", hash_key="1") + stream.put("c-2", hash_key=str(2**127 + 5))
    await until(lambda: len(function.delivered()) == 5, timeout=8)
    assert [_data(r) for e in function.events for r in e["Records"]][:3] == ["p-1", "p-2", "p-3"]
    assert len(parent) == 3 and len(children) == 2


async def _pinned(broker: Broker, uuid: str) -> bool:
    """The shard's reader started: LATEST is pinned (as a moment, not a record)."""
    return (await checkpoint(broker, uuid, SHARD) or "").startswith("AT_TIMESTAMP:")


async def test_processes_split_shards_and_take_over_a_dead_ones(
    aws: str, make_broker: BrokerFactory, function: StreamFunction
) -> None:
    stream = Stream(aws, shards=4)
    options = {**STREAM_BROKER_SETTINGS, "poller_lease_ttl_s": 1.0}
    first = await make_broker(**options)
    await first.put_function("clicks", function.server.url, timeout_s=2)
    second = await make_broker(key_prefix=first.settings.key_prefix, **options)
    uuid = await map_stream(first, stream.arn)

    def shares(broker: Broker) -> set[str]:
        assert broker.pollers is not None
        running = broker.pollers.running.get(uuid)
        return set(running.poller.reading) if running else set()  # type: ignore[attr-defined]

    await until(lambda: len(shares(first)) == 2 and len(shares(second)) == 2, timeout=15)
    assert shares(first) | shares(second) == {s["ShardId"] for s in stream.shards()}
    # The first process dies: its tasks vanish, its leases and heartbeat are left behind.
    a = first.pollers
    assert a is not None and a._task is not None
    a._task.cancel()
    for running in a.running.values():
        running.task.cancel()
    await until(lambda: len(shares(second)) == 4, timeout=15)
    sent = [stream.put(f"after-{n}", hash_key=str(n * 2**126 + 1))[0] for n in range(4)]
    await until(lambda: len(function.delivered()) == 4, timeout=15)
    assert sorted(_data(r) for e in function.events for r in e["Records"]) == [
        f"after-{n}" for n in range(4)
    ]
    assert len(sent) == 4
    a.running.clear()


async def test_a_restart_resumes_after_the_checkpoint(
    aws: str, make_broker: BrokerFactory, stream: Stream, function: StreamFunction
) -> None:
    """A stop mid-stream loses nothing and re-delivers at most the batch in flight."""
    function.delay_s = 0.05
    sequences = stream.put(*range(40))
    broker = await make_broker(**STREAM_BROKER_SETTINGS)
    await broker.put_function("clicks", function.server.url, timeout_s=2)
    uuid = await map_stream(broker, stream.arn, BatchSize=4)
    await until(lambda: len(function.events) >= 3)
    await broker.stop(drain_timeout_s=2.0)
    stopped_at = len(function.events)
    saved = await checkpoint(broker, uuid, SHARD)
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
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    first = stream.put("a")
    uuid = await map_stream(broker, stream.arn)
    await until(lambda: _equals(checkpoint(broker, uuid, SHARD), first[0]))
    await broker.redis.set(broker.keys.shard_lease(uuid, SHARD), "another-process")
    stream.put("b")
    await asyncio.sleep(1.0)
    assert await checkpoint(broker, uuid, SHARD) == first[0]
    assert await broker.redis.get(broker.keys.shard_lease(uuid, SHARD)) == b"another-process"
