"""S3 on-failure keys: stream records under their mapping and shard (spec §9.2), async records
under ``async/<function>`` (spec §5.1); the delivery goes to moto's standalone server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from broker.dead_letters import dead_letter_entry
from broker.destination import Delivery
from destinations.s3 import key_parts, object_key
from tests.conftest import BrokerFactory, aws_client

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
MAPPING_UUID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
SHARD_ID = "shardId-000000000003"
STREAM_ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:clicks"
BUCKET = "arn:aws:s3:::stream-failures-s3-key"
SOURCE = {
    "eventSourceArn": STREAM_ARN,
    "mappingUuid": MAPPING_UUID,
    "shardId": SHARD_ID,
    "startSequenceNumber": "49660000000000000000000000000000000000000000000000000001",
    "endSequenceNumber": "49660000000000000000000000000000000000000000000000000002",
}


def delivery(source: dict[str, str] | None) -> Delivery:
    return Delivery(
        kind="record",
        target=BUCKET,
        function="clicks",
        request_id="r-1",
        condition="RetryAttemptsExhausted",
        record={"timestamp": "2025-03-04T10:15:41.208Z"},
        payload="{}",
        source=source,
    )


@pytest.mark.parametrize(
    ("parts", "timestamp", "expected"),
    [
        (
            ("async", "orders"),
            "2025-03-04T10:11:12.345Z",
            r"aws/lambda/async/orders/2025/03/04/2025-03-04T10\.11\.12-",
        ),
        (
            (MAPPING_UUID, SHARD_ID),
            "2025-03-04T10:15:41.208Z",
            rf"aws/lambda/{MAPPING_UUID}/{SHARD_ID}/2025/03/04/2025-03-04T10\.15\.41-",
        ),
        (  # the date comes from the timestamp, milliseconds dropped, across a year's end
            ("async", "orders"),
            "2024-12-31T23:59:59.999Z",
            r"aws/lambda/async/orders/2024/12/31/2024-12-31T23\.59\.59-",
        ),
    ],
)
def test_object_key_is_dated_from_the_record_and_ends_in_a_uuid(
    parts: tuple[str, ...], timestamp: str, expected: str
) -> None:
    key = object_key(parts, timestamp)
    assert re.fullmatch(expected + UUID, key), key


def test_object_key_suffix_is_random_per_call() -> None:
    parts, timestamp = ("async", "orders"), "2025-03-04T10:11:12.345Z"
    assert object_key(parts, timestamp) != object_key(parts, timestamp)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (SOURCE, (MAPPING_UUID, SHARD_ID)),
        (None, ("async", "clicks")),
        ({"mappingUuid": MAPPING_UUID}, ("async", "clicks")),  # no shard: not a stream key
        ({"shardId": SHARD_ID}, ("async", "clicks")),
    ],
)
def test_key_parts_use_the_stream_layout_only_with_mapping_and_shard(
    source: dict[str, str] | None, expected: tuple[str, ...]
) -> None:
    assert key_parts(delivery(source)) == expected


def stream_record() -> dict[str, Any]:
    """An on-failure record for S3 as in spec §9.2, key order kept."""
    event = {"Records": [{"kinesis": {"sequenceNumber": SOURCE["startSequenceNumber"]}}]}
    return {
        "requestContext": {
            "requestId": "1e7c9a3b-5d2f-4e81-a0b6-9c8d7e6f5a43",
            "functionArn": FUNCTION_ARN,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "version": "1.0",
        "timestamp": "2025-03-04T10:15:41.208Z",
        "KinesisBatchInfo": {
            "shardId": SHARD_ID,
            "startSequenceNumber": SOURCE["startSequenceNumber"],
            "endSequenceNumber": SOURCE["endSequenceNumber"],
            "approximateArrivalOfFirstRecord": "2025-03-04T10:14:59.123Z",
            "approximateArrivalOfLastRecord": "2025-03-04T10:15:02.456Z",
            "batchSize": 2,
            "streamArn": STREAM_ARN,
        },
        "payload": json.dumps(event),
    }


def bucket_keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def test_stream_record_lands_under_mapping_and_shard_with_the_record_as_body(
    aws: str, make_broker: BrokerFactory
) -> None:
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="stream-failures-s3-key")
    broker = await make_broker(dispatch=False)
    record = stream_record()
    # Shaped as the stream poller's ``_on_failure`` hands it to the deliverer.
    entry = json.loads(
        dead_letter_entry(
            kind="stream_batch_failed",
            entry_id=f"{MAPPING_UUID}/{SHARD_ID}/1/2",
            function="clicks",
            request_id=record["requestContext"]["requestId"],
            condition="RetryAttemptsExhausted",
            record=record,
            payload=record["payload"],
            attempts=3,
            errors=[],
            at="2025-03-04T10:15:41.208Z",
            target=BUCKET,
        )
    )
    entry["source"] = dict(SOURCE)
    assert await broker.deliverer.redeliver("clicks", [entry]) == [entry["id"]]
    (key,) = bucket_keys(s3, "stream-failures-s3-key")
    assert re.fullmatch(
        rf"aws/lambda/{MAPPING_UUID}/{SHARD_ID}/2025/03/04/2025-03-04T10\.15\.41-{UUID}", key
    ), key
    body = s3.get_object(Bucket="stream-failures-s3-key", Key=key)["Body"].read().decode()
    assert body == json.dumps(record)
    assert list(json.loads(body)) == [
        "requestContext",
        "responseContext",
        "version",
        "timestamp",
        "KinesisBatchInfo",
        "payload",
    ]


async def test_record_without_a_source_lands_under_the_async_layout(
    aws: str, make_broker: BrokerFactory
) -> None:
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="async-failures-s3-key")
    broker = await make_broker(dispatch=False)
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": "2025-03-04T10:20:00.000Z",
        "requestContext": {
            "requestId": "4a0e2b77-95c3-4a8e-9b1d-0c3e5f6a7b88",
            "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:orders:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": {"orderId": "A-1003"},
    }
    entry = json.loads(
        dead_letter_entry(
            kind="delivery_failed",
            entry_id="4a0e2b77/delivery/record/arn:aws:s3:::async-failures-s3-key",
            function="orders",
            request_id=record["requestContext"]["requestId"],
            condition="RetriesExhausted",
            record=record,
            payload=json.dumps(record["requestPayload"]),
            attempts=3,
            errors=[],
            at="2025-03-04T10:20:00.000Z",
            target="arn:aws:s3:::async-failures-s3-key",
            delivery={"kind": "record", "errorCode": 200, "errorMessage": ""},
        )
    )
    assert await broker.deliverer.redeliver("orders", [entry]) == [entry["id"]]
    (key,) = bucket_keys(s3, "async-failures-s3-key")
    assert re.fullmatch(rf"aws/lambda/async/orders/2025/03/04/2025-03-04T10\.20\.00-{UUID}", key), (
        key
    )
    body = s3.get_object(Bucket="async-failures-s3-key", Key=key)["Body"].read().decode()
    assert body == json.dumps(record)
