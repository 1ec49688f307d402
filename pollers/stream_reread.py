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

import asyncio
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from redis.exceptions import RedisError

from broker.errors import ResourceNotFoundError
from broker.keys import Keys
from broker.mappings.model import EventSourceMapping, SourceKind, State
from broker.redis_client import as_text
from broker.rereads import Reread
from pollers.aws_shards import AwsClient, AwsShardReader, AwsShardSource
from pollers.core import MappingRuntime, PollerSettings
from pollers.dynamodb_streams import DynamoDbStreamReader, DynamoDbStreamSource
from pollers.kinesis import KinesisReader, KinesisSource
from pollers.redis_streams import SHARD_ID, arrival_s, redis_stream_record
from pollers.stream_decisions import (
    ShardDesc,
    StreamPolicy,
    StreamReadError,
    StreamRecord,
    retry_delay_s,
)
from pollers.streams import ShardConsumer

if TYPE_CHECKING:
    from broker.core import Broker

__all__ = ["Rereader", "stream_kind"]

log = structlog.get_logger("sluice.pollers")

_THROTTLED_TRIES = 5  # throttled GetRecords in a row before giving up (the payload is kept)
_EMPTY_PAGES_MAX = 20  # Kinesis: empty pages while behind (gaps) before giving up
_XRANGE_PAGE = 1000

_Source = TypeVar("_Source", bound=AwsShardSource)


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


class _AwsRange(AwsShardReader):
    """A shard reader that starts AT a sequence number (the poller's start after one) and
    stops at another. The iterator, paging, expiry and error translation are the base's."""

    _at = ""

    async def _new_iterator(self) -> str:
        if self._last is not None:  # renewed after an expiry: on after the last record read
            return await super()._new_iterator()
        params = {
            self.arn_param: self.stream_arn,
            "ShardId": self.shard_id,
            "ShardIteratorType": "AT_SEQUENCE_NUMBER",
            self.sequence_param: self._at,
        }
        response = await self.api.call("get_shard_iterator", **params)
        return str(response["ShardIterator"])

    async def span(self, start: str, end: str) -> list[StreamRecord]:
        """The records from ``start`` to ``end``, inclusive; StreamReadError when the shard
        no longer holds all of them."""
        self._at, last = start, int(end)
        found: list[StreamRecord] = []
        throttled = empty = 0
        done = False
        while not done:
            response = await self._get_records(self.max_limit)
            if response is None:
                throttled += 1
                if throttled >= _THROTTLED_TRIES:
                    raise StreamReadError(f"GetRecords on {self.stream_arn} kept being throttled")
                low, high = self.settings.throttle_backoff_s, self.settings.throttle_backoff_max_s
                await asyncio.sleep(retry_delay_s(throttled, low, high))
                continue
            throttled = 0
            raw = response.get("Records", [])
            for record in self._take(raw, response):
                sequence = int(record.sequence)
                if not found and record.sequence != start:
                    raise StreamReadError(
                        f"shard {self.shard_id} trimmed past {start}: its first record "
                        f"from there is {record.sequence}"
                    )
                if found and sequence <= int(found[-1].sequence):
                    raise StreamReadError(f"shard {self.shard_id} was trimmed while re-read")
                if sequence <= last:
                    found.append(record)
                if sequence >= last:
                    done = True
                    break
            # DynamoDB Streams gives no MillisBehindLatest: an empty page is the shard's tip.
            caught_up = not raw and response.get("MillisBehindLatest", 0) == 0
            empty = empty + 1 if not raw else 0
            if self.ended or caught_up or empty >= _EMPTY_PAGES_MAX:
                break
        if not found:
            raise StreamReadError(f"shard {self.shard_id} has no record {start}")
        if found[-1].sequence != end:
            raise StreamReadError(
                f"shard {self.shard_id} holds {start} but not {end} (it ends at "
                f"{found[-1].sequence})"
            )
        return found


class _KinesisRange(_AwsRange, KinesisReader):
    """A Kinesis shard's range, records shaped as the Kinesis poller delivers them."""


class _DynamoDbRange(_AwsRange, DynamoDbStreamReader):
    """A DynamoDB Streams shard's range, records shaped as that poller delivers them."""


class Rereader:
    """Re-reads failed stream batches for one replay (a
    :class:`broker.rereads.StreamRereader`): boto3 clients are made once per service and
    region and shared by the entries replayed together; :meth:`close` releases them."""

    def __init__(self, broker: Broker, settings: PollerSettings | None = None) -> None:
        self.broker = broker
        self.settings = settings or PollerSettings()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sluice-reread")
        self._clients: dict[tuple[str, str], AwsClient] = {}

    async def reread(self, source: Mapping[str, Any]) -> Reread:
        """The records of a ``stream_batch_failed`` entry's ``source`` range, as the poller
        would deliver them now; ``Reread(None, reason)`` when they cannot be read again."""
        arn, uuid = str(source.get("eventSourceArn", "")), str(source.get("mappingUuid", ""))
        try:
            found = await self._reread(source, arn, uuid)
        except (StreamReadError, RedisError) as exc:
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
        if kind is SourceKind.REDIS_STREAM:
            records = await self._redis_range(arn, shard_id, start, end)
        else:
            records = await self._reader(kind, mapping, shard_id).span(start, end)
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

    def _reader(self, kind: SourceKind, mapping: EventSourceMapping, shard_id: str) -> _AwsRange:
        shard = ShardDesc(shard_id)
        if kind is SourceKind.KINESIS:
            kinesis = KinesisSource(mapping, self.settings, self._executor)
            return _KinesisRange(self._share(kinesis), shard)
        dynamodb = DynamoDbStreamSource(mapping, self.settings, self._executor)
        return _DynamoDbRange(self._share(dynamodb), shard)

    def _share(self, source: _Source) -> _Source:
        """``source`` with the client of its service and region made before, if any."""
        key = (source.service, source.region)
        source.api = self._clients.setdefault(key, source.api)
        return source

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
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
