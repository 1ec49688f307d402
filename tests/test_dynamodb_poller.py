"""What only DynamoDB Streams mappings have, against moto's standalone server (spec §9.2,
§12 73, 79): the change record for INSERT, MODIFY and REMOVE, filters on it, LATEST in whole
seconds, and ``functionError: null`` after a last partial failure. What DynamoDB Streams
share with Kinesis (retries, on-failure records, bisect, windows, the lifecycle) is in
``test_stream_mappings.py``.

Items are written with boto3 (put_item, update_item, delete_item); a real broker with its
pollers on reads the table's stream and invokes the function, a small HTTP server following
the Lambda Invoke contract whose ``answer`` decides, per test, what it replies. moto gives a
table one shard (always the same id) and stamps ``ApproximateCreationDateTime`` with the wall
clock.
"""

from __future__ import annotations

import json
import time
from typing import Any
from uuid import uuid4

import pytest

from broker import Broker
from tests.helpers import until
from tests.servers import ok
from tests.stream_helpers import (
    StreamFunction,
    Table,
    batch_info,
    checkpoint,
    equals,
    make_queue,
    map_source,
    received,
    stats,
)


@pytest.fixture
def source(aws: str) -> Table:
    """This module's source (``function`` and ``broker``: ``tests/stream_fixtures.py``)."""
    return Table(aws)


@pytest.fixture
def table(source: Table) -> Table:
    return source


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
    await map_source(broker, table.arn)
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

    never = await map_source(
        broker,
        numeric.arn,
        FilterCriteria=criteria({"dynamodb": {"NewImage": {"n": {"N": [{"numeric": [">", 1]}]}}}}),
    )
    only_inserts = await map_source(
        broker, inserts.arn, FilterCriteria=criteria({"eventName": ["INSERT"]})
    )
    await until(lambda: equals(checkpoint(broker, never, numeric.shard_id), numeric_sequences[-1]))
    await until(
        lambda: equals(checkpoint(broker, only_inserts, inserts.shard_id), insert_sequences[-1])
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
    latest = await map_source(broker, late.arn, StartingPosition="LATEST")
    await map_source(broker, early.arn)
    await until(lambda: len(function.delivered()) == 2)
    await until(lambda: _pinned(broker, latest, late.shard_id))
    new = late.put("new-1")
    await until(lambda: len(function.delivered()) == 3)
    assert sorted(function.delivered()) == sorted([*early_old, *new])
    seen = [(r["eventSourceARN"], Table.data(r)) for e in function.events for r in e["Records"]]
    assert sorted(seen) == sorted([(early.arn, "old-1"), (early.arn, "old-2"), (late.arn, "new-1")])


async def _pinned(broker: Broker, uuid: str, shard: str) -> bool:
    """The shard's reader started: LATEST is pinned (as a moment, not a record)."""
    return (await checkpoint(broker, uuid, shard) or "").startswith("AFTER_TIME:")


# -- failures ---------------------------------------------------------------------------------


async def test_a_last_partial_failure_gives_a_null_function_error(
    broker: Broker, aws: str, table: Table, function: StreamFunction
) -> None:
    """Spec §9.2: a partial failure uses up a retry; when the last attempt was one, the
    on-failure record has ``functionError: null`` and covers the records retried."""
    queue_url, queue_arn = make_queue(aws, f"ddb-partial-{uuid4().hex[:6]}")
    sequences = table.put(*[f"item-{n}" for n in range(4)])
    function.answer = lambda _e: ok({"batchItemFailures": [{"itemIdentifier": sequences[2]}]})
    uuid = await map_source(
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
    assert record["DDBStreamBatchInfo"] == batch_info(table, function.events[-1]["Records"])
    await until(lambda: equals(checkpoint(broker, uuid, table.shard_id), sequences[-1]))
