"""What the Kinesis and DynamoDB Streams sources share (spec §9.2): a boto3 client whose
blocking calls run in the manager's executor, the listing of shards, and a shard reader's
iterator, poll loop, end-of-shard detection and error translation. The two sources differ
only in request shapes, the record as Lambda delivers it, and how a time position is read.

Positions a reader starts from (what ``seek`` takes and returns as a checkpoint):

* a record's sequence number: read after it (``AFTER_SEQUENCE_NUMBER``);
* ``<pin prefix>:<epoch ms>``: a pinned time, returned by the first ``seek`` of a LATEST
  mapping so a restart before any record is handled still reads what was written
  meanwhile (Kinesis ``AT_TIMESTAMP:``, DynamoDB ``AFTER_TIME:``);
* ``TRIM_HORIZON``: the shard's oldest record, whatever the StartingPosition: for a child
  shard whose parents this mapping read to their end (a LATEST pin taken when the child
  is first read would skip what the child received before);
* :data:`SHARD_END`: the shard was read to its end; nothing more is read.

Errors: ``ExpiredIteratorException`` renews the iterator after the last record read;
``TrimmedDataAccessException`` restarts at ``TRIM_HORIZON`` (the records in between are
gone); throttling waits out the read; anything else becomes :class:`StreamReadError`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from broker.mappings.model import EventSourceMapping
from pollers.core import PollerSettings
from pollers.stream_decisions import SHARD_END, ShardDesc, StreamReadError, StreamRecord

__all__ = [
    "TRIM_HORIZON",
    "AwsClient",
    "AwsShardReader",
    "AwsShardSource",
    "Position",
    "error_code",
    "read_error",
    "shard_desc",
]

_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "LimitExceededException",
        "ThrottlingException",
        "KMSThrottlingException",
    }
)
_EXPIRED = "ExpiredIteratorException"
_TRIMMED = "TrimmedDataAccessException"

log = structlog.get_logger("sluice.pollers")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class AwsClient:
    """One boto3 client for one service and region, made on first use; every call runs in
    the executor. The endpoint comes from ``AWS_ENDPOINT_URL``, as for any boto3 client."""

    def __init__(self, service: str, region: str, executor: Executor) -> None:
        self.service = service
        self.region = region
        self._executor = executor
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if self._client is None:
                self._client = await self._run(self._make)
            return self._client

    def _make(self) -> Any:
        session = boto3.session.Session()
        return session.client(self.service, region_name=self.region, config=_CONFIG)

    async def call(self, operation: str, **params: Any) -> dict[str, Any]:
        """``client.<operation>(**params)``; botocore's exceptions pass through."""
        client = await self.get()
        response: dict[str, Any] = await self._run(partial(getattr(client, operation), **params))
        return response

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def shard_desc(shard: dict[str, Any]) -> ShardDesc:
    """A ListShards / DescribeStream shard (the same shape in both services)."""
    parents = tuple(
        shard[key] for key in ("ParentShardId", "AdjacentParentShardId") if shard.get(key)
    )
    ending = shard.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    return ShardDesc(shard["ShardId"], parents, ending)


def read_error(operation: str, arn: str, exc: Exception) -> StreamReadError:
    """``exc`` as the error the stream core retries, saying what failed on which stream."""
    if isinstance(exc, ClientError):
        detail = f"{error_code(exc)}: {exc.response.get('Error', {}).get('Message', '')}"
    else:
        detail = str(exc)
    return StreamReadError(f"{operation} on {arn} failed ({detail})")


class AwsShardSource:
    """A stream's shards, listed page by page (:meth:`_shard_page` gives one page)."""

    service = ""
    list_operation = ""

    def __init__(
        self,
        mapping: EventSourceMapping,
        settings: PollerSettings,
        executor: Executor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mapping = mapping
        self.settings = settings
        self.stream_arn = mapping.event_source_arn
        self.region = self.stream_arn.split(":")[3]
        self.api = AwsClient(self.service, self.region, executor)
        self.clock = clock
        self.pin_ms: int | None = None  # the mapping-wide LATEST pin, when the poller set one

    async def _shard_page(self, token: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of shards and the token of the next (None: the last page)."""
        raise NotImplementedError

    async def shards(self) -> list[ShardDesc]:
        found: list[ShardDesc] = []
        token: str | None = None
        while True:
            try:
                page, token = await self._shard_page(token)
            except (ClientError, BotoCoreError) as exc:
                raise read_error(self.list_operation, self.stream_arn, exc) from exc
            found.extend(shard_desc(shard) for shard in page)
            if not token:
                return found

    async def close(self) -> None:
        self.api.close()


@dataclass(frozen=True)
class Position:
    """Where a new shard iterator starts."""

    kind: Literal["TRIM_HORIZON", "AT_TIMESTAMP", "AFTER_SEQUENCE_NUMBER"]
    sequence: str | None = None
    timestamp_ms: int | None = None


TRIM_HORIZON = Position("TRIM_HORIZON")


class AwsShardReader:
    """Reads one shard forward. Subclasses give the request shapes (the class attributes,
    :meth:`_records_request`), the record (:meth:`_record`) and the pinned time
    (:meth:`_pinned`, with :attr:`pin_prefix`)."""

    pin_prefix = ""
    max_limit = 1000  # GetRecords' Limit ceiling
    arn_param = "StreamARN"  # GetShardIterator's spelling (DynamoDB: StreamArn)
    sequence_param = "StartingSequenceNumber"  # (DynamoDB: SequenceNumber)

    def __init__(self, source: AwsShardSource, shard: ShardDesc) -> None:
        self.api = source.api
        self.stream_arn = source.stream_arn
        self.shard_id = shard.shard_id
        self.settings = source.settings
        self.starting_position = source.mapping.starting_position or "LATEST"
        self.starting_timestamp_s = source.mapping.starting_position_timestamp
        self.clock = source.clock
        self.source = source
        self.log = log.bind(stream=self.stream_arn, shard=shard.shard_id)
        self._closed = shard.closed
        self._ending = shard.ending_sequence
        self._position = TRIM_HORIZON
        self._iterator: str | None = None
        self._last: str | None = None  # the last record read (skipped ones too)
        self._ended = False

    # -- what subclasses give ---------------------------------------------------------------

    def _records_request(self, iterator: str, limit: int) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _record(self, raw: dict[str, Any]) -> StreamRecord:
        """A GetRecords record as Lambda delivers it."""
        raise NotImplementedError

    def _keep(self, record: StreamRecord) -> bool:
        """False skips a record: read (the position moves past it) but never delivered."""
        return True

    def _pinned(self, timestamp_ms: int) -> Position:
        """The position of records that arrived at or after ``timestamp_ms``."""
        raise NotImplementedError

    # -- ShardReader ------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended

    def closed(self, ending_sequence: str | None) -> None:
        self._closed = True
        self._ending = ending_sequence
        if self._read_past_end():
            self._ended = True

    async def seek(self, checkpoint: str | None) -> str | None:
        self._iterator = None
        self._last = None
        self._ended = checkpoint == SHARD_END
        if self._ended:
            return None
        if checkpoint == TRIM_HORIZON.kind:
            self._position = TRIM_HORIZON
            return None
        pin = f"{self.pin_prefix}:"
        if checkpoint is not None and checkpoint.startswith(pin):
            self._position = self._pinned(int(checkpoint.removeprefix(pin)))
            return None
        if checkpoint is not None:
            self._position = Position("AFTER_SEQUENCE_NUMBER", sequence=checkpoint)
            return None
        if self.starting_position == "LATEST":
            pinned_ms = self.source.pin_ms
            if pinned_ms is None and self._closed:  # nothing in it is new
                self._ended = True
                return None
            # Pinned (to when the mapping started, else now): a restart before the first
            # record is handled reads what was written meanwhile, and a child shard made by
            # resharding since reads all it got, where a fresh LATEST iterator skips both.
            if pinned_ms is None:
                pinned_ms = math.floor(self.clock() * 1000)
            self._position = self._pinned(pinned_ms)
            return f"{pin}{pinned_ms}"
        if self.starting_position == "AT_TIMESTAMP" and self.starting_timestamp_s is not None:
            self._position = self._pinned(math.ceil(round(self.starting_timestamp_s * 1000, 3)))
            return None
        self._position = TRIM_HORIZON
        return None

    async def read(self, limit: int, wait_s: float) -> list[StreamRecord]:
        deadline = time.monotonic() + max(0.0, wait_s)
        while not self._ended:
            response = await self._get_records(limit)
            left = deadline - time.monotonic()
            if response is None:  # throttled: wait out the read, the next one tries again
                self.log.info("shard_read_throttled")
                await asyncio.sleep(max(0.0, left))
                return []
            raw = response.get("Records", [])
            records = self._take(raw, response)
            if records or self._ended or left <= 0:
                return records
            if not raw:  # caught up; skipped records (raw) mean more may follow at once
                await asyncio.sleep(min(self.settings.stream_poll_interval_s, left))
        return []

    # -- the work ---------------------------------------------------------------------------

    def _take(self, raw: list[dict[str, Any]], response: dict[str, Any]) -> list[StreamRecord]:
        read = [self._record(item) for item in raw]
        if read:
            self._last = read[-1].sequence
        self._iterator = response.get("NextShardIterator")
        caught_up = not raw and response.get("MillisBehindLatest") == 0
        if self._iterator is None or self._read_past_end() or (self._closed and caught_up):
            self._ended = True
            self.log.info("shard_ended", last_sequence=self._last)
        return [record for record in read if self._keep(record)]

    def _read_past_end(self) -> bool:
        if not self._closed or self._ending is None or self._last is None:
            return False
        return int(self._last) >= int(self._ending)

    async def _get_records(self, limit: int) -> dict[str, Any] | None:
        """One GetRecords (a new iterator first when needed); None when throttled."""
        renewed = False
        while True:
            operation = "GetShardIterator"
            try:
                if self._iterator is None:
                    self._iterator = await self._new_iterator()
                operation = "GetRecords"
                method, params = self._records_request(
                    self._iterator, min(self.max_limit, max(1, limit))
                )
                return await self.api.call(method, **params)
            except ClientError as exc:
                code = error_code(exc)
                if code in _THROTTLED:
                    return None
                if code == _EXPIRED and not renewed:
                    renewed = True  # once per read: a fresh iterator cannot expire at once
                    self.log.info("shard_iterator_expired", last_sequence=self._last)
                    self._iterator = None
                    continue
                if code == _TRIMMED and (self._position != TRIM_HORIZON or self._last):
                    self.log.warning("shard_trimmed_restart", lost_after=self._last)
                    self._position, self._last, self._iterator = TRIM_HORIZON, None, None
                    continue
                raise read_error(operation, self.stream_arn, exc) from exc
            except BotoCoreError as exc:
                raise read_error(operation, self.stream_arn, exc) from exc

    async def _new_iterator(self) -> str:
        position = self._position
        if self._last is not None:
            position = Position("AFTER_SEQUENCE_NUMBER", sequence=self._last)
        params: dict[str, Any] = {
            self.arn_param: self.stream_arn,
            "ShardId": self.shard_id,
            "ShardIteratorType": position.kind,
        }
        if position.sequence is not None:
            params[self.sequence_param] = position.sequence
        if position.timestamp_ms is not None:
            params["Timestamp"] = datetime.fromtimestamp(position.timestamp_ms / 1000, UTC)
        response = await self.api.call("get_shard_iterator", **params)
        return str(response["ShardIterator"])
