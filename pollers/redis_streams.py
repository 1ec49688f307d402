"""``redis-stream:NAME`` event source: a one-shard, Kinesis-like stream on Sluice's own Redis
(the key NAME itself, no prefix). Reading only; batching, retries, bisect, partial batch
responses, record age, on-failure and checkpoints are the shared stream core's
(:mod:`pollers.streams`).

An entry id ``<ms>-<seq>`` is the record's sequence number and its ``<ms>`` its arrival
time. ``XREAD BLOCK`` waits at most ``stream_read_block_s`` so a stop is noticed promptly;
one consumer per mapping (ParallelizationFactor and tumbling windows do not apply).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from broker.keys import Keys
from pollers.core import MappingRuntime, PollerSettings
from pollers.stream_decisions import ShardInfo, StreamReadError, StreamRecord
from pollers.streams import ShardConsumer

__all__ = [
    "SHARD_ID",
    "RedisStreamPoller",
    "RedisStreamReader",
    "arrival_s",
    "redis_stream_record",
    "start_after",
]

SHARD_ID = "shardId-000000000000"  # the stream is one shard
BATCH_INFO_KEY = "RedisStreamBatchInfo"
_START = "0-0"  # below every entry id
_MAX_SEQ = 2**64 - 1


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def arrival_s(entry_id: str) -> float:
    """Epoch seconds (ms precision) of an entry id ``<ms>-<seq>``."""
    return int(entry_id.split("-", 1)[0]) / 1000


def start_after(position: str, timestamp_s: float | None, last_id: str | None) -> str:
    """The entry id reading starts after, when a mapping has no checkpoint yet:
    TRIM_HORIZON the start, LATEST the stream's last id, AT_TIMESTAMP the last id possible
    before ``timestamp_s`` (entries at or after it are read)."""
    if position == "LATEST":
        return last_id or _START
    if position == "AT_TIMESTAMP" and timestamp_s is not None:
        first_ms = math.ceil(round(timestamp_s * 1000, 3))
        return f"{first_ms - 1}-{_MAX_SEQ}" if first_ms > 0 else _START
    return _START


def redis_stream_record(
    name: str, entry_id: str, fields: Mapping[bytes | str, bytes | str]
) -> dict[str, Any]:
    """One entry as the function sees it (``broker/filters/sources.py``: "Redis Streams
    record shape"): ``data`` base64-encoded, the other fields as strings."""
    data = b""
    others: dict[str, str] = {}
    for key, value in fields.items():
        if _text(key) == "data":
            data = value if isinstance(value, bytes) else value.encode()
        else:
            others[_text(key)] = _text(value)
    return {
        "eventSource": "sluice:redis-stream",
        "eventSourceARN": f"redis-stream:{name}",
        "eventID": f"{name}:{entry_id}",
        "eventName": "sluice:redis-stream:record",
        "eventVersion": "1.0",
        "redisStream": {
            "streamName": name,
            "entryId": entry_id,
            "sequenceNumber": entry_id,
            "approximateArrivalTimestamp": arrival_s(entry_id),
            "fields": others,
            "data": base64.b64encode(data).decode(),
        },
    }


class RedisStreamReader:
    """Reads stream NAME forward from a position (an entry id, exclusive)."""

    def __init__(
        self, redis: aioredis.Redis, name: str, position: str, timestamp_s: float | None
    ) -> None:
        self.redis = redis
        self.name = name
        self.stream = Keys.user_stream(name)
        self.position = position
        self.timestamp_s = timestamp_s
        self.after = _START
        self.ended = False  # a Redis stream is never closed

    def closed(self, ending_sequence: str | None) -> None:
        """Never called: a Redis stream has one shard, never resharded."""

    async def seek(self, checkpoint: str | None) -> str | None:
        if checkpoint is not None:
            self.after = checkpoint
            return None
        last_id = await self._last_id() if self.position == "LATEST" else None
        self.after = start_after(self.position, self.timestamp_s, last_id)
        # LATEST is pinned at first start: entries added while no poller runs are not lost.
        return self.after if self.position == "LATEST" else None

    async def _last_id(self) -> str | None:
        try:
            info = await self.redis.xinfo_stream(self.stream)
        except ResponseError:  # no such key yet: everything added from now on is new
            return None
        except RedisError as exc:
            raise StreamReadError(f"XINFO STREAM {self.stream} failed: {exc}") from exc
        return _text(info["last-generated-id"])

    async def read(self, limit: int, wait_s: float) -> list[StreamRecord]:
        # BLOCK 0 would wait forever: wait at least a millisecond, or not at all.
        block = max(1, round(wait_s * 1000)) if wait_s > 0 else None
        try:
            reply: Any = await self.redis.xread(
                {self.stream: self.after}, count=max(1, limit), block=block
            )
        except RedisError as exc:
            raise StreamReadError(f"XREAD {self.stream} failed: {exc}") from exc
        streams = reply.items() if isinstance(reply, dict) else (reply or [])
        records: list[StreamRecord] = []
        for _, entries in streams:
            for raw_id, fields in entries:
                entry_id = _text(raw_id)
                record = redis_stream_record(self.name, entry_id, fields)
                records.append(StreamRecord(entry_id, arrival_s(entry_id), record))
        if records:
            self.after = records[-1].sequence
        return records


class RedisStreamPoller:
    """Consumes ``redis-stream:NAME`` for one mapping until :meth:`stop`."""

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, executor: Executor
    ) -> None:
        mapping = runtime.mapping
        self.runtime = runtime
        self.name = mapping.event_source_arn.split(":", 1)[1]
        self.reader = RedisStreamReader(
            runtime.broker.redis,
            self.name,
            mapping.starting_position or "LATEST",
            mapping.starting_position_timestamp,
        )
        shard = ShardInfo(mapping.event_source_arn, SHARD_ID, BATCH_INFO_KEY)
        self.consumer = ShardConsumer(runtime, settings, self.reader, shard)

    async def run(self) -> None:
        await self.consumer.run()

    async def stop(self) -> None:
        self.consumer.stop()
