"""``arn:aws:s3:::BUCKET`` (on-failure only): ``PutObject`` of the record at
``aws/lambda/async/<function>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`` (spec §5.1)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from broker.destination import Delivery, DestinationContext
from destinations.aws import AwsDestination


def object_key(function: str, record_timestamp: str) -> str:
    moment = datetime.strptime(record_timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (
        f"aws/lambda/async/{function}/{moment:%Y/%m/%d}/{moment:%Y-%m-%dT%H.%M.%S}-{uuid.uuid4()}"
    )


class S3Destination(AwsDestination):
    service = "s3"

    def __init__(self, target: str, context: DestinationContext) -> None:
        super().__init__(target, context)
        self.bucket = target.rsplit(":", 1)[1]

    async def deliver(self, delivery: Delivery) -> None:
        key = object_key(delivery.function, delivery.record["timestamp"])
        body = delivery.record_text().encode()
        await self.call(
            lambda: self.client().put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        )
