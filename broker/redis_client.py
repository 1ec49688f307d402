"""Redis clients: a real server from a URL, or the embedded in-process one (demo only)."""

from __future__ import annotations

import redis.asyncio as aioredis


def connect(url: str | None) -> aioredis.Redis:
    """A client for ``url``; with no URL, an in-process fakeredis server (with Lua), which is
    only for ``sluice demo`` and trying things out: it lives and dies with this process."""
    if url:
        return aioredis.Redis.from_url(url, health_check_interval=30)
    import fakeredis

    server = fakeredis.FakeServer()
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
    return client
