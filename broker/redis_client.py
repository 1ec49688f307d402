"""Redis clients: a real server from a URL, or the embedded in-process one (demo only)."""

from __future__ import annotations

import redis.asyncio as aioredis

MAX_CONNECTIONS = 128  # per process


def connect(url: str | None) -> aioredis.Redis:
    """A client for ``url``; with no URL, an in-process fakeredis server (with Lua), which is
    only for ``sluice demo`` and trying things out: it lives and dies with this process."""
    if url:
        # A burst waits for a free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=30, health_check_interval=30
        )
        return aioredis.Redis(connection_pool=pool)
    import fakeredis

    server = fakeredis.FakeServer()
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
    return client


def as_text(value: bytes | str) -> str:
    """A Redis reply (bytes, or str with ``decode_responses``) as text."""
    return value.decode() if isinstance(value, bytes) else value
