"""Functions under test (user code run by Sluice's python: invoker)."""

from __future__ import annotations

import time
from typing import Any


def ok(event: Any, context: Any) -> dict[str, Any]:
    return {"accepted": True, "echo": event}


def fail(event: Any, context: Any) -> None:
    raise RuntimeError("stock service unavailable")


def sleepy(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event.get("sleep_s", 5)))
    return {"slept": event.get("sleep_s", 5)}


def huge(event: Any, context: Any) -> str:
    return "x" * int(event["bytes"])


def fail_long(event: Any, context: Any) -> None:
    raise ValueError("é" * 2_600)  # 5,200 bytes of UTF-8
