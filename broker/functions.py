"""Functions live in Redis (the source of truth); a short-lived cache serves the dispatcher."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from broker.keys import Keys
from broker.models import LATEST, EventInvokeConfig, FunctionConfig


@dataclass(frozen=True)
class FunctionState:
    """A function's configuration with its event-invoke configs, as the dispatcher sees it."""

    config: FunctionConfig
    event_invoke_configs: dict[str, EventInvokeConfig] = field(default_factory=dict)

    def event_invoke_config(self, qualifier: str) -> EventInvokeConfig | None:
        # Configs are per qualifier, with no fallback to $LATEST's (spec §4.3).
        return self.event_invoke_configs.get(qualifier)


class FunctionStore:
    """Reads and writes function configurations and event-invoke configs in Redis."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def put(self, config: FunctionConfig) -> None:
        fk = self.keys.for_function(config.name)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(fk.function, config.model_dump_json())
            if config.reserved_concurrency is None:
                pipe.delete(fk.reserved)
            else:
                pipe.set(fk.reserved, config.reserved_concurrency)
            await pipe.execute()
        await self.client.sadd(self.keys.functions, config.name)

    async def get(self, name: str) -> FunctionConfig | None:
        raw = await self.client.get(self.keys.for_function(name).function)
        return None if raw is None else FunctionConfig.model_validate_json(raw)

    async def timeout_s(self, name: str, qualifier: str | None = None) -> int | None:
        """The timeout of a function's version or alias (``$LATEST`` by default); None when
        the function does not exist."""
        config = await self.get(name)
        if config is None:
            return None
        return config.effective(config.resolve(qualifier or LATEST) or LATEST)[1]

    async def names(self) -> list[str]:
        members = await self.client.smembers(self.keys.functions)
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def delete(self, name: str) -> None:
        fk = self.keys.for_function(name)
        await self.client.delete(fk.function, fk.reserved, fk.eic)
        await self.client.srem(self.keys.functions, name)

    async def state(self, name: str) -> FunctionState | None:
        fk = self.keys.for_function(name)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(fk.function)
            pipe.hgetall(fk.eic)
            raw, eics = await pipe.execute()
        if raw is None:
            return None
        return FunctionState(
            config=FunctionConfig.model_validate_json(raw),
            event_invoke_configs={
                (k.decode() if isinstance(k, bytes) else k): EventInvokeConfig.model_validate_json(
                    v
                )
                for k, v in eics.items()
            },
        )

    async def put_event_invoke_config(
        self, name: str, qualifier: str, config: EventInvokeConfig
    ) -> None:
        await self.client.hset(
            self.keys.for_function(name).eic, qualifier, config.model_dump_json(by_alias=True)
        )

    async def delete_event_invoke_config(self, name: str, qualifier: str) -> bool:
        return bool(await self.client.hdel(self.keys.for_function(name).eic, qualifier))


class FunctionCache:
    """Caches :class:`FunctionState` for ``ttl_s`` so the dispatcher reads Redis once per
    function per interval, not once per event. Changes through the broker invalidate it."""

    def __init__(self, store: FunctionStore, ttl_s: float = 1.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._states: dict[str, tuple[float, FunctionState | None]] = {}
        self._names: tuple[float, list[str]] = (0.0, [])
        self._loading: dict[str, asyncio.Future[FunctionState | None]] = {}
        self._generation = 0  # bumped by invalidate: a read begun before it is not cached

    async def get(self, name: str) -> FunctionState | None:
        cached = self._states.get(name)
        if cached is not None and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1]
        # One read per name however many callers miss at once (a burst of requests).
        loading = self._loading.get(name)
        if loading is None:
            loading = asyncio.ensure_future(self._load(name))
            self._loading[name] = loading
        return await asyncio.shield(loading)

    async def _load(self, name: str) -> FunctionState | None:
        generation = self._generation
        try:
            state = await self.store.state(name)
            # An unknown name is asked again (it may appear any moment); a read that raced
            # a change made here is used once but not kept.
            if state is not None and generation == self._generation:
                self._states[name] = (time.monotonic(), state)
            return state
        finally:
            if self._loading.get(name) is asyncio.current_task():
                del self._loading[name]

    async def names(self) -> list[str]:
        if time.monotonic() - self._names[0] >= self.ttl_s:
            self._names = (time.monotonic(), await self.store.names())
        return self._names[1]

    def invalidate(self, name: str | None = None) -> None:
        self._generation += 1
        if name is None:
            self._states.clear()
            self._loading.clear()
        else:
            self._states.pop(name, None)
            self._loading.pop(name, None)  # later callers read afresh
        self._names = (0.0, [])
