"""One lane of a shard (spec §9.2): batches of the records routed to it, in order; retries
with back-off, bisect on function error, partial batch responses, record age and tumbling
windows. A shard has ``ParallelizationFactor`` lanes (one with a tumbling window: its state
belongs to the shard); :mod:`pollers.streams` reads the shard, routes records and keeps the
checkpoint; :mod:`pollers.stream_failure` takes what is discarded.

"What happens next?" is answered by the pure functions of :mod:`pollers.stream_decisions`;
the lane applies their answers to the function and the consumer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.models import InvokeResult
from broker.payloads import SYNC_PAYLOAD_LIMIT_BYTES
from pollers.core import FUNCTION_CALL_FAILED, OK, BatchBuffer, event_json, record_size
from pollers.stream_decisions import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    StreamRecord,
    classify,
    decide,
    expired_count,
    retry_delay_s,
    window_start,
    window_state,
)
from pollers.stream_failure import discard
from pollers.stream_windows import STATE_LIMIT_BYTES, Window

if TYPE_CHECKING:
    from pollers.streams import ShardConsumer

__all__ = ["Lane"]


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
        self._arrived.set()  # a lane waiting for records or its batching window wakes

    def _stopped(self) -> bool:
        return self.stopping.is_set() or self.consumer.stopping.is_set()

    async def run(self) -> None:
        while not self._stopped():
            batch = await self._collect()
            if batch is not None:
                await self._handle(batch)

    async def _sleep(self, seconds: float) -> None:
        await self.consumer.wait_for(self.stopping, seconds)

    async def _await_record(self, seconds: float) -> None:
        self._arrived.clear()
        await self.consumer.wait_for(self._arrived, seconds)

    async def _finish(self, indices: list[int]) -> None:
        """Hand handled records to the consumer, with the window's state as it now is (the
        state that includes them): they are checkpointed together."""
        window = None if self.window is None else self.window.dumps()
        await self.consumer.finish(indices, window)

    # -- batches ------------------------------------------------------------------------

    def _limit_bytes(self) -> int:
        """The payload left for records: 6 MB less what a window's invocation adds."""
        if self.window is None:
            return SYNC_PAYLOAD_LIMIT_BYTES
        fields = self.window.fields(self.shard.shard_id, self.shard.stream_arn, False, False)
        return SYNC_PAYLOAD_LIMIT_BYTES - len(event_json(fields).encode()) - 1

    def _oversized(self, record: StreamRecord) -> bool:
        """Is the record alone past what one invocation can carry?"""
        buffer = BatchBuffer(batch_size=1, limit_bytes=self._limit_bytes())
        buffer.add(record.record, record_size(record.record))
        return buffer.size_bytes > buffer.limit_bytes

    async def _collect(self) -> _Batch | None:
        """One batch (§8): ``BatchSize`` records, the batching window, 6 MB, or the end of
        a tumbling window. None when there is nothing to invoke yet."""
        if not self.queue:
            if self._window_over():
                await self.close_window(early=False)
            await self._await_record(self.settings.stream_read_block_s)
            return None
        if self.window is not None and not await self._enter_window(self.queue[0][1]):
            return None
        buffer = BatchBuffer(self.policy.batch_size, limit_bytes=self._limit_bytes())
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
            if len(item.records) == 1 and self._oversized(item.records[0]):
                # No invocation can carry it (spec §11.3 (D)): discarded, batch size 1.
                await self.runtime.count(failed_records=1)
                await self._discard(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
                await self._finish(item.drop(1))
                work.popleft()
                continue
            sequences = [r.sequence for r in item.records]
            result = await self._invoke(item)
            windowed = self.window is not None
            outcome = classify(result, sequences, self.policy.report_item_failures, windowed)
            decision = decide(outcome, len(item.records), item.attempts, self.policy)
            if decision.action == "wait":  # throttled: back off, no retry used up
                await self._wait_throttled(item)
                continue
            early = decision.action != "bisect" and self._keep_state(result)
            if decision.action == "checkpoint":
                await self._finish(item.drop(len(item.records)))
                await self.runtime.report(OK)
                work.popleft()
            else:
                await self._failed(item, decision.action, decision.done, decision.attempts, work)
            if early:  # the state outgrew 1 MB: the window ends early, goes on afresh
                await self.close_window(early=True)

    async def _failed(
        self, item: _Batch, action: str, done: int, attempts: int, work: deque[_Batch]
    ) -> None:
        """A failed (or partly failed) invocation: bisect, or checkpoint what succeeded
        and retry or discard the rest."""
        await self.runtime.report(FUNCTION_CALL_FAILED)
        if action == "bisect":
            self.log.info("stream_batch_bisected", records=len(item.records))
            await self.runtime.count(bisected=1)
            work.popleft()
            work.extendleft(reversed(item.halves()))
            return
        if done:
            await self._finish(item.drop(done))
        item.attempts = attempts
        await self.runtime.count(failed_records=len(item.records))
        if action == "discard":
            await self._discard(item, item.records, RETRY_ATTEMPTS_EXHAUSTED)
            await self._finish(item.drop(len(item.records)))
            work.popleft()
            return
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
            await self._discard(item, records[:count], RECORD_AGE_EXCEEDED)
            await self._finish(item.drop(count))

    async def _discard(self, item: _Batch, records: list[StreamRecord], condition: str) -> None:
        await discard(
            self.consumer,
            records,
            condition,
            request_id=item.request_id,
            invokes=item.invokes,
            last=item.last,
        )

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
        """Has the open window ended for good? Its end has passed and the shard is read up
        to a moment after it (an empty read begun later), so no record of it can come: a
        backlog read in several pages stays in one window."""
        end = None if self.window is None else self.window.end
        caught_up = self.consumer.idle_since
        return end is not None and caught_up is not None and caught_up >= end

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

    def _keep_state(self, result: InvokeResult) -> bool:
        """A window's invocation returned ``state``: the next one carries it. True when it
        is past 1 MB (the window ends early)."""
        if self.window is None:
            return False
        state = window_state(result.payload)
        if state is None:
            return False
        self.window.state = state
        return len(json.dumps(state).encode()) > STATE_LIMIT_BYTES

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
            await self.consumer.save_window(window.dumps())
            return True
        return False
