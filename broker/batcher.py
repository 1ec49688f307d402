"""Coalesces concurrent single-event enqueues for one function into one script call.

Many API requests arrive within one turn of the event loop; storing them together costs
one Redis round trip instead of one each. Every caller still waits until its own event is
stored (its 202 means "stored"), and sees the batch's error if the batch is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Event = tuple[str, str]  # (request id, envelope JSON)
Flush = Callable[[str, list[Event]], Awaitable[None]]


class EnqueueBatcher:
    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._pending: dict[str, list[tuple[Event, asyncio.Future[None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, function: str, event: Event) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        batch = self._pending.get(function)
        if batch is None:
            batch = self._pending[function] = []
            loop.call_soon(self._start_flush, function)  # after this turn's arrivals
        batch.append((event, future))
        await future

    def _start_flush(self, function: str) -> None:
        batch = self._pending.pop(function, [])
        task = asyncio.create_task(self._run(function, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, function: str, batch: list[tuple[Event, asyncio.Future[None]]]) -> None:
        try:
            await self._flush(function, [event for event, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, future in batch:
            if not future.done():
                future.set_result(None)
