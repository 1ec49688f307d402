"""Sluice's dead-letter store as ``sluice dlq`` sees it: every function's entries
(``P:{fn}:dead`` zset scored by the time stored, ``P:{fn}:dead:entries`` hash; see
:mod:`broker.keys`), found by filters and removed exactly.

Filters: function, mapping, kind, condition, error type and a time range (on the time an
entry was stored). Entries come oldest first. Pure filtering is separate from Redis so that
it is tested on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis.asyncio as aioredis

from broker.destination import redacted
from broker.keys import Keys
from broker.redis_client import as_text

__all__ = [
    "DeadLetterQuery",
    "EntryFilter",
    "Kind",
    "Match",
    "error_type",
    "mapping_of",
    "parse_time",
    "summary",
]

PAGE = 1000  # entries read per round trip


class Kind(StrEnum):
    FUNCTION_FAILED = "function_failed"  # an async event that ended without success
    DELIVERY_FAILED = "delivery_failed"  # a destination or DLQ delivery that failed for good
    STREAM_BATCH_FAILED = "stream_batch_failed"  # a stream batch discarded by its mapping


# -- filters (pure) ----------------------------------------------------------------------------
def parse_time(value: str) -> float:
    """Epoch seconds from epoch seconds or ISO-8601 (without a zone: UTC)."""
    try:
        return float(value)
    except ValueError:
        pass
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"expected ISO-8601 (2025-03-04T10:11:12Z) or epoch seconds, got {value!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def error_type(entry: dict[str, Any]) -> str | None:
    """The ``errorType`` of the entry's last error that has one (a function's error body)."""
    for error in reversed(entry.get("errors") or []):
        if isinstance(error, dict) and isinstance(error.get("errorType"), str):
            return str(error["errorType"])
    return None


def mapping_of(entry: dict[str, Any]) -> str | None:
    source = entry.get("source")
    return source.get("mappingUuid") if isinstance(source, dict) else None


@dataclass(frozen=True)
class EntryFilter:
    """Which entries a command works on; empty fields match everything."""

    functions: tuple[str, ...] = ()
    mapping: str | None = None
    kinds: frozenset[str] = frozenset()
    conditions: frozenset[str] = frozenset()
    error_types: frozenset[str] = frozenset()
    since_s: float | None = None  # inclusive
    until_s: float | None = None  # exclusive
    limit: int | None = None

    @property
    def narrows(self) -> bool:
        """Whether anything short of the whole store is asked for."""
        return any(
            (
                self.functions,
                self.mapping is not None,
                self.kinds,
                self.conditions,
                self.error_types,
                self.since_s is not None,
                self.until_s is not None,
                self.limit is not None,
            )
        )

    def matches(self, entry: dict[str, Any]) -> bool:
        """The filters on the entry's fields (the time range is applied to scores)."""
        return (
            (self.mapping is None or mapping_of(entry) == self.mapping)
            and (not self.kinds or entry.get("kind") in self.kinds)
            and (not self.conditions or entry.get("condition") in self.conditions)
            and (not self.error_types or error_type(entry) in self.error_types)
        )


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields ``dlq list`` shows."""
    return {
        "id": entry.get("id"),
        "function": entry.get("function"),
        "kind": entry.get("kind"),
        "condition": entry.get("condition"),
        "errorType": error_type(entry),
        "at": entry.get("at"),
        "attempts": entry.get("attempts"),
        "target": redacted(str(entry["target"])) if entry.get("target") else None,
        "requestId": entry.get("requestId"),
        "mappingUuid": mapping_of(entry),
    }


# -- the store (Redis) -------------------------------------------------------------------------
@dataclass(frozen=True)
class Match:
    function: str
    score_ms: float
    entry: dict[str, Any]

    @property
    def entry_id(self) -> str:
        return str(self.entry["id"])


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class DeadLetterQuery:
    """Finds and removes entries across every function's dead-letter store."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def functions(self) -> list[str]:
        """Known functions, and deleted ones whose dead letters are still kept."""
        names = {as_text(m) for m in await self.client.smembers(self.keys.functions)}
        head = f"{self.keys.prefix}:{{"
        pattern = _glob_escape(head) + "*}:dead"
        async for key in self.client.scan_iter(match=pattern, count=PAGE, _type="zset"):
            names.add(as_text(key)[len(head) : -len("}:dead")])
        return sorted(names)

    async def find(self, wanted: EntryFilter) -> list[Match]:
        """Matching entries, oldest first, at most ``wanted.limit``."""
        names = list(wanted.functions) or await self.functions()
        matches: list[Match] = []
        for name in names:
            matches += await self._find_in(name, wanted)
        matches.sort(key=lambda m: (m.score_ms, m.function, m.entry_id))
        return matches if wanted.limit is None else matches[: wanted.limit]

    async def _find_in(self, function: str, wanted: EntryFilter) -> list[Match]:
        fk = self.keys.for_function(function)
        low = "-inf" if wanted.since_s is None else wanted.since_s * 1000
        high = "+inf" if wanted.until_s is None else f"({wanted.until_s * 1000!r}"
        # One read of the range (retention bounds it), so trims meanwhile shift no page.
        members = cast(
            list[tuple[bytes, float]],
            await self.client.zrangebyscore(fk.dead, low, high, withscores=True),
        )
        found: list[Match] = []
        for start in range(0, len(members), PAGE):
            if wanted.limit is not None and len(found) >= wanted.limit:
                break
            page = members[start : start + PAGE]
            raw = await self.client.hmget(fk.dead_entries, [member for member, _ in page])
            for (_, score), text in zip(page, raw, strict=True):
                if text is None:  # trimmed since the range was read
                    continue
                entry = json.loads(text)
                if wanted.matches(entry):
                    found.append(Match(function, score, entry))
        return found

    async def get(self, entry_id: str, functions: Iterable[str] = ()) -> list[Match]:
        """The entries with this id (ids are unique in practice; the function tells apart)."""
        names = list(functions) or await self.functions()
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                fk = self.keys.for_function(name)
                pipe.hget(fk.dead_entries, entry_id)
                pipe.zscore(fk.dead, entry_id)
            replies = await pipe.execute()
        return [
            Match(name, float(score or 0), json.loads(text))
            for name, text, score in zip(names, replies[::2], replies[1::2], strict=True)
            if text is not None
        ]

    async def remove(self, function: str, entry_ids: list[str]) -> int:
        """Remove exactly these entries of one function, in one transaction; how many were
        still there."""
        if not entry_ids:
            return 0
        fk = self.keys.for_function(function)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zrem(fk.dead, *entry_ids)
            pipe.hdel(fk.dead_entries, *entry_ids)
            removed, _ = await pipe.execute()
        return int(removed)
