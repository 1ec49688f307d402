"""The http(s):// invoker follows the Lambda Invoke contract (spec §1.3, §2.3)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.invokers.base import Invocation
from broker.invokers.http import HttpInvoker
from tests.servers import LambdaHttpFunction, free_port

Reply = tuple[int, dict[str, str], bytes]


@pytest.fixture
def function_server() -> Iterator[Callable[[Callable[..., Reply]], LambdaHttpFunction]]:
    started: list[LambdaHttpFunction] = []

    def start(responder: Callable[..., Reply]) -> LambdaHttpFunction:
        function = LambdaHttpFunction(responder).start()
        started.append(function)
        return function

    yield start
    for function in started:
        function.stop()


@pytest.fixture
async def invoker() -> Any:
    invoker = HttpInvoker()
    await invoker.start()
    yield invoker
    await invoker.close()


def call(url: str, timeout_s: float = 3) -> Invocation:
    return Invocation(
        request_id="0f4e8a52-6d1b-4f43-9a0e-2b7c5d1e9a10",
        target=url,
        function_name="orders",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:orders",
        payload='{"orderId": "A-1"}',
        timeout_s=timeout_s,
        memory_mb=128,
    )


async def test_success_passes_the_body_and_executed_version(
    function_server: Any, invoker: HttpInvoker
) -> None:
    function = function_server(lambda e, h: (200, {"X-Amz-Executed-Version": "4"}, b'{"ok": 1}'))
    result = await invoker.invoke(call(function.url))
    assert result.outcome == "success" and result.payload == '{"ok": 1}'
    assert result.executed_version == "4" and result.function_error is None
    _, event, headers = function.calls[0]
    assert event == {"orderId": "A-1"}
    assert headers["x-sluice-request-id"] == "0f4e8a52-6d1b-4f43-9a0e-2b7c5d1e9a10"
    assert headers["x-amz-invocation-type"] == "RequestResponse"


async def test_function_error_header_is_kept_verbatim(
    function_server: Any, invoker: HttpInvoker
) -> None:
    body = b'{"errorMessage": "boom", "errorType": "ValueError"}'
    function = function_server(lambda e, h: (200, {"X-Amz-Function-Error": "Handled"}, body))
    result = await invoker.invoke(call(function.url))
    assert result.outcome == "function_error" and result.function_error == "Handled"
    assert result.payload == body.decode() and result.status_code == 200


@pytest.mark.parametrize(
    ("status", "headers", "outcome", "retry_after"),
    [
        (429, {"Retry-After": "7"}, "throttle", 7.0),
        (429, {}, "throttle", None),
        (500, {}, "system_error", None),
        (503, {}, "system_error", None),
        (404, {}, "system_error", None),
    ],
)
async def test_rejections_are_throttles_or_system_errors(
    function_server: Any,
    invoker: HttpInvoker,
    status: int,
    headers: dict[str, str],
    outcome: str,
    retry_after: float | None,
) -> None:
    function = function_server(lambda e, h: (status, headers, b'{"message": "no"}'))
    result = await invoker.invoke(call(function.url))
    assert result.outcome == outcome and result.status_code == status
    assert result.retry_after_s == retry_after
    assert not result.executed


async def test_unreachable_function_is_a_system_error(invoker: HttpInvoker) -> None:
    result = await invoker.invoke(call(f"http://127.0.0.1:{free_port()}/invocations"))
    assert result.outcome == "system_error" and not result.executed


async def test_call_past_the_timeout_is_sandbox_timedout(
    function_server: Any, invoker: HttpInvoker
) -> None:
    def slow(event: Any, headers: dict[str, str]) -> Reply:
        time.sleep(3)
        return 200, {}, b"{}"

    function = function_server(slow)
    result = await invoker.invoke(call(function.url, timeout_s=1))
    assert result.outcome == "function_error" and result.function_error == "Unhandled"
    assert '"errorType": "Sandbox.Timedout"' in (result.payload or "")
    assert "Task timed out after 1.00 seconds" in (result.payload or "")
