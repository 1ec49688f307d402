"""``SyncBroker``: Sluice for programs that are not asyncio.

It runs a :class:`~broker.core.Broker` (from :meth:`~broker.core.Broker.from_settings`: the
Redis at ``settings.redis_url``, or the embedded in-process one) on an event loop in a
background thread, and offers the broker's calls as blocking methods:

    invokers = {"emu": callable_invoker(hello)}
    with SyncBroker(Settings(redis_url=url), extra_invokers=invokers) as sluice:
        sluice.put_function("hello", "emu:hello")
        sluice.invoke_async("hello", {"name": "world"})

``close`` (also on leaving the ``with`` block, and at interpreter exit for a program that
forgets) stops the broker, closes the Redis client and its connections, and ends the thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from broker.clock import Clock
from broker.core import Broker
from broker.destination import DestinationFactory
from broker.invokers.base import InvokerFactory, InvokerRegistry
from broker.models import FunctionConfig, InvokeResult
from broker.payloads import Payload
from broker.settings import Settings

_T = TypeVar("_T")


class SyncBroker:
    """A started :class:`Broker` on a background thread, driven by blocking calls.

    The thread is a daemon, so a program that never calls ``close`` can still exit: an
    ``atexit`` hook closes it then (Python joins non-daemon threads *before* running
    ``atexit`` hooks, so a non-daemon loop thread would hang the exit instead).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        invokers: InvokerRegistry | None = None,
        destinations: Mapping[str, DestinationFactory] | None = None,
        extra_invokers: Mapping[str, InvokerFactory] | None = None,
        extra_destinations: Mapping[str, DestinationFactory] | None = None,
        dispatch: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        """Start the thread, the loop and the broker; return once it is started, or raise
        what stopped it. ``timeout_s`` bounds each blocking call (start and close too)."""
        self.settings = settings or Settings()
        self.timeout_s = timeout_s
        self._options: dict[str, Any] = {
            "clock": clock,
            "invokers": invokers,
            "destinations": destinations,
            "extra_invokers": extra_invokers,
            "extra_destinations": extra_destinations,
            "dispatch": dispatch,
        }
        self._lock = threading.Lock()
        self._closed = False
        self._started: Future[None] = Future()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Broker | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sluice-sync-broker", daemon=True)
        self._thread.start()
        try:
            self._started.result(timeout_s)
        except BaseException:
            self.close()
            raise
        atexit.register(self.close)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> SyncBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the broker (draining in-flight work), close the Redis client and its pool,
        end the loop and join its thread. Idempotent, from any thread but the loop's."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.close)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(self.timeout_s)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        broker = Broker.from_settings(self.settings, **self._options)
        try:
            await broker.start()
        except BaseException as exc:
            await broker.stop()  # closes the client
            self._started.set_exception(exc)
            return
        self._broker = broker
        self._started.set_result(None)
        if self._closed:  # closed while starting
            self._stop.set()
        try:
            await self._stop.wait()
        finally:
            self._broker = None
            await broker.stop()

    # -- calls -------------------------------------------------------------------------------
    def call(self, fn: Callable[[Broker], Awaitable[_T]]) -> _T:
        """Run ``fn(broker)`` on the broker's loop and return its result: the way to any
        :class:`Broker` method without a blocking twin here, e.g.
        ``sluice.call(lambda b: b.queue_depth("orders"))``."""
        broker, loop = self._broker, self._loop
        if self._closed or broker is None or loop is None:
            raise RuntimeError("SyncBroker is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError("SyncBroker methods block; on its own loop, await the Broker")

        async def run() -> _T:
            return await fn(broker)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            future.cancel()  # not left running behind the caller's back
            raise

    def put_function(self, name: str, target: str, **options: Any) -> FunctionConfig:
        """:meth:`Broker.put_function` (``timeout_s``, ``memory_mb``, ``dead_letter_target``...)."""
        return self.call(lambda b: b.put_function(name, target, **options))

    def put_event_invoke_config(
        self, function: str, body: dict[str, Any], qualifier: str | None = None
    ) -> dict[str, Any]:
        """PutFunctionEventInvokeConfig with an AWS-shaped body; returns the response body."""
        return self.call(lambda b: b.put_event_invoke_config(function, body, qualifier))

    def invoke(self, function: str, payload: Payload, qualifier: str | None = None) -> InvokeResult:
        """``RequestResponse``: run the function now and return its result."""
        return self.call(lambda b: b.invoke(function, payload, qualifier))

    def invoke_async(self, function: str, payload: Payload, qualifier: str | None = None) -> str:
        """``Event``: store the event durably and return its request id."""
        return self.call(lambda b: b.invoke_async(function, payload, qualifier))

    def invoke_async_many(
        self, function: str, payloads: Iterable[Payload], qualifier: str | None = None
    ) -> list[str]:
        return self.call(lambda b: b.invoke_async_many(function, payloads, qualifier))

    def create_event_source_mapping(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateEventSourceMapping with an AWS-shaped body; returns the response body."""
        return self.call(lambda b: b.create_event_source_mapping(body))

    def delete_event_source_mapping(self, uuid: str) -> dict[str, Any]:
        return self.call(lambda b: b.delete_event_source_mapping(uuid))
