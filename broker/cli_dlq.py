"""``sluice dlq``: look into Sluice's dead-letter store and clean it up.

``list``, ``show``, ``export`` and ``purge`` read every function's store (``P:{fn}:dead``,
``P:{fn}:dead:entries``; see :mod:`broker.keys`) straight from Redis, so they work while
``sluice serve`` is down. Filters: function, mapping, kind, condition, error type and a time
range (on the time an entry was stored, the score of ``P:{fn}:dead``). Entries come oldest
first. A purge removes exactly the entries it matched, one transaction per function, so
entries stored meanwhile stay.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.errors import ApiError
from broker.keys import Keys
from broker.redis_client import as_text, connect

dlq_app = typer.Typer(
    help="Sluice's dead-letter store: every event that ended without success.",
    no_args_is_help=True,
    add_completion=False,
)

PAGE = 1000  # entries read per round trip
LIST_LIMIT = 100  # rows `dlq list` shows unless told otherwise
T = TypeVar("T")


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
        raise typer.BadParameter(
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
        "target": entry.get("target"),
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


# -- command plumbing --------------------------------------------------------------------------
FunctionsOpt = Annotated[
    list[str] | None,
    typer.Option("--function", metavar="NAME", help="a function (name or ARN); repeatable"),
]
MappingOpt = Annotated[
    str | None, typer.Option("--mapping", metavar="UUID", help="a stream mapping's entries")
]
KindsOpt = Annotated[list[Kind] | None, typer.Option("--kind", help="entry kind; repeatable")]
ConditionsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--condition",
        metavar="CONDITION",
        help="RetriesExhausted, EventAgeExceeded, RetryAttemptsExhausted...; repeatable",
    ),
]
ErrorTypesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--error-type",
        metavar="TYPE",
        help="the errorType of the entry's last error (RuntimeError...); repeatable",
    ),
]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", metavar="TIME", help="stored at or after (ISO-8601 or epoch s)"),
]
UntilOpt = Annotated[
    str | None, typer.Option("--until", metavar="TIME", help="stored before (ISO-8601 or epoch s)")
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="at most N, oldest first")]


def entry_filter(
    functions: list[str] | None,
    mapping: str | None,
    kinds: list[Kind] | None,
    conditions: list[str] | None,
    error_types: list[str] | None,
    since: str | None,
    until: str | None,
    limit: int | None,
) -> EntryFilter:
    names: list[str] = []
    for value in functions or []:
        try:
            names.append(parse_function_name(value).name)
        except ApiError as exc:
            raise typer.BadParameter(exc.message, param_hint="--function") from exc
    return EntryFilter(
        functions=tuple(dict.fromkeys(names)),
        mapping=mapping,
        kinds=frozenset(k.value for k in kinds or []),
        conditions=frozenset(conditions or []),
        error_types=frozenset(error_types or []),
        since_s=None if since is None else parse_time(since),
        until_s=None if until is None else parse_time(until),
        limit=limit,
    )


def run_query(
    redis_url: str | None,
    key_prefix: str | None,
    config: Path | None,
    work: Callable[[DeadLetterQuery], Awaitable[T]],
) -> T:
    """Run ``work`` against the dead-letter store named by the settings; Redis errors exit 1."""
    settings = redis_settings("dlq", redis_url, key_prefix, config)
    url, keys = settings.redis_url, Keys(settings.key_prefix)

    async def main() -> T:
        client = connect(url)
        try:
            return await work(DeadLetterQuery(client, keys))
        finally:
            await client.aclose()
            await client.connection_pool.disconnect()

    try:
        return asyncio.run(main())
    except RedisError as exc:
        typer.echo(f"sluice: Redis at {url}: {exc}", err=True)
        raise typer.Exit(1) from exc


def _plural(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _table(matches: list[Match]) -> Table:
    table = Table(show_lines=False)
    for column in ("id", "function", "kind", "condition", "error type", "at"):
        table.add_column(column, overflow="fold")
    table.add_column("attempts", justify="right")
    table.add_column("target", overflow="fold")
    for match in matches:
        row = summary(match.entry)
        table.add_row(
            *(
                str(row[key]) if row[key] is not None else "-"
                for key in ("id", "function", "kind", "condition", "errorType", "at")
            ),
            str(row["attempts"]),
            row["target"] or "-",
        )
    return table


# -- commands ----------------------------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(
    function: FunctionsOpt = None,
    mapping: MappingOpt = None,
    kind: KindsOpt = None,
    condition: ConditionsOpt = None,
    error_type: ErrorTypesOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="at most N, oldest first")] = (
        LIST_LIMIT
    ),
    json_output: Annotated[
        bool, typer.Option("--json", help="one JSON array of the rows (show/export: whole)")
    ] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """List dead-letter entries (id, function, kind, condition, error type, time, attempts,
    target), oldest first."""
    # One more than shown tells whether there are more.
    wanted = entry_filter(function, mapping, kind, condition, error_type, since, until, limit + 1)
    found = run_query(redis_url, key_prefix, config, lambda q: q.find(wanted))
    matches = found[:limit]
    if json_output:
        typer.echo(json.dumps([summary(m.entry) for m in matches]))
    elif matches:
        Console().print(_table(matches))
    else:
        typer.echo("no matching dead-letter entries")
    if len(found) > limit:
        typer.echo(f"showing the oldest {limit} matching entries; there are more", err=True)


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(metavar="ID")],
    function: FunctionsOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="the entry only, as JSON")] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Show one entry whole: record, payload, errors, attempts."""
    wanted = entry_filter(function, None, None, None, None, None, None, None)
    found = run_query(redis_url, key_prefix, config, lambda q: q.get(entry_id, wanted.functions))
    if not found:
        typer.echo(f"no dead-letter entry {entry_id!r}", err=True)
        raise typer.Exit(1)
    if len(found) > 1:
        names = ", ".join(m.function for m in found)
        typer.echo(
            f"entry {entry_id!r} is in several functions ({names}): add --function", err=True
        )
        raise typer.Exit(1)
    entry = found[0].entry
    if json_output:
        typer.echo(json.dumps(entry, indent=2))
        return
    console = Console()
    grid = Table.grid(padding=(0, 2))
    for key, value in summary(entry).items():
        if value is not None:
            grid.add_row(key, str(value))
    console.print(grid)
    console.print_json(json.dumps(entry))


@dlq_app.command("export")
def dlq_export(
    function: FunctionsOpt = None,
    mapping: MappingOpt = None,
    kind: KindsOpt = None,
    condition: ConditionsOpt = None,
    error_type: ErrorTypesOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="write here instead of stdout"),
    ] = None,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Write matching entries whole as JSON Lines (one entry per line), oldest first."""
    wanted = entry_filter(function, mapping, kind, condition, error_type, since, until, limit)
    matches = run_query(redis_url, key_prefix, config, lambda q: q.find(wanted))
    lines = [json.dumps(m.entry) + "\n" for m in matches]
    if output is None:
        typer.echo("".join(lines), nl=False)
    else:
        output.write_text("".join(lines), encoding="utf-8")
    typer.echo(f"exported {_plural(len(lines))}", err=True)


@dlq_app.command("purge")
def dlq_purge(
    function: FunctionsOpt = None,
    mapping: MappingOpt = None,
    kind: KindsOpt = None,
    condition: ConditionsOpt = None,
    error_type: ErrorTypesOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="don't ask for confirmation")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="allow a purge with no filter: every entry")
    ] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Delete matching entries for good (they cannot be replayed afterwards). Asks first
    unless --yes; with no filter, needs --all. Entries stored meanwhile are kept."""
    wanted = entry_filter(function, mapping, kind, condition, error_type, since, until, limit)
    if not wanted.narrows and not all_:
        typer.echo("refusing to purge every entry without a filter: add one, or --all", err=True)
        raise typer.Exit(2)
    matches = run_query(redis_url, key_prefix, config, lambda q: q.find(wanted))
    if not matches:
        typer.echo("no matching dead-letter entries; nothing purged")
        return
    per_function = Counter(m.function for m in matches)
    where = ", ".join(f"{name} ({n})" for name, n in sorted(per_function.items()))
    typer.echo(f"{_plural(len(matches))} match: {where}")
    if not yes and not typer.confirm(f"Purge {_plural(len(matches))}?", default=False):
        typer.echo("nothing purged")
        raise typer.Exit(1)
    ids: dict[str, list[str]] = {}
    for match in matches:
        ids.setdefault(match.function, []).append(match.entry_id)

    async def purge(query: DeadLetterQuery) -> int:
        return sum([await query.remove(name, entry_ids) for name, entry_ids in ids.items()])

    removed = run_query(redis_url, key_prefix, config, purge)
    gone = len(matches) - removed
    tail = f" ({gone} had already left the store)" if gone else ""
    typer.echo(f"purged {_plural(removed)}{tail}")
