"""Amazon Kinesis Data Streams as a sharded stream source (spec §9.2): shards from
ListShards, records from GetShardIterator / GetRecords, each record shaped as Lambda
delivers it (:func:`kinesis_record`). Batching, retries, checkpoints and the rest are the
stream core's (:mod:`pollers.streams`); the reading rules are :mod:`pollers.aws_shards`'.

A LATEST mapping is pinned at its first start to ``AT_TIMESTAMP:<epoch ms>`` (our wall
clock): records written after that are read even when the first batch is never handled
before a restart. Clock skew between Sluice and AWS moves the pin by as much.

Aggregated (KPL) records are delivered as they are stored, not de-aggregated.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from typing import Any

from broker.arns import execution_role_arn
from broker.mappings.model import EventSourceMapping
from broker.records import iso_ms
from pollers.aws_shards import AwsShardReader, AwsShardSource, Position
from pollers.core import PollerSettings
from pollers.stream_decisions import ShardDesc, StreamRecord

__all__ = ["KinesisReader", "KinesisSource", "default_role_arn", "kinesis_record"]

BATCH_INFO_KEY = "KinesisBatchInfo"
_MAX_RECORDS = 10_000  # GetRecords' Limit ceiling


def default_role_arn(function_arn: str) -> str:
    """The execution role GetFunction reports for every function (``Role`` in
    ``broker/function_admin.py``), in the function's account."""
    return execution_role_arn(function_arn.split(":")[4])


def arrival_s(value: datetime | float) -> float:
    """``ApproximateArrivalTimestamp`` as epoch seconds with millisecond precision."""
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return round(seconds, 3)


def kinesis_record(
    *,
    shard_id: str,
    sequence: str,
    partition_key: str,
    data: bytes,
    arrival: float,
    stream_arn: str,
    invoke_identity_arn: str,
) -> dict[str, Any]:
    """One record as Lambda delivers it (spec §9.2 Kinesis event, same key order)."""
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": sequence,
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": arrival,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": invoke_identity_arn,
        "awsRegion": stream_arn.split(":")[3],
        "eventSourceARN": stream_arn,
    }


class KinesisReader(AwsShardReader):
    """Reads one Kinesis shard forward."""

    pin_prefix = "AT_TIMESTAMP"
    max_limit = _MAX_RECORDS

    def __init__(self, source: KinesisSource, shard: ShardDesc) -> None:
        super().__init__(source, shard)
        self.invoke_identity_arn = source.invoke_identity_arn

    def _pinned(self, timestamp_ms: int) -> Position:
        return Position("AT_TIMESTAMP", timestamp_ms=timestamp_ms)

    def _records_request(self, iterator: str, limit: int) -> tuple[str, dict[str, Any]]:
        # StreamARN as well: moto resolves an ARN-made iterator only with it, AWS accepts it.
        params = {"StreamARN": self.stream_arn, "ShardIterator": iterator, "Limit": limit}
        return "get_records", params

    def _record(self, raw: dict[str, Any]) -> StreamRecord:
        sequence = str(raw["SequenceNumber"])
        arrival = arrival_s(raw["ApproximateArrivalTimestamp"])
        record = kinesis_record(
            shard_id=self.shard_id,
            sequence=sequence,
            partition_key=raw["PartitionKey"],
            data=raw["Data"],
            arrival=arrival,
            stream_arn=self.stream_arn,
            invoke_identity_arn=self.invoke_identity_arn,
        )
        return StreamRecord(sequence, arrival, record, raw["PartitionKey"])


class KinesisSource(AwsShardSource):
    """The shards of the Kinesis stream a mapping reads (``EventSourceArn``).

    ``invoke_identity_arn`` is each record's ``invokeIdentityArn``, the function's execution
    role; by default the role GetFunction reports (:func:`default_role_arn`)."""

    service = "kinesis"
    list_operation = "ListShards"
    batch_info_key = BATCH_INFO_KEY
    arrival_text: Callable[[float], str] = staticmethod(iso_ms)

    def __init__(
        self,
        mapping: EventSourceMapping,
        settings: PollerSettings,
        executor: Executor,
        invoke_identity_arn: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(mapping, settings, executor, clock)
        self.invoke_identity_arn = invoke_identity_arn or default_role_arn(mapping.function_arn)

    async def _shard_page(self, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        # StreamARN with NextToken: AWS forbids only StreamName with it, moto needs the ARN.
        params: dict[str, Any] = {"StreamARN": self.stream_arn}
        if token:
            params["NextToken"] = token
        response = await self.api.call("list_shards", **params)
        return response.get("Shards", []), response.get("NextToken")

    def reader(self, shard: ShardDesc) -> KinesisReader:
        return KinesisReader(self, shard)
