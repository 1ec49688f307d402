"""An invoker for functions that are Python callables of the embedding program.

An emulator or a test harness hands Sluice its own handlers instead of import paths:

    Broker(settings, redis, extra_invokers={"emu": callable_invoker(handle)})

and a function whose target is ``emu:anything`` runs ``handle(event, context)`` in this
process: an ``async def`` handler on the broker's event loop, a plain one in a thread of its
own (so a slow handler never blocks the loop). ``context`` is the one ``python:`` handlers get
(``aws_request_id``, ``function_name``, ``get_remaining_time_in_millis()``...). Results and
errors have the ``python:`` invoker's shapes: the return value as JSON; a raised exception an
``Unhandled`` function error with Lambda's ``errorMessage``, ``errorType`` and
``stackTrace``; past ``timeout_s``, ``Sandbox.Timedout``. A sync handler that overruns is
answered as timed out but keeps its thread until it returns (threads cannot be killed);
``close`` waits for it a bounded time (``close_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

from broker.invokers import _worker
from broker.invokers.base import Invocation, InvokerFactory, timeout_result
from broker.invokers.python import _reply_result  # one shaping of results for both invokers
from broker.models import InvokeResult

Handler: TypeAlias = Callable[[Any, Any], Any]
"""``handler(event, context)``, a plain or ``async def`` function (or an object whose
``__call__`` is one) returning a JSON-serialisable result."""

_Reply: TypeAlias = tuple[Any, ...]  # the worker protocol's (OK, json) / (ERROR, type, msg, stack)


class CallableInvoker:
    """Runs ``scheme:NAME`` targets with ``handlers[NAME]``, or every target with one
    handler. See the module docstring."""

    def __init__(
        self, handlers: Handler | Mapping[str, Handler], *, close_timeout_s: float = 5.0
    ) -> None:
        self._handlers = handlers
        self._close_timeout_s = close_timeout_s
        self._instance = uuid.uuid4().hex  # the log stream's instance id, as a worker's
        self._threads: set[threading.Thread] = set()
        self._closed = False

    async def start(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if self._closed:
            return InvokeResult(
                outcome="system_error", status_code=500, error_message="invoker closed"
            )
        handler = self._handler(invocation.target)
        if handler is None:
            name = invocation.target.split(":", 1)[-1]
            return _reply_result(
                invocation,
                (_worker.ERROR, "Runtime.HandlerNotFound", f"No handler named '{name}'", []),
            )
        try:
            event = json.loads(invocation.payload)
        except ValueError as exc:
            reply: _Reply = (
                _worker.ERROR,
                "Runtime.UnmarshalError",
                f"Unable to unmarshal input: {exc}",
                [],
            )
            return _reply_result(invocation, reply)
        context = self._context(invocation)
        try:
            async with asyncio.timeout(invocation.timeout_s):
                if _is_async(handler):
                    reply = await _call_async(handler, event, context)
                else:
                    reply = await self._in_thread(lambda: _call(handler, event, context))
        except TimeoutError:
            return timeout_result(invocation)
        return _reply_result(invocation, reply)

    async def close(self) -> None:
        """Refuse new calls; wait up to ``close_timeout_s`` for sync handlers still running."""
        self._closed = True
        deadline = time.monotonic() + self._close_timeout_s
        while any(t.is_alive() for t in self._threads) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    def _context(self, inv: Invocation) -> _worker.LambdaContext:
        task: _worker.Task = (
            inv.request_id,
            inv.target,
            inv.function_name,
            inv.function_version,
            inv.invoked_function_arn,
            inv.payload,
            inv.timeout_s,
            inv.memory_mb,
        )
        stream = f"{time.strftime('%Y/%m/%d/')}[{inv.function_version}]{self._instance}"
        return _worker.LambdaContext(task, stream)

    def _handler(self, target: str) -> Handler | None:
        if callable(self._handlers):
            return self._handlers
        return self._handlers.get(target.split(":", 1)[-1])

    async def _in_thread(self, fn: Callable[[], _Reply]) -> _Reply:
        """Run a blocking ``fn`` in a thread of its own (a thread pool's ``submit`` is refused
        during interpreter exit, when ``SyncBroker``'s atexit close may still be draining)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Reply] = loop.create_future()

        def run() -> None:
            try:
                reply = fn()
            except BaseException as exc:  # SystemExit and the like: still the handler's error
                reply = _error_reply(exc)
            finally:
                self._threads.discard(threading.current_thread())
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, reply)

        thread = threading.Thread(target=run, name="sluice-callable-invoker", daemon=True)
        self._threads.add(thread)
        thread.start()
        reply = await future
        thread.join()  # it has only to return
        return reply


def callable_invoker(
    handlers: Handler | Mapping[str, Handler], *, close_timeout_s: float = 5.0
) -> InvokerFactory:
    """An invoker factory for ``Broker(extra_invokers={"SCHEME": ...})``: one handler for every
    ``SCHEME:...`` target, or a mapping from the part after ``SCHEME:`` to handlers."""
    return lambda: CallableInvoker(handlers, close_timeout_s=close_timeout_s)


def _is_async(handler: Handler) -> bool:
    """An ``async def`` function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - the method, not callability
    )


def _call(handler: Handler, event: Any, context: Any) -> _Reply:
    try:
        result = handler(event, context)
    except Exception as exc:
        return _error_reply(exc)
    return _marshal(result)


async def _call_async(
    handler: Callable[[Any, Any], Awaitable[Any]], event: Any, context: Any
) -> _Reply:
    try:
        result = await handler(event, context)
    except Exception as exc:
        return _error_reply(exc)
    return _marshal(result)


def _error_reply(exc: BaseException) -> _Reply:
    # drop the first frame: it is our call of the handler (as the python: worker does)
    frames = traceback.extract_tb(exc.__traceback__)[1:]
    return (_worker.ERROR, type(exc).__name__, str(exc), traceback.format_list(frames))


def _marshal(result: Any) -> _Reply:
    try:
        return (_worker.OK, json.dumps(result))
    except Exception as exc:  # TypeError, ValueError (circular), RecursionError, ...
        return (_worker.ERROR, "Runtime.MarshalError", f"Unable to marshal response: {exc}", [])


def _settle(future: asyncio.Future[_Reply], reply: _Reply) -> None:
    if not future.done():
        future.set_result(reply)
