"""Moving a stream mapping's checkpoints (``sluice esm reset-checkpoint``), on Redis.

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

import math
import re
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from broker.errors import ResourceNotFoundError
from broker.keys import Keys
from broker.mappings import SOURCE_TYPES, EventSourceMapping, MappingService, SourceKind, State
from broker.mappings.service import NOT_FOUND
from broker.redis_client import as_text

__all__ = [
    "PIN_FIELD",
    "Esm",
    "Position",
    "PositionKind",
    "Refused",
    "ResetPlan",
    "apply_reset",
    "checkpoint_value",
    "plan_reset",
    "text_hash",
]

PositionKind = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AFTER_SEQUENCE"]
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


@dataclass(frozen=True)
class Esm:
    """What every command works with: the client, the keys and the mapping service."""

    client: aioredis.Redis
    keys: Keys
    service: MappingService


async def text_hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    raw = await client.hgetall(key)
    return {as_text(k): as_text(v) for k, v in raw.items()}


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
    current = await text_hash(esm.client, esm.keys.mapping_checkpoint(uuid))
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
