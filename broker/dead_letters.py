"""Sluice's dead-letter store (an extension beyond AWS): every event that ends without
success is kept here with its record, attempts and errors, even where AWS would drop it.

Entry kinds: ``function_failed`` (an async event that ended without success),
``delivery_failed`` (a destination or DLQ delivery that failed after its retries) and
``stream_batch_failed`` (stream pollers). Retention is bounded by age and count, enforced by
the scripts that add entries.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import redis.asyncio as aioredis

from broker.keys import Keys

Kind = Literal["function_failed", "delivery_failed", "stream_batch_failed"]
SCHEMA_VERSION = 1


def dead_letter_entry(
    *,
    kind: Kind,
    entry_id: str,
    function: str,
    request_id: str,
    condition: str,
    record: dict[str, Any],
    payload: str,
    attempts: int,
    errors: list[Any],
    at: str,
    target: str | None = None,
    delivery: dict[str, Any] | None = None,
    replay_of: str | None = None,
) -> str:
    entry: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "id": entry_id,
        "kind": kind,
        "function": function,
        "requestId": request_id,
        "condition": condition,
        "attempts": attempts,
        "errors": errors,
        "at": at,
        "record": record,
        "payload": payload,
    }
    if target is not None:
        entry["target"] = target
    if delivery is not None:
        entry["delivery"] = delivery  # what was being delivered, for redelivery
    if replay_of is not None:
        entry["replayOf"] = replay_of  # the failed event was a replay of this request id
    return json.dumps(entry)


class DeadLetterStore:
    """Reads the dead-letter store of each function."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def count(self, function: str) -> int:
        return int(await self.client.zcard(self.keys.for_function(function).dead))

    async def list(
        self, function: str, *, offset: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Entries oldest first."""
        fk = self.keys.for_function(function)
        ids = await self.client.zrange(fk.dead, offset, offset + limit - 1)
        if not ids:
            return []
        raw = await self.client.hmget(fk.dead_entries, list(ids))  # type: ignore[arg-type]
        return [json.loads(item) for item in raw if item is not None]

    async def get(self, function: str, entry_id: str) -> dict[str, Any] | None:
        raw = await self.client.hget(self.keys.for_function(function).dead_entries, entry_id)
        return None if raw is None else dict(json.loads(raw))

    async def delete(self, function: str, entry_id: str) -> bool:
        fk = self.keys.for_function(function)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(fk.dead, entry_id)
            pipe.hdel(fk.dead_entries, entry_id)
            removed, _ = await pipe.execute()
        return bool(removed)
