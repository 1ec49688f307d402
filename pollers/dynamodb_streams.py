"""DynamoDB Streams as a sharded stream source (spec §9.2): shards from DescribeStream,
records from GetShardIterator / GetRecords, each record shaped as Lambda delivers it
(:func:`dynamodb_record`). Batching, retries, checkpoints and the rest are the stream
core's (:mod:`pollers.streams`); the reading rules are :mod:`pollers.aws_shards`'.

DynamoDB Streams has no AT_TIMESTAMP iterator, so a LATEST mapping is pinned at its first
start to ``AFTER_TIME:<epoch ms>`` (our wall clock): reading from that marker starts at
TRIM_HORIZON and skips records created before the pin. ``ApproximateCreationDateTime`` has
whole seconds only, so records created in the pin's own second, before the pin, are
delivered too (at least once, never lost). Until the first record is handled a restart
reads the shard from its start again, skipping.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from broker.records import iso_s
from pollers.aws_shards import TRIM_HORIZON, AwsShardReader, AwsShardSource, Position
from pollers.stream_decisions import ShardDesc, StreamRecord

__all__ = [
    "DynamoDbStreamReader",
    "DynamoDbStreamSource",
    "creation_s",
    "dynamodb_record",
    "iso_s",
    "json_attribute",
]

BATCH_INFO_KEY = "DDBStreamBatchInfo"


def creation_s(value: datetime | float) -> float:
    """``ApproximateCreationDateTime`` as epoch seconds, whole seconds (as AWS gives it)."""
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return float(math.floor(seconds))


def _b64(value: bytes | str) -> str:
    return base64.b64encode(value).decode() if isinstance(value, bytes) else value


def json_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """An AttributeValue as JSON: botocore decodes binary (``B``, ``BS``, also inside ``M``
    and ``L``) to bytes; Lambda delivers them base64-encoded."""
    shaped: dict[str, Any] = {}
    for tag, inner in value.items():
        if tag == "B":
            shaped[tag] = _b64(inner)
        elif tag == "BS":
            shaped[tag] = [_b64(item) for item in inner]
        elif tag == "M":
            shaped[tag] = {name: json_attribute(item) for name, item in inner.items()}
        elif tag == "L":
            shaped[tag] = [json_attribute(item) for item in inner]
        else:
            shaped[tag] = inner
    return shaped


def _item(attributes: dict[str, Any]) -> dict[str, Any]:
    return {name: json_attribute(value) for name, value in attributes.items()}


def dynamodb_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record as Lambda delivers it (spec §9.2 DynamoDB event, same key
    order); ``userIdentity`` (a TTL deletion) is passed on when present."""
    change = raw["dynamodb"]
    shaped: dict[str, Any] = {
        "ApproximateCreationDateTime": creation_s(change["ApproximateCreationDateTime"])
    }
    for key in ("Keys", "NewImage", "OldImage"):
        if key in change:
            shaped[key] = _item(change[key])
    shaped["SequenceNumber"] = change["SequenceNumber"]
    shaped["SizeBytes"] = change["SizeBytes"]
    shaped["StreamViewType"] = change["StreamViewType"]
    record: dict[str, Any] = {
        "eventID": raw["eventID"],
        "eventName": raw["eventName"],
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": stream_arn.split(":")[3],
        "dynamodb": shaped,
    }
    if "userIdentity" in raw:
        record["userIdentity"] = raw["userIdentity"]
    record["eventSourceARN"] = stream_arn
    return record


class DynamoDbStreamReader(AwsShardReader):
    """Reads one DynamoDB Streams shard forward."""

    pin_prefix = "AFTER_TIME"
    max_limit = 1000
    arn_param = "StreamArn"
    sequence_param = "SequenceNumber"
    _not_before_s: float | None = None  # AFTER_TIME: skip records created before it

    async def seek(self, checkpoint: str | None) -> str | None:
        self._not_before_s = None
        return await super().seek(checkpoint)

    def _pinned(self, timestamp_ms: int) -> Position:
        # Whole seconds on both sides: a record of the pin's second is kept (at least once).
        self._not_before_s = float(math.floor(timestamp_ms / 1000))
        return TRIM_HORIZON

    def _keep(self, record: StreamRecord) -> bool:
        return self._not_before_s is None or record.arrival_s >= self._not_before_s

    def _records_request(self, iterator: str, limit: int) -> tuple[str, dict[str, Any]]:
        return "get_records", {"ShardIterator": iterator, "Limit": limit}

    def _record(self, raw: dict[str, Any]) -> StreamRecord:
        record = dynamodb_record(raw, self.stream_arn)
        change = record["dynamodb"]
        key = json.dumps(change.get("Keys", {}), sort_keys=True)
        return StreamRecord(
            change["SequenceNumber"], change["ApproximateCreationDateTime"], record, key
        )


class DynamoDbStreamSource(AwsShardSource):
    """The shards of the DynamoDB stream a mapping reads (``EventSourceArn``)."""

    service = "dynamodbstreams"
    list_operation = "DescribeStream"
    batch_info_key = BATCH_INFO_KEY
    arrival_text: Callable[[float], str] = staticmethod(iso_s)

    async def _shard_page(self, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        params: dict[str, Any] = {"StreamArn": self.stream_arn}
        if token:
            params["ExclusiveStartShardId"] = token
        description = (await self.api.call("describe_stream", **params))["StreamDescription"]
        return description.get("Shards", []), description.get("LastEvaluatedShardId")

    def reader(self, shard: ShardDesc) -> DynamoDbStreamReader:
        return DynamoDbStreamReader(self, shard)
