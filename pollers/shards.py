"""Shards of one stream mapping, shared across ``serve`` processes (Kinesis, DynamoDB
Streams): which shards to read, which of them this process reads, and their consumers.

Every ``refresh_s`` a :class:`StreamPoller`:

* lists the stream's shards; a shard may be read once each of its parents is finished
  (checkpoint :data:`SHARD_END`) or gone from the stream (trimmed), so parents are drained
  before their children (spec §9.2);
* renews the lease of each shard it reads (``P:{esm}:lease:UUID:SHARD``, a token with a
  TTL); a lease found lost stops that consumer, whose checkpoints are fenced by it;
* takes unowned readable shards up to its fair share (readable shards divided by the live
  poller managers, ``P:{esm}:pollers``) and hands the newest over when it holds more, so a
  dead process's shards are taken over within ``lease_ttl_s`` + ``refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from broker.redis_client import as_text
from pollers.core import RELEASE_LEASE, RENEW_LEASE, MappingRuntime, PollerSettings, wait_any
from pollers.stream_decisions import SHARD_END, ShardDesc, ShardInfo, ShardSource
from pollers.streams import Fence, ShardConsumer

__all__ = ["PIN_FIELD", "DynamoDbStreamPoller", "KinesisPoller", "StreamPoller"]

PIN_FIELD = "@latest"  # beside the shard ids in the checkpoint hash: the LATEST pin (ms)


@dataclass
class _Reading:
    consumer: ShardConsumer
    task: asyncio.Task[None]


class StreamPoller:
    """Reads this process's share of a stream mapping's shards until :meth:`stop`.

    Run by every poller manager (``shared``): the shards, not the mapping, are leased."""

    shared = True

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, source: ShardSource
    ) -> None:
        if runtime.lease_token is None:
            raise ValueError("a StreamPoller needs its manager's token to lease shards")
        self.runtime = runtime
        self.settings = settings
        self.source = source
        self.token = runtime.lease_token
        self.mapping = runtime.mapping
        self.broker = runtime.broker
        keys = self.broker.keys
        self._members_key = keys.poller_members
        self._checkpoint_key = keys.mapping_checkpoint(self.mapping.uuid)
        self._renew = self.broker.redis.register_script(RENEW_LEASE)
        self._release = self.broker.redis.register_script(RELEASE_LEASE)
        self.reading: dict[str, _Reading] = {}
        # Consumers told to stop and finishing their invocation in hand, in the background
        # (one slow stop must not let the other leases lapse); their leases are renewed
        # until they have finished, then released.
        self.releasing: dict[str, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._shards: list[ShardDesc] | None = None  # the last listing
        self._listed_at = -math.inf  # when (monotonic); a shard's end asks for a new one
        self.log = runtime.log.bind(stream=source.stream_arn)

    def _lease(self, shard_id: str) -> str:
        return self.broker.keys.shard_lease(self.mapping.uuid, shard_id)

    async def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    await self.refresh()
                except Exception as exc:  # the stream or Redis unreachable: next round
                    self.log.warning("shard_refresh_failed", error=repr(exc))
                    await self.runtime.report(f"PROBLEM: Error occurred while reading: {exc}")
                self._wake.clear()
                await wait_any((self._stopping, self._wake), self.settings.refresh_s)
        except asyncio.CancelledError:  # a stop that timed out: take the consumers down
            for reading in self.reading.values():
                reading.task.cancel()
            raise
        finally:
            for shard_id in list(self.reading):
                self._let_go(shard_id)
            while self.releasing:  # the invocations in hand finish under renewed leases
                await asyncio.wait(set(self.releasing.values()), timeout=self.settings.refresh_s)
                with contextlib.suppress(Exception):
                    await self._renew_leases()
            await self.source.close()

    async def _renew_leases(self) -> None:
        """Renew the lease of every shard read or finishing; a lost one stops its reader."""
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        for shard_id in [*self.reading, *self.releasing]:
            if shard_id not in self.reading and shard_id not in self.releasing:
                continue  # released meanwhile (a stop finished during this loop)
            renewed = await self._renew(keys=[self._lease(shard_id)], args=[self.token, ttl_ms])
            if not renewed and (shard_id in self.reading or shard_id in self.releasing):
                self.log.warning("shard_lease_lost", shard=shard_id)
                if shard_id in self.reading:
                    self.reading[shard_id].consumer.stop()

    async def _listing(self) -> list[ShardDesc]:
        """The stream's shards, listed again every ``shard_list_interval_s`` (AWS limits
        DescribeStream to a few calls a second) or when a shard has ended; a listing slower
        than half a lease is abandoned for the last one, so renewals never wait on AWS."""
        due = time.monotonic() - self._listed_at >= self.settings.shard_list_interval_s
        if self._shards is None or due:
            try:
                listing = self.source.shards()
                self._shards = await asyncio.wait_for(listing, self.settings.lease_ttl_s / 2)
                self._listed_at = time.monotonic()
            except TimeoutError:
                self.log.warning("shard_listing_slow")
                if self._shards is None:
                    raise
        return self._shards

    async def refresh(self) -> None:
        """One round: renew, let go of what ended or is not ours, take a fair share."""
        redis = self.broker.redis
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        await self._renew_leases()
        if self.mapping.starting_position == "LATEST" and self.source.pin_ms is None:
            await self._pin()
        shards = await self._listing()
        finished = {
            as_text(k)
            for k, v in (await redis.hgetall(self._checkpoint_key)).items()
            if as_text(v) == SHARD_END
        }
        if shards:  # an empty listing is no proof that anything was trimmed
            await self._forget(finished - {shard.shard_id for shard in shards})
        readable = _readable(shards, finished)
        for shard_id, reading in list(self.reading.items()):
            if reading.task.done() or shard_id not in readable:
                self._let_go(shard_id)
            elif readable[shard_id].closed:
                reading.consumer.reader.closed(readable[shard_id].ending_sequence)
        share = math.ceil(len(readable) / await self._members())
        while len(self.reading) > share:  # a process joined: hand the newest over
            self._let_go(next(reversed(self.reading)))
        for shard_id, shard in readable.items():
            if len(self.reading) >= share or self._stopping.is_set():
                break
            if shard_id in self.reading or shard_id in self.releasing:
                continue
            if await redis.set(self._lease(shard_id), self.token, nx=True, px=ttl_ms):
                self._start(shard)

    async def _forget(self, gone: set[str]) -> None:
        """Finished shards trimmed from the stream: nothing will ask for them again."""
        if not gone:
            return
        keys = self.broker.keys
        async with self.broker.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(self._checkpoint_key, *gone)
            pipe.hdel(keys.mapping_windows(self.mapping.uuid), *gone)
            pipe.hdel(
                keys.mapping_stats(self.mapping.uuid), *(f"iterator_age_ms:{s}" for s in gone)
            )
            await pipe.execute()

    async def _pin(self) -> None:
        """LATEST: one moment for every shard of the mapping, the first start's (kept in
        the checkpoint hash under :data:`PIN_FIELD`)."""
        redis = self.broker.redis
        await redis.hsetnx(self._checkpoint_key, PIN_FIELD, math.floor(time.time() * 1000))
        pinned = await redis.hget(self._checkpoint_key, PIN_FIELD)
        if pinned is not None:
            self.source.pin_ms = int(pinned)

    async def _members(self) -> int:
        """Live poller managers (heartbeats not yet expired, in Redis's time)."""
        seconds, micros = await self.broker.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return max(1, int(await self.broker.redis.zcount(self._members_key, now_ms, "+inf")))

    def _start(self, shard: ShardDesc) -> None:
        info = ShardInfo(
            self.source.stream_arn,
            shard.shard_id,
            self.source.batch_info_key,
            self.source.arrival_text,
        )
        fence = Fence(self._lease(shard.shard_id), self.token)
        consumer = ShardConsumer(
            self.runtime, self.settings, self.source.reader(shard), info, fence
        )
        task = asyncio.create_task(consumer.run(), name=f"sluice-shard-{shard.shard_id}")
        task.add_done_callback(self._ended)
        self.reading[shard.shard_id] = _Reading(consumer, task)
        self.log.info("shard_started", shard=shard.shard_id)

    def _ended(self, _task: asyncio.Task[None]) -> None:
        """A consumer ended (its shard finished, say): list again now, a child may start."""
        self._listed_at = -math.inf
        self._wake.set()

    def _let_go(self, shard_id: str) -> None:
        reading = self.reading.pop(shard_id)
        reading.consumer.stop()
        self.releasing[shard_id] = asyncio.create_task(self._finish(shard_id, reading))

    async def _finish(self, shard_id: str, reading: _Reading) -> None:
        """Wait for a stopped consumer (the invocation in hand finishes; after 30 s it is
        cancelled), then release its lease."""
        try:
            done, _ = await asyncio.wait({reading.task}, timeout=30.0)
            if not done:
                reading.task.cancel()
                await asyncio.wait({reading.task})
            if not reading.task.cancelled() and reading.task.exception() is not None:
                error = repr(reading.task.exception())
                self.log.error("shard_consumer_crashed", shard=shard_id, error=error)
        finally:
            self.releasing.pop(shard_id, None)  # first: a renewal racing the release is no loss
            with contextlib.suppress(Exception):  # Redis gone: the lease lapses on its own
                await self._release(keys=[self._lease(shard_id)], args=[self.token])
            self._wake.set()
            self.log.info("shard_stopped", shard=shard_id, finished=reading.consumer.finished)


def _readable(shards: list[ShardDesc], finished: set[str]) -> dict[str, ShardDesc]:
    """Shards not finished whose parents are finished or gone, in id order."""
    present = {shard.shard_id for shard in shards}
    return {
        shard.shard_id: shard
        for shard in sorted(shards, key=lambda s: s.shard_id)
        if shard.shard_id not in finished
        and all(parent in finished or parent not in present for parent in shard.parents)
    }


class KinesisPoller(StreamPoller):
    """A Kinesis stream mapping's shards (:mod:`pollers.kinesis`)."""

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, executor: Executor
    ) -> None:
        from pollers.kinesis import KinesisSource

        source = KinesisSource(runtime.mapping, settings, executor)
        super().__init__(runtime, settings, source)


class DynamoDbStreamPoller(StreamPoller):
    """A DynamoDB stream mapping's shards (:mod:`pollers.dynamodb_streams`)."""

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, executor: Executor
    ) -> None:
        from pollers.dynamodb_streams import DynamoDbStreamSource

        source = DynamoDbStreamSource(runtime.mapping, settings, executor)
        super().__init__(runtime, settings, source)
