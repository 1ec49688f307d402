"""``sluice dlq``: look into Sluice's dead-letter store and clean it up.

``list``, ``show``, ``export`` and ``purge`` read every function's store (``P:{fn}:dead``,
``P:{fn}:dead:entries``; see :mod:`broker.keys`) straight from Redis, so they work while
``sluice serve`` is down. Filters: function, mapping, kind, condition, error type and a time
range (on the time an entry was stored, the score of ``P:{fn}:dead``). Entries come oldest
first. A purge removes exactly the entries it matched, one transaction per function, so
entries stored meanwhile stay. ``replay`` (same filters, or ``--id``) and ``history`` run
:mod:`broker.replay` in this process, so they too work while ``serve`` is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.clock import RedisClock
from broker.core import Broker
from broker.errors import ApiError
from broker.keys import Keys
from broker.pacing import Pacer
from broker.records import iso_ms
from broker.redis_client import as_text, connect
from broker.replay import (
    QueueFull,
    Replayer,
    ReplayHistory,
    ReplayResult,
    Step,
    new_record,
    updated_record,
)
from broker.settings import Settings

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


# -- replay and history ------------------------------------------------------------------------
IdsOpt = Annotated[
    list[str] | None,
    typer.Option("--id", metavar="ID", help="an entry id (dlq list shows them); repeatable"),
]


def _selection(
    wanted: EntryFilter, ids: list[str], to: str | None, rate: float | None
) -> dict[str, Any]:
    """What a replay was asked for, for its history record (empty fields left out)."""
    fields: dict[str, Any] = {
        "functions": list(wanted.functions),
        "mapping": wanted.mapping,
        "kinds": sorted(wanted.kinds),
        "conditions": sorted(wanted.conditions),
        "errorTypes": sorted(wanted.error_types),
        "since": None if wanted.since_s is None else iso_ms(wanted.since_s),
        "until": None if wanted.until_s is None else iso_ms(wanted.until_s),
        "limit": wanted.limit,
        "ids": ids,
        "to": to,
        "rate": rate,
    }
    return {key: value for key, value in fields.items() if value not in (None, [])}


async def _selected(query: DeadLetterQuery, wanted: EntryFilter, ids: list[str]) -> list[Match]:
    if not ids:
        return await query.find(wanted)
    found: list[Match] = []
    for entry_id in dict.fromkeys(ids):
        matches = await query.get(entry_id, wanted.functions)
        if not matches:
            raise _Usage(f"no dead-letter entry {entry_id!r}")
        if len(matches) > 1:
            names = ", ".join(m.function for m in matches)
            raise _Usage(f"entry {entry_id!r} is in several functions ({names}): add --function")
        found += matches
    return found


class _Usage(Exception):
    """A replay asked for something that is not there (exit 1 with the message)."""


def run_replayer(
    settings: Settings, work: Callable[[Replayer, DeadLetterQuery], Awaitable[T]]
) -> T:
    """Run ``work`` with a replayer on a broker that dispatches nothing (its clock is Redis's
    and its deliverer does redeliveries); Redis errors exit 1."""

    async def main() -> T:
        client = connect(settings.redis_url or "")
        broker = Broker(settings, client, dispatch=False)
        try:
            if isinstance(broker.clock, RedisClock):
                await broker.clock.calibrate(client)
            return await work(Replayer(broker), DeadLetterQuery(client, broker.keys))
        finally:
            await broker.destinations.close()
            await broker.invokers.close()
            await client.aclose()
            await client.connection_pool.disconnect()

    try:
        return asyncio.run(main())
    except RedisError as exc:
        typer.echo(f"sluice: Redis at {settings.redis_url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except _Usage as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


def _plan_table(steps: list[Step]) -> Table:
    table = Table()
    for column in ("id", "function", "kind", "action", "to", "new request id / reason"):
        table.add_column(column, overflow="fold")
    for step in steps:
        row = step.describe()
        table.add_row(
            row["id"],
            row["function"],
            row["kind"],
            row["action"],
            row["to"] or "-",
            row.get("newRequestId") or row.get("reason") or "-",
        )
    return table


def _routes(steps: list[Step]) -> str:
    how = {"enqueue": "new async events", "redeliver": "redelivered"}
    routes = Counter(
        f"{s.function} -> {s.to} ({how[s.action]})" for s in steps if s.action != "skip"
    )
    return "; ".join(f"{route}: {n}" for route, n in sorted(routes.items()))


class _Reporter:
    """Progress: a rich progress bar on a terminal, else a line at most once a second."""

    def __init__(self, total: int, *, quiet: bool) -> None:
        self.total = total
        self.quiet = quiet
        self.bar: Progress | None = None
        self._last = 0.0
        if not quiet and sys.stdout.isatty():
            self.bar = Progress(
                TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
            )
            self._task = self.bar.add_task("replay", total=total)
            self.bar.start()

    def show(self, result: ReplayResult) -> None:
        if self.bar is not None:
            self.bar.update(self._task, completed=result.done)
        elif not self.quiet and (time.monotonic() - self._last >= 1.0 or result.done == self.total):
            self._last = time.monotonic()
            typer.echo(f"replayed {result.done}/{self.total}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@dlq_app.command("replay")
def dlq_replay(
    function: FunctionsOpt = None,
    mapping: MappingOpt = None,
    kind: KindsOpt = None,
    condition: ConditionsOpt = None,
    error_type: ErrorTypesOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: LimitOpt = None,
    ids: IdsOpt = None,
    to: Annotated[
        str | None,
        typer.Option("--to", metavar="FUNCTION", help="replay events into this function"),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="show what would be replayed and where; change nothing"),
    ] = False,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.001, metavar="N", help="at most N entries/s")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="don't ask for confirmation")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="allow a replay with no filter: every entry")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="the plan (--dry-run) or the replay's record as JSON")
    ] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Replay entries: async and stream entries become new async events of their function
    (or --to), delivery_failed entries are delivered again. An entry leaves the store once
    its event is stored; a replay interrupted and run again stores nothing twice."""
    wanted = entry_filter(function, mapping, kind, condition, error_type, since, until, limit)
    chosen = list(ids or [])
    if to is not None:
        try:
            parse_function_name(to)
        except ApiError as exc:
            raise typer.BadParameter(exc.message, param_hint="--to") from exc
    if not chosen and not wanted.narrows and not all_:
        typer.echo("refusing to replay every entry without a filter: add one, or --all", err=True)
        raise typer.Exit(2)
    settings = redis_settings("dlq", redis_url, key_prefix, config)

    async def plan(replayer: Replayer, query: DeadLetterQuery) -> list[Step]:
        matches = await _selected(query, wanted, chosen)
        return await replayer.plan([(m.function, m.entry) for m in matches], to)

    steps = run_replayer(settings, plan)
    todo = [s for s in steps if s.action != "skip"]
    if dry_run:
        if json_output:
            typer.echo(json.dumps([s.describe() for s in steps]))
        elif steps:
            Console().print(_plan_table(steps))
            typer.echo(f"dry run: {len(todo)} of {_plural(len(steps))} would be replayed")
        else:
            typer.echo("no matching dead-letter entries")
        return
    if not steps:
        typer.echo("no matching dead-letter entries; nothing replayed")
        return
    if not todo:
        for step in steps:
            typer.echo(f"skipping {step.entry_id}: {step.reason}", err=True)
        typer.echo("nothing to replay")
        return
    skipped = len(steps) - len(todo)
    tail = f" ({skipped} skipped: --dry-run shows why)" if skipped else ""
    typer.echo(f"{_plural(len(todo))} to replay: {_routes(todo)}{tail}", err=json_output)
    if not yes and not typer.confirm(f"Replay {_plural(len(todo))}?", default=False):
        typer.echo("nothing replayed")
        raise typer.Exit(1)
    record = run_replayer(
        settings,
        lambda replayer, _: _replay(replayer, steps, wanted, chosen, to, rate, json_output),
    )
    if json_output:
        typer.echo(json.dumps(record))
        if record["status"] != "finished" or record["failed"]:
            raise typer.Exit(1)
        return
    typer.echo(f"replay {record['replayId']}: {_outcome(record)}")
    if record["status"] != "finished":
        typer.echo(f"replay {record['status']}: {record.get('error')}", err=True)
        raise typer.Exit(1)
    if record["failed"]:
        typer.echo(f"{_plural(record['failed'])} could not be redelivered; kept", err=True)
        raise typer.Exit(1)


async def _replay(
    replayer: Replayer,
    steps: list[Step],
    wanted: EntryFilter,
    ids: list[str],
    to: str | None,
    rate: float | None,
    quiet: bool,
) -> dict[str, Any]:
    """Run a planned replay, keeping its history record up to date."""
    clock = replayer.broker.clock
    history = ReplayHistory(replayer.redis, replayer.keys)
    replay_id = uuid.uuid4().hex[:12]  # short: operators type it; 48 random bits
    started = clock.now()
    record = new_record(replay_id, started, _selection(wanted, ids, to, rate), steps)
    await history.save(record, started)
    reporter = _Reporter(len(steps), quiet=quiet)
    result = ReplayResult(replay_id, matched=len(steps))

    async def progress(now: ReplayResult) -> None:
        reporter.show(now)
        await history.save(updated_record(record, now, "started", None), started)

    pacer = Pacer(rate) if rate else None
    try:
        result = await replayer.run(steps, replay_id, pacer=pacer, progress=progress)
    except asyncio.CancelledError:  # Ctrl-C: what was done is recorded; run it again to go on
        await history.save(updated_record(record, result, "interrupted", clock.now()), started)
        raise
    except (QueueFull, RedisError) as exc:
        failed = {**updated_record(record, result, "failed", clock.now()), "error": str(exc)}
        with contextlib.suppress(RedisError):
            await history.save(failed, started)
        return failed
    finally:
        reporter.close()
    final = updated_record(record, result, "finished", clock.now())
    await history.save(final, started)
    return final


@dlq_app.command("history")
def dlq_history(
    limit: Annotated[int, typer.Option("--limit", min=1, help="the newest N replays")] = 20,
    json_output: Annotated[
        bool, typer.Option("--json", help="the records whole, with their entry links")
    ] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Replays done so far, newest first: when, what was asked, how many, from where to
    where, and the replay id."""
    records = run_query(
        redis_url, key_prefix, config, lambda q: ReplayHistory(q.client, q.keys).list(limit)
    )
    if json_output:
        typer.echo(json.dumps(records))
        return
    if not records:
        typer.echo("no replays recorded")
        return
    table = Table()
    for column in ("replay id", "started"):
        table.add_column(column, no_wrap=True)
    for column in ("status", "selection", "routes", "outcome"):
        table.add_column(column, overflow="fold")
    for record in records:
        selection = " ".join(f"{k}={_flat(v)}" for k, v in record["selection"].items())
        routes = ", ".join(f"{route}: {n}" for route, n in record["routes"].items())
        table.add_row(
            record["replayId"],
            record["startedAt"][:19] + "Z",
            record["status"],
            selection or "--all",
            routes or "-",
            _outcome(record),
        )
    Console().print(table)


def _outcome(record: dict[str, Any]) -> str:
    """``2/3: stored 1, stored before 1, failed 1``: the counts that are not zero."""
    names = {
        "stored": "stored",
        "alreadyStored": "stored before",
        "redelivered": "redelivered",
        "skipped": "skipped",
        "failed": "failed",
        "gone": "gone",
    }
    parts = [f"{label} {record[key]}" for key, label in names.items() if record.get(key)]
    return f"{record['matched']} matched: " + (", ".join(parts) or "none done")


def _flat(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
