"""The async-invoke queue on Redis: every state change is one Lua script, so moves between
ready, delayed, in-flight, outbox and dead are atomic (see ``broker/keys.py`` for the keys
and ``broker/lua/`` for the scripts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from broker.errors import RATE_EXCEEDED, TooManyRequestsError
from broker.keys import Keys
from broker.redis_client import as_text

_SCRIPTS = (
    "enqueue",
    "claim",
    "settle",
    "extend",
    "outbox_claim",
    "outbox_done",
    "dead_trim",
    "slot_acquire",
    "replay_store",
)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@dataclass(frozen=True)
class Claim:
    """What one claim returned."""

    reserved: int | None  # the function's reserved concurrency (None = unreserved)
    next_due: float | None  # epoch seconds of the next delayed retry, if any
    ready_left: int  # events still ready after this claim
    capped: bool  # the function's reserved concurrency is now fully used
    events: list[tuple[str, str]] = field(default_factory=list)  # (request id, envelope)


@dataclass(frozen=True)
class SettleOp:
    op: Literal["retry", "finish", "release"]
    request_id: str
    envelope: str = ""  # retry: the updated envelope
    due_at: float = 0.0  # retry: epoch seconds
    outbox: str = ""  # finish: outbox entry JSON ('' = nothing to deliver)
    dead: str = ""  # finish: dead-letter entry JSON ('' = none)
    entry: dict[str, Any] | None = field(default=None, compare=False)  # outbox, parsed


@dataclass(frozen=True)
class OutboxDone:
    outbox_id: str
    dead_id: str = ""
    dead_entry: str = ""


class AsyncQueue:
    """Typed wrappers around the queue scripts; one instance per Redis client."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        lua = resources.files("broker") / "lua"
        common = (lua / "common.lua").read_text()
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(common + "\n" + (lua / f"{name}.lua").read_text())
            for name in _SCRIPTS
        }

    async def _run(self, name: str, function: str, args: list[Any]) -> Any:
        return await self._scripts[name](keys=self.keys.for_function(function).queue, args=args)

    async def enqueue(self, function: str, events: list[tuple[str, str]], max_depth: int) -> int:
        """Store events; raises ``TooManyRequestsError`` when the queue is at its cap."""
        args: list[Any] = [max_depth, self.keys.wake, function]
        for request_id, envelope in events:
            args += [request_id, envelope]
        added = int(await self._run("enqueue", function, args))
        if added < 0:
            raise TooManyRequestsError(RATE_EXCEEDED, Reason="FunctionInvocationRateLimitExceeded")
        return added

    async def store_replayed(
        self,
        function: str,
        events: list[tuple[str, str, str, str]],
        max_depth: int,
        mark_ttl_ms: int,
    ) -> list[bool] | None:
        """Store replayed events ``(request id, envelope, done-mark key, mark value)`` as
        :meth:`enqueue` does, each unless its done-mark is set, then set the marks; per
        event True if stored now, False if stored before. None: the queue is at its cap
        and nothing was stored."""
        keys = self.keys.for_function(function).queue + [mark for _, _, mark, _ in events]
        args: list[Any] = [max_depth, self.keys.wake, function, mark_ttl_ms]
        for request_id, envelope, _, value in events:
            args += [request_id, envelope, value]
        flags = await self._scripts["replay_store"](keys=keys, args=args)
        return None if flags == -1 else [bool(int(flag)) for flag in flags]

    async def claim(
        self, function: str, now: float, max_events: int, lease_s: float, token: str
    ) -> Claim:
        raw = await self._run("claim", function, [_ms(now), max_events, _ms(lease_s), token])
        reserved, next_due, left = int(raw[0]), int(raw[1]), int(raw[2])
        events = [(as_text(raw[i]), as_text(raw[i + 1])) for i in range(4, len(raw), 2)]
        return Claim(
            reserved=None if reserved < 0 else reserved,
            next_due=next_due / 1000 if next_due else None,
            ready_left=left,
            capped=bool(int(raw[3])),
            events=events,
        )

    async def settle(
        self,
        function: str,
        now: float,
        ops: list[tuple[SettleOp, str, dict[str, int]]],
        *,
        dead_max_age_s: float,
        dead_max_count: int,
        outbox_lease_s: float,
    ) -> list[bool]:
        """Apply decisions atomically, each as (op, lease token, counters); False where the
        lease was lost (the op and its counters are skipped)."""
        args: list[Any] = [
            _ms(now),
            "",
            _ms(dead_max_age_s),
            dead_max_count,
            _ms(outbox_lease_s),
            len(ops),
            self.keys.wake,
            function,
        ]
        for op, token, counters in ops:
            counted = ",".join(f"{name}={count}" for name, count in counters.items())
            if op.op == "retry":
                args += ["retry", op.request_id, op.envelope, _ms(op.due_at), token, counted]
            elif op.op == "finish":
                args += ["finish", op.request_id, op.outbox, op.dead, token, counted]
            else:
                args += ["release", op.request_id, "", "", token, counted]
        return [bool(flag) for flag in await self._run("settle", function, args)]

    async def extend(self, function: str, leases: dict[str, str], expiry: float) -> int:
        """Extend leases given as request id -> token; returns how many still held."""
        args: list[Any] = [_ms(expiry)]
        for request_id, token in leases.items():
            args += [request_id, token]
        return int(await self._run("extend", function, args))

    async def outbox_claim(
        self, function: str, now: float, lease_s: float, max_entries: int
    ) -> list[tuple[str, str]]:
        raw = await self._run("outbox_claim", function, [_ms(now), _ms(lease_s), max_entries])
        return [(as_text(raw[i]), as_text(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def outbox_extend(self, function: str, outbox_ids: list[str], expiry: float) -> None:
        """Renew the delivery lease of entries this process is still delivering."""
        key = self.keys.for_function(function).outbox_leases
        await self.client.zadd(key, dict.fromkeys(outbox_ids, _ms(expiry)), xx=True)

    async def outbox_done(
        self,
        function: str,
        now: float,
        done: list[OutboxDone],
        counters: dict[str, int],
        *,
        dead_max_age_s: float,
        dead_max_count: int,
    ) -> None:
        args: list[Any] = [_ms(now), _ms(dead_max_age_s), dead_max_count]
        for item in done:
            args += [item.outbox_id, item.dead_id, item.dead_entry]
        args.append("--")
        for name, count in counters.items():
            args += [name, count]
        await self._run("outbox_done", function, args)

    async def take_slot(self, function: str, slot_id: str, now: float, expiry: float) -> bool:
        """A reserved-concurrency slot for a synchronous invocation until ``expiry`` (or
        :meth:`free_slot`); False when the function's reserved concurrency is all in use."""
        taken = await self._run("slot_acquire", function, [_ms(now), _ms(expiry), slot_id])
        return bool(taken)

    async def free_slot(self, function: str, slot_id: str) -> None:
        await self.client.zrem(self.keys.for_function(function).slots, slot_id)

    async def dead_trim(self, function: str, now: float, max_age_s: float, max_count: int) -> None:
        """Apply dead-letter retention even to functions that get no new entries."""
        await self._run("dead_trim", function, [_ms(now), _ms(max_age_s), max_count])

    async def depth(self, function: str) -> dict[str, int]:
        """Events per state, for the CLI and tests."""
        fk = self.keys.for_function(function)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.llen(fk.ready)
            pipe.zcard(fk.delayed)
            pipe.zcard(fk.inflight)
            pipe.hlen(fk.outbox)
            pipe.zcard(fk.dead)
            ready, delayed, inflight, outbox, dead = await pipe.execute()
        return {
            "ready": int(ready),
            "delayed": int(delayed),
            "inflight": int(inflight),
            "outbox": int(outbox),
            "dead": int(dead),
        }
