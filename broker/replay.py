"""Replaying Sluice's dead-letter store (``sluice dlq replay``): at-least-once, never twice.

What each entry kind becomes:

* ``function_failed`` (an async event out of retries or age): a NEW async event of its
  function (same qualifier) or of ``--to FUNCTION`` ($LATEST, or ``NAME:QUALIFIER``), with a
  fresh attempt count and first-seen time.
* ``stream_batch_failed``: a new async event ``{"Records": [...]}`` of the mapping's
  function (or ``--to``). The records are re-read from the stream by the entry's sequence
  range (:mod:`broker.rereads`) while the stream keeps it, through the mapping's current
  filters; otherwise (trimmed, stream or mapping gone, unreadable) the event stored with
  the entry is sent, and the plan says why. Async, not a synchronous batch: the replay then
  gets the function's retries, destinations and dead-letter handling, and runs while
  ``serve`` is down.
* ``delivery_failed``: delivered again to its target by the broker's deliverer (with its
  retries). ``--to`` does not apply.

Each new event's request id is derived from the entry (``uuid5`` of the source function,
entry id, request id and time stored), so every attempt at one entry names the same event.

Never twice, for new events. Three steps per batch of entries, each atomic:

1. *intend* (source function's slot): ``HSETNX P:{src}:replay:intents ENTRY_ID`` with the
   target function, qualifier and request id. An intent already there wins, so a resumed
   replay goes where the interrupted one was going, whatever its own ``--to``.
2. *store* (target function's slot, ``broker/lua/replay_store.lua`` through
   :meth:`broker.queue.AsyncQueue.store_replayed`): for each event whose done-mark
   ``P:{to}:replayed:REQUEST_ID`` is absent, store the event as ``enqueue.lua`` does (the
   two share ``store_ready``) and set the mark (it expires after the dead-letter retention
   plus a day: past that the entry cannot be in the store any more). A marked event is not
   stored again, even if it already ran and left the queue.
3. *remove* (source slot, MULTI): the entry and its intent leave the store.

A crash after step 1 or 2 leaves the entry (and its intent) in the store; the next replay of
it finds the intent, skips the store when the mark is there, and removes it: the event is
stored once. An entry leaves the store only after its event is stored. Intents whose entry
was trimmed or purged meanwhile are dropped at the start of a replay.

Redelivery is at-least-once only: a crash between a delivery and the removal of its entry
delivers it again on the next replay (the record keeps its request id for receivers).

The link between a new event and the entry it replays: the envelope's ``replay_of`` (the
original request id; bound to the event's log lines, and kept as ``replayOf`` in a new
dead-letter entry should the replay fail too), the done-mark's value and the replay's
record (``links``), which also hold the entry id and the new request id.

Every replay is recorded in ``P:{replays}:records`` (hash: replay id -> JSON, the last
:data:`HISTORY_MAX`) indexed by ``P:{replays}:index`` (zset, score = start ms), updated as
it goes, for ``sluice dlq history``.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from broker.arns import parse_function_name, qualified_arn
from broker.core import Broker
from broker.destination import redacted
from broker.errors import ApiError
from broker.keys import Keys
from broker.models import LATEST, Envelope
from broker.pacing import Pacer
from broker.redis_client import as_text
from broker.rereads import StreamRereader

__all__ = [
    "QueueFull",
    "ReplayResult",
    "Replayer",
    "Step",
    "intents_key",
    "mark_key",
    "paced_batch_size",
    "replay_request_id",
]

LINKS_MAX = 100  # entry -> new event links kept in one replay's record
MARK_MARGIN_S = 86_400.0  # done-marks outlive the dead-letter retention by this much
_NAMESPACE = uuid.UUID("5b1f6f2e-8a43-4d0e-9a57-3f1c2a9d7e01")  # request ids of replays

Action = Literal["enqueue", "redeliver", "skip"]


# -- keys (all built from Keys.prefix with the hash tag of the function they belong to) -------
def intents_key(keys: Keys, function: str) -> str:
    """Hash in the source function's slot: entry id -> JSON intent (to, qualifier, id)."""
    return f"{keys.prefix}:{{{function}}}:replay:intents"


def mark_key(keys: Keys, function: str, request_id: str) -> str:
    """String in the target function's slot: the replayed event is stored (a JSON link)."""
    return f"{keys.prefix}:{{{function}}}:replayed:{request_id}"


# -- pacing ------------------------------------------------------------------------------------
def paced_batch_size(pacer: Pacer, largest: int) -> int:
    """Batches of about a tenth of a second's worth, so that the pace stays even."""
    return max(1, min(largest, int(pacer.rate_per_s // 10)))


# -- planning ----------------------------------------------------------------------------------
def replay_request_id(function: str, entry: dict[str, Any]) -> str:
    """The request id of the event that replays ``entry``: the same for every attempt at
    this entry, different for a later entry that reuses its id (a stream range re-read)."""
    name = "\n".join(
        (function, str(entry.get("id")), str(entry.get("requestId")), str(entry.get("at")))
    )
    return str(uuid.uuid5(_NAMESPACE, name))


def _qualifier(entry: dict[str, Any]) -> str:
    """The qualifier the failed event was invoked with, from its record; else $LATEST."""
    context = (entry.get("record") or {}).get("requestContext") or {}
    arn = context.get("functionArn")
    if isinstance(arn, str):
        try:
            return parse_function_name(arn).qualifier or LATEST
        except ApiError:
            pass
    return LATEST


@dataclass(frozen=True)
class Step:
    """What replaying one entry does."""

    function: str  # the entry's function (its store)
    entry: dict[str, Any]
    action: Action
    to: str  # enqueue: the function; redeliver: the destination; skip: ""
    qualifier: str = LATEST
    request_id: str = ""  # enqueue: the new event's request id
    reason: str = ""  # skip: why; enqueue: why the stored event is sent (not a re-read)
    payload: str = ""  # enqueue: the new event (else the entry's stored payload)
    origin: Literal["", "stored", "stream"] = ""  # enqueue: where the payload comes from

    @property
    def entry_id(self) -> str:
        return str(self.entry["id"])

    @property
    def kind(self) -> str:
        return str(self.entry.get("kind"))

    def describe(self) -> dict[str, Any]:
        """One line of a dry run or a plan, as JSON."""
        row: dict[str, Any] = {
            "id": self.entry_id,
            "kind": self.kind,
            "function": self.function,
            "requestId": self.entry.get("requestId"),
            "action": self.action,
            "to": redacted(self.to) if self.to else None,
        }
        if self.action == "enqueue":
            row["qualifier"] = self.qualifier
            row["newRequestId"] = self.request_id
            row["from"] = self.origin or "stored"
        if self.reason:
            row["reason"] = self.reason
        return row


@dataclass
class ReplayResult:
    """What a replay did, counted per step; ``routes`` counts "from -> to"."""

    replay_id: str
    matched: int = 0
    stored: int = 0  # new events stored by this replay
    already_stored: int = 0  # events an interrupted replay had stored: entry removed now
    redelivered: int = 0
    skipped: int = 0
    failed: int = 0  # redeliveries that failed again: the entries stay
    gone: int = 0  # entries that left the store between planning and replaying
    routes: Counter[str] = field(default_factory=Counter)
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return (
            self.stored
            + self.already_stored
            + self.redelivered
            + self.skipped
            + self.failed
            + self.gone
        )

    def counts(self) -> dict[str, Any]:
        return {
            "matched": self.matched,
            "stored": self.stored,
            "alreadyStored": self.already_stored,
            "redelivered": self.redelivered,
            "skipped": self.skipped,
            "failed": self.failed,
            "gone": self.gone,
            "routes": dict(self.routes),
        }


# -- the replay --------------------------------------------------------------------------------
_INTEND_LUA = """
-- KEYS: 1 intents, 2 dead-letter entries (one function). ARGV: pairs (entry id, intent).
-- Per entry still in the store: its intent (an existing one wins); '' for entries gone.
local out = {}
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then
    redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
    out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
  else
    out[#out + 1] = ''
  end
end
return out
"""


class QueueFull(Exception):
    """The target function's queue is at ``max_queue_depth``: the replay stops; run it
    again later to go on (nothing is stored twice)."""

    def __init__(self, function: str) -> None:
        super().__init__(f"the queue of {function} is at its cap (max_queue_depth)")
        self.function = function


Progress = Callable[[ReplayResult], Awaitable[None]]


class Replayer:
    """Plans and runs replays of dead-letter entries through a (non-dispatching) broker."""

    def __init__(self, broker: Broker, rereader: StreamRereader | None = None) -> None:
        self.broker = broker
        self.rereader = rereader  # stream entries: re-read by range; None: stored events
        self.redis: aioredis.Redis = broker.redis
        self.keys = broker.keys
        self._intend_script: AsyncScript = broker.redis.register_script(_INTEND_LUA)

    async def plan(self, items: Sequence[tuple[str, dict[str, Any]]], to: str | None) -> list[Step]:
        """What replaying each (function, entry) would do; ``to`` is ``NAME[:QUALIFIER]``."""
        target = parse_function_name(to) if to else None
        limit = self.broker.settings.async_payload_limit_bytes
        steps: list[Step] = []
        for function, entry in items:
            kind = entry.get("kind")
            if kind == "delivery_failed":
                if target is not None:
                    steps.append(_skip(function, entry, "--to does not apply to redeliveries"))
                elif not entry.get("target"):
                    steps.append(_skip(function, entry, "the entry names no destination"))
                else:
                    steps.append(Step(function, entry, "redeliver", str(entry["target"])))
                continue
            if kind not in ("function_failed", "stream_batch_failed"):
                steps.append(_skip(function, entry, f"unknown entry kind {kind!r}"))
                continue
            name = target.name if target else function
            qualifier = (target.qualifier if target else _qualifier(entry)) or LATEST
            config = await self.broker.store.get(name)
            if config is None or config.resolve(qualifier) is None:
                steps.append(_skip(function, entry, f"function {name}:{qualifier} not found"))
                continue
            payload, origin, note = await self._payload(entry)
            if not payload:
                steps.append(_skip(function, entry, note or "the entry keeps no payload"))
            elif len(payload.encode()) > limit:
                steps.append(_skip(function, entry, f"payload over the {limit} byte async limit"))
            else:
                rid = replay_request_id(function, entry)
                steps.append(
                    Step(function, entry, "enqueue", name, qualifier, rid, note, payload, origin)
                )
        return steps

    async def _payload(self, entry: dict[str, Any]) -> tuple[str, Literal["stored", "stream"], str]:
        """The event a replay sends, where it comes from, and a note: a stream entry's
        records re-read by range if the stream keeps them, else the stored event."""
        stored = entry.get("payload")
        stored = stored if isinstance(stored, str) else ""
        source = entry.get("source")
        if (
            entry.get("kind") != "stream_batch_failed"
            or self.rereader is None
            or not isinstance(source, dict)
        ):
            return stored, "stored", ""
        found = await self.rereader.reread(source)
        if found.records is None:
            return stored, "stored", f"not re-read: {found.reason}"
        if not found.records:  # read, but the mapping's filters now keep none of it
            return "", "stream", found.reason
        return json.dumps({"Records": found.records}, separators=(",", ":")), "stream", ""

    async def run(
        self,
        steps: Sequence[Step],
        replay_id: str,
        *,
        pacer: Pacer | None = None,
        batch: int = 100,
        progress: Progress | None = None,
        result: ReplayResult | None = None,
    ) -> ReplayResult:
        """Replay the planned steps in order, in batches of one function and action; counts
        go into ``result`` if given (a re-run that found entries gone)."""
        result = result or ReplayResult(replay_id, matched=len(steps))
        size = paced_batch_size(pacer, batch) if pacer else batch
        for function in dict.fromkeys(s.function for s in steps):
            await self.drop_orphan_intents(function)
        for group in _batches(steps, size):
            if pacer is not None:
                await pacer.take(len(group))
            action = group[0].action
            if action == "enqueue":
                await self._replay_events(group, replay_id, result)
            elif action == "redeliver":
                await self._redeliver(group, result)
            else:
                result.skipped += len(group)
            if progress is not None:
                await progress(result)
        return result

    # -- the three steps (tests call them one by one to simulate a crash between them) ----
    async def intend(self, steps: Sequence[Step], replay_id: str) -> list[Step]:
        """Step 1: record where each entry's event goes unless an earlier replay did; the
        steps as recorded (an earlier intent's target, qualifier and request id win).
        Entries no longer in the store (another replay finished them) are left out."""
        function = steps[0].function
        args: list[str] = []
        for step in steps:
            intent = {
                "to": step.to,
                "qualifier": step.qualifier,
                "requestId": step.request_id,
                "replayId": replay_id,
            }
            args += [step.entry_id, json.dumps(intent)]
        keys = [intents_key(self.keys, function), self.keys.for_function(function).dead_entries]
        replies = await self._intend_script(keys=keys, args=args)
        pinned: list[Step] = []
        for step, raw in zip(steps, replies, strict=True):
            if not raw:
                continue
            intent = json.loads(raw)
            pinned.append(
                replace(
                    step,
                    to=intent["to"],
                    qualifier=intent["qualifier"],
                    request_id=intent["requestId"],
                )
            )
        return pinned

    async def store(self, steps: Sequence[Step], replay_id: str) -> list[bool]:
        """Step 2: store the events of steps with one target, each unless its done-mark says
        it was; True where stored now. Raises :class:`QueueFull` at the queue's cap."""
        to = steps[0].to
        settings = self.broker.settings
        now = self.broker.clock.now()
        ttl_ms = int((settings.dead_letter_max_age_s + MARK_MARGIN_S) * 1000)
        events: list[tuple[str, str, str, str]] = []
        for step in steps:
            envelope = Envelope(
                request_id=step.request_id,
                function=to,
                qualifier=step.qualifier,
                function_arn=qualified_arn(
                    settings.region, settings.account_id, to, step.qualifier
                ),
                payload=step.payload or str(step.entry["payload"]),
                enqueued_at=now,
                not_before=now,
                replay_of=step.entry.get("requestId"),
            )
            events.append(
                (
                    step.request_id,
                    envelope.model_dump_json(exclude_defaults=True),
                    mark_key(self.keys, to, step.request_id),
                    json.dumps(_link(step, replay_id)),
                )
            )
        flags = await self.broker.queue.store_replayed(to, events, settings.max_queue_depth, ttl_ms)
        if flags is None:
            raise QueueFull(to)
        return flags

    async def remove(self, function: str, entry_ids: Sequence[str]) -> int:
        """Step 3: the entries and their intents leave the store; how many were there."""
        if not entry_ids:
            return 0
        fk = self.keys.for_function(function)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(fk.dead, *entry_ids)
            pipe.hdel(fk.dead_entries, *entry_ids)
            pipe.hdel(intents_key(self.keys, function), *entry_ids)
            removed, _, _ = await pipe.execute()
        return int(removed)

    async def drop_orphan_intents(self, function: str) -> int:
        """Forget intents whose entry left the store otherwise (retention, purge)."""
        key = intents_key(self.keys, function)
        ids = [as_text(i) for i in await self.redis.hkeys(key)]
        if not ids:
            return 0
        fk = self.keys.for_function(function)
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.hexists(fk.dead_entries, entry_id)
            present = await pipe.execute()
        gone = [i for i, there in zip(ids, present, strict=True) if not there]
        return int(await self.redis.hdel(key, *gone)) if gone else 0

    # -- per action --------------------------------------------------------------------------
    async def _replay_events(
        self, group: Sequence[Step], replay_id: str, result: ReplayResult
    ) -> None:
        pinned = await self.intend(group, replay_id)
        result.gone += len(group) - len(pinned)
        await self.store_counted(pinned, result)
        await self.remove(group[0].function, [s.entry_id for s in pinned])

    async def store_counted(
        self,
        steps: Sequence[Step],
        result: ReplayResult,
        *,
        id_field: str = "entryId",
        done: list[Step] | None = None,
    ) -> None:
        """Store the steps' events, one :meth:`store` per target, counting each into
        ``result`` (stored or stored before, its route and link, whose ``id_field`` names
        the replayed item); each target's steps
        join ``done`` once stored, so a caller knows what an error left done."""
        by_target: dict[str, list[Step]] = {}
        for step in steps:
            by_target.setdefault(step.to, []).append(step)
        for group in by_target.values():
            flags = await self.store(group, result.replay_id)
            for step, fresh in zip(group, flags, strict=True):
                if fresh:
                    result.stored += 1
                else:
                    result.already_stored += 1
                result.routes[f"{step.function} -> {step.to}"] += 1
                if len(result.links) < LINKS_MAX:
                    result.links.append(_link(step, result.replay_id, id_field))
            if done is not None:
                done += group

    async def _redeliver(self, group: Sequence[Step], result: ReplayResult) -> None:
        function = group[0].function
        there = await self.redis.hmget(
            self.keys.for_function(function).dead_entries, [s.entry_id for s in group]
        )
        present = [s for s, raw in zip(group, there, strict=True) if raw is not None]
        result.gone += len(group) - len(present)
        group = present
        delivered = (
            set(await self.broker.deliverer.redeliver(function, [s.entry for s in group]))
            if group
            else set()
        )
        await self.remove(function, sorted(delivered))
        for step in group:
            if step.entry_id in delivered:
                result.redelivered += 1
                result.routes[f"{function} -> {redacted(step.to)}"] += 1
            else:
                result.failed += 1


def _skip(function: str, entry: dict[str, Any], reason: str) -> Step:
    return Step(function, entry, "skip", "", reason=reason)


def _link(step: Step, replay_id: str, id_field: str = "entryId") -> dict[str, Any]:
    """What links a new event to what it replays (``id_field`` names the replayed item)."""
    return {
        id_field: step.entry_id,
        "from": step.function,
        "replayOf": step.entry.get("requestId"),
        "to": step.to,
        "requestId": step.request_id,
        "replayId": replay_id,
    }


def _batches(steps: Sequence[Step], size: int) -> list[list[Step]]:
    """Consecutive steps of one function and action, at most ``size`` each."""
    groups: list[list[Step]] = []
    for step in steps:
        last = groups[-1] if groups else None
        if (
            last is not None
            and len(last) < size
            and (last[0].function, last[0].action) == (step.function, step.action)
        ):
            last.append(step)
        else:
            groups.append([step])
    return groups
