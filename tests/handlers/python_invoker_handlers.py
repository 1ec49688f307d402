"""Handlers for tests/test_python_invoker.py, imported inside the invoker's worker processes."""

from __future__ import annotations

import os
import time
from typing import Any


def noop(event: Any, context: Any) -> None:
    return None


def echo(event: Any, context: Any) -> Any:
    return event


def whoami(event: Any, context: Any) -> dict[str, Any]:
    """The event back, with the worker's pid: shows which process ran a call."""
    return {"event": event, "pid": os.getpid()}


def context_fields(event: Any, context: Any) -> dict[str, Any]:
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def _check(value: Any) -> None:
    raise ValueError(f"bad value {value!r}")


def fail(event: Any, context: Any) -> None:
    _check(event.get("value"))


def sleep(event: Any, context: Any) -> Any:
    time.sleep(event["seconds"])
    return event


def exit_now(event: Any, context: Any) -> None:
    os._exit(event.get("code", 3))


def unmarshalable(event: Any, context: Any) -> Any:
    return {"values": {1, 2, 3}}


not_callable = 42
