"""``http(s)://`` targets: POST to a Lambda Invoke URL (a Runtime Interface Emulator, SAM
local, another Sluice) with connection reuse.

Mapping (spec §1.3, §2.3): 2xx with ``X-Amz-Function-Error`` is a function error (value
passed through verbatim); 2xx without is success; 429 is a throttle; 5xx, other 4xx and
connection failures are system errors (not executed); a call that outlives the function's
timeout is ``Sandbox.Timedout``.

``error_bodies`` (setting ``http_error_bodies``) is for the Runtime Interface Emulator, which
answers a handler's exception with 200 and no ``X-Amz-Function-Error`` (its issue #20) and
a timeout with 200 and ``Task timed out after N seconds`` (#21): then a 2xx body that is a
Lambda error object (``errorType`` and ``errorMessage``, with at most ``requestId``,
``stackTrace``, ``trace`` and ``cause`` besides) is an ``Unhandled`` function error, and that
text is ``Sandbox.Timedout``. Off by default: a function may return such an object.
"""

from __future__ import annotations

import json
import re

import httpx

from broker import defaults
from broker.errors import RATE_EXCEEDED
from broker.invokers.base import Invocation, error_object, timeout_result
from broker.models import InvokeResult

# Allowance on top of the function timeout for the network and the runtime's own overhead.
TIMEOUT_ALLOWANCE_S = 1.0
_ERROR_KEYS = frozenset({"errorType", "errorMessage", "requestId", "stackTrace", "trace", "cause"})
_RIE_TIMEOUT = re.compile(r"Task timed out after \d+(\.\d+)? seconds")


def is_error_body(body: str) -> bool:
    """Whether ``body`` is a Lambda error object, as runtimes report a handler's exception."""
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and {"errorType", "errorMessage"} <= value.keys()
        and value.keys() <= _ERROR_KEYS
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


class HttpInvoker:
    def __init__(self, max_connections: int = 200, *, error_bodies: bool = False) -> None:
        self.max_connections = max_connections
        self.error_bodies = error_bodies  # the emulator's error answers (module docstring)
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        limits = httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_connections,
        )
        self._client = httpx.AsyncClient(limits=limits)

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        if self._client is None:
            await self.start()
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            "X-Amz-Invocation-Type": "RequestResponse",
            "X-Sluice-Request-Id": invocation.request_id,
        }
        timeout = httpx.Timeout(invocation.timeout_s + TIMEOUT_ALLOWANCE_S, connect=5.0)
        try:
            response = await self._client.post(
                invocation.target,
                content=invocation.payload.encode(),
                headers=headers,
                timeout=timeout,
            )
        except httpx.ReadTimeout:  # the request was sent: the function ran too long
            return timeout_result(invocation)
        except httpx.HTTPError as exc:
            return InvokeResult(
                outcome="system_error",
                status_code=502,
                error_message=f"{type(exc).__name__}: {exc}",
            )
        status = response.status_code
        version = response.headers.get("X-Amz-Executed-Version") or invocation.function_version
        if 200 <= status < 300:
            body = response.text
            function_error = response.headers.get("X-Amz-Function-Error")
            if len(response.content) > defaults.SYNC_RESPONSE_LIMIT_BYTES:
                return InvokeResult(
                    outcome="function_error",
                    status_code=200,
                    function_error="Unhandled",
                    payload=error_object(
                        invocation.request_id,
                        "Function.ResponseSizeTooLarge",
                        "Response payload size exceeded maximum allowed payload size "
                        f"({defaults.SYNC_RESPONSE_LIMIT_BYTES} bytes).",
                    ),
                    executed_version=version,
                )
            if not function_error and self.error_bodies:
                if _RIE_TIMEOUT.fullmatch(body.strip()):
                    return timeout_result(invocation)
                if is_error_body(body):
                    function_error = "Unhandled"
            if function_error:
                return InvokeResult(
                    outcome="function_error",
                    status_code=status,
                    function_error=function_error,
                    payload=body,
                    executed_version=version,
                )
            return InvokeResult(
                outcome="success", status_code=status, payload=body, executed_version=version
            )
        if status == 429:
            return InvokeResult(
                outcome="throttle",
                status_code=429,
                error_message=response.text or RATE_EXCEEDED,
                retry_after_s=_retry_after(response.headers.get("Retry-After")),
            )
        return InvokeResult(
            outcome="system_error",
            status_code=status,
            error_message=response.text or f"HTTP {status}",
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
