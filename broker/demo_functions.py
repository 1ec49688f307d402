"""Example handlers for ``sluice demo`` (they run in Sluice's worker processes)."""

from __future__ import annotations

import random
import time
from typing import Any


def thumbnail(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Always succeeds."""
    return {"image": event.get("image"), "size": "128x128", "requestId": context.aws_request_id}


def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Fails about half the time: most events succeed on a retry."""
    if random.random() < 0.5:
        raise ConnectionError("payment gateway reset the connection")
    return {"charged": event.get("amount")}


def broken(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Always fails: every event ends in the dead-letter store."""
    raise ValueError(f"cannot parse order {event.get('order')!r}")


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Every third report runs past its 1 s timeout and is killed (Sandbox.Timedout)."""
    time.sleep(1.5 if event.get("n", 0) % 3 == 0 else 0.05)
    return {"report": event.get("n")}
