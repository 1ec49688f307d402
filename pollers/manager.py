"""Runs the pollers of every enabled event source mapping, shared across ``serve`` processes.

Every ``refresh_s`` the manager reads the mappings from Redis and:

* stops the pollers of mappings deleted, disabled or changed (a changed one starts again
  with its new settings on the same refresh);
* renews the lease of each mapping it polls (``P:{esm}:lease:UUID``, a token with a TTL);
  a lease found lost (this process stalled past its TTL) stops that poller;
* takes unowned mappings up to its fair share: the mappings divided by the live managers
  (``P:{esm}:pollers``, heartbeats with the same TTL), so a dead process's mappings are
  picked up within ``lease_ttl_s`` + ``refresh_s`` and a new process soon gets its part.
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

from broker.mappings.model import (
    NO_POLLER_RESULT,
    EventSourceMapping,
    MappingConfig,
    SourceKind,
    State,
)
from pollers.core import NO_RECORDS, MappingRuntime, PollerSettings

if TYPE_CHECKING:
    from broker.core import Broker

__all__ = ["Poller", "PollerFactory", "PollerManager", "default_poller_factories"]

log = structlog.get_logger("sluice.pollers")

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_INACTIVE = frozenset({State.DISABLED, State.DISABLING, State.DELETING})
_CONFIG_FIELDS = set(MappingConfig.model_fields)


class Poller(Protocol):
    async def run(self) -> None: ...
    async def stop(self) -> None: ...


PollerFactory = Callable[[MappingRuntime, PollerSettings, ThreadPoolExecutor], Poller]


def default_poller_factories() -> dict[SourceKind, PollerFactory]:
    from pollers.redis_streams import RedisStreamPoller
    from pollers.sqs import SqsPoller

    return {
        SourceKind.SQS: SqsPoller,
        SourceKind.REDIS_STREAM: RedisStreamPoller,
    }


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
        self.factories = dict(factories) if factories is not None else default_poller_factories()
        self.token = uuid.uuid4().hex
        self.running: dict[str, _Running] = {}
        self._executor = ThreadPoolExecutor(max_workers=64, thread_name_prefix="sluice-poller")
        self._renew = broker.redis.register_script(_RENEW)
        self._release = broker.redis.register_script(_RELEASE)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="sluice-poller-manager")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every poller (each finishes the batch in hand), release leases and leave."""
        if self._task is not None:
            # Not cancel(): a cancellation can be swallowed inside a Redis call mid-refresh.
            self._stopping.set()
            await asyncio.wait({self._task}, timeout=timeout_s)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=5.0)
            self._task = None
        await asyncio.gather(
            *(self._stop_one(key, timeout_s) for key in list(self.running)),
            return_exceptions=True,
        )
        try:
            await self.broker.redis.zrem(self.broker.keys.poller_members, self.token)
        except Exception as exc:  # Redis gone: the heartbeat expires on its own
            log.warning("poller_manager_leave_failed", error=repr(exc))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # Redis restarting: try again next round
                log.warning("poller_refresh_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.refresh_s)

    async def refresh(self) -> None:
        """One round: heartbeat, stop what must stop, renew, take a fair share."""
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
        wanted = {
            m.uuid: m
            for m in await self.broker.mappings.mappings()
            if m.enabled and m.state not in _INACTIVE and m.source_kind in self.factories
        }
        for key, running in list(self.running.items()):
            mapping = wanted.get(key)
            if running.task.done():
                log.info("poller_ended", esm=key)  # it gave up (e.g. the queue is gone)
                await self._stop_one(key)  # and starts again below
            elif mapping is None or _config(mapping) != _config(running.mapping):
                log.info("poller_changed", esm=key, gone=mapping is None)
                await self._stop_one(key)
            elif not await self._renew(keys=[keys.mapping_lease(key)], args=[self.token, ttl_ms]):
                log.warning("poller_lease_lost", esm=key)
                await self._stop_one(key, release=False)
        share = math.ceil(len(wanted) / members)
        while len(self.running) > share:  # a process joined: hand the newest over
            await self._stop_one(next(reversed(self.running)))
        for key, mapping in wanted.items():
            if len(self.running) >= share:
                break
            if key in self.running:
                continue
            if await redis.set(keys.mapping_lease(key), self.token, nx=True, px=ttl_ms):
                await self._start_one(mapping)

    async def _start_one(self, mapping: EventSourceMapping) -> None:
        runtime = MappingRuntime(self.broker, mapping)
        if mapping.last_processing_result == NO_POLLER_RESULT:
            await runtime.report(NO_RECORDS)
        poller = self.factories[mapping.source_kind](runtime, self.settings, self._executor)
        task = asyncio.create_task(poller.run(), name=f"sluice-poller-{mapping.uuid}")
        self.running[mapping.uuid] = _Running(mapping, poller, task)
        log.info("poller_started", esm=mapping.uuid, source=mapping.source_kind.value)

    async def _stop_one(self, key: str, timeout_s: float = 30.0, *, release: bool = True) -> None:
        """Stop one poller; it leaves ``running`` (and its lease goes) once it has finished."""
        running = self.running[key]
        await running.poller.stop()
        try:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=timeout_s)
        except TimeoutError:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        except Exception as exc:  # the poller crashed: its lease goes, another takes over
            log.error("poller_crashed", esm=key, error=repr(exc))
        if release:
            await self._release(keys=[self.broker.keys.mapping_lease(key)], args=[self.token])
        del self.running[key]
        log.info("poller_stopped", esm=key)
