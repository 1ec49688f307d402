"""A discarded stream batch (spec §9.2): kept in Sluice's dead-letter store as a
``stream_batch_failed`` entry with what a replay needs, and its on-failure record sent to
the mapping's ``DestinationConfig.OnFailure``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from broker.dead_letters import dead_letter_entry
from broker.destination import redacted, scheme_of
from broker.models import InvokeResult
from broker.queue import OutboxDone
from broker.records import iso_ms, parse_body
from pollers.core import event_json
from pollers.stream_decisions import StreamRecord, on_failure_record

if TYPE_CHECKING:
    from pollers.streams import ShardConsumer

__all__ = ["discard"]


async def discard(
    consumer: ShardConsumer,
    records: Sequence[StreamRecord],
    condition: str,
    *,
    request_id: str,
    invokes: int,
    last: InvokeResult | None,
) -> None:
    """Keep the discarded records (``stream_batch_failed``), then send the on-failure
    record; a failed delivery leaves the entry, marked so it can be delivered again."""
    broker, mapping, shard = consumer.broker, consumer.mapping, consumer.shard
    now = broker.clock.now()
    target = mapping.on_failure_destination
    request_id = request_id or str(uuid.uuid4())
    record = on_failure_record(
        shard=shard,
        records=records,
        condition=condition,
        request_id=request_id,
        function_arn=mapping.function_arn,
        invoke_count=max(invokes, 1),
        last=last,
        now=now,
    )
    event = event_json({"Records": [r.record for r in records]})
    if target and scheme_of(target) == "s3":
        record["payload"] = event  # S3 only: the whole event as a string (§9.2)
    start, end = records[0].sequence, records[-1].sequence
    entry = json.loads(
        dead_letter_entry(
            kind="stream_batch_failed",
            entry_id=f"{mapping.uuid}/{shard.shard_id}/{start}/{end}",
            function=mapping.function_name,
            request_id=request_id,
            condition=condition,
            record=record,
            payload=event,
            attempts=invokes,
            errors=[] if last is None else [parse_body(last.payload)],
            at=iso_ms(now),
            target=target,
        )
    )
    entry["source"] = {  # what a replay needs besides the event itself
        "eventSourceArn": shard.stream_arn,
        "mappingUuid": mapping.uuid,
        "shardId": shard.shard_id,
        "startSequenceNumber": start,
        "endSequenceNumber": end,
    }
    await _keep(consumer, entry, now)
    consumer.log.info("stream_batch_discarded", condition=condition, records=len(records))
    await consumer.runtime.count(on_failure_records=len(records))
    # DroppedEventCount counts what no destination got; OnFailureDestinationDelivered-
    # EventCount what one did (spec §11.2).
    if not target:
        await consumer.runtime.count(dropped=len(records))
        return
    # The deliverer's retries (tenacity, Retry-After) for one entry shaped like this.
    if await broker.deliverer.redeliver(mapping.function_name, [entry]):
        await consumer.runtime.count(on_failure_delivered=len(records))
        return
    consumer.log.warning(
        "on_failure_delivery_failed", target=redacted(target), records=len(records)
    )
    await consumer.runtime.count(on_failure_delivery_failed=1, dropped=len(records))
    entry["errors"].append(f"OnFailure delivery to {target} failed after retries")
    entry["delivery"] = {"kind": "record", "errorCode": 200, "errorMessage": ""}
    await _keep(consumer, entry, now)


async def _keep(consumer: ShardConsumer, entry: dict[str, Any], now: float) -> None:
    settings = consumer.broker.settings
    await consumer.broker.queue.outbox_done(
        consumer.mapping.function_name,
        now,
        [OutboxDone("", entry["id"], json.dumps(entry))],
        {},
        dead_max_age_s=settings.dead_letter_max_age_s,
        dead_max_count=settings.dead_letter_max_count,
    )
