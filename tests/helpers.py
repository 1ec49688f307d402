"""Waiting without bare sleeps, and reading what destinations received."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broker.destination import Delivery


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, interval_s: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)


async def until(
    predicate: Callable[[], Any], timeout: float = 20, interval_s: float = 0.05
) -> None:
    """Wait for ``predicate`` (plain or async) to hold."""

    async def check() -> bool:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        return bool(value)

    await wait_until(check, timeout_s=timeout, interval_s=interval_s)


async def stream_records(client: aioredis.Redis, stream: str) -> list[dict[str, Any]]:
    """Invocation records a ``redis-stream:`` destination received, in order."""
    return [json.loads(fields[b"record"]) for _, fields in await client.xrange(stream)]


async def stream_length_at_least(client: aioredis.Redis, stream: str, n: int) -> bool:
    return int(await client.xlen(stream)) >= n


async def run_installed_sluice(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The installed ``sluice`` (next to this Python) run as a real process with ``env``."""
    sluice = Path(sys.executable).with_name("sluice")
    assert sluice.exists(), "the package is not installed in this environment"
    return await asyncio.to_thread(
        subprocess.run,
        [str(sluice), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def add_aged(
    client: aioredis.Redis, clock: Any, stream: str, *bodies: Any, age_s: float
) -> list[str]:
    """XADD one entry per body (JSON ``data``) to a Redis stream, ids from the clock minus
    ``age_s`` (so record ages are exact)."""
    ms = int((clock.now() - age_s) * 1000)
    async with client.pipeline(transaction=True) as pipe:
        for i, body in enumerate(bodies):
            pipe.xadd(stream, {"data": json.dumps(body)}, id=f"{ms}-{i}")
        return [raw.decode() if isinstance(raw, bytes) else raw for raw in await pipe.execute()]


async def stream_checkpoint_is(broker: Any, uuid: str, entry_id: str) -> bool:
    """Is the one-shard (``redis-stream:``) mapping ``uuid`` checkpointed at ``entry_id``?"""
    raw = await broker.redis.hget(broker.keys.mapping_checkpoint(uuid), "shardId-000000000000")
    return raw is not None and (raw.decode() if isinstance(raw, bytes) else raw) == entry_id


@dataclass
class FakeTime:
    """A clock and an async sleep for pacing tests: sleeping advances the clock, and every
    sleep is recorded (rounded to the microsecond) for exact comparison."""

    now_s: float = 100.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.now_s

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now_s += seconds


class Collect:
    """An embedder's destination for tests: keeps every delivery in ``got``."""

    def __init__(self, got: list[Delivery]) -> None:
        self.got = got

    async def deliver(self, delivery: Delivery) -> None:
        self.got.append(delivery)

    async def close(self) -> None:
        return None
