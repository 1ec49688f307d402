"""Running a replay and keeping its record: the part shared by ``sluice dlq replay`` in the
CLI's process and by a background replay in ``sluice serve``'s rq worker
(:mod:`broker.replay_jobs`).

A replay runs on a broker that dispatches nothing (:func:`replay_session`): its clock is
Redis's and its deliverer does the redeliveries. :func:`execute` runs planned steps and
keeps the replay's record up to date in the history: ``P:{replays}:records`` (hash: replay
id -> JSON, the last :data:`HISTORY_MAX`) indexed by ``P:{replays}:index`` (zset, score =
start ms), for ``sluice dlq history`` and ``sluice dlq replay --status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from broker.clock import RedisClock
from broker.core import Broker
from broker.dead_letter_query import DeadLetterQuery, EntryFilter, Match
from broker.keys import Keys
from broker.pacing import Pacer
from broker.records import iso_ms
from broker.redis_client import connect
from broker.replay import QueueFull, Replayer, ReplayResult, Step
from broker.settings import Settings
from broker.wiring import default_stream_rereader

__all__ = [
    "HISTORY_MAX",
    "NotFound",
    "ReplayHistory",
    "execute",
    "history_keys",
    "new_record",
    "new_replay_id",
    "replay_session",
    "select",
    "selection",
    "updated_record",
]

HISTORY_MAX = 1000  # replay records kept for `dlq history`


class NotFound(Exception):
    """A replay named an entry that is not in the store (or is in several functions')."""


class _Stopped(Exception):
    """The process running a background replay is shutting down."""


def new_replay_id() -> str:
    return uuid.uuid4().hex[:12]  # short: operators type it; 48 random bits


@contextlib.asynccontextmanager
async def replay_session(settings: Settings) -> AsyncIterator[tuple[Replayer, DeadLetterQuery]]:
    """A replayer (stream entries re-read by range) and a store query on a broker that
    dispatches nothing, all closed after."""
    client = connect(settings.redis_url or "")
    broker = Broker(settings, client, dispatch=False)
    rereader = default_stream_rereader(broker)
    try:
        if isinstance(broker.clock, RedisClock):
            await broker.clock.calibrate(client)
        yield Replayer(broker, rereader), DeadLetterQuery(client, broker.keys)
    finally:
        await rereader.close()
        await broker.destinations.close()
        await broker.invokers.close()
        await client.aclose()
        await client.connection_pool.disconnect()


async def select(query: DeadLetterQuery, wanted: EntryFilter, ids: Sequence[str]) -> list[Match]:
    """The entries a replay works on: by ids (each must be there, in one function) or by
    the filters."""
    if not ids:
        return await query.find(wanted)
    found: list[Match] = []
    for entry_id in dict.fromkeys(ids):
        matches = await query.get(entry_id, wanted.functions)
        if not matches:
            raise NotFound(f"no dead-letter entry {entry_id!r}")
        if len(matches) > 1:
            names = ", ".join(m.function for m in matches)
            raise NotFound(f"entry {entry_id!r} is in several functions ({names}): add --function")
        found += matches
    return found


def selection(
    wanted: EntryFilter, ids: Sequence[str], to: str | None, rate: float | None
) -> dict[str, Any]:
    """What a replay was asked for, for its history record (empty fields left out)."""
    fields: dict[str, Any] = {
        "functions": list(wanted.functions),
        "mapping": wanted.mapping,
        "kinds": sorted(wanted.kinds),
        "conditions": sorted(wanted.conditions),
        "errorTypes": sorted(wanted.error_types),
        "since": None if wanted.since_s is None else iso_ms(wanted.since_s),
        "until": None if wanted.until_s is None else iso_ms(wanted.until_s),
        "limit": wanted.limit,
        "ids": list(ids),
        "to": to,
        "rate": rate,
    }
    return {key: value for key, value in fields.items() if value not in (None, [])}


async def execute(
    replayer: Replayer,
    steps: list[Step],
    *,
    replay_id: str,
    asked: dict[str, Any],
    rate: float | None = None,
    on_progress: Callable[[ReplayResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    gone_before: int = 0,
) -> dict[str, Any]:
    """Run planned steps, keeping the replay's record up to date; the final record, whose
    status is ``finished``, ``failed`` (queue full, Redis) or ``interrupted`` (Ctrl-C, or
    ``should_stop`` between batches). An interrupted replay run again does what is left,
    storing nothing twice. ``gone_before`` counts chosen entries that had left the store
    before planning."""
    clock = replayer.broker.clock
    history = ReplayHistory(replayer.redis, replayer.keys)
    started = clock.now()
    result = ReplayResult(replay_id, matched=len(steps) + gone_before, gone=gone_before)
    record = updated_record(new_record(replay_id, started, asked, steps), result, "started", None)
    await history.save(record, started)

    async def progress(now: ReplayResult) -> None:
        nonlocal result
        result = now
        if on_progress is not None:
            on_progress(now)
        await history.save(updated_record(record, now, "started", None), started)
        if should_stop is not None and should_stop():
            raise _Stopped

    pacer = Pacer(rate) if rate else None
    try:
        result = await replayer.run(steps, replay_id, pacer=pacer, progress=progress, result=result)
    except (asyncio.CancelledError, _Stopped) as exc:  # what was done is recorded
        interrupted = updated_record(record, result, "interrupted", clock.now())
        await history.save(interrupted, started)
        if isinstance(exc, asyncio.CancelledError):
            raise
        return interrupted
    except (QueueFull, RedisError) as exc:
        failed = {**updated_record(record, result, "failed", clock.now()), "error": str(exc)}
        with contextlib.suppress(RedisError):
            await history.save(failed, started)
        return failed
    final = updated_record(record, result, "finished", clock.now())
    await history.save(final, started)
    return final


def history_keys(keys: Keys) -> tuple[str, str]:
    """(records hash, index zset) of the replay history; one hash tag of their own."""
    return f"{keys.prefix}:{{replays}}:records", f"{keys.prefix}:{{replays}}:index"


class ReplayHistory:
    """Each replay's record: started when planned, updated as it goes and when it ends."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.records, self.index = history_keys(keys)

    async def save(self, record: dict[str, Any], started_at_s: float) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(self.records, record["replayId"], json.dumps(record))
            pipe.zadd(self.index, {record["replayId"]: int(started_at_s * 1000)})
            await pipe.execute()
        await self._trim()

    async def get(self, replay_id: str) -> dict[str, Any] | None:
        raw = await self.client.hget(self.records, replay_id)
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        ids = cast(list[bytes], await self.client.zrevrange(self.index, 0, limit - 1))
        if not ids:
            return []
        raw = await self.client.hmget(self.records, ids)
        return [json.loads(r) for r in raw if r is not None]

    async def _trim(self) -> None:
        excess = int(await self.client.zcard(self.index)) - HISTORY_MAX
        if excess <= 0:
            return
        old = await self.client.zrange(self.index, 0, excess - 1)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self.index, *old)
            pipe.hdel(self.records, *old)
            await pipe.execute()


def new_record(
    replay_id: str, now_s: float, selection: dict[str, Any], steps: Sequence[Step]
) -> dict[str, Any]:
    """A replay's record before it runs (status ``started``)."""
    return {
        "replayId": replay_id,
        "startedAt": iso_ms(now_s),
        "finishedAt": None,
        "status": "started",
        "selection": selection,
        "planned": dict(Counter(s.action for s in steps)),
        **ReplayResult(replay_id, matched=len(steps)).counts(),
        "links": [],
    }


def updated_record(
    record: dict[str, Any], result: ReplayResult, status: str, now_s: float | None
) -> dict[str, Any]:
    """The record with the result so far; ``now_s`` ends it."""
    return {
        **record,
        **result.counts(),
        "status": status,
        "finishedAt": None if now_s is None else iso_ms(now_s),
        "links": result.links,
    }
