"""Production guards: Redis durability checks at start, and admission control on memory."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from broker.errors import RATE_EXCEEDED, ConfigError, TooManyRequestsError

log = structlog.get_logger("sluice.guards")


async def check_redis_durability(client: aioredis.Redis, *, strict: bool) -> list[str]:
    """Warn (or refuse, with ``strict``) when Redis can lose or evict accepted events."""
    problems: list[str] = []
    try:
        persistence: dict[str, Any] = await client.info("persistence")
        memory: dict[str, Any] = await client.info("memory")
    except RedisError as exc:  # INFO can be renamed or disabled on managed Redis
        problems.append(f"cannot read Redis INFO ({exc}); durability unknown")
    else:
        if int(persistence.get("aof_enabled", 0)) != 1:
            problems.append(
                "Redis AOF is off (appendonly no): a Redis crash loses accepted events; "
                "run Redis with --appendonly yes"
            )
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            problems.append(
                f"Redis maxmemory-policy is {policy}: Redis may evict queued events; "
                "set maxmemory-policy noeviction"
            )
    for problem in problems:
        log.warning("redis_not_durable", problem=problem, strict=strict)
    if strict and problems:
        raise ConfigError("; ".join(problems))
    return problems


class MemoryAdmission:
    """Refuses new events with ``TooManyRequestsException`` when Redis's used memory passes
    ``ratio`` of its ``maxmemory``; reads INFO at most once per ``refresh_s``."""

    def __init__(self, client: aioredis.Redis, ratio: float, refresh_s: float = 1.0) -> None:
        self.client = client
        self.ratio = ratio
        self.refresh_s = refresh_s
        self._checked_at = -1e18
        self._over = False

    async def check(self) -> None:
        now = time.monotonic()
        if now - self._checked_at >= self.refresh_s:
            self._checked_at = now
            try:
                info: dict[str, Any] = await self.client.info("memory")
            except RedisError:
                info = {}
            maxmemory = int(info.get("maxmemory", 0) or 0)
            used = int(info.get("used_memory", 0) or 0)
            self._over = maxmemory > 0 and used >= self.ratio * maxmemory
        if self._over:
            raise TooManyRequestsError(RATE_EXCEEDED, Reason="FunctionInvocationRateLimitExceeded")
