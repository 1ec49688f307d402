"""The stream core every stream source shares (spec §8, §9.2): batches of ordered records
from ONE shard, retries with back-off, bisect on function error, partial batch responses,
record age, the on-failure record and the checkpoint.

A source brings a :class:`ShardReader` (where reading starts and the next records, already
in Lambda's record shape) and a :class:`ShardInfo`; :class:`ShardConsumer` does the rest.
"What happens next?" is answered by the pure functions of :mod:`pollers.stream_decisions`;
the consumer applies their answers to Redis and the function.

Checkpoints (``P:{esm}:checkpoint:UUID``, shard id -> sequence number) move after every
fully handled batch or part of one: invoked with success, filtered out, or sent on failure.
Reading resumes after the checkpoint, so a restart re-delivers at most the batch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from broker.dead_letters import dead_letter_entry
from broker.destination import scheme_of
from broker.models import InvokeResult
from broker.queue import OutboxDone
from broker.records import iso_ms, parse_body
from pollers.core import (
    FUNCTION_CALL_FAILED,
    OK,
    BatchBuffer,
    MappingRuntime,
    PollerSettings,
    record_size,
)
from pollers.stream_decisions import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    ShardInfo,
    ShardReader,
    StreamPolicy,
    StreamRecord,
    classify,
    decide,
    expired_count,
    on_failure_record,
    retry_delay_s,
)

__all__ = ["ShardConsumer"]


def _oversized(record: StreamRecord) -> bool:
    """Is the record alone past the 6 MB synchronous payload limit?"""
    buffer = BatchBuffer(batch_size=1)
    buffer.add(record.record, record_size(record.record))
    return buffer.size_bytes > buffer.limit_bytes


_FENCED_SAVE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
return 0
"""


@dataclass
class _Batch:
    """Records handled together, and what their invocations so far produced. ``through``:
    the checkpoint once all are handled (past filtered-out records read with them)."""

    records: list[StreamRecord]
    through: str
    attempts: int = 0  # failed attempts counted against MaximumRetryAttempts
    invokes: int = 0  # invocations of this batch (approximateInvokeCount)
    rejections: int = 0  # throttles and system errors in a row
    last: InvokeResult | None = None
    request_id: str = ""

    def halves(self) -> tuple[_Batch, _Batch]:
        middle = len(self.records) // 2
        first, second = self.records[:middle], self.records[middle:]
        return (
            _Batch(first, first[-1].sequence, self.attempts),
            _Batch(second, self.through, self.attempts),
        )


class ShardConsumer:
    """Reads one shard for one mapping and hands its records to the function, in order,
    until :meth:`stop`; the invocation in hand finishes, a pending retry does not wait."""

    def __init__(
        self,
        runtime: MappingRuntime,
        settings: PollerSettings,
        reader: ShardReader,
        shard: ShardInfo,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.reader = reader
        self.shard = shard
        self.stopping = asyncio.Event()
        self.mapping = runtime.mapping
        self.broker = runtime.broker
        self.policy = StreamPolicy.of(self.mapping, settings)
        self._checkpoint_key = self.broker.keys.mapping_checkpoint(self.mapping.uuid)
        self._lease_key = self.broker.keys.mapping_lease(self.mapping.uuid)
        self._fenced_save = self.broker.redis.register_script(_FENCED_SAVE)
        self._carry: deque[tuple[StreamRecord, bool]] = deque()  # read, not yet batched
        self.log = self.runtime.log.bind(stream=self.shard.stream_arn, shard=self.shard.shard_id)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                await self._consume()
            except Exception as exc:  # Redis restarting, the source gone: start over
                self.log.warning("stream_poll_failed", error=repr(exc))
                await self.runtime.report(f"PROBLEM: Error occurred while reading: {exc}")
                await self._sleep(self.settings.throttle_backoff_max_s)

    async def checkpoint(self) -> str | None:
        raw = await self.broker.redis.hget(self._checkpoint_key, self.shard.shard_id)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def _save(self, sequence: str) -> None:
        """Move the checkpoint, only while this process still holds the mapping's lease: a
        poller that lost it (stalled past its TTL) must not move a new owner's back."""
        token = self.runtime.lease_token
        if token is None:  # not run by a manager (no lease to honour)
            await self.broker.redis.hset(self._checkpoint_key, self.shard.shard_id, sequence)
            return
        saved = await self._fenced_save(
            keys=[self._lease_key, self._checkpoint_key],
            args=[token, self.shard.shard_id, sequence],
        )
        if not saved:
            self.log.warning("checkpoint_refused_lease_lost", sequence=sequence)
            self.stopping.set()

    async def _consume(self) -> None:
        self._carry.clear()
        checkpoint = await self.checkpoint()
        start = await self.reader.seek(checkpoint)
        if checkpoint is None and start is not None:
            await self._save(start)
        while not self.stopping.is_set():
            batch = await self._collect()
            if batch is not None:
                await self._handle(batch)

    async def _collect(self) -> _Batch | None:
        """One batch (§8): ``BatchSize`` records, the window, or 6 MB; filtered-out records
        only move ``through``. None for an empty poll."""
        buffer = BatchBuffer(self.policy.batch_size)
        taken: list[StreamRecord] = []
        through: str | None = None
        deadline = time.monotonic() + self.policy.window_s
        read_once = False
        while not self.stopping.is_set():
            while self._carry:
                record, kept = self._carry[0]
                if kept:
                    size = record_size(record.record)
                    if not buffer.fits(size):
                        break  # it starts the next batch
                    buffer.add(record.record, size)
                    taken.append(record)
                self._carry.popleft()
                through = record.sequence
            if self._carry or buffer.full:
                break
            left = deadline - time.monotonic()
            if read_once and left <= 0:
                break
            wait = self.settings.stream_read_block_s
            records = await self.reader.read(
                self.policy.batch_size - len(taken), wait if left <= 0 else min(left, wait)
            )
            read_once = True
            if records:
                passed = [self.runtime.filter.keep(r.record) for r in records]
                self._carry.extend(zip(records, passed, strict=True))
                await self.runtime.count(polled=len(records), filtered_out=passed.count(False))
        return None if through is None else _Batch(taken, through)

    async def _handle(self, batch: _Batch) -> None:
        work = deque([batch])
        while work and not self.stopping.is_set():
            item = work[0]
            await self._drop_expired(item)
            if not item.records:  # all filtered out, or all too old
                await self._save(item.through)
                work.popleft()
                continue
            if len(item.records) == 1 and _oversized(item.records[0]):
                # No invocation can carry it (spec §11.3 (D)): discarded, batch size 1.
                await self.runtime.count(failed_records=1)
                await self._on_failure(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
                await self._save(item.through)
                work.popleft()
                continue
            sequences = [r.sequence for r in item.records]
            result = await self._invoke(item)
            decision = decide(
                classify(result, sequences, self.policy.report_item_failures),
                len(item.records),
                item.attempts,
                self.policy,
            )
            if decision.action == "checkpoint":
                await self._save(item.through)
                await self.runtime.report(OK)
                work.popleft()
                continue
            if decision.action == "wait":  # throttled: back off, no retry used up
                await self.runtime.count(throttled=1)
                item.rejections += 1
                low, high = self.settings.throttle_backoff_s, self.settings.throttle_backoff_max_s
                await self._sleep(retry_delay_s(item.rejections, low, high))
                continue
            await self.runtime.report(FUNCTION_CALL_FAILED)
            if decision.action == "bisect":
                self.log.info("stream_batch_bisected", records=len(item.records))
                await self.runtime.count(bisected=1)
                work.popleft()
                work.extendleft(reversed(item.halves()))
                continue
            if decision.done:
                await self._save(item.records[decision.done - 1].sequence)
                item.records = item.records[decision.done :]
            item.attempts = decision.attempts
            await self.runtime.count(failed_records=len(item.records))
            if decision.action == "discard":
                await self._on_failure(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
                await self._save(item.through)
                work.popleft()
                continue
            self.log.info("retry_scheduled", records=len(item.records), attempt=item.attempts)
            await self.runtime.count(retried=1)
            low, high = self.policy.retry_backoff_s, self.policy.retry_backoff_max_s
            await self._sleep(retry_delay_s(item.attempts, low, high))

    async def _drop_expired(self, item: _Batch) -> None:
        """Records older than ``MaximumRecordAgeInSeconds`` go on failure first (§9.2)."""
        records = item.records
        now = self.broker.clock.now()
        count = expired_count([r.arrival_s for r in records], now, self.policy.max_record_age_s)
        if not count:
            return
        await self._on_failure(item, records[:count], RECORD_AGE_EXCEEDED)
        item.records = records[count:]
        if item.records:
            await self._save(records[count - 1].sequence)

    async def _invoke(self, item: _Batch) -> InvokeResult:
        """Invoke with a request id of our own: the on-failure record names the last one."""
        request_id = str(uuid.uuid4())
        result = await self.runtime.invoke([r.record for r in item.records], request_id)
        if result.executed:
            item.invokes += 1
            item.rejections = 0
            item.last, item.request_id = result, request_id
        return result

    async def _on_failure(self, item: _Batch, records: list[StreamRecord], condition: str) -> None:
        """Keep the discarded records in the dead-letter store (``stream_batch_failed``),
        then send the on-failure record; a failed delivery leaves the entry, nothing more."""
        now = self.broker.clock.now()
        mapping, target = self.mapping, self.mapping.on_failure_destination
        request_id = item.request_id or str(uuid.uuid4())
        record = on_failure_record(
            shard=self.shard,
            records=records,
            condition=condition,
            request_id=request_id,
            function_arn=mapping.function_arn,
            invoke_count=max(item.invokes, 1),
            last=item.last,
            now=now,
        )
        event = json.dumps({"Records": [r.record for r in records]})
        if target and scheme_of(target) == "s3":
            record["payload"] = event  # S3 only: the whole event as a string (§9.2)
        start, end = records[0].sequence, records[-1].sequence
        entry = json.loads(
            dead_letter_entry(
                kind="stream_batch_failed",
                entry_id=f"{mapping.uuid}/{self.shard.shard_id}/{start}/{end}",
                function=mapping.function_name,
                request_id=request_id,
                condition=condition,
                record=record,
                payload=event,
                attempts=item.invokes,
                errors=[] if item.last is None else [parse_body(item.last.payload)],
                at=iso_ms(now),
                target=target,
            )
        )
        entry["source"] = {  # what a replay needs besides the event itself
            "eventSourceArn": self.shard.stream_arn,
            "mappingUuid": mapping.uuid,
            "shardId": self.shard.shard_id,
            "startSequenceNumber": start,
            "endSequenceNumber": end,
        }
        await self._keep(entry, now)
        self.log.info("stream_batch_discarded", condition=condition, records=len(records))
        await self.runtime.count(on_failure_records=len(records))
        if not target:
            return
        # The deliverer's retries (tenacity, Retry-After) for one entry shaped like this.
        if not await self.broker.deliverer.redeliver(mapping.function_name, [entry]):
            self.log.warning("on_failure_delivery_failed", target=target, records=len(records))
            await self.runtime.count(on_failure_delivery_failed=1)
            entry["errors"].append(f"OnFailure delivery to {target} failed after retries")
            entry["delivery"] = {"kind": "record", "errorCode": 200, "errorMessage": ""}
            await self._keep(entry, now)

    async def _keep(self, entry: dict[str, Any], now: float) -> None:
        settings = self.broker.settings
        await self.broker.queue.outbox_done(
            self.mapping.function_name,
            now,
            [OutboxDone("", entry["id"], json.dumps(entry))],
            {},
            dead_max_age_s=settings.dead_letter_max_age_s,
            dead_max_count=settings.dead_letter_max_count,
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
