"""One lane of a shard (spec §9.2): batches of the records routed to it, in order; retries
with back-off, bisect on function error, partial batch responses, record age, the
on-failure record, and tumbling windows. A shard has ``ParallelizationFactor`` lanes (one
with a tumbling window: its state belongs to the shard); :mod:`pollers.streams` reads the
shard, routes records and keeps the checkpoint.

"What happens next?" is answered by the pure functions of :mod:`pollers.stream_decisions`;
the lane applies their answers to the function, the destinations and the consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from broker.dead_letters import dead_letter_entry
from broker.destination import scheme_of
from broker.models import InvokeResult
from broker.queue import OutboxDone
from broker.records import iso_ms, parse_body
from pollers.core import FUNCTION_CALL_FAILED, OK, BatchBuffer, record_size
from pollers.stream_decisions import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    StreamRecord,
    classify,
    decide,
    expired_count,
    on_failure_record,
    retry_delay_s,
    window_start,
    window_state,
)

if TYPE_CHECKING:
    from pollers.streams import ShardConsumer

__all__ = ["STATE_LIMIT_BYTES", "Lane", "Window"]

STATE_LIMIT_BYTES = 1024 * 1024  # a window's state per shard; past it the window ends early


def _oversized(record: StreamRecord) -> bool:
    """Is the record alone past the 6 MB synchronous payload limit?"""
    buffer = BatchBuffer(batch_size=1)
    buffer.add(record.record, record_size(record.record))
    return buffer.size_bytes > buffer.limit_bytes


def _iso_s(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Window:
    """A shard's open tumbling window: its start (None: none open) and the state the last
    invocation returned."""

    size_s: int
    start: float | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"start": self.start, "state": self.state})

    @classmethod
    def loads(cls, raw: bytes | str | None, size_s: int) -> Window:
        if raw is None:
            return cls(size_s)
        saved = json.loads(raw)
        return cls(size_s, saved.get("start"), saved.get("state") or {})

    def fields(self, shard_id: str, stream_arn: str, final: bool, early: bool) -> dict[str, Any]:
        """What a window's invocation carries besides ``Records`` (spec §9.2)."""
        start = self.start or 0.0
        return {
            "window": {"start": _iso_s(start), "end": _iso_s(start + self.size_s)},
            "state": self.state,
            "shardId": shard_id,
            "eventSourceARN": stream_arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": early,
        }


@dataclass
class _Batch:
    """Records handled together (with their read indices), and what their invocations so
    far produced."""

    indices: list[int]
    records: list[StreamRecord]
    attempts: int = 0  # failed attempts counted against MaximumRetryAttempts
    invokes: int = 0  # invocations of this batch (approximateInvokeCount)
    rejections: int = 0  # throttles and system errors in a row
    last: InvokeResult | None = None
    request_id: str = ""

    def halves(self) -> tuple[_Batch, _Batch]:
        middle = len(self.records) // 2
        return (
            _Batch(self.indices[:middle], self.records[:middle], self.attempts),
            _Batch(self.indices[middle:], self.records[middle:], self.attempts),
        )

    def drop(self, count: int) -> list[int]:
        """Remove the first ``count`` records; returns their indices."""
        done = self.indices[:count]
        self.indices, self.records = self.indices[count:], self.records[count:]
        return done


class Lane:
    """Invokes the function with the records routed to it, one batch at a time, in order."""

    def __init__(self, consumer: ShardConsumer, window: Window | None) -> None:
        self.consumer = consumer
        self.runtime = consumer.runtime
        self.settings = consumer.settings
        self.policy = consumer.policy
        self.shard = consumer.shard
        self.mapping = consumer.mapping
        self.broker = consumer.broker
        self.window = window
        self.queue: deque[tuple[int, StreamRecord]] = deque()
        self.stopping = asyncio.Event()
        self._arrived = asyncio.Event()
        self._closing = asyncio.Lock()  # the lane and the shard's end may both close
        self.log = consumer.log

    def put(self, index: int, record: StreamRecord) -> None:
        self.queue.append((index, record))
        self._arrived.set()

    def stop(self) -> None:
        self.stopping.set()

    def _stopped(self) -> bool:
        return self.stopping.is_set() or self.consumer.stopping.is_set()

    async def run(self) -> None:
        while not self._stopped():
            batch = await self._collect()
            if batch is not None:
                await self._handle(batch)

    async def _sleep(self, seconds: float) -> None:
        await self.consumer._wait(self.stopping, seconds)

    async def _await_record(self, seconds: float) -> None:
        self._arrived.clear()
        await self.consumer._wait(self._arrived, seconds)

    # -- batches ------------------------------------------------------------------------

    async def _collect(self) -> _Batch | None:
        """One batch (§8): ``BatchSize`` records, the batching window, 6 MB, or the end of
        a tumbling window. None when there is nothing to invoke yet."""
        if not self.queue:
            if self.window is not None and self._window_over():
                await self.close_window(early=False)
            await self._await_record(self.settings.stream_read_block_s)
            return None
        if self.window is not None and not await self._enter_window(self.queue[0][1]):
            return None
        buffer = BatchBuffer(self.policy.batch_size)
        indices: list[int] = []
        records: list[StreamRecord] = []
        deadline = time.monotonic() + self.policy.window_s
        while not self._stopped():
            while self.queue and not buffer.full:
                index, record = self.queue[0]
                if self.window is not None and self._window_of(record) != self.window.start:
                    break  # the next window's: it starts the next batch
                size = record_size(record.record)
                if not buffer.fits(size):
                    break
                buffer.add(record.record, size)
                indices.append(index)
                records.append(record)
                self.queue.popleft()
            left = deadline - time.monotonic()
            if self.queue or buffer.full or left <= 0:
                break
            await self._await_record(left)
        if self._stopped():
            return None  # read again after the checkpoint by whoever goes on
        return _Batch(indices, records)

    async def _handle(self, batch: _Batch) -> None:
        work = deque([batch])
        while work and not self._stopped():
            item = work[0]
            await self._drop_expired(item)
            if not item.records:  # all too old
                work.popleft()
                continue
            if len(item.records) == 1 and _oversized(item.records[0]):
                # No invocation can carry it (spec §11.3 (D)): discarded, batch size 1.
                await self.runtime.count(failed_records=1)
                await self._on_failure(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
                await self.consumer.finish(item.drop(1))
                work.popleft()
                continue
            sequences = [r.sequence for r in item.records]
            result = await self._invoke(item)
            outcome = classify(
                result, sequences, self.policy.report_item_failures, self.window is not None
            )
            decision = decide(outcome, len(item.records), item.attempts, self.policy)
            if decision.action in ("checkpoint", "retry", "discard"):
                await self._keep_state(result)
            if decision.action == "checkpoint":
                await self.consumer.finish(item.drop(len(item.records)))
                await self.runtime.report(OK)
                work.popleft()
                continue
            if decision.action == "wait":  # throttled: back off, no retry used up
                await self._wait_throttled(item)
                continue
            await self.runtime.report(FUNCTION_CALL_FAILED)
            if decision.action == "bisect":
                self.log.info("stream_batch_bisected", records=len(item.records))
                await self.runtime.count(bisected=1)
                work.popleft()
                work.extendleft(reversed(item.halves()))
                continue
            if decision.done:
                await self.consumer.finish(item.drop(decision.done))
            item.attempts = decision.attempts
            await self.runtime.count(failed_records=len(item.records))
            if decision.action == "discard":
                await self._on_failure(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
                await self.consumer.finish(item.drop(len(item.records)))
                work.popleft()
                continue
            self.log.info("retry_scheduled", records=len(item.records), attempt=item.attempts)
            await self.runtime.count(retried=1)
            low, high = self.policy.retry_backoff_s, self.policy.retry_backoff_max_s
            await self._sleep(retry_delay_s(item.attempts, low, high))

    async def _wait_throttled(self, item: _Batch) -> None:
        await self.runtime.count(throttled=1)
        item.rejections += 1
        low, high = self.settings.throttle_backoff_s, self.settings.throttle_backoff_max_s
        await self._sleep(retry_delay_s(item.rejections, low, high))

    async def _drop_expired(self, item: _Batch) -> None:
        """Records older than ``MaximumRecordAgeInSeconds`` go on failure first (§9.2)."""
        records = item.records
        now = self.broker.clock.now()
        count = expired_count([r.arrival_s for r in records], now, self.policy.max_record_age_s)
        if count:
            await self._on_failure(item, records[:count], RECORD_AGE_EXCEEDED)
            await self.consumer.finish(item.drop(count))

    async def _invoke(self, item: _Batch, final: bool = False, early: bool = False) -> InvokeResult:
        """Invoke with a request id of our own: the on-failure record names the last one."""
        request_id = str(uuid.uuid4())
        extra = None
        if self.window is not None:
            extra = self.window.fields(self.shard.shard_id, self.shard.stream_arn, final, early)
        gauges = {}
        if item.records:  # IteratorAge: the last record's age as the batch is sent
            age_ms = int((self.broker.clock.now() - item.records[-1].arrival_s) * 1000)
            gauges[f"iterator_age_ms:{self.shard.shard_id}"] = max(0, age_ms)
        records = [r.record for r in item.records]
        result = await self.runtime.invoke(records, request_id, extra, gauges)
        if result.executed:
            item.invokes += 1
            item.rejections = 0
            item.last, item.request_id = result, request_id
        return result

    # -- tumbling windows ---------------------------------------------------------------

    def _window_of(self, record: StreamRecord) -> float:
        assert self.window is not None
        return window_start(record.arrival_s, self.window.size_s)

    def _window_over(self) -> bool:
        window = self.window
        return (
            window is not None
            and window.start is not None
            and self.broker.clock.now() >= window.start + window.size_s
        )

    async def _enter_window(self, record: StreamRecord) -> bool:
        """Before a record's batch: close the open window if the record is past it."""
        assert self.window is not None
        start = self._window_of(record)
        if (
            self.window.start is not None
            and self.window.start != start
            and not await self.close_window(early=False)
        ):
            return False
        if self.window.start is None:
            self.window.start = start
        return True

    async def _keep_state(self, result: InvokeResult) -> None:
        """A window's invocation returned ``state``: the next one carries it; past 1 MB the
        window ends early and goes on with a fresh state."""
        if self.window is None:
            return
        state = window_state(result.payload)
        if state is None:
            return
        self.window.state = state
        self.consumer.window_snapshot = self.window.dumps()
        if len(json.dumps(state).encode()) > STATE_LIMIT_BYTES:
            await self.close_window(early=True)

    async def close_window(self, early: bool) -> bool:
        """The window's final invocation (no records), retried until it succeeds (spec
        §9.2: processing waits for it) or ``MaximumRetryAttempts`` gives up; then the state
        goes. ``early``: the state outgrew 1 MB and the same window goes on afresh."""
        async with self._closing:
            return await self._close_window(early)

    async def _close_window(self, early: bool) -> bool:
        window = self.window
        if window is None or window.start is None:
            return True
        item = _Batch([], [])
        while not self._stopped():
            result = await self._invoke(item, final=True, early=early)
            decision = decide(classify(result, [], False, True), 0, item.attempts, self.policy)
            if decision.action == "wait":
                await self._wait_throttled(item)
                continue
            if decision.action == "retry":
                item.attempts = decision.attempts
                low, high = self.policy.retry_backoff_s, self.policy.retry_backoff_max_s
                await self._sleep(retry_delay_s(item.attempts, low, high))
                continue
            if decision.action == "discard":
                self.log.warning("window_final_invoke_gave_up", start=window.start)
            window.state = {}
            if not early:
                window.start = None
            await self.consumer.save_window(window)
            return True
        return False

    # -- on failure ---------------------------------------------------------------------

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
