"""``sluice esm``: list, inspect, enable and disable event source mappings, and move a stream
mapping's checkpoints (``reset-checkpoint``). Straight on Redis: ``serve`` may be down.

``reset-checkpoint`` works through :mod:`broker.checkpoint_reset`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from broker.arns import parse_function_name
from broker.checkpoint_reset import (
    PIN_FIELD,
    Esm,
    Position,
    Refused,
    ResetPlan,
    apply_reset,
    plan_reset,
    text_hash,
)
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.clock import RedisClock
from broker.errors import ApiError
from broker.functions import FunctionStore
from broker.keys import Keys
from broker.mappings import (
    EventSourceMapping,
    MappingService,
    function_checker,
)
from broker.redis_client import connect
from broker.settings import Settings

esm_app = typer.Typer(
    help="Event source mappings: list, inspect, enable, disable, reset a stream's checkpoint.",
    no_args_is_help=True,
    add_completion=False,
)

T = TypeVar("T")
STAT_COLUMNS = ("polled", "filtered_out", "invoked", "failed")  # the list's counter columns
JsonFlag = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]
Uuid = Annotated[str, typer.Argument(metavar="UUID", help="the mapping's UUID")]


def parse_timestamp(text: str) -> float:
    """Epoch seconds (``1741083072.5``) or ISO 8601 (``2025-03-04T10:11:12Z``; without an
    offset: UTC) as epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(
            f"{text!r} is neither epoch seconds nor an ISO 8601 time", param_hint="--timestamp"
        ) from exc
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def choose_position(
    trim_horizon: bool, latest: bool, timestamp: str | None, sequence: str | None
) -> Position:
    chosen = [trim_horizon, latest, timestamp is not None, sequence is not None]
    if sum(chosen) != 1:
        raise typer.BadParameter(
            "give exactly one of --trim-horizon, --latest, --timestamp, --sequence"
        )
    if trim_horizon:
        return Position("TRIM_HORIZON")
    if latest:
        return Position("LATEST")
    if timestamp is not None:
        return Position("AT_TIMESTAMP", timestamp_s=parse_timestamp(timestamp))
    return Position("AFTER_SEQUENCE", sequence=sequence)


# -- plumbing ---------------------------------------------------------------------------------


def _settings(redis_url: str | None, key_prefix: str | None, config: Path | None) -> Settings:
    return redis_settings("esm", redis_url, key_prefix, config)


@asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[Esm]:
    client = connect(settings.redis_url)
    try:
        clock = RedisClock()
        await clock.calibrate(client)
        keys = Keys(settings.key_prefix)
        service = MappingService(
            client,
            keys,
            clock,
            region=settings.region,
            account_id=settings.account_id,
            function_exists=function_checker(FunctionStore(client, keys)),
        )
        yield Esm(client, keys, service)
    finally:
        await client.aclose(close_connection_pool=True)


def _run(settings: Settings, work: Callable[[Esm], Awaitable[T]]) -> T:
    """Run ``work`` on a connection; API errors exit 1, refusals 2, both on stderr."""

    async def main() -> T:
        async with _connected(settings) as esm:
            return await work(esm)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    except Refused as exc:
        typer.echo(f"sluice esm: {exc}", err=True)
        raise typer.Exit(2) from exc
    except (RedisError, OSError) as exc:
        typer.echo(f"sluice esm: Redis at {settings.redis_url} failed: {exc}", err=True)
        raise typer.Exit(1) from exc


def _number(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


async def _stats(esm: Esm, uuid: str) -> dict[str, int | str]:
    stats = await text_hash(esm.client, esm.keys.mapping_stats(uuid))
    return {name: _number(value) for name, value in sorted(stats.items())}


def _console() -> Console:
    console = Console()
    # Piped output keeps whole lines (a UUID or ARN cut in two is no use to grep).
    return console if console.is_terminal else Console(width=240)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")


# -- list, get ------------------------------------------------------------------------------


@esm_app.command("list")
def list_mappings(
    function: Annotated[
        str | None, typer.Option("--function", help="only this function's (NAME[:QUALIFIER])")
    ] = None,
    json_output: JsonFlag = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Every mapping: UUID, function, source, state, batch size, last processing result and
    counters. ``--json``: ListEventSourceMappings' shape, each entry with its ``Stats``."""

    async def work(esm: Esm) -> list[tuple[EventSourceMapping, dict[str, int | str]]]:
        mappings = await esm.service.mappings()
        if function is not None:
            ref = parse_function_name(function)
            mappings = [
                m
                for m in mappings
                if m.function_name == ref.name
                and (ref.qualifier is None or m.qualifier == ref.qualifier)
            ]
        return [(m, await _stats(esm, m.uuid)) for m in mappings]

    found = _run(_settings(redis_url, key_prefix, config), work)
    if json_output:
        entries = [{**m.response(listing=True), "Stats": stats} for m, stats in found]
        typer.echo(json.dumps({"EventSourceMappings": entries}, indent=2))
        return
    table = Table("UUID", "Function", "Source", "State", "Batch", "Last result")
    for name in STAT_COLUMNS:
        table.add_column(name.replace("_", " ").capitalize(), justify="right")
    for mapping, stats in found:
        table.add_row(
            mapping.uuid,
            mapping.function_ref,
            mapping.response()["EventSourceArn"],  # an amqp:// password masked
            mapping.state.value,
            str(mapping.batch_size),
            mapping.last_processing_result or "",
            *(str(stats.get(name, 0)) for name in STAT_COLUMNS),
        )
    _console().print(table)


@esm_app.command("get")
def get_mapping(
    uuid: Uuid,
    json_output: JsonFlag = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """One mapping as GetEventSourceMapping answers, with its stream checkpoints per shard
    (``Checkpoints``; ``LatestPinMs``: the LATEST pin) and counters (``Stats``)."""

    async def work(esm: Esm) -> dict[str, Any]:
        body = await esm.service.get(uuid)
        checkpoints = await text_hash(esm.client, esm.keys.mapping_checkpoint(uuid))
        pin = checkpoints.pop(PIN_FIELD, None)
        body["Checkpoints"] = dict(sorted(checkpoints.items()))
        if pin is not None:
            body["LatestPinMs"] = int(pin)
        body["Stats"] = await _stats(esm, uuid)
        return body

    body = _run(_settings(redis_url, key_prefix, config), work)
    if json_output:
        typer.echo(json.dumps(body, indent=2))
        return
    console = _console()
    fields = Table("Field", "Value", title=f"Event source mapping {uuid}")
    for name, value in body.items():
        if name in ("Checkpoints", "Stats"):
            continue
        if name == "LastModified":
            value = _iso(value)
        fields.add_row(name, value if isinstance(value, str) else json.dumps(value))
    console.print(fields)
    for title, rows in (("Checkpoints", body["Checkpoints"]), ("Stats", body["Stats"])):
        if rows:
            table = Table("Shard" if title == "Checkpoints" else "Counter", "Value", title=title)
            for name, value in rows.items():
                table.add_row(name, str(value))
            console.print(table)


# -- enable, disable ------------------------------------------------------------------------


def _set_enabled(uuid: str, enabled: bool, settings: Settings, json_output: bool) -> None:
    async def work(esm: Esm) -> tuple[str, dict[str, Any]]:
        before = await esm.service.mapping(uuid)
        await esm.service.update(uuid, {"Enabled": enabled})
        return before.state.value, await esm.service.get(uuid)  # settled, when it is due

    was, body = _run(settings, work)
    if json_output:
        typer.echo(json.dumps(body, indent=2))
    else:
        typer.echo(f"{uuid}: {body['State']} (was {was})")


@esm_app.command("enable")
def enable(
    uuid: Uuid,
    json_output: JsonFlag = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """UpdateEventSourceMapping ``{"Enabled": true}``; prints the resulting state."""
    _set_enabled(uuid, True, _settings(redis_url, key_prefix, config), json_output)


@esm_app.command("disable")
def disable(
    uuid: Uuid,
    json_output: JsonFlag = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """UpdateEventSourceMapping ``{"Enabled": false}``; prints the resulting state."""
    _set_enabled(uuid, False, _settings(redis_url, key_prefix, config), json_output)


RESET_HELP = "\n\n".join(
    [
        "Move a stream mapping's checkpoint (kinesis, dynamodb, redis-stream) so that its next"
        " start reads from there. The mapping must be Disabled: `sluice esm disable UUID`,"
        " reset, then `sluice esm enable UUID`.",
        "Without --shard every shard in the checkpoint is reset (a redis-stream has one). Each"
        " reset shard's open tumbling window is dropped.",
        "--latest: records written from now on. --timestamp: records from that time (epoch"
        " seconds or ISO 8601, UTC unless it says otherwise). --sequence N: records after N"
        " (N itself is not read again; a redis-stream takes an entry id <ms>-<seq>).",
        "Exit status: 0 done; 1 the mapping does not exist or the prompt was declined; 2"
        " refused (not Disabled, not a stream, still leased, bad options).",
    ]
)


@esm_app.command("reset-checkpoint", help=RESET_HELP)
def reset_checkpoint(
    uuid: Uuid,
    shard: Annotated[str | None, typer.Option(help="only this shard id")] = None,
    trim_horizon: Annotated[bool, typer.Option("--trim-horizon", help="the oldest record")] = False,
    latest: Annotated[bool, typer.Option("--latest", help="only what is written from now")] = False,
    timestamp: Annotated[
        str | None, typer.Option(metavar="EPOCH_OR_ISO", help="records from this time on")
    ] = None,
    sequence: Annotated[
        str | None, typer.Option(metavar="N", help="records after this sequence number")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    redis_url: RedisUrl = None,
    key_prefix: KeyPrefix = None,
    config: ConfigFile = None,
) -> None:
    """Reset a stream mapping's checkpoint (help: ``RESET_HELP``)."""
    position = choose_position(trim_horizon, latest, timestamp, sequence)
    settings = _settings(redis_url, key_prefix, config)

    async def work(esm: Esm) -> ResetPlan | None:
        plan = await plan_reset(esm, uuid, position, shard)
        for shard_id, (old, new) in plan.changes.items():
            typer.echo(f"{shard_id}: {old or '(none)'} -> {new}")
        for shard_id, why in plan.kept.items():
            typer.echo(f"{shard_id}: unchanged ({why})")
        if not plan.changes:
            return plan
        source = plan.mapping.event_source_arn
        prompt = f"Reset {len(plan.changes)} checkpoint(s) of {uuid} ({source})?"
        if not yes and not typer.confirm(prompt, default=False):
            return None
        await apply_reset(esm, plan)
        return plan

    plan = _run(settings, work)
    if plan is None:
        typer.echo("Not reset; nothing changed.", err=True)
        raise typer.Exit(1)
    if not plan.changes:
        typer.echo(f"{uuid}: nothing to reset")
        return
    typer.echo(f"{uuid}: checkpoint reset; `sluice esm enable {uuid}` starts reading there")
