"""``sluice dlq``: look into Sluice's dead-letter store and clean it up.

``list``, ``show``, ``export`` and ``purge`` read every function's store through
:class:`broker.dead_letter_query.DeadLetterQuery` straight from Redis, so they work while
``sluice serve`` is down. A purge removes exactly the entries it matched, one transaction per
function, so entries stored meanwhile stay. ``replay``, ``history`` and the background
replays are in :mod:`broker.cli_dlq_replay`.

Every command that selects entries takes the same filter options, declared once here
(:func:`filtered`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_options import (
    ConfigFile,
    KeyPrefix,
    RedisUrl,
    declare_parameters,
    redis_settings,
)
from broker.dead_letter_query import DeadLetterQuery, EntryFilter, Kind, Match, parse_time, summary
from broker.errors import ApiError
from broker.keys import Keys
from broker.redis_client import connect

__all__ = ["dlq_app", "filtered", "function_names", "plural", "run_query"]

dlq_app = typer.Typer(
    help="Sluice's dead-letter store: every event that ended without success.",
    no_args_is_help=True,
    add_completion=False,
)

LIST_LIMIT = 100  # rows `dlq list` shows unless told otherwise
T = TypeVar("T")

# -- the filter options, shared by list, export, purge and replay ------------------------------
FunctionsOpt = Annotated[
    list[str] | None,
    typer.Option("--function", metavar="NAME", help="a function (name or ARN); repeatable"),
]
_FILTER_OPTIONS: dict[str, Any] = {
    "function": FunctionsOpt,
    "mapping": Annotated[
        str | None, typer.Option("--mapping", metavar="UUID", help="a stream mapping's entries")
    ],
    "kind": Annotated[list[Kind] | None, typer.Option("--kind", help="entry kind; repeatable")],
    "condition": Annotated[
        list[str] | None,
        typer.Option(
            "--condition",
            metavar="CONDITION",
            help="RetriesExhausted, EventAgeExceeded, RetryAttemptsExhausted...; repeatable",
        ),
    ],
    "error_type": Annotated[
        list[str] | None,
        typer.Option(
            "--error-type",
            metavar="TYPE",
            help="the errorType of the entry's last error (RuntimeError...); repeatable",
        ),
    ],
    "since": Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="stored at or after (ISO-8601 or epoch s)"),
    ],
    "until": Annotated[
        str | None,
        typer.Option("--until", metavar="TIME", help="stored before (ISO-8601 or epoch s)"),
    ],
}
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="at most N, oldest first")]


def function_names(values: list[str] | None) -> tuple[str, ...]:
    """Function names from names or ARNs, each once; a bad one is a usage error."""
    names: list[str] = []
    for value in values or []:
        try:
            names.append(parse_function_name(value).name)
        except ApiError as exc:
            raise typer.BadParameter(exc.message, param_hint="--function") from exc
    return tuple(dict.fromkeys(names))


def _time(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def entry_filter(values: dict[str, Any], limit: int | None) -> EntryFilter:
    return EntryFilter(
        functions=function_names(values["function"]),
        mapping=values["mapping"],
        kinds=frozenset(k.value for k in values["kind"] or []),
        conditions=frozenset(values["condition"] or []),
        error_types=frozenset(values["error_type"] or []),
        since_s=_time(values["since"], "--since"),
        until_s=_time(values["until"], "--until"),
        limit=limit,
    )


def filtered(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the filter options: it takes ``wanted: EntryFilter`` (built from them
    and its own ``limit`` option, if it has one) instead of declaring them itself."""
    own = inspect.signature(command, eval_str=True).parameters
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in _FILTER_OPTIONS.items()
    ]
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.items() if n != "wanted"]
    if "limit" not in own:
        options.append(
            inspect.Parameter(
                "limit", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=LimitOpt
            )
        )

    @functools.wraps(command)
    def run(**values: Any) -> None:
        picked = {name: values.pop(name) for name in _FILTER_OPTIONS}
        limit = values["limit"] if "limit" in own else values.pop("limit")
        command(wanted=entry_filter(picked, limit), **values)

    parameters = [*options, *rest]
    declare_parameters(run, parameters)
    del run.__wrapped__  # typer reads the new signature, not the command's
    return run


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


def plural(n: int) -> str:
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
@filtered
def dlq_list(
    wanted: EntryFilter,
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
    wanted = replace(wanted, limit=limit + 1)
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
    names = function_names(function)
    found = run_query(redis_url, key_prefix, config, lambda q: q.get(entry_id, names))
    if not found:
        typer.echo(f"no dead-letter entry {entry_id!r}", err=True)
        raise typer.Exit(1)
    if len(found) > 1:
        where = ", ".join(m.function for m in found)
        typer.echo(
            f"entry {entry_id!r} is in several functions ({where}): add --function", err=True
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
@filtered
def dlq_export(
    wanted: EntryFilter,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="write here instead of stdout"),
    ] = None,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Write matching entries whole as JSON Lines (one entry per line), oldest first."""
    matches = run_query(redis_url, key_prefix, config, lambda q: q.find(wanted))
    lines = [json.dumps(m.entry) + "\n" for m in matches]
    if output is None:
        typer.echo("".join(lines), nl=False)
    else:
        output.write_text("".join(lines), encoding="utf-8")
    typer.echo(f"exported {plural(len(lines))}", err=True)


@dlq_app.command("purge")
@filtered
def dlq_purge(
    wanted: EntryFilter,
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
    if not wanted.narrows and not all_:
        typer.echo("refusing to purge every entry without a filter: add one, or --all", err=True)
        raise typer.Exit(2)
    matches = run_query(redis_url, key_prefix, config, lambda q: q.find(wanted))
    if not matches:
        typer.echo("no matching dead-letter entries; nothing purged")
        return
    per_function = Counter(m.function for m in matches)
    where = ", ".join(f"{name} ({n})" for name, n in sorted(per_function.items()))
    typer.echo(f"{plural(len(matches))} match: {where}")
    if not yes and not typer.confirm(f"Purge {plural(len(matches))}?", default=False):
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
    typer.echo(f"purged {plural(removed)}{tail}")
