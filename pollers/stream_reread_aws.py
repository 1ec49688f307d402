"""Re-reading a Kinesis or DynamoDB Streams shard's range (``sluice dlq replay``), with the
pollers' own shard readers and record shapes; imported by :mod:`pollers.stream_reread` only
for those sources, since it needs boto3 (the ``aws`` extra)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from broker.mappings.model import EventSourceMapping, SourceKind
from pollers.aws_shards import AwsClient, AwsShardReader, AwsShardSource
from pollers.core import PollerSettings
from pollers.dynamodb_streams import DynamoDbStreamReader, DynamoDbStreamSource
from pollers.kinesis import KinesisReader, KinesisSource
from pollers.stream_decisions import ShardDesc, StreamReadError, StreamRecord, retry_delay_s

__all__ = ["AwsRanges"]

_THROTTLED_TRIES = 5  # throttled GetRecords in a row before giving up (the payload is kept)
_EMPTY_PAGES_MAX = 20  # Kinesis: empty pages while behind (gaps) before giving up

_Source = TypeVar("_Source", bound=AwsShardSource)


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


class AwsRanges:
    """Range readers for one replay: boto3 clients are made once per service and region and
    shared by the entries replayed together; :meth:`close` releases them."""

    def __init__(self, settings: PollerSettings) -> None:
        self.settings = settings
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sluice-reread")
        self._clients: dict[tuple[str, str], AwsClient] = {}

    async def span(
        self, kind: SourceKind, mapping: EventSourceMapping, shard_id: str, start: str, end: str
    ) -> list[StreamRecord]:
        """Records ``start`` to ``end`` of the shard, inclusive (StreamReadError if not all
        are there any more)."""
        return await self._reader(kind, mapping, shard_id).span(start, end)

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

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
