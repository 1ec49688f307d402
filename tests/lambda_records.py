"""Records shaped like AWS's sample events for each event source (and Sluice's redis-stream
record), for filter tests."""

from __future__ import annotations

import base64
from typing import Any


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def sqs(body: str, **fields: Any) -> dict[str, Any]:
    """An SQS record from AWS's sample event."""
    return {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "awsRegion": "us-east-2",
        **fields,
    }


def kinesis(data: str, partition_key: str = "1") -> dict[str, Any]:
    """A Kinesis record from AWS's sample event; ``data`` is already base64."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": data,
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-2",
        "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
    }


def dynamodb(event_name: str = "INSERT", **fields: Any) -> dict[str, Any]:
    """A DynamoDB Streams record from AWS's sample event."""
    return {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"Id": {"N": "101"}},
            "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
            "ApproximateCreationDateTime": 1428537600,
            "SequenceNumber": "4421584500000000017450439091",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": (
            "arn:aws:dynamodb:us-east-1:123456789012:table/ExampleTableWithStream/stream/"
            "2015-06-27T00:48:05.899"
        ),
        **fields,
    }


TTL_DELETE = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}


def rabbitmq(data: str, redelivered: bool = False, message_id: str | None = None) -> dict[str, Any]:
    """One message of ``rmqMessagesByQueue[queue]`` from AWS's sample event."""
    return {
        "basicProperties": {
            "contentType": "text/plain",
            "contentEncoding": None,
            "headers": {"header1": {"bytes": [118, 97, 108, 117, 101, 49]}},
            "deliveryMode": 1,
            "priority": 34,
            "correlationId": None,
            "replyTo": None,
            "expiration": "60000",
            "messageId": message_id,
            "timestamp": "Jan 1, 1970, 12:33:41 AM",
            "type": None,
            "userId": "AIDACKCEVSQ6C2EXAMPLE",
            "appId": None,
            "clusterId": None,
            "bodySize": 80,
        },
        "redelivered": redelivered,
        "data": data,
    }


def redis_stream(data: str, **fields: str) -> dict[str, Any]:
    """A Sluice redis-stream record (the shape in broker.filters.sources)."""
    return {
        "eventSource": "sluice:redis-stream",
        "eventSourceARN": "redis-stream:orders",
        "eventID": "orders:1700000000000-0",
        "eventName": "sluice:redis-stream:record",
        "eventVersion": "1.0",
        "redisStream": {
            "streamName": "orders",
            "entryId": "1700000000000-0",
            "sequenceNumber": "1700000000000-0",
            "approximateArrivalTimestamp": 1700000000.0,
            "fields": fields,
            "data": data,
        },
    }
