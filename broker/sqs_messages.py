"""What the messages of an SQS queue of failed async events become when replayed (pure; run
by :mod:`broker.sqs_replay`, ``sluice dlq replay --from-sqs``).

* *A Lambda dead letter* (``DeadLetterConfig.TargetArn`` is the queue, spec §6): the body is
  the event payload, the message attribute ``RequestID`` the failed event's request id. The
  function is ``--to``, else the one function whose ``DeadLetterConfig`` names this queue's
  ARN; with none or several the message is skipped ("add --to"). Qualifier ``$LATEST``: the
  message does not say which version failed. (``OnFailure`` destinations are not looked at:
  they send invocation records, the next shape, which name their function.)
* *An invocation record* (an ``OnFailure`` SQS destination, spec §5.2): a JSON body with
  ``requestContext.functionArn``, ``requestContext.requestId`` and ``requestPayload``; the
  payload is ``requestPayload`` serialised again, the function and qualifier those of
  ``functionArn`` (its name only: the ARN's region and account are not compared) unless
  ``--to``. Success records and batch failure records (no ``requestPayload``) are skipped.
* Anything else is skipped with its reason, as are bodies that are not JSON, payloads over
  ``async_payload_limit_bytes``, functions or qualifiers that do not exist, and messages sent
  after the replay began: a replayed event that fails again lands in the same queue, and
  replaying it at once would go round in a circle for as long as the function fails.

A replayable message becomes a :class:`~broker.replay.Step` ``enqueue`` from
``sqs:QUEUE_NAME`` to its function, with the request id :func:`sqs_replay_request_id`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from broker.arns import FunctionRef, parse_function_name
from broker.cli_sqs import Queue
from broker.errors import ApiError
from broker.models import LATEST, FunctionConfig
from broker.replay import Step

__all__ = [
    "DEAD_LETTER",
    "OTHER",
    "RECORD",
    "plan_message",
    "read_message",
    "sqs_replay_request_id",
]

DEAD_LETTER = "sqs_dead_letter"  # Step.kind of a Lambda dead letter (RequestID attribute)
RECORD = "sqs_invocation_record"  # Step.kind of an OnFailure invocation record
OTHER = "sqs_message"  # Step.kind of anything else (always skipped)
_NAMESPACE = uuid.UUID("0d3a52b4-6f0e-4c1f-9a0e-5e2b7c41d9a3")  # request ids of SQS replays


def sqs_replay_request_id(function: str, queue_arn: str, message_id: str) -> str:
    """The request id of the event that replays one message into ``function``: the same on
    every run, so the function's done-mark stores it once."""
    return str(uuid.uuid5(_NAMESPACE, "\n".join((function, queue_arn, message_id))))


def _json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def read_message(message: dict[str, Any]) -> dict[str, Any]:
    """A received message as a replay entry: ``id``, ``kind``, ``requestId``, ``payload``
    (and ``functionArn`` for a record), or ``reason`` when it cannot be replayed."""
    entry: dict[str, Any] = {"id": message["MessageId"], "kind": OTHER, "requestId": None}
    body = message.get("Body", "")
    request_id = (message.get("MessageAttributes") or {}).get("RequestID") or {}
    if request_id.get("StringValue"):
        entry.update(kind=DEAD_LETTER, requestId=request_id["StringValue"], payload=body)
        if not _json(body):
            entry["reason"] = "the body is not JSON, so not an event payload"
        return entry
    try:
        record = json.loads(body)
    except ValueError:
        record = None
    context = record.get("requestContext") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(context, dict):
        entry["reason"] = "no RequestID attribute and not an invocation record"
        return entry
    entry.update(
        kind=RECORD, requestId=context.get("requestId"), functionArn=context.get("functionArn")
    )
    if not isinstance(entry["functionArn"], str) or not isinstance(entry["requestId"], str):
        entry["reason"] = "the record's requestContext lacks functionArn or requestId"
    elif "requestPayload" not in record:
        entry["reason"] = "a batch failure record (no requestPayload): re-read its source"
    elif context.get("condition") == "Success":
        entry["reason"] = "a success record: nothing failed"
    else:
        entry["payload"] = json.dumps(record["requestPayload"])
    return entry


def _target(
    entry: dict[str, Any],
    queue: Queue,
    to: FunctionRef | None,
    functions: Mapping[str, FunctionConfig],
) -> tuple[str, str] | str:
    """(function, qualifier) the entry's event goes to, or why there is none."""
    if to is not None:
        return to.name, to.qualifier or LATEST
    if entry["kind"] == RECORD:
        try:
            ref = parse_function_name(entry["functionArn"])
        except ApiError:
            return f"functionArn {entry['functionArn']!r} names no function; add --to"
        return ref.name, ref.qualifier or LATEST
    owners = sorted(n for n, c in functions.items() if c.dead_letter_target == queue.arn)
    if not owners:
        return f"no function has {queue.name} as its DeadLetterConfig target; add --to"
    if len(owners) > 1:
        return f"several functions use this queue as their DLQ: {', '.join(owners)}; add --to"
    return owners[0], LATEST


def plan_message(
    message: dict[str, Any],
    queue: Queue,
    to: FunctionRef | None,
    functions: Mapping[str, FunctionConfig],
    limit_bytes: int,
    sent_before_ms: int | None = None,
) -> Step:
    """What replaying one received message does. ``functions`` are all known functions (by
    name); the step's ``function`` is ``sqs:QUEUE_NAME``, its entry :func:`read_message`'s.
    A message SQS stamped at or after ``sent_before_ms`` (epoch ms) is skipped: sent while
    this replay runs, it may be a replayed event that failed again."""
    source = f"sqs:{queue.name}"
    entry = read_message(message)
    sent_ms = int((message.get("Attributes") or {}).get("SentTimestamp") or 0)
    if sent_before_ms is not None and sent_ms >= sent_before_ms:
        entry["reason"] = "sent after this replay began (a replayed event failing again?)"
    if "reason" in entry:
        return Step(source, entry, "skip", "", reason=entry["reason"])
    target = _target(entry, queue, to, functions)
    if isinstance(target, str):
        return Step(source, entry, "skip", "", reason=target)
    name, qualifier = target
    config = functions.get(name)
    if config is None or config.resolve(qualifier) is None:
        return Step(source, entry, "skip", "", reason=f"function {name}:{qualifier} not found")
    if len(entry["payload"].encode()) > limit_bytes:
        reason = f"payload over the {limit_bytes} byte async limit"
        return Step(source, entry, "skip", "", reason=reason)
    rid = sqs_replay_request_id(name, queue.arn, entry["id"])
    return Step(source, entry, "enqueue", name, qualifier, rid)
