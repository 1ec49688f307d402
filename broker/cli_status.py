"""``sluice status``: every function's queue and every event source mapping at a glance.

Read straight from Redis (``serve`` may be down) through the same snapshot ``/metrics``
serves (:func:`broker.metrics.read_snapshot`: queue depths, the next ready event's age,
stats counters, dead-letter counts, mapping counters and iterator ages), plus the earliest
due time of ``P:{fn}:delayed`` and each mapping's ``LastProcessingResult``.

Nothing in Redis keeps per-minute data, only running totals. So a single reading shows
throughput as n/a; ``--watch`` computes it between two refreshes from the totals: finished
events (succeeded or dropped) per minute for a function, records polled per minute for a
mapping. Times and ages are on Redis's clock (``TIME``), as everywhere in Sluice.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from broker.arns import parse_function_name
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.clock import Clock, RedisClock
from broker.errors import ApiError
from broker.keys import Keys
from broker.mappings import EventSourceMapping
from broker.metrics import (
    FINISHED_CONDITIONS,
    ITERATOR_AGE_FIELD,
    FunctionSample,
    MappingSample,
    RedisView,
    Snapshot,
    read_snapshot,
)
from broker.redis_client import as_text, connect
from broker.settings import Settings

__all__ = ["STATUS_HELP", "Reading", "per_minute", "read_status", "status_document", "watch"]

INTERVAL_S = 2.0  # --watch refreshes this often unless told otherwise
FINISHED_FIELDS = tuple(stat for _, stat in FINISHED_CONDITIONS)  # succeeded or dropped
MAPPING_RATE_FIELD = "polled"  # a mapping's throughput: records read from its source

STATUS_HELP = "\n\n".join(
    [
        "Queues and event source mappings, read straight from Redis (works while serve is down).",
        "Per function: events ready, in flight, delayed (waiting for a retry) and in the"
        " outbox (finished, waiting for destination delivery); the age of the next ready"
        " event since it was first queued; when the next retry is due; finished events per"
        " minute; errors, throttles and dead-letter entries (totals since the counters"
        " began). Per mapping: state, LastProcessingResult, counters and the shard lag (the"
        " largest IteratorAge of its shards' last batches).",
        "Throughput: Redis keeps running totals, not per-minute data, so one reading shows"
        " n/a; --watch computes it from the totals between two refreshes (finished events per"
        " minute for a function, records polled per minute for a mapping).",
        '--json prints {"functions": [...], "mappings": [...]}; with --watch, one such'
        " object per line and refresh.",
    ]
)


# -- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """One look at Redis: the metrics snapshot and what ``status`` adds to it."""

    at_s: float  # Redis time of the reading, epoch s
    snapshot: Snapshot
    next_retry_s: Mapping[str, float]  # function -> due time of its earliest retry, epoch s
    mappings: Mapping[str, EventSourceMapping]  # UUID -> stored document


async def read_status(broker: RedisView) -> Reading:
    """A reading through a client, keys and clock (read only)."""
    snapshot = await read_snapshot(broker)
    names = [sample.name for sample in snapshot.functions]
    next_retry: dict[str, float] = {}
    if names:
        async with broker.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zrange(broker.keys.for_function(name).delayed, 0, 0, withscores=True)
            heads = await pipe.execute()
        for name, head in zip(names, heads, strict=True):
            if head:
                next_retry[name] = float(head[0][1]) / 1000
    documents = await broker.redis.hgetall(broker.keys.mappings)
    mappings: dict[str, EventSourceMapping] = {}
    for uuid, document in documents.items():
        try:
            mappings[as_text(uuid)] = EventSourceMapping.model_validate_json(document)
        except ValueError:  # another version's document; read_snapshot logged it
            continue
    return Reading(broker.clock.now(), snapshot, next_retry, mappings)


# -- what is shown (pure) -----------------------------------------------------------------------


def per_minute(before: int | None, after: int, elapsed_s: float | None) -> float | None:
    """The rate of a running total between two readings, per minute; None without a
    previous reading or when no time passed. A total that went down (counters reset) counts
    from zero."""
    if before is None or elapsed_s is None or elapsed_s <= 0:
        return None
    grown = after - before if after >= before else after
    return round(grown * 60 / elapsed_s, 3)


def _finished(counters: Mapping[str, int]) -> int:
    return sum(counters.get(field, 0) for field in FINISHED_FIELDS)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


def function_status(
    sample: FunctionSample,
    now_s: float,
    next_retry_s: float | None,
    previous: FunctionSample | None,
    elapsed_s: float | None,
) -> dict[str, Any]:
    counters = sample.counters
    finished = _finished(counters)
    return {
        "function": sample.name,
        "ready": sample.queue.get("ready", 0),
        "inflight": sample.queue.get("inflight", 0),
        "delayed": sample.queue.get("delayed", 0),
        "outbox": sample.queue.get("outbox", 0),
        # The metrics gauge says 0 for "nothing ready"; here that is "no age" (null).
        "oldest_event_age_s": round(sample.next_event_age_s, 3)
        if sample.queue.get("ready", 0)
        else None,
        "next_retry_at": None if next_retry_s is None else _iso(next_retry_s),
        "next_retry_in_s": None if next_retry_s is None else round(next_retry_s - now_s, 3),
        "received": counters.get("AsyncEventsReceived", 0),
        "finished": finished,
        "finished_per_min": per_minute(
            None if previous is None else _finished(previous.counters), finished, elapsed_s
        ),
        "succeeded": counters.get("Succeeded", 0),
        "dropped": counters.get("AsyncEventsDropped", 0),
        "invocations": counters.get("Invocations", 0),
        "errors": counters.get("Errors", 0),
        "throttles": counters.get("Throttles", 0),
        "dead_letters": sample.dead_letters,
    }


def mapping_status(
    sample: MappingSample,
    document: EventSourceMapping | None,
    previous: MappingSample | None,
    elapsed_s: float | None,
) -> dict[str, Any]:
    counters = {
        name: value
        for name, value in sorted(sample.counters.items())
        if not name.startswith(ITERATOR_AGE_FIELD)
    }
    before = None if previous is None else previous.counters.get(MAPPING_RATE_FIELD, 0)
    ages = dict(sorted(sample.iterator_age_ms.items()))
    return {
        "uuid": sample.uuid,
        "function": sample.function,
        "source": sample.source,
        "state": sample.state,
        "last_processing_result": None if document is None else document.last_processing_result,
        "counters": counters,
        "polled_per_min": per_minute(before, counters.get(MAPPING_RATE_FIELD, 0), elapsed_s),
        "shard_lag_ms": max(ages.values()) if ages else None,
        "iterator_age_ms": ages,
    }


@dataclass(frozen=True)
class Selection:
    """``--function`` values: (name, qualifier or None); empty selects everything."""

    refs: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, values: list[str] | None) -> Selection:
        refs = []
        for value in values or []:
            try:
                ref = parse_function_name(value)
            except ApiError as exc:
                raise typer.BadParameter(exc.message, param_hint="--function") from exc
            refs.append((ref.name, ref.qualifier))
        return cls(tuple(refs))

    def function(self, name: str) -> bool:
        return not self.refs or any(name == n for n, _ in self.refs)

    def mapping(self, name: str, document: EventSourceMapping | None) -> bool:
        if not self.refs:
            return True
        qualifier = None if document is None else document.qualifier
        return any(name == n and (q is None or q == qualifier) for n, q in self.refs)


def status_document(
    reading: Reading, previous: Reading | None = None, selection: Selection | None = None
) -> dict[str, Any]:
    """What ``--json`` prints: ``{"at", "rate_window_s", "functions", "mappings"}``; rates
    are per minute between ``previous`` and ``reading`` (null without ``previous``)."""
    selection = selection or Selection()
    elapsed_s = None if previous is None else reading.at_s - previous.at_s
    before_fn = {} if previous is None else {s.name: s for s in previous.snapshot.functions}
    before_esm = {} if previous is None else {s.uuid: s for s in previous.snapshot.mappings}
    functions = [
        function_status(
            sample,
            reading.at_s,
            reading.next_retry_s.get(sample.name),
            before_fn.get(sample.name),
            elapsed_s,
        )
        for sample in reading.snapshot.functions
        if selection.function(sample.name)
    ]
    mappings = [
        mapping_status(
            sample, reading.mappings.get(sample.uuid), before_esm.get(sample.uuid), elapsed_s
        )
        for sample in reading.snapshot.mappings
        if selection.mapping(sample.function, reading.mappings.get(sample.uuid))
    ]
    return {
        "at": _iso(reading.at_s),
        "rate_window_s": None if elapsed_s is None else round(elapsed_s, 3),
        "functions": functions,
        "mappings": mappings,
    }


def duration(seconds: float) -> str:
    """``7.5s``, ``2m05s``, ``1h02m``, ``3d04h``: short enough for a table cell."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def _next_retry(in_s: float | None) -> str:
    if in_s is None:
        return ""
    return "due" if in_s <= 0 else f"in {duration(in_s)}"


def render(document: dict[str, Any], interval_s: float | None = None) -> Group:
    """The tables of one reading (``interval_s``: the --watch refresh, for the heading)."""
    heading = f"Sluice status at {document['at']}"
    if interval_s is not None:
        heading += f" (every {interval_s:g}s; Ctrl-C stops)"
    functions = Table(title="Functions", title_justify="left")
    functions.add_column("Function")
    for name in (
        "Ready",
        "In flight",
        "Delayed",
        "Outbox",
        "Oldest",
        "Next retry",
        "Done/min",
        "Errors",
        "Throttles",
        "Dead letters",
    ):
        functions.add_column(name, justify="right")
    for f in document["functions"]:
        age = f["oldest_event_age_s"]
        functions.add_row(
            f["function"],
            str(f["ready"]),
            str(f["inflight"]),
            str(f["delayed"]),
            str(f["outbox"]),
            "" if age is None else duration(age),
            _next_retry(f["next_retry_in_s"]),
            _rate(f["finished_per_min"]),
            str(f["errors"]),
            str(f["throttles"]),
            str(f["dead_letters"]),
        )
    mappings = Table("UUID", "Function", "Source", "State", "Last result", title="Mappings")
    mappings.title_justify = "left"
    for name in ("Polled", "Invoked", "Failed", "Polled/min", "Lag"):
        mappings.add_column(name, justify="right")
    for m in document["mappings"]:
        lag = m["shard_lag_ms"]
        mappings.add_row(
            m["uuid"],
            m["function"],
            m["source"],
            m["state"],
            m["last_processing_result"] or "",
            str(m["counters"].get("polled", 0)),
            str(m["counters"].get("invoked_records", 0)),
            str(m["counters"].get("failed_records", 0)),
            _rate(m["polled_per_min"]),
            "" if lag is None else duration(lag / 1000),
        )
    parts: list[Any] = [Text(heading, style="bold")]
    parts.append(functions if document["functions"] else Text("No functions."))
    parts.append(mappings if document["mappings"] else Text("No event source mappings."))
    return Group(*parts)


# -- the loop -----------------------------------------------------------------------------------


async def watch(
    read: Callable[[], Awaitable[Reading]],
    show: Callable[[Reading, Reading | None], None],
    *,
    interval_s: float,
    iterations: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Read and ``show`` (this reading, the one before) every ``interval_s``; ``iterations``
    bounds the readings (None: until cancelled or Ctrl-C)."""
    previous: Reading | None = None
    done = 0
    while True:
        reading = await read()
        show(reading, previous)
        done += 1
        if iterations is not None and done >= iterations:
            return
        previous = reading
        await sleep(interval_s)


async def server_clock(client: aioredis.Redis) -> Clock:
    """Redis's clock, as ``serve`` keeps it (ages and due times agree with the broker's)."""
    clock = RedisClock()
    await clock.calibrate(client)
    return clock


@dataclass(frozen=True)
class Options:
    selection: Selection
    json_output: bool
    watch: bool
    interval_s: float
    iterations: int | None


def _console() -> Console:
    console = Console()
    # Piped output keeps whole lines (a UUID or ARN cut in two is no use to grep).
    return console if console.is_terminal else Console(width=240)


async def run_status(
    settings: Settings,
    options: Options,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """The command's work: one reading, or ``--watch``'s loop, printed as asked."""
    client = connect(settings.redis_url)
    try:
        broker = RedisView(client, Keys(settings.key_prefix), await server_clock(client))

        async def read() -> Reading:
            return await read_status(broker)

        if not options.watch:
            document = status_document(await read(), selection=options.selection)
            if options.json_output:
                typer.echo(json.dumps(document, indent=2))
            else:
                _console().print(render(document))
            return
        if options.json_output:

            def line(reading: Reading, previous: Reading | None) -> None:
                document = status_document(reading, previous, options.selection)
                typer.echo(json.dumps(document))

            await watch(
                read,
                line,
                interval_s=options.interval_s,
                iterations=options.iterations,
                sleep=sleep,
            )
            return
        console = _console()
        with Live(console=console, auto_refresh=False) as live:

            def redraw(reading: Reading, previous: Reading | None) -> None:
                document = status_document(reading, previous, options.selection)
                live.update(render(document, options.interval_s), refresh=True)

            await watch(
                read,
                redraw,
                interval_s=options.interval_s,
                iterations=options.iterations,
                sleep=sleep,
            )
    finally:
        await client.aclose(close_connection_pool=True)


FunctionFilter = Annotated[
    list[str] | None,
    typer.Option(
        "--function", metavar="NAME", help="only this function and its mappings; repeatable"
    ),
]


def status(
    function: FunctionFilter = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON instead of tables")] = False,
    watch_: Annotated[bool, typer.Option("--watch", help="refresh until Ctrl-C")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="seconds between --watch refreshes")
    ] = INTERVAL_S,
    iterations: Annotated[
        int | None,
        typer.Option("--iterations", min=1, hidden=True, help="stop --watch after N readings"),
    ] = None,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Queues and mappings at a glance (help: ``STATUS_HELP``)."""
    settings = redis_settings("status", redis_url, key_prefix, config)
    options = Options(Selection.parse(function), json_output, watch_, interval, iterations)
    try:
        asyncio.run(run_status(settings, options))
    except KeyboardInterrupt:  # Ctrl-C ends --watch; the last tables stay on screen
        return
    except (RedisError, OSError) as exc:
        typer.echo(f"sluice status: Redis at {settings.redis_url} failed: {exc}", err=True)
        raise typer.Exit(1) from exc
