"""The invoker protocol and the registry that maps a target's scheme to an invoker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from broker.errors import ConfigError
from broker.models import InvokeResult


@dataclass(frozen=True)
class Invocation:
    """One synchronous call of a function."""

    request_id: str
    target: str  # the function's target string (python:..., http://..., lambda:...)
    function_name: str
    function_version: str  # the version that runs ($LATEST or digits)
    invoked_function_arn: str  # the ARN the caller used (qualified when invoked so)
    payload: str  # event JSON text
    timeout_s: float
    memory_mb: int


class Invoker(Protocol):
    """Calls functions of one target scheme."""

    async def start(self) -> None: ...

    async def invoke(self, invocation: Invocation) -> InvokeResult: ...

    async def close(self) -> None: ...


def error_object(
    request_id: str, error_type: str, message: str, stack: list[str] | None = None
) -> str:
    """Lambda's error object as JSON text."""
    return json.dumps(
        {
            "errorMessage": message,
            "errorType": error_type,
            "requestId": request_id,
            "stackTrace": stack or [],
        }
    )


def timeout_result(invocation: Invocation) -> InvokeResult:
    """A call that ran past the function's timeout (DESIGN: Errors from functions)."""
    message = (
        f"RequestId: {invocation.request_id} Error: Task timed out after "
        f"{invocation.timeout_s:.2f} seconds"
    )
    return InvokeResult(
        outcome="function_error",
        function_error="Unhandled",
        payload=error_object(invocation.request_id, "Sandbox.Timedout", message),
        executed_version=invocation.function_version,
    )


InvokerFactory = Callable[[], Invoker]


class InvokerRegistry:
    """Maps a target scheme (``python``, ``http``, ``https``, ``lambda``) to one shared invoker,
    built on first use; ``close`` closes every invoker built."""

    def __init__(self, factories: dict[str, InvokerFactory] | None = None) -> None:
        self._factories: dict[str, InvokerFactory] = dict(factories or {})
        self._built: dict[str, Invoker] = {}
        # One start per scheme, however many calls arrive while it is starting.
        self._starting: dict[str, asyncio.Task[Invoker]] = {}

    def register(self, scheme: str, factory: InvokerFactory) -> None:
        self._factories[scheme] = factory

    @staticmethod
    def scheme(target: str) -> str:
        return target.split(":", 1)[0].lower()

    def supports(self, target: str) -> bool:
        return self.scheme(target) in self._factories

    async def get(self, target: str) -> Invoker:
        scheme = self.scheme(target)
        invoker = self._built.get(scheme)
        if invoker is not None:
            return invoker
        factory = self._factories.get(scheme)
        if factory is None:
            raise ConfigError(f"no invoker for target scheme {scheme!r} ({target})")
        task = self._starting.get(scheme)
        if task is None:
            task = asyncio.ensure_future(self._start(scheme, factory))
            self._starting[scheme] = task
        return await asyncio.shield(task)

    async def _start(self, scheme: str, factory: InvokerFactory) -> Invoker:
        try:
            invoker = factory()
            await invoker.start()
            self._built[scheme] = invoker
            return invoker
        finally:
            self._starting.pop(scheme, None)

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        return await (await self.get(invocation.target)).invoke(invocation)

    async def close(self) -> None:
        for task in list(self._starting.values()):
            await asyncio.wait({task})
        built, self._built = self._built, {}
        for invoker in built.values():
            await invoker.close()
