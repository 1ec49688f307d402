"""The loop that runs inside a ``python:`` invoker's worker process.

The parent (:mod:`broker.invokers.python`) sends a *chunk*: a list of :data:`Task` tuples, in
one message. The worker runs the chunk's tasks one after another and sends one :data:`Reply`
per task as soon as it finishes, so the parent knows task ``i + 1`` started when reply ``i``
arrived. ``None`` (or the parent going away) ends the loop. Before its first chunk the worker
sends ``(READY,)``, so the parent can tell a worker that cannot start from one that crashed.

Messages are tuples of plain values to keep pickling cheap:

* ``Task``: ``(request_id, target, function_name, function_version, invoked_function_arn,
  payload, timeout_s, memory_mb)``
* ``Reply``: ``(OK, result_json)`` or ``(ERROR, error_type, error_message, stack_trace)``

This module imports only the standard library, to keep workers lean. (Importing it still runs
``broker/__init__``; the forkserver preloads it once, so forked workers start warm.)
"""

from __future__ import annotations

import importlib
import json
import signal
import time
import traceback
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Task = tuple[str, str, str, str, str, str, float, int]
# what a Task holds, in order: these fields of broker.invokers.base.Invocation
TASK_FIELDS = (
    "request_id",
    "target",
    "function_name",
    "function_version",
    "invoked_function_arn",
    "payload",
    "timeout_s",
    "memory_mb",
)
Reply = tuple[int, str] | tuple[int, str, str, list[str]]
Handler = Callable[[Any, "LambdaContext"], Any]

OK = 0
ERROR = 1
READY = 2
SCHEME = "python:"


class LambdaContext:
    """The ``context`` a handler gets: the attributes and method of AWS's Python runtime."""

    __slots__ = (
        "_deadline",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
    )

    def __init__(self, task: Task, log_stream_name: str) -> None:
        self._deadline = time.monotonic() + task[6]
        self.aws_request_id = task[0]
        self.function_name = task[2]
        self.function_version = task[3]
        self.invoked_function_arn = task[4]
        self.memory_limit_in_mb = task[7]
        self.log_group_name = f"/aws/lambda/{task[2]}"
        self.log_stream_name = log_stream_name
        self.client_context = None
        self.identity = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LambdaContext(aws_request_id={self.aws_request_id!r})"


class HandlerError(Exception):
    """The handler could not be loaded; carries Lambda's error type and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def load_handler(target: str) -> Handler:
    """Import ``python:pkg.module:func`` and return ``func``; raise :class:`HandlerError`."""
    spec = target[len(SCHEME) :] if target.startswith(SCHEME) else target
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name:
        raise HandlerError(
            "Runtime.HandlerNotFound",
            f"Bad handler '{spec}': expected python:<module>:<function>",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing user code is an import error
        raise HandlerError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    handler = getattr(module, func_name, None)
    if not callable(handler):
        raise HandlerError(
            "Runtime.HandlerNotFound", f"Handler '{func_name}' missing on module '{module_name}'"
        )
    return handler  # type: ignore[no-any-return]


def run_task(task: Task, handlers: dict[str, Handler], log_stream: tuple[str, str]) -> Reply:
    """Run one task and return its reply; user errors become ``ERROR`` replies.

    ``log_stream`` is the (date prefix, instance id) the context's log stream name is made of.
    """
    target = task[1]
    handler = handlers.get(target)
    if handler is None:
        try:
            handler = load_handler(target)
        except HandlerError as err:
            return (ERROR, err.error_type, err.message, [])
        handlers[target] = handler
    try:
        event = json.loads(task[5])
    except ValueError as exc:
        return (ERROR, "Runtime.UnmarshalError", f"Unable to unmarshal input: {exc}", [])
    context = LambdaContext(task, f"{log_stream[0]}[{task[3]}]{log_stream[1]}")
    try:
        result = handler(event, context)
    except Exception as exc:
        # drop the first frame: it is this function's call of the handler
        frames = traceback.extract_tb(exc.__traceback__)[1:]
        return (ERROR, type(exc).__name__, str(exc), traceback.format_list(frames))
    try:
        return (OK, json.dumps(result))
    except Exception as exc:  # TypeError, ValueError (circular), RecursionError, ...
        return (ERROR, "Runtime.MarshalError", f"Unable to marshal response: {exc}", [])


def main(conn: Connection) -> None:
    """Serve chunks from the parent until told to stop or the parent goes away."""
    # Ctrl-C reaches the whole process group; the parent decides what happens to workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # AWS's stream names look like 2024/01/31/[$LATEST]<instance id>; the version goes in
    # per task. The id is made here, not at import, because the forkserver imports us once.
    instance = uuid.uuid4().hex
    handlers: dict[str, Handler] = {}
    recv, send = conn.recv, conn.send
    try:
        send((READY,))
        while True:
            chunk: list[Task] | None = recv()
            if chunk is None:
                return
            log_stream = (time.strftime("%Y/%m/%d/"), instance)
            for task in chunk:
                send(run_task(task, handlers, log_stream))
            chunk = None  # let the payloads go while idle
    except (EOFError, OSError):  # the parent closed its end or died
        return
    finally:
        conn.close()
