"""``sluice dlq replay --from-sqs ARN``: re-invoke functions from an SQS queue of their failed
async events (Lambda dead letters, ``OnFailure`` records; :mod:`broker.sqs_messages` says what
each message becomes), through :class:`broker.replay.Replayer`'s store, done-marks and history.

Never twice: each replayable message becomes a NEW async event stored by ``Replayer.store``,
whose request id is derived from (function, queue ARN, MessageId), so every run names the same
event and the done-mark ``P:{fn}:replayed:ID`` lets it be stored once. The message is deleted
(DeleteMessageBatch) only after its event is stored, now or by an earlier run. A crash between
the two: the message comes back when its hold ends; the next run finds the mark, stores
nothing and deletes it. (A rerun with another ``--to`` names another event: marks are per
function.)

Received messages are hidden for :data:`~broker.cli_sqs.HOLD_S` plus the pacing wait. Skipped
messages (among them those sent after the run began: a replayed event failing again while
``serve`` runs must not be replayed in the same run, round and round) stay in the queue and
are made visible again when the run ends; so are the unstored ones when
:class:`~broker.replay.QueueFull`, an SQS error or a Redis error stops it. A dry run
(and the count before the prompt: SQS lists nothing without receiving it) receives every
message, plans it and makes them all visible again; it writes nothing to Redis.

Exit status of :func:`replay_from_sqs_command`: 0 done (skips are reported, not failures);
1 stopped (queue full, SQS or Redis error), messages stored but not deleted, or the prompt
declined; 2 refused (not a queue ARN, no such queue, a bad ``--to``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from broker.arns import parse_function_name
from broker.cli_sqs import HOLD_S, MAX_BATCH, Queue, Refused, Sqs, SqsError
from broker.errors import ApiError
from broker.models import FunctionConfig
from broker.pacing import Pacer
from broker.replay import QueueFull, Replayer, ReplayResult, Step, paced_batch_size
from broker.replay_runs import ReplayHistory, new_record, new_replay_id, updated_record
from broker.settings import Settings
from broker.sqs_messages import plan_message

__all__ = ["SqsReplay", "SqsReplayResult", "replay_from_sqs_command"]

SKIPS_MAX = 100  # skipped messages (id -> reason) kept in one replay's record


# -- running -----------------------------------------------------------------------------------
@dataclass
class SqsReplayResult(ReplayResult):
    """A replay's counts, plus: messages stored but not deleted (id -> reason: a later run
    deletes them), why the run stopped early, what was planned and why messages were kept."""

    not_deleted: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None
    planned: Counter[str] = field(default_factory=Counter)
    skips: dict[str, str] = field(default_factory=dict)  # message id -> reason (capped)

    def counts(self) -> dict[str, Any]:
        return {
            **super().counts(),
            "planned": dict(self.planned),
            "notDeleted": dict(self.not_deleted),
            "skips": dict(self.skips),
        }


Progress = Callable[[SqsReplayResult], Awaitable[None]]


class SqsReplay:
    """Plans and replays the messages of one SQS queue (``queue`` resolved: with its URL).
    ``to`` is ``NAME[:QUALIFIER]``; :class:`~broker.errors.ApiError` if malformed."""

    def __init__(self, replayer: Replayer, sqs: Sqs, queue: Queue, to: str | None) -> None:
        self.replayer = replayer
        self.sqs = sqs
        self.queue = queue
        self.to = parse_function_name(to) if to else None
        self._functions: dict[str, FunctionConfig] | None = None

    async def load_functions(self) -> dict[str, FunctionConfig]:
        """Every function's configuration, read once per replay."""
        if self._functions is None:
            store = self.replayer.broker.store
            configs = [await store.get(name) for name in await store.names()]
            self._functions = {c.name: c for c in configs if c is not None}
        return self._functions

    async def plan(
        self, messages: Sequence[dict[str, Any]], sent_before_ms: int | None = None
    ) -> list[Step]:
        """Each message's step (:func:`broker.sqs_messages.plan_message`)."""
        functions = await self.load_functions()
        limit = self.replayer.broker.settings.async_payload_limit_bytes
        return [
            plan_message(m, self.queue, self.to, functions, limit, sent_before_ms) for m in messages
        ]

    async def _receive(self, want: int, hold_s: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.sqs.receive, self.queue, want, hold_s)

    async def scan(self, max_messages: int | None = None) -> list[Step]:
        """Receive every message (at most ``max_messages``) to plan it, then make them all
        visible again: the dry run and the prompt's count. Writes nothing to Redis. A message
        seen twice ends the scan: its hold ran out, so the queue is larger than one hold's
        worth of receiving and the plan covers only part of it."""
        held: dict[str, str] = {}  # message id -> its latest receipt handle
        steps: dict[str, Step] = {}
        try:
            while max_messages is None or len(steps) < max_messages:
                left = MAX_BATCH if max_messages is None else max_messages - len(steps)
                messages = await self._receive(min(MAX_BATCH, left), HOLD_S)
                if not messages:
                    break
                again = any(m["MessageId"] in held for m in messages)
                held.update({m["MessageId"]: m["ReceiptHandle"] for m in messages})
                for step in await self.plan(messages):
                    steps.setdefault(step.entry_id, step)
                if again:
                    break
        finally:
            self.sqs.unhide(self.queue, list(held.values()))
        return list(steps.values())

    async def run(
        self,
        replay_id: str,
        *,
        max_messages: int | None = None,
        pacer: Pacer | None = None,
        progress: Progress | None = None,
        result: SqsReplayResult | None = None,
    ) -> SqsReplayResult:
        """Replay messages until the queue looks empty, ``max_messages`` were received or the
        run stops (:class:`QueueFull` or an SQS error: ``stopped``); counts go into ``result``
        if given (so that they are known when Redis errors or a cancellation raise)."""
        result = SqsReplayResult(replay_id) if result is None else result
        began_ms = int(self.replayer.broker.clock.now() * 1000)
        size = paced_batch_size(pacer, MAX_BATCH) if pacer else MAX_BATCH
        kept: dict[str, str] = {}  # skipped message id -> receipt handle: visible at the end
        seen: set[str] = set()
        received = 0
        try:
            while max_messages is None or received < max_messages:
                want = size if max_messages is None else min(size, max_messages - received)
                # The hold covers the pacing wait too (at most a batch's worth of time).
                hold_s = HOLD_S + (math.ceil(want / pacer.rate_per_s) if pacer else 0)
                try:
                    messages = await self._receive(want, hold_s)
                except SqsError as exc:
                    result.stopped = str(exc)
                    break
                if not messages:
                    break
                received += len(messages)
                steps = await self.plan(messages, sent_before_ms=began_ms)
                for step in steps:
                    first = step.entry_id not in seen  # else back after its hold ended
                    seen.add(step.entry_id)
                    result.matched += first
                    result.planned[step.action] += first
                    if step.action == "skip":
                        result.skipped += first
                        kept[step.entry_id] = _handle(messages, step.entry_id)
                        if len(result.skips) < SKIPS_MAX:
                            result.skips[step.entry_id] = step.reason
                todo = [s for s in steps if s.action == "enqueue"]
                if todo:
                    if pacer is not None:
                        await pacer.take(len(todo))
                    try:
                        await self._replay_batch(messages, todo, result)
                    except QueueFull as exc:
                        result.stopped = str(exc)
                        break
                if progress is not None:
                    await progress(result)
        finally:
            self.sqs.unhide(self.queue, list(kept.values()))
        return result

    async def _replay_batch(
        self, messages: list[dict[str, Any]], todo: list[Step], result: SqsReplayResult
    ) -> None:
        """Store the events (one ``store`` per target), then delete exactly the messages
        whose event is stored; on an error, unstored messages are made visible again."""
        stored: list[Step] = []
        try:
            await self.replayer.store_counted(todo, result, id_field="messageId", done=stored)
        except BaseException:  # QueueFull, Redis, cancelled: settle what is known, stop
            self._settle(messages, todo, stored, result)
            raise
        await asyncio.to_thread(self._settle, messages, todo, stored, result)

    def _settle(
        self,
        messages: list[dict[str, Any]],
        todo: list[Step],
        stored: list[Step],
        result: SqsReplayResult,
    ) -> None:
        done = {s.entry_id for s in stored}
        unstored = [_handle(messages, s.entry_id) for s in todo if s.entry_id not in done]
        self.sqs.unhide(self.queue, unstored)
        by_id = {m["MessageId"]: m for m in messages}
        result.not_deleted.update(self.sqs.delete(self.queue, [by_id[i] for i in done]))


def _handle(messages: list[dict[str, Any]], message_id: str) -> str:
    return next(str(m["ReceiptHandle"]) for m in messages if m["MessageId"] == message_id)


# -- the command -------------------------------------------------------------------------------
def replay_from_sqs_command(
    settings: Settings,
    queue_arn: str,
    *,
    to: str | None,
    dry_run: bool,
    rate: float | None,
    max_messages: int | None,
    yes: bool,
    json_output: bool,
) -> None:
    """``sluice dlq replay --from-sqs ARN`` (see the module docs); prints, exits 1 or 2."""
    from broker.cli_dlq_replay import outcome, run_replayer  # which imports this module

    if to is not None:
        try:
            parse_function_name(to)
        except ApiError as exc:
            raise typer.BadParameter(exc.message, param_hint="--to") from exc
    sqs = Sqs()
    try:
        queue = sqs.resolve(Queue.parse(queue_arn))
        if dry_run or not yes:
            steps = run_replayer(
                settings, lambda r, _: SqsReplay(r, sqs, queue, to).scan(max_messages)
            )
            if dry_run:
                _show_plan(queue, steps, json_output)
                return
            if not _confirmed(queue, steps, json_output):
                return
        asked = {"fromSqs": queue.arn, "to": to, "rate": rate, "max": max_messages}
        asked = {key: value for key, value in asked.items() if value is not None}
        record = run_replayer(
            settings, lambda r, _: _replay(SqsReplay(r, sqs, queue, to), asked, json_output)
        )
    except Refused as exc:
        typer.echo(f"sluice dlq: {exc}", err=True)
        raise typer.Exit(2) from exc
    except SqsError as exc:
        typer.echo(f"sluice dlq: {exc}", err=True)
        raise typer.Exit(1) from exc
    if json_output:
        typer.echo(json.dumps(record))
    else:
        for message_id, reason in record["skips"].items():
            typer.echo(f"kept {message_id}: {reason}", err=True)
        typer.echo(f"replay {record['replayId']}: {outcome(record)}")
    for message_id, reason in record["notDeleted"].items():
        typer.echo(f"not deleted {message_id}: {reason} (stored; a later run deletes it)", err=True)
    if record["status"] != "finished":
        typer.echo(f"replay {record['status']}: {record.get('error')}", err=True)
    if record["status"] != "finished" or record["notDeleted"]:
        raise typer.Exit(1)


def _show_plan(queue: Queue, steps: list[Step], json_output: bool) -> None:
    if json_output:
        typer.echo(json.dumps([s.describe() for s in steps]))
        return
    if not steps:
        typer.echo(f"no messages in {queue.name}")
        return
    table = Table()
    for column in ("message id", "RequestID", "function", "action", "new request id / reason"):
        table.add_column(column, overflow="fold")
    for step in steps:
        target = f"{step.to}:{step.qualifier}" if step.to else "-"
        detail = step.request_id or step.reason
        table.add_row(
            step.entry_id, step.entry.get("requestId") or "-", target, step.action, detail
        )
    Console().print(table)
    todo = sum(s.action == "enqueue" for s in steps)
    typer.echo(
        f"dry run: {todo} of {len(steps)} message(s) would be replayed; all left in {queue.name}"
    )


def _confirmed(queue: Queue, steps: list[Step], json_output: bool) -> bool:
    """Show what a look at the queue found and ask; False when there is nothing to do."""
    todo = [s for s in steps if s.action == "enqueue"]
    if not todo:
        for step in steps:
            typer.echo(f"skipping {step.entry_id}: {step.reason}", err=True)
        typer.echo(f"no messages to replay in {queue.name}; nothing replayed")
        return False
    routes = Counter(f"{s.function} -> {s.to}" for s in todo)
    where = "; ".join(f"{route}: {n}" for route, n in sorted(routes.items()))
    skipped = len(steps) - len(todo)
    tail = f" ({skipped} skipped: --dry-run shows why)" if skipped else ""
    typer.echo(f"{len(todo)} message(s) to replay: {where}{tail}", err=json_output)
    if not typer.confirm(f"Replay {len(todo)} messages?", default=False):
        typer.echo("nothing replayed")
        raise typer.Exit(1)
    return True


async def _replay(replay: SqsReplay, asked: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Run the replay, keeping its history record up to date (as ``dlq replay`` does);
    ``asked`` is the selection: ``fromSqs``, ``to``, ``rate``, ``max``."""
    replayer = replay.replayer
    clock = replayer.broker.clock
    history = ReplayHistory(replayer.redis, replayer.keys)
    replay_id = new_replay_id()
    started = clock.now()
    record = new_record(replay_id, started, asked, [])
    await history.save(record, started)
    result = SqsReplayResult(replay_id)
    shown = [time.monotonic()]

    async def progress(now: SqsReplayResult) -> None:
        if not quiet and time.monotonic() - shown[0] >= 1.0:
            shown[0] = time.monotonic()
            typer.echo(f"replayed {now.stored + now.already_stored} of {now.matched} received")
        await history.save(updated_record(record, now, "started", None), started)

    pacer = Pacer(asked["rate"]) if asked.get("rate") else None
    try:
        await replay.run(
            replay_id, max_messages=asked.get("max"), pacer=pacer, progress=progress, result=result
        )
    except asyncio.CancelledError:  # Ctrl-C: what was done is recorded; run it again to go on
        await history.save(updated_record(record, result, "interrupted", clock.now()), started)
        raise
    except RedisError as exc:
        failed = {**updated_record(record, result, "failed", clock.now()), "error": str(exc)}
        with contextlib.suppress(RedisError):
            await history.save(failed, started)
        return failed
    status = "finished" if result.stopped is None else "failed"
    final = updated_record(record, result, status, clock.now())
    if result.stopped is not None:
        final["error"] = result.stopped
    await history.save(final, started)
    return final
