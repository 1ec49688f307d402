"""The DynamoDB Streams shard source (spec §9.2) against moto's server: the record as
Lambda delivers it for each change and view type, binary attributes, starting positions,
checkpoints, the end of a closed shard, trimmed data and errors."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.mappings.model import SourceKind
from pollers.dynamodb_streams import DynamoDbStreamSource, dynamodb_record
from pollers.stream_decisions import ShardDesc, ShardSource, StreamRecord
from tests.conftest import aws_client
from tests.test_kinesis_source import (
    ACCOUNT,
    SETTINGS,
    assert_missing,
    fail_next,
    make_mapping,
)

STREAM_ARN = "arn:aws:dynamodb:eu-west-1:210987654321:table/carts/stream/2025-01-02T03:04:05.678"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture
def dynamodb(aws: str) -> Any:
    return aws_client("dynamodb", aws)


def make_table(dynamodb: Any, view: str = "NEW_AND_OLD_IMAGES") -> str:
    name = f"carts-{uuid.uuid4().hex[:8]}"
    created = dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    return str(created["TableDescription"]["LatestStreamArn"])


def table_of(arn: str) -> str:
    return arn.split(":")[5].split("/")[1]


def put_keys(dynamodb: Any, arn: str, *keys: str) -> None:
    for key in keys:
        dynamodb.put_item(TableName=table_of(arn), Item={"pk": {"S": key}})


def source_for(
    arn: str, executor: ThreadPoolExecutor, position: str = "TRIM_HORIZON"
) -> DynamoDbStreamSource:
    mapping = make_mapping(arn, SourceKind.DYNAMODB, position)
    return DynamoDbStreamSource(mapping, SETTINGS, executor)


async def read_from(
    source: DynamoDbStreamSource, checkpoint: str | None = None
) -> list[StreamRecord]:
    """What a fresh reader of the stream's shard reads from ``checkpoint`` until empty."""
    (shard,) = await source.shards()
    reader = source.reader(shard)
    await reader.seek(checkpoint)
    records: list[StreamRecord] = []
    while batch := await reader.read(100, 0.05):
        records.extend(batch)
    return records


def test_record_is_the_spec_example_key_for_key() -> None:
    raw = {
        "eventID": "e3b0c44298fc1c149afbf4c8996fb924",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {  # as botocore parses it: a datetime, keys in its own order
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "SequenceNumber": "3100000000012345678901",
            "SizeBytes": 58,
            "OldImage": {"pk": {"S": "cart#9"}, "items": {"N": "2"}},
            "NewImage": {"pk": {"S": "cart#9"}, "items": {"N": "3"}},
            "Keys": {"pk": {"S": "cart#9"}},
            "ApproximateCreationDateTime": datetime.fromtimestamp(1741083072.6, UTC),
        },
    }
    expected = {
        "eventID": "e3b0c44298fc1c149afbf4c8996fb924",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-west-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1741083072.0,
            "Keys": {"pk": {"S": "cart#9"}},
            "NewImage": {"pk": {"S": "cart#9"}, "items": {"N": "3"}},
            "OldImage": {"pk": {"S": "cart#9"}, "items": {"N": "2"}},
            "SequenceNumber": "3100000000012345678901",
            "SizeBytes": 58,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": STREAM_ARN,
    }
    assert json.dumps(dynamodb_record(raw, STREAM_ARN)) == json.dumps(expected)


async def test_insert_modify_remove_with_new_and_old_images(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb)
    table = table_of(arn)
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "cart#9"}, "items": {"N": "2"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "cart#9"}, "items": {"N": "3"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "cart#9"}})
    source: ShardSource = source_for(arn, executor)
    assert source.batch_info_key == "DDBStreamBatchInfo"
    assert source.arrival_text(1741083299.9) == "2025-03-04T10:14:59Z"
    insert, modify, remove = await read_from(source_for(arn, executor))
    v1 = {"pk": {"S": "cart#9"}, "items": {"N": "2"}}
    v2 = {"pk": {"S": "cart#9"}, "items": {"N": "3"}}
    assert [r.record["eventName"] for r in (insert, modify, remove)] == [
        "INSERT",
        "MODIFY",
        "REMOVE",
    ]
    assert (insert.record["dynamodb"].get("OldImage"), insert.record["dynamodb"]["NewImage"]) == (
        None,
        v1,
    )
    assert (modify.record["dynamodb"]["OldImage"], modify.record["dynamodb"]["NewImage"]) == (
        v1,
        v2,
    )
    assert (remove.record["dynamodb"]["OldImage"], remove.record["dynamodb"].get("NewImage")) == (
        v2,
        None,
    )
    record = modify.record
    assert list(record) == [
        "eventID",
        "eventName",
        "eventVersion",
        "eventSource",
        "awsRegion",
        "dynamodb",
        "eventSourceARN",
    ]
    assert list(record["dynamodb"]) == [
        "ApproximateCreationDateTime",
        "Keys",
        "NewImage",
        "OldImage",
        "SequenceNumber",
        "SizeBytes",
        "StreamViewType",
    ]
    assert (record["eventVersion"], record["eventSource"], record["awsRegion"]) == (
        "1.1",
        "aws:dynamodb",
        "us-east-1",
    )
    assert record["eventSourceARN"] == arn
    assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    assert modify.key == json.dumps({"pk": {"S": "cart#9"}}, sort_keys=True)
    assert modify.sequence == record["dynamodb"]["SequenceNumber"]
    assert modify.arrival_s == record["dynamodb"]["ApproximateCreationDateTime"]
    assert modify.arrival_s == int(modify.arrival_s)  # whole seconds
    assert abs(modify.arrival_s - time.time()) < 60


async def test_keys_only_records_carry_no_images(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb, "KEYS_ONLY")
    dynamodb.put_item(TableName=table_of(arn), Item={"pk": {"S": "a"}, "n": {"N": "1"}})
    (insert,) = await read_from(source_for(arn, executor))
    assert insert.record["dynamodb"]["Keys"] == {"pk": {"S": "a"}}
    assert "NewImage" not in insert.record["dynamodb"]
    assert "OldImage" not in insert.record["dynamodb"]
    assert insert.record["dynamodb"]["StreamViewType"] == "KEYS_ONLY"


async def test_binary_attributes_are_base64_at_any_depth(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb, "NEW_IMAGE")
    item = {
        "pk": {"S": "bin"},
        "b": {"B": b"\x00\xff"},
        "bs": {"BS": [b"\x01", b"\x02"]},
        "m": {"M": {"inner": {"B": b"\x03"}, "list": {"L": [{"B": b"\x04"}, {"S": "s"}]}}},
    }
    dynamodb.put_item(TableName=table_of(arn), Item=item)
    (insert,) = await read_from(source_for(arn, executor))

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    assert insert.record["dynamodb"]["NewImage"] == {
        "pk": {"S": "bin"},
        "b": {"B": b64(b"\x00\xff")},
        "bs": {"BS": [b64(b"\x01"), b64(b"\x02")]},
        "m": {
            "M": {"inner": {"B": b64(b"\x03")}, "list": {"L": [{"B": b64(b"\x04")}, {"S": "s"}]}}
        },
    }
    json.dumps(insert.record)  # JSON all the way down


async def test_latest_is_pinned_so_a_restart_reads_what_came_meanwhile(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb)
    put_keys(dynamodb, arn, "old")
    source = source_for(arn, executor, "LATEST")
    (shard,) = await source.shards()
    marker = await source.reader(shard).seek(None)
    assert marker is not None and marker.startswith("AFTER_TIME:")
    pin_s = int(marker.removeprefix("AFTER_TIME:")) // 1000
    put_keys(dynamodb, arn, "new")
    records = await read_from(source, marker)  # a restart before any record was handled
    keys = [r.record["dynamodb"]["Keys"]["pk"]["S"] for r in records]
    assert keys[-1] == "new"
    # Whole seconds: "old" comes too only when it was written in the pin's own second.
    assert keys == ["new"] or (keys == ["old", "new"] and records[0].arrival_s == pin_s)


@pytest.mark.parametrize(("pin_ms", "expected"), [(0, ["a", "b"]), (2**42, [])])
async def test_an_after_time_marker_skips_records_created_before_it(
    dynamodb: Any, executor: ThreadPoolExecutor, pin_ms: int, expected: list[str]
) -> None:
    arn = make_table(dynamodb)
    put_keys(dynamodb, arn, "a", "b")
    records = await read_from(source_for(arn, executor), f"AFTER_TIME:{pin_ms}")
    assert [r.record["dynamodb"]["Keys"]["pk"]["S"] for r in records] == expected


async def test_a_checkpoint_resumes_after_it(dynamodb: Any, executor: ThreadPoolExecutor) -> None:
    arn = make_table(dynamodb)
    put_keys(dynamodb, arn, "a", "b", "c")
    source = source_for(arn, executor, "LATEST")
    first, *rest = await read_from(source_for(arn, executor))
    assert await read_from(source, first.sequence) == rest


async def test_a_closed_shard_ends_with_its_last_record(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb)
    put_keys(dynamodb, arn, "a", "b")
    source = source_for(arn, executor)
    (shard,) = await source.shards()
    assert shard.parents == () and not shard.closed  # moto never closes a stream's shard
    first, last = await read_from(source)
    # As the coordinator would pass it once DescribeStream says the shard is closed:
    reader = source.reader(ShardDesc(shard.shard_id, (), last.sequence))
    await reader.seek(first.sequence)
    assert await reader.read(10, 1.0) == [last]
    assert reader.ended


async def test_trimmed_data_restarts_at_trim_horizon_with_a_warning(
    dynamodb: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_table(dynamodb)
    put_keys(dynamodb, arn, "a", "b")
    source = source_for(arn, executor)
    everything = await read_from(source)
    reader = source.reader((await source.shards())[0])
    await reader.seek(everything[-1].sequence)
    fail_next(await source.api.get(), "GetShardIterator", "TrimmedDataAccessException")
    with capture_logs() as logs:
        assert await reader.read(10, 1.0) == everything
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["shard_trimmed_restart"]


async def test_a_missing_stream_is_a_stream_read_error(
    aws: str, executor: ThreadPoolExecutor
) -> None:
    arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/missing/stream/2025-01-02T03:04:05.678"
    await assert_missing(
        source_for(arn, executor), "DescribeStream", "shardId-00000001541626099285-f35f62ef"
    )
