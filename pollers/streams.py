"""The stream core every stream source shares (spec §8, §9.2): ordered records from ONE
shard, read ahead and handed to ``ParallelizationFactor`` lanes (:mod:`pollers.stream_lane`:
batches, retries, bisect, partial batch responses, record age, on-failure, tumbling
windows), and the shard's checkpoint.

A source brings a :class:`ShardReader` (where reading starts, the next records in Lambda's
shape, whether the shard has ended) and a :class:`ShardInfo`; :class:`ShardConsumer` does
the rest. Records with the same key go to the same lane, so order per key holds while up
to N batches of the shard are in flight.

Checkpoints (``P:{esm}:checkpoint:UUID``, shard id -> sequence number) move to the last
record of the leading run of fully handled records (invoked with success, filtered out, or
sent on failure), so a restart resumes after it, re-delivering at most what was in flight
and never skipping. A shard read to its end gets :data:`SHARD_END`: its children may start.
A checkpoint is written only while this process holds the lease it is fenced by.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections import deque
from dataclasses import dataclass

from pollers.core import MappingRuntime, PollerSettings, wait_any
from pollers.stream_decisions import (
    SHARD_END,
    ShardInfo,
    ShardReader,
    StreamPolicy,
    StreamRecord,
)
from pollers.stream_lane import Lane
from pollers.stream_windows import Window

__all__ = ["Fence", "ShardConsumer"]

# Checkpoint and window together, only while KEYS[1] (the lease) holds ARGV[1]; an empty
# sequence or window leaves that one as it is.
_FENCED_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
end
return 1
"""


@dataclass(frozen=True)
class Fence:
    """The lease a checkpoint is fenced by: written only while ``key`` holds ``token``."""

    key: str
    token: str


class _Progress:
    """Records read, in order, and which are fully handled; the checkpoint may move to the
    last record of the leading run of handled ones."""

    def __init__(self) -> None:
        self._sequences: deque[str] = deque()
        self._first = 0  # index of _sequences[0]
        self._done: set[int] = set()

    def add(self, sequence: str) -> int:
        self._sequences.append(sequence)
        return self._first + len(self._sequences) - 1

    def finish(self, indices: list[int]) -> None:
        self._done.update(indices)

    def advance(self) -> str | None:
        """The new checkpoint, if the leading run grew."""
        last = None
        while self._sequences and self._first in self._done:
            self._done.discard(self._first)
            last = self._sequences.popleft()
            self._first += 1
        return last

    @property
    def pending(self) -> int:
        return len(self._sequences)


class ShardConsumer:
    """Reads one shard for one mapping and hands its records to the function, in order per
    key, until :meth:`stop` or the shard's end (:attr:`finished`); the invocations in hand
    finish, a pending retry does not wait."""

    def __init__(
        self,
        runtime: MappingRuntime,
        settings: PollerSettings,
        reader: ShardReader,
        shard: ShardInfo,
        fence: Fence | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.reader = reader
        self.shard = shard
        self.stopping = asyncio.Event()
        self.finished = False  # the shard was read to its end and SHARD_END saved
        self.mapping = runtime.mapping
        self.broker = runtime.broker
        self.policy = StreamPolicy.of(self.mapping, settings)
        keys = self.broker.keys
        if fence is None:  # the mapping's own lease
            if runtime.lease_token is None:
                raise ValueError("a ShardConsumer writes checkpoints only under a lease")
            fence = Fence(keys.mapping_lease(self.mapping.uuid), runtime.lease_token)
        self.fence = fence
        self._checkpoint_key = keys.mapping_checkpoint(self.mapping.uuid)
        self._windows_key = keys.mapping_windows(self.mapping.uuid)
        self._fenced_save = self.broker.redis.register_script(_FENCED_SAVE)
        self._progress = _Progress()
        self._progressed = asyncio.Event()
        self._saving = asyncio.Lock()
        self._lanes: list[Lane] = []
        self.window_snapshot = ""  # the open window's JSON, saved with the next checkpoint
        # When the last read that found nothing began (Sluice's clock): the shard is read up
        # to then. None while reads find records.
        self.idle_since: float | None = None
        self.log = self.runtime.log.bind(stream=self.shard.stream_arn, shard=self.shard.shard_id)

    def stop(self) -> None:
        self.stopping.set()
        for lane in self._lanes:
            lane.stop()

    async def run(self) -> None:
        while not self.stopping.is_set() and not self.finished:
            try:
                await self._consume()
            except Exception as exc:  # Redis restarting, the source gone: start over
                self.log.warning("stream_poll_failed", error=repr(exc))
                await self.runtime.report(f"PROBLEM: Error occurred while reading: {exc}")
                await self.sleep(self.settings.throttle_backoff_max_s)

    async def checkpoint(self) -> str | None:
        raw = await self.broker.redis.hget(self._checkpoint_key, self.shard.shard_id)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def _save(self, sequence: str, window: str = "") -> None:
        """Move the checkpoint (and the open window with it), only while this process still
        holds its lease: a poller that lost it (stalled past its TTL) must not move a new
        owner's back."""
        saved = await self._fenced_save(
            keys=[self.fence.key, self._checkpoint_key, self._windows_key],
            args=[self.fence.token, self.shard.shard_id, sequence, window],
        )
        if not saved:
            self.log.warning("checkpoint_refused_lease_lost", sequence=sequence)
            self.stopping.set()

    async def save_window(self, window: str) -> None:
        """Store the open window now (a window just closed), the checkpoint unchanged."""
        async with self._saving:
            self.window_snapshot = window
            await self._save("", window)

    async def finish(self, indices: list[int], window: str | None = None) -> None:
        """Records fully handled (invoked with success, or sent on failure), with the
        window's state that includes them: move the checkpoint past the leading run of
        handled records, the window with it."""
        self._progress.finish(indices)
        if window is not None:  # no await since the line above: they travel together
            self.window_snapshot = window
        self._progressed.set()
        async with self._saving:
            sequence = self._progress.advance()
            if sequence is not None:
                await self._save(sequence, self.window_snapshot)

    async def _consume(self) -> None:
        checkpoint = await self.checkpoint()
        if checkpoint == SHARD_END:
            self.finished = True
            return
        start = await self.reader.seek(checkpoint)
        if checkpoint is None and start is not None:
            await self._save(start)
        self._progress = _Progress()
        window = await self._open_window()
        lanes = self._lanes = [Lane(self, window) for _ in range(self.policy.lanes)]
        tasks = [asyncio.create_task(lane.run()) for lane in lanes]
        try:
            await self._read(lanes, tasks)
        except asyncio.CancelledError:  # a stop that timed out: the lanes go too
            for task in tasks:
                task.cancel()
            raise
        finally:
            for lane in lanes:
                lane.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failures = [r for r in results if isinstance(r, Exception)]
            for failure in failures:
                self.log.warning("stream_lane_failed", error=repr(failure))
        if failures:
            raise failures[0]

    async def _open_window(self) -> Window | None:
        """The tumbling window open at the checkpoint (None without windows)."""
        if not self.policy.tumbling_window_s:
            return None
        raw = await self.broker.redis.hget(self._windows_key, self.shard.shard_id)
        window = Window.loads(raw, self.policy.tumbling_window_s)
        self.window_snapshot = window.dumps()
        return window

    async def _read(self, lanes: list[Lane], tasks: list[asyncio.Task[None]]) -> None:
        # Records read but not yet handled: enough for every lane's next batch, and whole
        # GetRecords pages (up to 10,000: Kinesis allows 5 reads a second per shard).
        first = 2 * self.policy.batch_size * len(lanes)
        ahead, warm = max(first, 10_000), False
        while not self.stopping.is_set():
            for task in tasks:
                if task.done():  # a lane failed: start over from the checkpoint
                    return
            if self.reader.ended:
                if self._progress.pending == 0:
                    await self._end(lanes[0])
                    return
                await self._wait_progress()
                continue
            if self._progress.pending >= ahead:
                await self._wait_progress()
                continue
            # The first read is one round of batches, so the lanes start soon; later reads
            # fill the read-ahead while they invoke.
            limit = min(ahead - self._progress.pending, 10_000 if warm else first)
            began = self.broker.clock.now()
            records = await self.reader.read(limit, self.settings.stream_read_block_s)
            self.idle_since = None if records else began
            if records:
                warm = True
                await self._dispatch(records, lanes)

    async def _dispatch(self, records: list[StreamRecord], lanes: list[Lane]) -> None:
        passed = [self.runtime.filter.keep(r.record) for r in records]
        skipped: list[int] = []
        for record, kept in zip(records, passed, strict=True):
            index = self._progress.add(record.sequence)
            if kept:
                lanes[self._lane_of(record.key, len(lanes))].put(index, record)
            else:
                skipped.append(index)
        await self.runtime.count(polled=len(records), filtered_out=len(skipped))
        if skipped:
            await self.finish(skipped)

    @staticmethod
    def _lane_of(key: str, lanes: int) -> int:
        # crc32: stable across processes (hash() is salted), so a key keeps its lane.
        return zlib.crc32(key.encode()) % lanes if lanes > 1 else 0

    async def _end(self, lane: Lane) -> None:
        """The shard is read to its end and everything handled: close its window, mark it
        finished so its children start (spec §9.2: parents before children)."""
        if not await lane.close_window(early=False):
            return  # the final invocation did not succeed: try again after a restart
        async with self._saving:
            await self._save(SHARD_END)
        if not self.stopping.is_set():
            self.finished = True
            self.log.info("shard_finished")

    async def _wait_progress(self) -> None:
        self._progressed.clear()
        await self.wait_for(self._progressed, self.settings.stream_read_block_s)

    async def wait_for(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event``, a stop, or ``seconds``."""
        await wait_any((event, self.stopping), seconds)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
