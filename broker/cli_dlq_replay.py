"""``sluice dlq replay`` and ``sluice dlq history``.

A replay plans in this process, shows what it will do (``--dry-run`` stops there), asks, and
then runs here by default (so it works while ``serve`` is down, with a progress bar), or
``--background``: handed to the rq worker inside ``sluice serve`` (:mod:`broker.replay_jobs`)
and followed with ``--status ID``. ``--from-sqs ARN`` replays an SQS dead-letter queue
instead of Sluice's store (:mod:`broker.sqs_replay`). What each entry kind becomes, and why
nothing is stored twice, is in :mod:`broker.replay`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_dlq import dlq_app, filtered, plural, run_query
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.dead_letter_query import DeadLetterQuery, EntryFilter
from broker.destination import redacted
from broker.errors import ApiError
from broker.replay import Replayer, ReplayResult, Step
from broker.replay_runs import (
    NotFound,
    ReplayHistory,
    execute,
    new_record,
    new_replay_id,
    replay_session,
    select,
    selection,
)
from broker.settings import Settings

__all__ = ["dlq_history", "dlq_replay", "outcome"]

T = TypeVar("T")

IdsOpt = Annotated[
    list[str] | None,
    typer.Option("--id", metavar="ID", help="an entry id (dlq list shows them); repeatable"),
]


def run_replayer(
    settings: Settings, work: Callable[[Replayer, DeadLetterQuery], Awaitable[T]]
) -> T:
    """Run ``work`` in a replay session (:func:`broker.replay_runs.replay_session`); Redis
    errors and missing entries exit 1."""

    async def main() -> T:
        async with replay_session(settings) as (replayer, query):
            return await work(replayer, query)

    try:
        return asyncio.run(main())
    except RedisError as exc:
        typer.echo(f"sluice: Redis at {settings.redis_url}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except NotFound as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


def _plan_table(steps: list[Step]) -> Table:
    table = Table()
    for column in ("id", "function", "kind", "action", "to", "from", "new request id / note"):
        table.add_column(column, overflow="fold")
    for step in steps:
        row = step.describe()
        note = " ".join(filter(None, (row.get("newRequestId"), row.get("reason"))))
        table.add_row(
            row["id"],
            row["function"],
            row["kind"],
            row["action"],
            row["to"] or "-",
            row.get("from") or "-",
            note or "-",
        )
    return table


def _routes(steps: list[Step]) -> str:
    how = {"enqueue": "new async events", "redeliver": "redelivered"}
    routes = Counter(
        f"{s.function} -> {redacted(s.to)} ({how[s.action]})" for s in steps if s.action != "skip"
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
@filtered
def dlq_replay(
    wanted: EntryFilter,
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
    background: Annotated[
        bool,
        typer.Option("--background", help="hand the replay to sluice serve's worker; see --status"),
    ] = False,
    status: Annotated[
        str | None,
        typer.Option("--status", metavar="ID", help="how a replay (background or not) is doing"),
    ] = None,
    from_sqs: Annotated[
        str | None,
        typer.Option("--from-sqs", metavar="ARN", help="replay an SQS dead-letter queue instead"),
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max", min=1, metavar="N", help="--from-sqs: at most N")
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
    chosen = list(ids or [])
    if to is not None:
        try:
            parse_function_name(to)
        except ApiError as exc:
            raise typer.BadParameter(exc.message, param_hint="--to") from exc
    settings = redis_settings("dlq", redis_url, key_prefix, config)
    if status is not None:
        _show_status(settings, status, json_output)
        return
    if from_sqs is not None:
        if chosen or wanted.narrows or background or all_:
            typer.echo("--from-sqs takes --to, --max, --rate, --dry-run and --yes only", err=True)
            raise typer.Exit(2)
        from broker.sqs_replay import replay_from_sqs_command

        replay_from_sqs_command(
            settings,
            from_sqs,
            to=to,
            dry_run=dry_run,
            rate=rate,
            max_messages=max_messages,
            yes=yes,
            json_output=json_output,
        )
        return
    if max_messages is not None:
        typer.echo("--max is for --from-sqs; use --limit with the store's entries", err=True)
        raise typer.Exit(2)
    if not chosen and not wanted.narrows and not all_:
        typer.echo("refusing to replay every entry without a filter: add one, or --all", err=True)
        raise typer.Exit(2)

    async def plan(replayer: Replayer, query: DeadLetterQuery) -> list[Step]:
        matches = await select(query, wanted, chosen)
        return await replayer.plan([(m.function, m.entry) for m in matches], to)

    steps = run_replayer(settings, plan)
    todo = [s for s in steps if s.action != "skip"]
    if dry_run:
        if json_output:
            typer.echo(json.dumps([s.describe() for s in steps]))
        elif steps:
            Console().print(_plan_table(steps))
            typer.echo(f"dry run: {len(todo)} of {plural(len(steps))} would be replayed")
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
    typer.echo(f"{plural(len(todo))} to replay: {_routes(todo)}{tail}", err=json_output)
    if not yes and not typer.confirm(f"Replay {plural(len(todo))}?", default=False):
        typer.echo("nothing replayed")
        raise typer.Exit(1)
    asked = selection(wanted, chosen, to, rate)
    if background:
        _submit(settings, steps, asked, to, rate, json_output)
        return
    reporter = _Reporter(len(steps), quiet=json_output)
    try:
        record = run_replayer(
            settings,
            lambda replayer, _: execute(
                replayer,
                steps,
                replay_id=new_replay_id(),
                asked=asked,
                rate=rate,
                on_progress=reporter.show,
            ),
        )
    finally:
        reporter.close()
    _report(record, json_output)


def _report(record: dict[str, Any], json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps(record))
    else:
        typer.echo(f"replay {record['replayId']}: {outcome(record)}")
        if record["status"] != "finished":
            typer.echo(f"replay {record['status']}: {record.get('error')}", err=True)
        elif record["failed"]:
            typer.echo(f"{plural(record['failed'])} could not be redelivered; kept", err=True)
    if record["status"] != "finished" or record["failed"]:
        raise typer.Exit(1)


def _submit(
    settings: Settings,
    steps: list[Step],
    asked: dict[str, Any],
    to: str | None,
    rate: float | None,
    json_output: bool,
) -> None:
    """Record the replay as queued, then hand it to a ``serve`` worker (in this order: the
    worker's own record must not be overwritten by ours); a failed hand-over is recorded."""
    from broker.replay_jobs import submit

    replay_id = new_replay_id()

    async def save(record: dict[str, Any], replayer: Replayer) -> dict[str, Any]:
        started = datetime.fromisoformat(record["startedAt"]).timestamp()
        await ReplayHistory(replayer.redis, replayer.keys).save(record, started)
        return record

    async def queued(replayer: Replayer, _: DeadLetterQuery) -> dict[str, Any]:
        now = replayer.broker.clock.now()
        record = new_record(replay_id, now, {**asked, "background": True}, steps)
        return await save({**record, "status": "queued"}, replayer)

    record = run_replayer(settings, queued)
    try:
        submit(
            settings,
            replay_id,
            [(s.function, s.entry_id) for s in steps],
            to=to,
            rate=rate,
            asked=asked,
        )
    except RedisError as exc:
        failed = {**record, "status": "failed", "error": str(exc)}
        run_replayer(settings, lambda replayer, _: save(failed, replayer))
        typer.echo(f"sluice: rq's Redis: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_output:
        typer.echo(json.dumps(record))
        return
    typer.echo(f"replay {replay_id} queued for sluice serve's worker")
    typer.echo(f"follow it: sluice dlq replay --status {replay_id}")


def _show_status(settings: Settings, replay_id: str, json_output: bool) -> None:
    from broker.replay_jobs import job_state

    record = run_replayer(
        settings, lambda replayer, _: ReplayHistory(replayer.redis, replayer.keys).get(replay_id)
    )
    try:
        job = job_state(settings, replay_id)
    except RedisError as exc:
        typer.echo(f"sluice: rq's Redis: {exc}", err=True)
        raise typer.Exit(1) from exc
    if record is None and job is None:
        typer.echo(f"no replay {replay_id!r} (sluice dlq history lists them)", err=True)
        raise typer.Exit(1)
    if json_output:
        typer.echo(json.dumps({"replayId": replay_id, "record": record, "job": job}))
        return
    if record is not None:
        done = sum(int(record.get(key) or 0) for key in _DONE)
        typer.echo(f"replay {replay_id}: {record['status']}, {done}/{record['matched']} done")
        typer.echo(f"  {outcome(record)}")
        if record.get("error"):
            typer.echo(f"  error: {record['error']}")
    if job is None:
        typer.echo("  not a background replay (or rq has forgotten its job)")
        return
    where = f" on {job['worker']}" if job["worker"] else ""
    typer.echo(f"  rq job: {job['status']}{where}")
    if job["status"] == "queued":
        typer.echo("  waiting for a worker: is sluice serve running?")
    if job["error"]:
        typer.echo(f"  last error: {job['error']} ({job['retriesLeft']} retries left)")


_DONE = ("stored", "alreadyStored", "redelivered", "skipped", "failed", "gone")


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
        asked = " ".join(f"{k}={_flat(v)}" for k, v in record["selection"].items())
        routes = ", ".join(f"{route}: {n}" for route, n in record["routes"].items())
        table.add_row(
            record["replayId"],
            record["startedAt"][:19] + "Z",
            record["status"],
            asked or "--all",
            routes or "-",
            outcome(record),
        )
    Console().print(table)


def outcome(record: dict[str, Any]) -> str:
    """``3 matched: stored 1, stored before 1, failed 1``: the counts that are not zero."""
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
