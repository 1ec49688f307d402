"""``arn:aws:s3:::BUCKET`` (on-failure only): ``PutObject`` of the record JSON.

Two key layouts, both dated (UTC) from the record's ``timestamp``:

* async invocation records (spec §5.1):
  ``aws/lambda/async/<function>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>``
* stream on-failure records (spec §9.2), when the delivery names its mapping and shard:
  ``aws/lambda/<ESM-UUID>/<shardId>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>``
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from broker.destination import Delivery, DestinationContext
from destinations.aws import AwsDestination


def key_parts(delivery: Delivery) -> tuple[str, ...]:
    """What follows ``aws/lambda/``: the mapping and shard of a stream record, else
    ``async`` and the function."""
    source = delivery.source or {}
    mapping_uuid, shard_id = source.get("mappingUuid"), source.get("shardId")
    if mapping_uuid and shard_id:
        return (mapping_uuid, shard_id)
    return ("async", delivery.function)


def object_key(parts: Sequence[str], record_timestamp: str) -> str:
    """``aws/lambda/<parts...>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<random uuid>``, dated from a
    record timestamp such as ``2025-03-04T10:11:12.345Z``."""
    moment = datetime.strptime(record_timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    prefix = "/".join(["aws", "lambda", *parts])
    return f"{prefix}/{moment:%Y/%m/%d}/{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"


class S3Destination(AwsDestination):
    service = "s3"

    def __init__(self, target: str, context: DestinationContext) -> None:
        super().__init__(target, context)
        self.bucket = target.rsplit(":", 1)[1]

    async def deliver(self, delivery: Delivery) -> None:
        key = object_key(key_parts(delivery), delivery.record["timestamp"])
        body = delivery.record_text().encode()
        await self.call(
            lambda: self.client().put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        )
