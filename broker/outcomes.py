"""Turns a decision into the Redis change that applies it: where a finished event's record
goes (spec §2.4), what the dead-letter store keeps, and which counters move (§2.6)."""

from __future__ import annotations

import json
from typing import Any

from broker.dead_letters import dead_letter_entry
from broker.decide import Decision, Finish
from broker.functions import FunctionState
from broker.models import Envelope, InvokeResult
from broker.queue import SettleOp
from broker.records import dead_letter_error, invocation_record, iso_ms, parse_body


def attempt_counters(result: InvokeResult | None) -> dict[str, int]:
    """Lambda's per-attempt metrics: throttles are neither invocations nor errors."""
    if result is None:
        return {}
    if result.outcome == "success":
        return {"Invocations": 1}
    if result.outcome == "function_error":
        return {"Invocations": 1, "Errors": 1}
    if result.outcome == "throttle":
        return {"Throttles": 1}
    return {"SystemErrors": 1}


def _errors(envelope: Envelope) -> list[Any]:
    errors: list[Any] = []
    if envelope.last_result is not None and envelope.last_result.outcome == "function_error":
        errors.append(parse_body(envelope.last_result.payload))
    if envelope.last_rejection is not None:
        rejection = envelope.last_rejection
        errors.append({"statusCode": rejection.status_code, "message": rejection.error_message})
    return errors


def finish_op(state: FunctionState, decision: Finish, now: float) -> SettleOp:
    envelope, condition = decision.envelope, decision.condition
    record = invocation_record(envelope, condition, now)
    eic = state.event_invoke_config(envelope.qualifier)
    targets: list[dict[str, str]] = []
    if condition == "Success":
        if eic is not None and eic.destination_config.on_success.destination:
            targets.append(
                {"kind": "record", "target": eic.destination_config.on_success.destination}
            )
    else:
        if eic is not None and eic.destination_config.on_failure.destination:
            targets.append(
                {"kind": "record", "target": eic.destination_config.on_failure.destination}
            )
        if state.config.dead_letter_target:
            targets.append({"kind": "dead_letter", "target": state.config.dead_letter_target})
    outbox = ""
    entry: dict[str, Any] | None = None
    error_code, error_message = (
        (200, "") if condition == "Success" else dead_letter_error(envelope, condition)
    )
    if targets:
        entry = {
            "v": 1,
            "function": envelope.function,
            "request_id": envelope.request_id,
            "condition": condition,
            "payload": envelope.payload,
            "error_code": error_code,
            "error_message": error_message,
            "targets": targets,
        }
        # The record is serialised once and spliced in: the stored outbox entry and the
        # destinations in this process reuse the same text.
        record_json = json.dumps(record)
        outbox = json.dumps(entry)[:-1] + ', "record": ' + record_json + "}"
        entry["record"] = record
        entry["record_json"] = record_json
    dead = ""
    if condition != "Success":
        dead = dead_letter_entry(
            kind="function_failed",
            entry_id=envelope.request_id,
            function=envelope.function,
            request_id=envelope.request_id,
            condition=condition,
            record=record,
            payload=envelope.payload,
            attempts=envelope.executed_attempts,
            errors=_errors(envelope),
            at=iso_ms(now),
            replay_of=envelope.replay_of,
        )
    return SettleOp("finish", envelope.request_id, outbox=outbox, dead=dead, entry=entry)


def settle_op(state: FunctionState, decision: Decision, now: float) -> SettleOp:
    if isinstance(decision, Finish):
        return finish_op(state, decision, now)
    return SettleOp(
        "retry",
        decision.envelope.request_id,
        envelope=decision.envelope.model_dump_json(),
        due_at=decision.due_at,
    )


def outcome_counters(decision: Decision) -> dict[str, int]:
    if isinstance(decision, Finish):
        if decision.condition == "Success":
            return {"Succeeded": 1}
        return {"AsyncEventsDropped": 1, decision.condition: 1}
    return {"Retried": 1}


def unreadable_op(function: str, request_id: str, raw: str, error: str, now: float) -> SettleOp:
    """An envelope that cannot be read ends in the dead-letter store, kept verbatim."""
    dead = dead_letter_entry(
        kind="function_failed",
        entry_id=request_id,
        function=function,
        request_id=request_id,
        condition="UnreadableEnvelope",
        record={},
        payload=raw,
        attempts=0,
        errors=[error],
        at=iso_ms(now),
    )
    return SettleOp("finish", request_id, dead=dead)
