"""``sluice esm``: list, inspect, enable and disable event source mappings, and move a stream
mapping's checkpoints (``reset-checkpoint``). Straight on Redis: ``serve`` may be down.

``reset-checkpoint`` writes ``P:{esm}:checkpoint:UUID`` so that the next start of the
mapping's poller reads from the new position, and drops each reset shard's open tumbling
window (``P:{esm}:windows:UUID``: it belongs to the old position). Only a Disabled mapping
with no lease left (no ``serve`` still finishing a batch) is changed: a running poller would
overwrite the checkpoint. What each position is written as:

============  ========================  ========================  =========================
position      kinesis                   dynamodb                  redis-stream
============  ========================  ========================  =========================
TRIM_HORIZON  ``TRIM_HORIZON``          ``TRIM_HORIZON``          ``0-0``
LATEST        ``AT_TIMESTAMP:<now ms>`` ``AFTER_TIME:<now ms>``   the stream's last id now
timestamp     ``AT_TIMESTAMP:<ms>``     ``AFTER_TIME:<ms>``       the last id before it
sequence N    ``N``                     ``N``                     ``N``
============  ========================  ========================  =========================

LATEST is pinned when the command runs (Redis ``TIME``), whatever the mapping's
StartingPosition, so records written between the reset and ``enable`` are read; a shard
already read to its end (``SHARD_END``) keeps that, since a closed shard has nothing newer.
A sequence number is where reading resumes *after* (the checkpoint's own meaning): the
record N itself is not read again. DynamoDB's ``AFTER_TIME`` works in whole seconds, so
records of the pin's second are read again (at least once).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import redis.asyncio as aioredis
import typer
from redis.exceptions import RedisError, WatchError
from rich.console import Console
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_options import ConfigFile, KeyPrefix, RedisUrl, redis_settings
from broker.clock import RedisClock
from broker.errors import ApiError, ResourceNotFoundError
from broker.functions import FunctionStore
from broker.keys import Keys
from broker.mappings import (
    SOURCE_TYPES,
    EventSourceMapping,
    MappingService,
    SourceKind,
    State,
    function_checker,
)
from broker.mappings.service import NOT_FOUND
from broker.redis_client import as_text, connect
from broker.settings import Settings

esm_app = typer.Typer(
    help="Event source mappings: list, inspect, enable, disable, reset a stream's checkpoint.",
    no_args_is_help=True,
    add_completion=False,
)

T = TypeVar("T")
PositionKind = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AFTER_SEQUENCE"]
STAT_COLUMNS = ("polled", "filtered_out", "invoked", "failed")  # the list's counter columns
_TRIES = 20  # optimistic-transaction attempts of a reset

# The stream readers' checkpoint vocabulary. ``pollers`` owns it and the core never imports
# ``pollers``, so it is spelled again here; tests/test_cli_esm.py pins each to the original.
TRIM_HORIZON = "TRIM_HORIZON"  # pollers.aws_shards.TRIM_HORIZON.kind
SHARD_END = "SHARD_END"  # pollers.stream_decisions.SHARD_END
PIN_FIELD = "@latest"  # pollers.shards.PIN_FIELD: LATEST's pin (ms) beside the shard ids
PIN_PREFIXES = {  # each reader's ``pin_prefix``: the position of records from a time on
    SourceKind.KINESIS: "AT_TIMESTAMP",
    SourceKind.DYNAMODB: "AFTER_TIME",
}
REDIS_STREAM_SHARD = "shardId-000000000000"  # pollers.redis_streams.SHARD_ID
_STREAM_START = "0-0"  # below every entry id
_MAX_ENTRY_SEQ = 2**64 - 1
_AWS_SEQUENCE = re.compile(r"^\d{1,128}$")
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")

JsonFlag = Annotated[bool, typer.Option("--json", help="JSON instead of a table")]
Uuid = Annotated[str, typer.Argument(metavar="UUID", help="the mapping's UUID")]


class Refused(Exception):
    """The command will not do this (exit status 2); the message says why and what to do."""


@dataclass(frozen=True)
class Position:
    """Where a reset mapping starts reading."""

    kind: PositionKind
    timestamp_s: float | None = None
    sequence: str | None = None


# -- the pure part: what a position is written as -------------------------------------------


def checkpoint_value(
    kind: SourceKind, position: Position, *, now_ms: int, last_id: str | None = None
) -> str:
    """The checkpoint that makes ``kind``'s reader start at ``position`` (module docstring).
    ``now_ms`` pins LATEST (Kinesis, DynamoDB); ``last_id`` is a redis stream's last entry
    id (None: empty or absent)."""
    if position.kind == "AFTER_SEQUENCE":
        assert position.sequence is not None
        pattern = _ENTRY_ID if kind is SourceKind.REDIS_STREAM else _AWS_SEQUENCE
        if not pattern.match(position.sequence):
            shape = "an entry id <ms>-<seq>" if kind is SourceKind.REDIS_STREAM else "digits"
            raise Refused(f"--sequence {position.sequence!r}: a {kind.value} sequence is {shape}")
        return position.sequence
    if position.kind == "TRIM_HORIZON":
        return _STREAM_START if kind is SourceKind.REDIS_STREAM else TRIM_HORIZON
    if position.kind == "LATEST" and kind is SourceKind.REDIS_STREAM:
        return last_id or _STREAM_START  # an empty stream: every entry to come is new
    pin_ms = now_ms
    if position.kind == "AT_TIMESTAMP":
        assert position.timestamp_s is not None
        pin_ms = math.ceil(round(position.timestamp_s * 1000, 3))  # as the readers round
    if kind is SourceKind.REDIS_STREAM:  # the last id possible before the time
        return f"{pin_ms - 1}-{_MAX_ENTRY_SEQ}" if pin_ms > 0 else _STREAM_START
    return f"{PIN_PREFIXES[kind]}:{pin_ms}"


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


@dataclass(frozen=True)
class Esm:
    """What every command works with: the client, the keys and the mapping service."""

    client: aioredis.Redis
    keys: Keys
    service: MappingService


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


async def _hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    raw = await client.hgetall(key)
    return {as_text(k): as_text(v) for k, v in raw.items()}


def _number(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


async def _stats(esm: Esm, uuid: str) -> dict[str, int | str]:
    stats = await _hash(esm.client, esm.keys.mapping_stats(uuid))
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
        checkpoints = await _hash(esm.client, esm.keys.mapping_checkpoint(uuid))
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


# -- reset-checkpoint -----------------------------------------------------------------------


@dataclass(frozen=True)
class ResetPlan:
    """What a reset writes: shard -> (checkpoint now, checkpoint after), and the new LATEST
    pin (LATEST of every shard, when the mapping has one)."""

    mapping: EventSourceMapping
    changes: dict[str, tuple[str | None, str]]
    kept: dict[str, str]  # shards left alone, and why
    pin_ms: int | None


async def plan_reset(esm: Esm, uuid: str, position: Position, shard: str | None) -> ResetPlan:
    """Check the mapping may be reset (else :class:`Refused`) and work out the writes."""
    mapping = await esm.service.mapping(uuid)
    kind = mapping.source_kind
    if not SOURCE_TYPES[kind].stream:
        raise Refused(f"{uuid} reads {kind.value}, not a stream: it has no checkpoint")
    _require_idle(mapping)
    current = await _hash(esm.client, esm.keys.mapping_checkpoint(uuid))
    pin = current.pop(PIN_FIELD, None)
    if kind is SourceKind.REDIS_STREAM:
        if shard not in (None, REDIS_STREAM_SHARD):
            raise Refused(f"a redis-stream has one shard, {REDIS_STREAM_SHARD}, not {shard}")
        shards = [REDIS_STREAM_SHARD]
    elif shard is not None:
        shards = [shard]
    else:
        shards = sorted(current)
        if not shards:
            raise Refused(f"{uuid} has no checkpoint yet: name the shard with --shard")
        if position.kind == "AFTER_SEQUENCE" and len(shards) > 1:
            raise Refused("a sequence number belongs to one shard: name it with --shard")
    seconds, micros = await esm.client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    last_id = await _last_id(esm.client, mapping) if position.kind == "LATEST" else None
    changes: dict[str, tuple[str | None, str]] = {}
    kept: dict[str, str] = {}
    for shard_id in shards:
        old = current.get(shard_id)
        if position.kind == "LATEST" and old == SHARD_END:
            kept[shard_id] = f"{SHARD_END}: a closed shard has nothing newer"
            continue
        changes[shard_id] = (old, checkpoint_value(kind, position, now_ms=now_ms, last_id=last_id))
    new_pin = now_ms if position.kind == "LATEST" and shard is None and pin is not None else None
    return ResetPlan(mapping, changes, kept, new_pin)


def _require_idle(mapping: EventSourceMapping) -> None:
    if mapping.state is not State.DISABLED:
        raise Refused(
            f"{mapping.uuid} is {mapping.state.value}: a running poller would overwrite the "
            f"checkpoint; run `sluice esm disable {mapping.uuid}` first"
        )


async def _last_id(client: aioredis.Redis, mapping: EventSourceMapping) -> str | None:
    if mapping.source_kind is not SourceKind.REDIS_STREAM:
        return None
    name = Keys.user_stream(mapping.event_source_arn.split(":", 1)[1])
    if not await client.exists(name):
        return None
    info = await client.xinfo_stream(name)
    return as_text(info["last-generated-id"])


async def apply_reset(esm: Esm, plan: ResetPlan) -> None:
    """Write the plan in one transaction, provided the mapping is still Disabled and no
    ``serve`` still holds a lease on it or on a reset shard (one finishing its last batch
    would write its checkpoint after ours)."""
    uuid, keys = plan.mapping.uuid, esm.keys
    leases = [keys.mapping_lease(uuid), *(keys.shard_lease(uuid, s) for s in plan.changes)]
    async with esm.client.pipeline(transaction=True) as pipe:
        for _ in range(_TRIES):
            try:
                await pipe.watch(keys.mappings, *leases)
                raw = await pipe.hget(keys.mappings, uuid)
                if raw is None:
                    raise ResourceNotFoundError(NOT_FOUND)
                _require_idle(EventSourceMapping.model_validate_json(raw))
                if await pipe.exists(*leases):
                    raise Refused(
                        f"a sluice serve process still holds {uuid}'s lease (finishing a "
                        "batch, or it died and the lease has not expired): try again shortly"
                    )
                pipe.multi()  # type: ignore[no-untyped-call]
                checkpoint = keys.mapping_checkpoint(uuid)
                for shard_id, (_, value) in plan.changes.items():
                    pipe.hset(checkpoint, shard_id, value)
                    pipe.hdel(keys.mapping_windows(uuid), shard_id)
                if plan.pin_ms is not None:
                    pipe.hset(checkpoint, PIN_FIELD, plan.pin_ms)
                await pipe.execute()
                return
            except WatchError:
                continue
    raise Refused(f"{uuid} kept changing while being reset: try again")


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
