"""DynamoDB Streams event source mappings against moto's standalone server (spec §9.2,
§12 62-73 as they apply to DynamoDB, 79).

Items are written with boto3 (put_item, update_item, delete_item); a real broker with its
pollers on reads the table's stream and invokes the function, a small HTTP server following
the Lambda Invoke contract whose ``answer`` decides, per test, what it replies. moto gives a
table one shard (always the same id) and stamps ``ApproximateCreationDateTime`` with the wall
clock, so tests of record age and windows set the broker's ManualClock to now and advance it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
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

FUNCTION = "carts"


def _value(record: dict[str, Any]) -> str:
    """What a test wrote: the ``v`` attribute of the new image (else the old one)."""
    change = record["dynamodb"]
    image = change.get("NewImage") or change["OldImage"]
    return str(image["v"]["S"])


def _item_key(record: dict[str, Any]) -> str:
    return json.dumps(record["dynamodb"]["Keys"], sort_keys=True)


def _iso_s(moment: float | datetime) -> str:
    """Whole-second ISO-8601 of an epoch or of a datetime (as botocore parses a record)."""
    epoch_s = moment.timestamp() if isinstance(moment, datetime) else moment
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@pytest.fixture
def function() -> Iterator[StreamFunction]:
    fn = StreamFunction(sequence=lambda r: str(r["dynamodb"]["SequenceNumber"]), key=_item_key)
    yield fn
    fn.server.stop()


@pytest.fixture
async def broker(
    aws: str, make_broker: BrokerFactory, function: StreamFunction
) -> AsyncIterator[Broker]:
    broker = await make_broker(**STREAM_BROKER_SETTINGS)
    await broker.put_function(FUNCTION, function.server.url, timeout_s=2)
    yield broker


class Table:
    """A DynamoDB table with a stream in moto, named per test."""

    def __init__(self, url: str, view: str = "NEW_AND_OLD_IMAGES") -> None:
        self.client = aws_client("dynamodb", url)
        self.streams = aws_client("dynamodbstreams", url)
        self.name = f"carts-{uuid4().hex[:8]}"
        created = self.client.create_table(
            TableName=self.name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
        )
        self.arn: str = created["TableDescription"]["LatestStreamArn"]
        (shard,) = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.shard: str = shard["ShardId"]

    def put(self, *values: str, key: str | None = None) -> list[str]:
        """One PutItem per value (``pk`` = ``key``, else the value itself; ``v`` = the
        value), in order; the sequence numbers of their stream records."""
        for value in values:
            item = {"pk": {"S": key if key is not None else value}, "v": {"S": value}}
            self.client.put_item(TableName=self.name, Item=item)
        written = self.sequences()
        return written[len(written) - len(values) :]

    def records(self) -> list[dict[str, Any]]:
        """Every record of the stream, as moto holds it, oldest first."""
        iterator = self.streams.get_shard_iterator(
            StreamArn=self.arn, ShardId=self.shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found: list[dict[str, Any]] = []
        while True:
            page = self.streams.get_records(ShardIterator=iterator)
            if not page["Records"]:
                return found
            found.extend(page["Records"])
            iterator = page["NextShardIterator"]

    def sequences(self) -> list[str]:
        return [r["dynamodb"]["SequenceNumber"] for r in self.records()]


@pytest.fixture
def table(aws: str) -> Table:
    return Table(aws)


async def map_table(broker: Broker, arn: str, **fields: Any) -> str:
    body = {"EventSourceArn": arn, "FunctionName": FUNCTION, "StartingPosition": "TRIM_HORIZON"}
    return str((await broker.mappings.create({**body, **fields}))["UUID"])


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# -- shape, filters, starting positions -------------------------------------------------------


async def test_record_shape_is_lambdas_for_insert_modify_remove(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    """Spec §9.2 DynamoDB event: keys in Lambda's order, eventVersion 1.1, images per
    NEW_AND_OLD_IMAGES, the three changes in the order they were made."""
    key = {"pk": {"S": "cart#9"}}
    table.client.put_item(TableName=table.name, Item={**key, "items": {"N": "2"}})
    table.client.update_item(
        TableName=table.name,
        Key=key,
        UpdateExpression="SET #items = :n",
        ExpressionAttributeNames={"#items": "items"},
        ExpressionAttributeValues={":n": {"N": "3"}},
    )
    table.client.delete_item(TableName=table.name, Key=key)
    raw = table.records()
    await map_table(broker, table.arn)
    await until(lambda: len(function.delivered()) == 3)
    records = [r for e in function.events for r in e["Records"]]
    v2, v3 = {**key, "items": {"N": "2"}}, {**key, "items": {"N": "3"}}
    images = [(None, v2), (v2, v3), (v3, None)]
    for record, moto, event_name, (old, new) in zip(
        records, raw, ["INSERT", "MODIFY", "REMOVE"], images, strict=True
    ):
        assert list(record) == [
            "eventID",
            "eventName",
            "eventVersion",
            "eventSource",
            "awsRegion",
            "dynamodb",
            "eventSourceARN",
        ]
        created = record["dynamodb"]["ApproximateCreationDateTime"]
        assert isinstance(created, float) and created == int(created)
        assert abs(created - time.time()) < 60
        change = {"ApproximateCreationDateTime": created, "Keys": key}
        change |= {"NewImage": new} if new else {}
        change |= {"OldImage": old} if old else {}
        change |= {
            "SequenceNumber": moto["dynamodb"]["SequenceNumber"],
            "SizeBytes": moto["dynamodb"]["SizeBytes"],
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        assert list(record["dynamodb"]) == list(change)
        assert record == {
            "eventID": moto["eventID"],
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": change,
            "eventSourceARN": table.arn,
        }


async def test_order_is_kept_across_batches(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    sequences = table.put(*[f"item-{n}" for n in range(23)])
    uuid = await map_table(broker, table.arn, BatchSize=5)
    await until(lambda: len(function.delivered()) == 23)
    assert function.delivered() == sequences
    assert all(len(batch) <= 5 for batch in function.batches())
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))
    counted = await stats(broker, uuid)
    assert counted["polled"] == 23 and counted["invoked_records"] == 23


def _write_changes(table: Table) -> list[str]:
    """INSERT a (n=2), INSERT b (n=3), MODIFY a (n=5), REMOVE b."""
    for pk, n in (("a", "2"), ("b", "3"), ("a", "5")):
        item = {"pk": {"S": pk}, "v": {"S": f"{pk}={n}"}, "n": {"N": n}}
        table.client.put_item(TableName=table.name, Item=item)
    table.client.delete_item(TableName=table.name, Key={"pk": {"S": "b"}})
    return table.sequences()


async def test_filters_on_the_change_record_and_filtered_records_are_checkpointed(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """Spec §12 79: N is a string, so a numeric rule on it never matches; eventName INSERT
    matches the inserts only. What does not match is checkpointed without an invocation."""
    numeric, inserts = Table(aws), Table(aws)
    numeric_sequences = _write_changes(numeric)
    insert_sequences = _write_changes(inserts)

    def criteria(pattern: dict[str, Any]) -> dict[str, Any]:
        return {"Filters": [{"Pattern": json.dumps(pattern)}]}

    never = await map_table(
        broker,
        numeric.arn,
        FilterCriteria=criteria({"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 1]}]}}}}),
    )
    only_inserts = await map_table(
        broker, inserts.arn, FilterCriteria=criteria({"eventName": ["INSERT"]})
    )
    await until(lambda: _equals(checkpoint(broker, never, numeric.shard), numeric_sequences[-1]))
    await until(
        lambda: _equals(checkpoint(broker, only_inserts, inserts.shard), insert_sequences[-1])
    )
    assert function.delivered() == insert_sequences[:2]
    assert [r["eventName"] for e in function.events for r in e["Records"]] == ["INSERT"] * 2
    assert {r["eventSourceARN"] for e in function.events for r in e["Records"]} == {inserts.arn}
    assert (await stats(broker, never))["filtered_out"] == 4
    assert (await stats(broker, only_inserts))["filtered_out"] == 2


async def test_latest_ignores_earlier_items_and_trim_horizon_replays_them(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """Spec §12 73."""
    early, late = Table(aws), Table(aws)
    early_old = early.put("old-1", "old-2")
    late.put("old-1", "old-2")
    # LATEST is pinned in whole seconds (ApproximateCreationDateTime has no more): records
    # of the pin's own second are delivered (at least once), so start in the next second.
    written_s = int(time.time())
    await until(lambda: int(time.time()) > written_s, timeout=2, interval_s=0.02)
    latest = await map_table(broker, late.arn, StartingPosition="LATEST")
    await map_table(broker, early.arn)
    await until(lambda: len(function.delivered()) == 2)
    await until(lambda: _pinned(broker, latest, late.shard))
    new = late.put("new-1")
    await until(lambda: len(function.delivered()) == 3)
    assert sorted(function.delivered()) == sorted([*early_old, *new])
    seen = [(r["eventSourceARN"], _value(r)) for e in function.events for r in e["Records"]]
    assert sorted(seen) == sorted([(early.arn, "old-1"), (early.arn, "old-2"), (late.arn, "new-1")])


async def _pinned(broker: Broker, uuid: str, shard: str) -> bool:
    """The shard's reader started: LATEST is pinned (as a moment, not a record)."""
    return (await checkpoint(broker, uuid, shard) or "").startswith("AFTER_TIME:")


# -- failures ---------------------------------------------------------------------------------


def _batch_info(table: Table, records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "shardId": table.shard,
        "startSequenceNumber": records[0]["dynamodb"]["SequenceNumber"],
        "endSequenceNumber": records[-1]["dynamodb"]["SequenceNumber"],
        "approximateArrivalOfFirstRecord": _iso_s(
            records[0]["dynamodb"]["ApproximateCreationDateTime"]
        ),
        "approximateArrivalOfLastRecord": _iso_s(
            records[-1]["dynamodb"]["ApproximateCreationDateTime"]
        ),
        "batchSize": len(records),
        "streamArn": table.arn,
    }


async def test_retries_then_the_on_failure_record_in_sqs(
    broker: Broker, aws: str, table: Table, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 71 and the §9.2 example: MaximumRetryAttempts 2 -> 3 invocations, then
    RetryAttemptsExhausted with approximateInvokeCount 3 and DDBStreamBatchInfo (arrivals in
    whole seconds); the shard goes on."""
    queue_url, queue_arn = make_queue(aws, f"ddb-failures-{uuid4().hex[:6]}")
    function.answer = lambda e: function_error() if _value(e["Records"][0]) == "poison" else ok()
    sequences = table.put("poison", "b", "c")
    uuid = await map_table(
        broker,
        table.arn,
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
        "DDBStreamBatchInfo",
    ]
    assert list(record["requestContext"]) == [
        "requestId",
        "functionArn",
        "condition",
        "approximateInvokeCount",
    ]
    assert list(record["DDBStreamBatchInfo"]) == list(_batch_info(table, table.records()))
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
        "DDBStreamBatchInfo": _batch_info(table, function.events[-1]["Records"]),
    }
    info = record["DDBStreamBatchInfo"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", info["approximateArrivalOfLastRecord"])
    assert function.request_id(0) != function.request_id()
    after = table.put("d")
    await until(lambda: function.delivered()[-1:] == after)
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), after[0]))


async def test_the_on_failure_record_in_sns_and_s3(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """Spec §12 71: SNS gets the record as the message; S3 gets it, with the event as a
    ``payload`` string, at aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>."""
    function.answer = lambda _e: function_error()
    queue_url, queue_arn = make_queue(aws, f"ddb-from-sns-{uuid4().hex[:6]}")
    sns = aws_client("sns", aws)
    topic = sns.create_topic(Name=f"ddb-failures-{uuid4().hex[:6]}")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    s3 = aws_client("s3", aws)
    bucket = f"ddb-failures-{uuid4().hex[:6]}"
    s3.create_bucket(Bucket=bucket)
    to_sns, to_s3 = Table(aws), Table(aws)
    sns_sequences = to_sns.put("a", "b")
    s3_sequences = to_s3.put("c")
    await map_table(
        broker,
        to_sns.arn,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": topic}},
    )
    s3_uuid = await map_table(
        broker,
        to_s3.arn,
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"arn:aws:s3:::{bucket}"}},
    )
    (envelope,) = await received(aws, queue_url)
    record = json.loads(envelope["Message"])
    assert envelope["TopicArn"] == topic
    assert list(record) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "DDBStreamBatchInfo",
    ]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["DDBStreamBatchInfo"] == _batch_info(to_sns, to_sns.records())
    assert record["DDBStreamBatchInfo"]["startSequenceNumber"] == sns_sequences[0]

    async def stored() -> list[str]:
        listed = s3.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    await until(stored)
    (key,) = await stored()
    assert re.fullmatch(
        rf"aws/lambda/{s3_uuid}/{re.escape(to_s3.shard)}/\d{{4}}/\d\d/\d\d/"
        r"\d{4}-\d\d-\d\dT\d\d\.\d\d\.\d\d-[0-9a-f-]{36}",
        key,
    )
    body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert list(body) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "DDBStreamBatchInfo",
        "payload",
    ]
    assert key.split("/")[4:7] == body["timestamp"][:10].split("-")
    assert body["DDBStreamBatchInfo"] == _batch_info(to_s3, to_s3.records())
    assert isinstance(body["payload"], str)
    payload = json.loads(body["payload"])
    (invoked,) = [e for e in function.events if e["Records"][0]["eventSourceARN"] == to_s3.arn]
    assert payload == invoked
    assert [r["dynamodb"]["SequenceNumber"] for r in payload["Records"]] == s3_sequences


async def test_retries_until_the_oldest_record_is_too_old(
    broker: Broker, aws: str, table: Table, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 64 for DynamoDB: retries without limit until the records pass
    MaximumRecordAgeInSeconds (the clock advanced), then RecordAgeExceeded without
    responseContext."""
    clock.set(time.time())
    queue_url, queue_arn = make_queue(aws, f"ddb-age-{uuid4().hex[:6]}")
    function.answer = lambda _e: function_error()
    sequences = table.put("a", "b")
    await map_table(
        broker,
        table.arn,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    await until(lambda: len(function.events) >= 3)
    clock.advance(61)
    (record,) = await received(aws, queue_url)
    assert list(record) == ["requestContext", "version", "timestamp", "DDBStreamBatchInfo"]
    context = record["requestContext"]
    assert context["condition"] == "RecordAgeExceeded"
    assert context["approximateInvokeCount"] == len(function.events)
    assert record["DDBStreamBatchInfo"]["startSequenceNumber"] == sequences[0]
    assert record["DDBStreamBatchInfo"]["batchSize"] == 2


async def test_records_too_old_when_read_are_not_invoked(
    broker: Broker, aws: str, table: Table, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 65: discarded without an invocation, approximateInvokeCount 1."""
    clock.set(time.time() + 120)
    queue_url, queue_arn = make_queue(aws, f"ddb-old-{uuid4().hex[:6]}")
    sequences = table.put("a", "b")
    uuid = await map_table(
        broker,
        table.arn,
        MaximumRecordAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    (record,) = await received(aws, queue_url)
    assert "responseContext" not in record
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["DDBStreamBatchInfo"] == _batch_info(table, table.records())
    assert record["DDBStreamBatchInfo"]["endSequenceNumber"] == sequences[-1]
    assert function.events == []
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))


async def test_bisect_isolates_a_poison_item(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    """Spec §12 66: halves down to the poison item alone; splitting uses no retries."""

    def answer(event: Event) -> Answer:
        poisoned = any(_value(r) == "poison" for r in event["Records"])
        return function_error() if poisoned else ok()

    function.answer = answer
    sequences = table.put("a", "b", "c", "d", "poison", "f", "g", "h")
    uuid = await map_table(
        broker, table.arn, BisectBatchOnFunctionError=True, MaximumRetryAttempts=1
    )
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))
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
    (entry,) = await broker.dead_letters.list(FUNCTION)
    info = entry["record"]["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (poison, poison)
    assert entry["record"]["requestContext"]["approximateInvokeCount"] == 2


async def test_partial_failure_resumes_at_the_lowest_reported(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    """Spec §12 67: [seq5, seq3] -> the retry starts at seq3; earlier records not re-sent."""
    sequences = table.put(*[f"item-{n}" for n in range(6)])
    calls = 0

    def answer(event: Event) -> Answer:
        nonlocal calls
        calls += 1
        if calls > 1:
            return ok()
        failed = [{"itemIdentifier": sequences[5]}, {"itemIdentifier": sequences[3]}]
        return ok({"batchItemFailures": failed})

    function.answer = answer
    uuid = await map_table(broker, table.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))
    assert function.batches() == [sequences, sequences[3:]]


async def test_a_last_partial_failure_gives_a_null_function_error(
    broker: Broker, aws: str, table: Table, function: StreamFunction
) -> None:
    """Spec §9.2: a partial failure uses up a retry; when the last attempt was one, the
    on-failure record has ``functionError: null`` and covers the records retried."""
    queue_url, queue_arn = make_queue(aws, f"ddb-partial-{uuid4().hex[:6]}")
    sequences = table.put(*[f"item-{n}" for n in range(4)])
    function.answer = lambda _e: ok({"batchItemFailures": [{"itemIdentifier": sequences[2]}]})
    uuid = await map_table(
        broker,
        table.arn,
        MaximumRetryAttempts=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        DestinationConfig={"OnFailure": {"Destination": queue_arn}},
    )
    (record,) = await received(aws, queue_url)
    assert function.batches() == [sequences, sequences[2:]]
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["requestId"] == function.request_id()
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": None,
    }
    assert record["DDBStreamBatchInfo"] == _batch_info(table, function.events[-1]["Records"])
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))


@pytest.mark.parametrize("reply", ["", [], None, {}, {"batchItemFailures": []}])
async def test_success_responses_checkpoint_the_batch(
    broker: Broker, table: Table, function: StreamFunction, reply: Any
) -> None:
    """Spec §12 68."""
    body = b"" if reply == "" else json.dumps(reply).encode()
    function.answer = lambda _e: (200, {}, body)
    sequences = table.put("a", "b")
    uuid = await map_table(broker, table.arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), sequences[-1]))
    assert function.batches() == [sequences]


# -- parallelization, windows ----------------------------------------------------------------


async def test_parallelization_factor_keeps_order_per_item_key(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    """Spec §12 69: up to 3 batches of the shard at once, never two holding the same item
    key, order per item key kept; the checkpoint ends at the last record."""
    function.delay_s = 0.05
    keys = [f"cart#{n}" for n in range(9)]
    sent: dict[str, list[str]] = {key: [] for key in keys}
    for n in range(6):
        for key in keys:
            sent[key] += table.put(f"{key}/{n}", key=key)
    uuid = await map_table(broker, table.arn, BatchSize=4, ParallelizationFactor=3)
    everything = [s for key in keys for s in sent[key]]
    await until(lambda: len(function.delivered()) == len(everything), timeout=30)
    assert sorted(function.delivered(), key=int) == sorted(everything, key=int)
    for key in keys:
        order = [
            r["dynamodb"]["SequenceNumber"]
            for e in function.events
            for r in e["Records"]
            if r["dynamodb"]["Keys"]["pk"]["S"] == key
        ]
        assert order == sent[key]
    assert 1 < function.peak <= 3
    assert function.key_clashes == 0
    last = max(everything, key=int)
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), last))


async def test_tumbling_window_carries_state_to_a_final_invocation(
    broker: Broker, table: Table, function: StreamFunction, clock: ManualClock
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
    table.put("a", "b", "c")
    await map_table(broker, table.arn, BatchSize=2, TumblingWindowInSeconds=size)
    await until(lambda: len(function.events) >= 3)
    await until(lambda: sum(len(e["Records"]) for e in function.events[1:]) == 3)
    first, retried, second = function.events[:3]
    assert first["state"] == {} and retried["state"] == {}  # the stateless reply failed
    assert retried["Records"] == first["Records"]
    assert second["state"] == {"count": 2}
    assert first["window"] == {"start": _iso_s(start), "end": _iso_s(start + size)}
    assert first["shardId"] == table.shard and first["eventSourceARN"] == table.arn
    assert not any(
        e["isFinalInvokeForWindow"] or e["isWindowTerminatedEarly"] for e in function.events
    )
    clock.set(start + size + 1)
    await until(lambda: function.events[-1]["isFinalInvokeForWindow"])
    final = function.events[-1]
    assert final["Records"] == [] and final["state"] == {"count": 3}
    assert final["isWindowTerminatedEarly"] is False


# -- lifecycle --------------------------------------------------------------------------------


async def test_disable_then_enable_resumes_after_the_checkpoint(
    broker: Broker, table: Table, function: StreamFunction
) -> None:
    """Spec §12 72 for DynamoDB: no replay, no gap."""
    first = table.put("a", "b")
    uuid = await map_table(broker, table.arn)
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), first[-1]))
    await broker.mappings.update(uuid, {"Enabled": False})
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: not pollers.polling(uuid))
    during = table.put("c", "d")
    await broker.mappings.update(uuid, {"Enabled": True})
    await until(lambda: len(function.delivered()) == 4)
    assert function.delivered() == [*first, *during]
    await until(lambda: _equals(checkpoint(broker, uuid, table.shard), during[-1]))


async def test_a_restart_resumes_after_the_checkpoint(
    aws: str, make_broker: BrokerFactory, table: Table, function: StreamFunction
) -> None:
    """A stop mid-stream loses nothing and re-delivers at most the batch in flight."""
    function.delay_s = 0.05
    sequences = table.put(*[f"item-{n}" for n in range(40)])
    broker = await make_broker(**STREAM_BROKER_SETTINGS)
    await broker.put_function(FUNCTION, function.server.url, timeout_s=2)
    uuid = await map_table(broker, table.arn, BatchSize=4)
    await until(lambda: len(function.events) >= 3)
    await broker.stop(drain_timeout_s=2.0)
    stopped_at = len(function.events)
    saved = await checkpoint(broker, uuid, table.shard)
    assert saved is not None
    again = await make_broker(key_prefix=broker.settings.key_prefix, **STREAM_BROKER_SETTINGS)
    assert again is not None
    await until(lambda: function.delivered()[-1:] == sequences[-1:], timeout=30)
    before, after = function.batches()[:stopped_at], function.batches()[stopped_at:]
    assert after[0][0] == sequences[sequences.index(saved) + 1]
    redelivered = {s for b in before for s in b} & {s for b in after for s in b}
    assert len(redelivered) <= 4  # at most the batch in flight
    assert sorted({*function.delivered()}, key=int) == sequences
