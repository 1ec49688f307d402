"""Runs the pollers of every enabled event source mapping, shared across ``serve`` processes.

Every ``refresh_s`` the manager reads the mappings from Redis and:

* stops the pollers of mappings deleted, disabled or changed (a changed one starts again
  with its new settings on the same refresh);
* renews the lease of each mapping it polls (``P:{esm}:lease:UUID``, a token with a TTL);
  a lease found lost (this process stalled past its TTL) stops that poller;
* takes unowned mappings up to its fair share: the mappings divided by the live managers
  (``P:{esm}:pollers``, heartbeats with the same TTL), so a dead process's mappings are
  picked up within ``lease_ttl_s`` + ``refresh_s`` and a new process soon gets its part.

Pollers whose factory is ``shared`` (Kinesis, DynamoDB Streams: :mod:`pollers.shards`) run
in every process instead and lease the stream's shards themselves, with the same TTL and
fair-share rule.

Each source kind's poller module is imported when a mapping of that kind is first seen
(:data:`POLLERS`), so boto3 and kombu are needed only by their sources. Without its extra
a kind is not polled here: the manager logs ``poller_unavailable`` once and sets each such
mapping's ``LastProcessingResult`` to ``PROBLEM: <what to install>``. Every process sharing
a Redis should have the same extras: the fair share counts every live manager, so mappings
one process cannot poll wait for the processes that can.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from broker.extras import AMQP, AWS, MissingExtraError, load
from broker.mappings.model import (
    NO_POLLER_RESULT,
    EventSourceMapping,
    MappingConfig,
    SourceKind,
    State,
)
from pollers.core import NO_RECORDS, RELEASE_LEASE, RENEW_LEASE, MappingRuntime, PollerSettings

if TYPE_CHECKING:
    from broker.core import Broker

__all__ = ["POLLERS", "Poller", "PollerFactory", "PollerManager", "default_poller_factories"]

log = structlog.get_logger("sluice.pollers")

_INACTIVE = frozenset({State.DISABLED, State.DISABLING, State.DELETING})
_CONFIG_FIELDS = set(MappingConfig.model_fields)


class Poller(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


PollerFactory = Callable[[MappingRuntime, PollerSettings, ThreadPoolExecutor], Poller]


# Each source kind's poller: (module, class, the (module, extra) it needs, if any).
POLLERS: dict[SourceKind, tuple[str, str, tuple[str, str] | None]] = {
    SourceKind.SQS: ("pollers.sqs", "SqsPoller", AWS),
    SourceKind.KINESIS: ("pollers.shards", "KinesisPoller", AWS),
    SourceKind.DYNAMODB: ("pollers.shards", "DynamoDbStreamPoller", AWS),
    SourceKind.REDIS_STREAM: ("pollers.redis_streams", "RedisStreamPoller", None),
    SourceKind.RABBITMQ: ("pollers.amqp", "AmqpPoller", AMQP),
}


def load_poller(kind: SourceKind) -> PollerFactory:
    """Import ``kind``'s poller; :class:`~broker.extras.MissingExtraError` without its extra."""
    module, name, needs = POLLERS[kind]
    factory: PollerFactory = load(module, name, needs, f"the {kind.value} event source poller")
    return factory


def default_poller_factories() -> dict[SourceKind, PollerFactory]:
    """Every poller whose extra is installed, imported now (the manager imports each kind
    on first use instead)."""
    factories: dict[SourceKind, PollerFactory] = {}
    for kind in POLLERS:
        with contextlib.suppress(MissingExtraError):
            factories[kind] = load_poller(kind)
    return factories


@dataclass
class _Running:
    mapping: EventSourceMapping
    poller: Poller
    task: asyncio.Task[None]


def _config(mapping: EventSourceMapping) -> dict[str, Any]:
    return mapping.model_dump(include=_CONFIG_FIELDS)


class PollerManager:
    """Starts, stops and shares the pollers of one ``serve`` process."""

    def __init__(
        self,
        broker: Broker,
        settings: PollerSettings | None = None,
        factories: Mapping[SourceKind, PollerFactory] | None = None,
    ) -> None:
        self.broker = broker
        self.settings = settings or PollerSettings()
        # Given factories are all there is; by default each kind is imported on first use.
        self.factories: dict[SourceKind, PollerFactory] = dict(factories or {})
        self._lazy = factories is None
        self._unavailable: dict[SourceKind, str] = {}  # kind -> what to install
        self._told: set[str] = set()  # mappings whose LastProcessingResult says so
        self.token = uuid.uuid4().hex
        self.running: dict[str, _Running] = {}
        # Pollers told to stop and finishing their batch in hand; their leases (when still
        # held) are renewed until they have finished, then released.
        self.stopping: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()  # mappings whose lease this process holds
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sluice-poller")
        self._renew = broker.redis.register_script(RENEW_LEASE)
        self._release = broker.redis.register_script(RELEASE_LEASE)
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    def polling(self, uuid: str) -> bool:
        """Is this process polling mapping ``uuid`` (running, or finishing its last batch)?"""
        return uuid in self.running or uuid in self.stopping

    async def start(self) -> None:
        self._closing.clear()
        self._task = asyncio.create_task(self._run(), name="sluice-poller-manager")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every poller (each finishes the batch in hand, its lease renewed meanwhile),
        release the leases and leave: within ``timeout_s``, plus up to 5 s to cancel a
        refresh that hangs and 5 s for pollers to let go of their leases."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self._task is not None:
            # Not cancel(): a cancellation can be swallowed inside a Redis call mid-refresh.
            self._closing.set()
            await asyncio.wait({self._task}, timeout=timeout_s)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=5.0)
            self._task = None
        for key in list(self.running):
            self._begin_stop(key, max(0.0, deadline - loop.time()))
        deadline += 5.0
        while self.stopping and loop.time() < deadline:
            await asyncio.wait(set(self.stopping.values()), timeout=self.settings.refresh_s)
            with contextlib.suppress(Exception):  # Redis gone: the leases lapse on their own
                await self._heartbeat()
        try:
            await self.broker.redis.zrem(self.broker.keys.poller_members, self.token)
        except Exception as exc:  # Redis gone: the heartbeat expires on its own
            log.warning("poller_manager_leave_failed", error=repr(exc))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while not self._closing.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # Redis restarting: try again next round
                log.warning("poller_refresh_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.settings.refresh_s)

    async def _heartbeat(self) -> int:
        """Renew this process's heartbeat and every lease it holds (stopping pollers' too);
        a lease found lost stops its poller at once. Returns the live managers."""
        redis, keys = self.broker.redis, self.broker.keys
        # Leases expire in Redis's own time (PX), so heartbeats are scored in it too.
        seconds, micros = await redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        async with redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.poller_members, {self.token: now_ms + ttl_ms})
            pipe.zremrangebyscore(keys.poller_members, "-inf", now_ms)
            pipe.zcard(keys.poller_members)
            members = max(1, int((await pipe.execute())[-1]))
        for key in list(self._held):
            if not await self._renew(keys=[keys.mapping_lease(key)], args=[self.token, ttl_ms]):
                log.warning("poller_lease_lost", esm=key)
                self._held.discard(key)
                if key in self.running:
                    self._begin_stop(key)
        return members

    async def refresh(self) -> None:
        """One round: heartbeat and renewals first, then stop what must stop (in the
        background) and take a fair share."""
        members = await self._heartbeat()
        active = [
            m
            for m in await self.broker.mappings.mappings()
            if m.enabled and m.state not in _INACTIVE
        ]
        wanted = {m.uuid: m for m in active if self._factory(m.source_kind) is not None}
        await self._tell_unavailable(active)
        for key, running in list(self.running.items()):
            mapping = wanted.get(key)
            if running.task.done():
                log.info("poller_ended", esm=key)  # it gave up (e.g. the queue is gone)
                self._begin_stop(key)  # and starts again once stopped
            elif mapping is None or _config(mapping) != _config(running.mapping):
                log.info("poller_changed", esm=key, gone=mapping is None)
                self._begin_stop(key)
        for key, mapping in wanted.items():  # shared: every process runs one, leasing parts
            if self._shared(mapping) and not self.polling(key):
                await self._start_one(mapping)
        exclusive = {k: m for k, m in wanted.items() if not self._shared(m)}
        share = math.ceil(len(exclusive) / members)
        while len(mine := [k for k in self.running if k in self._held]) > share:
            self._begin_stop(mine[-1])  # a process joined: hand the newest over
        ttl_ms = int(self.settings.lease_ttl_s * 1000)
        for key, mapping in exclusive.items():
            if sum(1 for k in self.running if k in self._held) >= share:
                break
            if self.polling(key):
                continue
            lease = self.broker.keys.mapping_lease(key)
            if await self.broker.redis.set(lease, self.token, nx=True, px=ttl_ms):
                self._held.add(key)
                await self._start_one(mapping)

    def _factory(self, kind: SourceKind) -> PollerFactory | None:
        """``kind``'s poller factory, imported the first time; None when there is none here."""
        factory = self.factories.get(kind)
        if factory is None and self._lazy and kind not in self._unavailable:
            try:
                factory = self.factories[kind] = load_poller(kind)
            except MissingExtraError as exc:
                self._unavailable[kind] = str(exc)
                log.error("poller_unavailable", source=kind.value, error=str(exc))
        return factory

    async def _tell_unavailable(self, mappings: list[EventSourceMapping]) -> None:
        """Show, once per mapping, why this process does not poll it."""
        for mapping in mappings:
            problem = self._unavailable.get(mapping.source_kind)
            if problem is not None and mapping.uuid not in self._told:
                await self.broker.mappings.record_processing_result(
                    mapping.uuid, f"PROBLEM: {problem}"
                )
                self._told.add(mapping.uuid)

    def _shared(self, mapping: EventSourceMapping) -> bool:
        """Does every process run this mapping's poller (which leases its own parts, the
        shards of a stream) rather than one process holding the mapping's lease?"""
        return bool(getattr(self.factories[mapping.source_kind], "shared", False))

    async def _start_one(self, mapping: EventSourceMapping) -> None:
        runtime = MappingRuntime(self.broker, mapping, self.token)
        if mapping.last_processing_result == NO_POLLER_RESULT:
            await runtime.report(NO_RECORDS)
        poller = self.factories[mapping.source_kind](runtime, self.settings, self._executor)
        task = asyncio.create_task(poller.run(), name=f"sluice-poller-{mapping.uuid}")
        self.running[mapping.uuid] = _Running(mapping, poller, task)
        log.info("poller_started", esm=mapping.uuid, source=mapping.source_kind.value)

    def _begin_stop(self, key: str, timeout_s: float = 30.0) -> None:
        """Move a poller from ``running`` to ``stopping``; it finishes in the background."""
        running = self.running.pop(key)
        self.stopping[key] = asyncio.create_task(
            self._finish_stop(key, running, timeout_s), name=f"sluice-poller-stop-{key}"
        )

    async def _finish_stop(self, key: str, running: _Running, timeout_s: float) -> None:
        try:
            await running.poller.stop()
            try:
                await asyncio.wait_for(asyncio.shield(running.task), timeout=timeout_s)
            except TimeoutError:
                running.task.cancel()
                await asyncio.gather(running.task, return_exceptions=True)
            except Exception as exc:  # the poller crashed: its lease goes, another takes over
                log.error("poller_crashed", esm=key, error=repr(exc))
            if key in self._held:
                self._held.discard(key)
                await self._release(keys=[self.broker.keys.mapping_lease(key)], args=[self.token])
        except Exception as exc:  # Redis gone: the lease lapses on its own
            log.warning("poller_release_failed", esm=key, error=repr(exc))
        finally:
            self.stopping.pop(key, None)
            log.info("poller_stopped", esm=key)
