"""Invocation records in Lambda's exact shape (spec §5.2) and dead-letter attributes (§6)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

from broker.errors import RATE_EXCEEDED
from broker.models import Condition, Envelope

ERROR_MESSAGE_LIMIT_BYTES = 1024


def iso_s(epoch_s: float) -> str:
    """ISO-8601 UTC in whole seconds with a ``Z``: ``2025-03-04T10:14:59Z``."""
    return datetime.fromtimestamp(math.floor(epoch_s), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(epoch_s: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2025-03-04T10:11:12.345Z``."""
    moment = datetime.fromtimestamp(epoch_s, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_body(text: str | None) -> Any:
    """A response body as JSON; text that is not JSON stays a string, empty is ``null``."""
    if text is None or text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def invocation_record(envelope: Envelope, condition: Condition, now: float) -> dict[str, Any]:
    """The record sent to destinations. Keys in AWS's order; response keys only when the
    function actually ran, ``functionError`` only on failure records."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_ms(now),
        "requestContext": {
            "requestId": envelope.request_id,
            "functionArn": envelope.function_arn,
            "condition": condition,
            "approximateInvokeCount": envelope.executed_attempts,
        },
        "requestPayload": json.loads(envelope.payload),
    }
    result = envelope.last_result
    if result is not None and result.executed and envelope.executed_attempts > 0:
        response: dict[str, Any] = {
            "statusCode": result.status_code,
            "executedVersion": result.executed_version or "$LATEST",
        }
        if condition != "Success" and result.function_error:
            response["functionError"] = result.function_error
        record["responseContext"] = response
        record["responsePayload"] = parse_body(result.payload)
    return record


def truncate_utf8(text: str, limit_bytes: int = ERROR_MESSAGE_LIMIT_BYTES) -> str:
    """At most ``limit_bytes`` of UTF-8, never cutting a character in half."""
    data = text.encode("utf-8")
    if len(data) <= limit_bytes:
        return text
    return data[:limit_bytes].decode("utf-8", errors="ignore")


def dead_letter_error(envelope: Envelope, condition: Condition) -> tuple[int, str]:
    """``ErrorCode`` and ``ErrorMessage`` for a DLQ message (spec §6)."""
    if condition == "ZeroReservedConcurrency":
        return 429, RATE_EXCEEDED
    result = envelope.last_result
    if envelope.consecutive_throttles > 0 or result is None:
        result = envelope.last_rejection
    if result is None:
        return 500, condition
    if result.executed:
        body = parse_body(result.payload)
        message = body.get("errorMessage", "") if isinstance(body, dict) else str(body or "")
        return result.status_code, truncate_utf8(str(message))
    return result.status_code, truncate_utf8(result.error_message)
