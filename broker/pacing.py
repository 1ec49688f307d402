"""Rate limiting for operator commands (``--rate N``: at most N items a second).

:class:`Pacer` is a token bucket that holds at most one batch: ``N`` tokens a second, and a
batch of ``n`` items may go once its ``n`` tokens have accrued. Idle time earns no credit
beyond that, so a pause never turns into a burst.

Deciding and waiting are apart: :meth:`Pacer.book` reserves a batch and says when it may go
(pure over the injected clock), :meth:`Pacer.wait` sleeps until then with the injected
``sleep``, and :meth:`Pacer.acquire` does both; :meth:`Pacer.take` is ``acquire`` for async
code, awaiting the injected ``async_sleep``. Tests pass a fake clock whose sleep advances
it and compare the sleeps exactly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

__all__ = ["Pacer"]


class Pacer:
    """At most ``rate_per_s`` items a second over a run of batches (see the module docs)."""

    def __init__(
        self,
        rate_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < rate_per_s < math.inf:
            raise ValueError(f"the rate must be a positive number of items a second: {rate_per_s}")
        self.rate_per_s = rate_per_s
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._next_s: float | None = None  # when the next item may go; None: at once

    @property
    def batch_size(self) -> int:
        """The largest batch worth at most a second of items (at least 1)."""
        return max(1, math.floor(self.rate_per_s))

    def book(self, items: int) -> float:
        """Reserve ``items`` items; return the clock time at which they may go."""
        now = self._clock()
        at = now if self._next_s is None else max(now, self._next_s)
        self._next_s = at + items / self.rate_per_s
        return at

    def release(self, items: int) -> None:
        """Give back booked items that did not go (a batch came back short), last booked first."""
        if self._next_s is not None and items > 0:
            self._next_s -= items / self.rate_per_s

    def delay_s(self, at: float) -> float:
        """Seconds from now until ``at`` (0 when it has passed)."""
        return max(0.0, at - self._clock())

    def wait(self, at: float) -> None:
        """Sleep until ``at``, a time :meth:`book` returned."""
        delay_s = self.delay_s(at)
        if delay_s > 0:
            self._sleep(delay_s)

    def acquire(self, items: int) -> None:
        """Book ``items`` items and sleep until they may go."""
        self.wait(self.book(items))

    async def take(self, items: int) -> None:
        """Book ``items`` items and await ``async_sleep`` until they may go."""
        delay_s = self.delay_s(self.book(items))
        if delay_s > 0:
            await self._async_sleep(delay_s)
