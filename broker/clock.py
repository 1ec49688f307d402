"""The one source of time: every due time, age and lease is read from a ``Clock``.

Production uses :class:`RedisClock` (Redis ``TIME``, so hosts' clocks don't matter); tests
inject :class:`ManualClock` and advance it instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis


@runtime_checkable
class Clock(Protocol):
    """Wall-clock time in epoch seconds."""

    def now(self) -> float: ...


class SystemClock:
    """This host's clock; for the CLI's sync invoke and unit tests."""

    def now(self) -> float:
        return time.time()


class ManualClock:
    """A clock that only moves when told to: ``advance(seconds)`` or ``set(epoch)``."""

    def __init__(self, start: float = 1_741_083_072.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, epoch_s: float) -> None:
        self._now = epoch_s


class RedisClock:
    """Redis server time, read once with ``TIME`` and then followed with the local monotonic
    clock; :meth:`calibrate` is called again periodically by the broker."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    async def calibrate(self, client: aioredis.Redis) -> None:
        before = time.monotonic()
        seconds, micros = await client.time()
        after = time.monotonic()
        server_now = float(seconds) + float(micros) / 1e6
        self._offset = server_now - (before + after) / 2

    def now(self) -> float:
        return time.monotonic() + self._offset
