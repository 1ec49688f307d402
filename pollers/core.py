"""What every poller shares (spec §8): batches bounded by size, window and payload bytes;
the synchronous invocation of the mapping's function; counters and LastProcessingResult.

A poller gets a :class:`MappingRuntime` for the mapping it serves and never touches the
broker's internals: it asks the runtime to filter, invoke, count and report.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from broker.errors import ApiError
from broker.filters import HARD_MAX_FILTERS, RecordFilter
from broker.mappings.model import EventSourceMapping
from broker.models import InvokeResult
from broker.payloads import SYNC_PAYLOAD_LIMIT_BYTES, JsonText

if TYPE_CHECKING:
    from broker.core import Broker

__all__ = [
    "NO_RECORDS",
    "OK",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "REPORT_BATCH_ITEM_FAILURES",
    "BatchBuffer",
    "MappingRuntime",
    "PollerSettings",
    "event_json",
    "record_size",
    "reported_failures",
    "wait_any",
]

log = structlog.get_logger("sluice.pollers")

OK = "OK"
NO_RECORDS = "No records processed"
FUNCTION_CALL_FAILED = "PROBLEM: Function call failed"
_ENVELOPE_BYTES = len(b'{"Records":[]}')


@dataclass(frozen=True)
class PollerSettings:
    """Timing and sizing of pollers; every duration is a setting so tests never wait long."""

    # Long-poll wait of one ReceiveMessage (AWS waits up to 20 s). Shorter keeps disable,
    # delete and shutdown prompt: a poller notices between receives.
    sqs_wait_time_s: int = 2
    # Concurrent receive-invoke loops per SQS mapping without ScalingConfig (AWS starts at 5).
    sqs_default_concurrency: int = 5
    # Back-off while the function is throttled (429 or no concurrency left), doubling.
    throttle_backoff_s: float = 0.2
    throttle_backoff_max_s: float = 5.0
    # How often the manager looks for new, changed and deleted mappings, and renews leases.
    refresh_s: float = 1.0
    lease_ttl_s: float = 10.0
    # Stream sources: how often a mapping's shards are listed again (and at once when a
    # shard ends); AWS allows DescribeStream a few calls a second per account.
    shard_list_interval_s: float = 10.0
    # Stream sources: the longest wait of one blocking read (stop is noticed between reads),
    # and the back-off before retrying a failed batch: doubling from base to max (§9.2 (D)).
    stream_read_block_s: float = 1.0
    # Kinesis / DynamoDB Streams: the pause between GetRecords calls finding nothing (AWS
    # polls DynamoDB about 4 times a second, Kinesis about once).
    stream_poll_interval_s: float = 0.25
    stream_retry_backoff_s: float = 1.0
    stream_retry_backoff_max_s: float = 60.0
    # RabbitMQ sources: Amazon MQ broker ARN -> amqp(s):// URL; the back-off while RabbitMQ
    # is unreachable (doubling up to max); failed batches rejected with requeue (for a
    # quorum queue's x-delivery-limit) instead of without (the dead-letter exchange).
    amqp_broker_urls: Mapping[str, str] = field(default_factory=dict)
    amqp_reconnect_backoff_s: float = 0.5
    amqp_reconnect_max_s: float = 5.0
    amqp_requeue_failed: bool = False


REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"

# Leases (a mapping's, a shard's): a token under a key with a TTL, renewed and released
# only by the holder of the token.
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def reported_failures(payload: str | None, identifiers: Sequence[str]) -> set[str] | None:
    r"""The ``itemIdentifier``\ s a ``ReportBatchItemFailures`` response names; an empty set
    for complete success (no body, ``null``, ``{}``, an empty or null list); None when the
    response is invalid and the whole batch failed: not JSON, a wrong key, an empty, null
    or unknown identifier (spec §9.1, §9.2)."""
    if payload is None or not payload.strip():
        return set()
    try:
        response = json.loads(payload)
    except ValueError:
        return None
    if response in (None, "", [], {}):
        return set()
    if not isinstance(response, dict) or "batchItemFailures" not in response:
        return None
    failures = response["batchItemFailures"]
    if failures is None or failures == []:
        return set()
    if not isinstance(failures, list):
        return None
    known = set(identifiers)
    failed: set[str] = set()
    for item in failures:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or identifier not in known:
            return None
        failed.add(identifier)
    return failed


async def wait_any(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Until one of ``events`` is set, or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _json_bytes(value: dict[str, Any]) -> bytes:
    """Compact JSON (orjson: records come from JSON and boto3, so they hold only what JSON
    holds; Python's json for anything orjson refuses)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def event_json(event: dict[str, Any]) -> str:
    """An invocation event as compact JSON."""
    return _json_bytes(event).decode()


def record_size(record: dict[str, Any]) -> int:
    """Bytes a record adds to an invocation payload: its JSON, as :func:`event_json` writes
    it, and a separator."""
    return len(_json_bytes(record)) + 1


@dataclass
class BatchBuffer:
    """Records waiting for one invocation. Full at ``batch_size`` records or when the next
    record would push the payload past the 6 MB synchronous limit (it starts the next one)."""

    batch_size: int
    limit_bytes: int = SYNC_PAYLOAD_LIMIT_BYTES
    records: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: int = _ENVELOPE_BYTES

    def fits(self, size: int) -> bool:
        """Can a record of ``size`` bytes join? (Always, when the buffer is empty.)"""
        return not self.records or (
            len(self.records) < self.batch_size and self.size_bytes + size <= self.limit_bytes
        )

    def add(self, record: dict[str, Any], size: int) -> None:
        self.records.append(record)
        self.size_bytes += size

    @property
    def full(self) -> bool:
        return len(self.records) >= self.batch_size

    def take(self) -> list[dict[str, Any]]:
        records, self.records, self.size_bytes = self.records, [], _ENVELOPE_BYTES
        return records

    def __len__(self) -> int:
        return len(self.records)


class MappingRuntime:
    """One mapping as its poller sees it: the filters, the function call, the counters and
    ``LastProcessingResult`` (written only when it changes)."""

    def __init__(
        self, broker: Broker, mapping: EventSourceMapping, lease_token: str | None = None
    ) -> None:
        self.broker = broker
        self.mapping = mapping
        # The token of the lease this process holds on the mapping: state a poller keeps in
        # Redis (a stream checkpoint) is written only while the lease is still its own.
        self.lease_token = lease_token
        self.filter = RecordFilter(
            mapping.filter_patterns, mapping.source_kind, max_filters=HARD_MAX_FILTERS
        )
        self._stats_key = broker.keys.mapping_stats(mapping.uuid)
        self._last_result = mapping.last_processing_result
        self.log = log.bind(esm=mapping.uuid, function=mapping.function_name)

    async def invoke(
        self,
        records: Sequence[dict[str, Any]],
        request_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        gauges: Mapping[str, int] | None = None,
    ) -> InvokeResult:
        """Invoke the function synchronously with ``{"Records": records}`` (and the ``extra``
        fields of a tumbling window). A missing function or version is a ``system_error``
        result (spec §7.4: a pre-invocation error). Counts ``invoked`` (and its records)
        when the function ran, ``failed`` when it did not succeed; a throttle is left to the
        poller, which tries again."""
        payload = JsonText(event_json({"Records": list(records), **(extra or {})}))
        try:
            result = await self.broker.invoke(
                self.mapping.function_ref, payload, request_id=request_id
            )
        except ApiError as exc:
            result = InvokeResult(outcome="system_error", error_message=exc.message)
        if result.outcome == "throttle":
            return result
        await self.count(
            gauges,
            invoked=int(result.executed),
            invoked_records=len(records) if result.executed else 0,
            failed=int(result.outcome != "success"),
        )
        return result

    async def count(self, gauges: Mapping[str, int] | None = None, **counters: int) -> None:
        """Add to the mapping's counters and set its ``gauges`` (a shard's iterator age,
        say), in one round trip."""
        fields = {name: value for name, value in counters.items() if value}
        if not fields and not gauges:
            return
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            for name, value in fields.items():
                pipe.hincrby(self._stats_key, name, value)
            if gauges:
                pipe.hset(self._stats_key, mapping={k: v for k, v in gauges.items()})
            await pipe.execute()

    async def report(self, result: str) -> None:
        """Set ``LastProcessingResult`` (one write per change, not per batch)."""
        if result == self._last_result:
            return
        self._last_result = result
        await self.broker.mappings.record_processing_result(self.mapping.uuid, result)
