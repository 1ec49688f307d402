"""Event payloads as the Invoke API takes them: size checked on the raw bytes first, then
UTF-8 and JSON, with AWS's errors (spec §1.4, §1.5)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from broker.errors import InvalidRequestContentError, RequestTooLargeError


class JsonText(str):
    """Text known to be JSON (Sluice serialised it): its parse is not checked again."""

    __slots__ = ()


Payload = bytes | str | dict[str, Any] | list[Any] | None
SYNC_PAYLOAD_LIMIT_BYTES = 6_291_456


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def payload_text(payload: Payload, too_large: Callable[[int], str], limit: int) -> str:
    """The payload as JSON text: its size checked first (the raw bytes), then its JSON."""
    if payload is None:
        return "{}"
    if isinstance(payload, dict | list):
        payload = json.dumps(payload)
    elif isinstance(payload, JsonText):  # made by Sluice from parsed records: JSON already
        size = _utf8_size(payload)
        if size > limit:
            raise RequestTooLargeError(too_large(size))
        return payload
    data = payload if isinstance(payload, bytes) else None
    size = len(data) if data is not None else _utf8_size(str(payload))
    if size > limit:
        raise RequestTooLargeError(too_large(size))
    try:
        text = data.decode("utf-8") if data is not None else str(payload)
    except UnicodeDecodeError as exc:
        raise InvalidRequestContentError(
            "Could not parse request body into json: Could not parse payload into json: "
            f"Invalid UTF-8 start byte at position {exc.start}"
        ) from exc
    if text.strip() == "":
        return "{}"
    try:
        json.loads(text)
    except ValueError as exc:
        raise InvalidRequestContentError(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from exc
    return text
