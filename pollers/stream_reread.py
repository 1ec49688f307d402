"""Re-reading a failed stream batch by its sequence range (``sluice dlq replay``), for the
three stream sources: Kinesis, DynamoDB Streams and ``redis-stream:NAME`` (the key NAME on
Sluice's own Redis, one shard, entry ids ``<ms>-<seq>`` as sequence numbers).

The range is read with the pollers' own readers and record shapes, from the start sequence
(inclusive: ``AT_SEQUENCE_NUMBER``, ``XRANGE start end``) to the end sequence, then passed
through the mapping's current filters. With ``ParallelizationFactor`` above one a batch
holds only the records of one lane (keys hash to lanes), so only the start record's lane is
kept: under the factor the mapping has now, which is the one at failure unless updated.

"While the stream keeps them": the first record read must be the start sequence (not
trimmed past retention or deleted), and the range must be read to its end sequence;
otherwise, or when the mapping, stream or shard is gone or a read fails, the answer is
``Reread(None, reason)`` and the replay sends the event stored with the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from redis.exceptions import RedisError

from broker.errors import ResourceNotFoundError
from broker.extras import AWS, MissingExtraError, require
from broker.keys import Keys
from broker.mappings.model import EventSourceMapping, SourceKind, State
from broker.redis_client import as_text
from broker.rereads import Reread
from pollers.core import MappingRuntime, PollerSettings
from pollers.redis_streams import SHARD_ID, arrival_s, redis_stream_record
from pollers.stream_decisions import (
    StreamPolicy,
    StreamReadError,
    StreamRecord,
)
from pollers.streams import ShardConsumer

if TYPE_CHECKING:
    from broker.core import Broker
    from pollers.stream_reread_aws import AwsRanges

__all__ = ["Rereader", "stream_kind"]

log = structlog.get_logger("sluice.pollers")

_XRANGE_PAGE = 1000


def stream_kind(arn: str) -> SourceKind | None:
    """The stream source ``arn`` names; None for any other source."""
    if arn.startswith("redis-stream:"):
        return SourceKind.REDIS_STREAM
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return None
    service, resource = parts[2], parts[5]
    if service == "kinesis" and resource.startswith("stream/"):
        return SourceKind.KINESIS
    if service == "dynamodb" and "/stream/" in resource:
        return SourceKind.DYNAMODB
    return None


class Rereader:
    """Re-reads failed stream batches for one replay (a
    :class:`broker.rereads.StreamRereader`). Redis streams need nothing more; Kinesis and
    DynamoDB Streams ranges go through :mod:`pollers.stream_reread_aws` (boto3), whose
    clients are shared by the entries replayed together; :meth:`close` releases them."""

    def __init__(self, broker: Broker, settings: PollerSettings | None = None) -> None:
        self.broker = broker
        self.settings = settings or PollerSettings()
        self._aws: AwsRanges | None = None  # made at the first Kinesis/DynamoDB range

    def _aws_ranges(self) -> AwsRanges:
        """The AWS range readers (boto3, the ``aws`` extra), imported at first use; a
        missing extra is a :class:`~broker.extras.MissingExtraError`."""
        if self._aws is None:
            require(*AWS, "re-reading a Kinesis or DynamoDB Streams batch")
            from pollers.stream_reread_aws import AwsRanges

            self._aws = AwsRanges(self.settings)
        return self._aws

    async def reread(self, source: Mapping[str, Any]) -> Reread:
        """The records of a ``stream_batch_failed`` entry's ``source`` range, as the poller
        would deliver them now; ``Reread(None, reason)`` when they cannot be read again."""
        arn, uuid = str(source.get("eventSourceArn", "")), str(source.get("mappingUuid", ""))
        try:
            found = await self._reread(source, arn, uuid)
        except (StreamReadError, RedisError, MissingExtraError) as exc:
            found = Reread(None, str(exc) or repr(exc))
        except Exception as exc:  # a re-read only improves on the stored event: fall back
            log.warning("stream_reread_failed", esm=uuid, stream=arn, error=repr(exc))
            found = Reread(None, f"re-read failed: {exc!r}")
        if found.records is None:
            log.info("stream_reread_unavailable", esm=uuid, stream=arn, reason=found.reason)
        return found

    async def _reread(self, source: Mapping[str, Any], arn: str, uuid: str) -> Reread:
        kind = stream_kind(arn)
        if kind is None:
            return Reread(None, f"{arn or 'the entry'} names no stream source Sluice re-reads")
        aws = None if kind is SourceKind.REDIS_STREAM else self._aws_ranges()
        try:
            shard_id, start, end = (
                str(source[name])
                for name in ("shardId", "startSequenceNumber", "endSequenceNumber")
            )
        except KeyError as exc:
            return Reread(None, f"the entry's source lacks {exc}")
        try:
            mapping = await self.broker.mappings.mapping(uuid)
        except ResourceNotFoundError:
            return Reread(None, f"mapping {uuid} deleted")
        if mapping.state is State.DELETING:
            return Reread(None, f"mapping {uuid} deleted")
        if mapping.event_source_arn != arn:
            return Reread(None, f"mapping {uuid} reads {mapping.event_source_arn}, not {arn}")
        if aws is None:
            records = await self._redis_range(arn, shard_id, start, end)
        else:
            records = await aws.span(kind, mapping, shard_id, start, end)
        return self._select(mapping, records)

    def _select(self, mapping: EventSourceMapping, records: list[StreamRecord]) -> Reread:
        """The records of the start record's lane that the mapping's filters keep, as the
        stream core hands them to a lane."""
        lanes = StreamPolicy.of(mapping, self.settings).lanes
        lane = ShardConsumer._lane_of(records[0].key, lanes)
        if ShardConsumer._lane_of(records[-1].key, lanes) != lane:
            return Reread(
                None,
                f"the range's first and last records are in different lanes with "
                f"ParallelizationFactor {lanes}: it changed since the batch failed",
            )
        keep = MappingRuntime(self.broker, mapping).filter.keep
        kept = [
            r.record
            for r in records
            if ShardConsumer._lane_of(r.key, lanes) == lane and keep(r.record)
        ]
        if not kept:
            return Reread([], f"the mapping's filters now keep none of {len(records)} records")
        return Reread(kept)

    async def _redis_range(
        self, arn: str, shard_id: str, start: str, end: str
    ) -> list[StreamRecord]:
        """Entries ``start`` to ``end`` of stream NAME on Sluice's Redis (XRANGE, paged)."""
        name = arn.split(":", 1)[1]
        if shard_id != SHARD_ID:
            raise StreamReadError(f"{arn} has one shard, {SHARD_ID}, not {shard_id}")
        stream = Keys.user_stream(name)
        found: list[StreamRecord] = []
        low = start
        while True:
            page: Any = await self.broker.redis.xrange(stream, min=low, max=end, count=_XRANGE_PAGE)
            for raw_id, fields in page:
                entry_id = as_text(raw_id)
                record = redis_stream_record(name, entry_id, fields)
                found.append(StreamRecord(entry_id, arrival_s(entry_id), record))
            if not found:
                raise StreamReadError(f"stream {name} no longer holds {start} (trimmed or deleted)")
            if found[0].sequence != start:
                raise StreamReadError(
                    f"stream {name} trimmed past {start}: its first entry from there is "
                    f"{found[0].sequence}"
                )
            if len(page) < _XRANGE_PAGE:
                break
            low = f"({found[-1].sequence}"
        if found[-1].sequence != end:
            raise StreamReadError(f"stream {name} holds {start} but no longer {end}")
        return found

    async def close(self) -> None:
        if self._aws is not None:
            self._aws.close()
            self._aws = None
