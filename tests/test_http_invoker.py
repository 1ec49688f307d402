"""The http(s):// invoker follows the Lambda Invoke contract (spec §1.3, §2.3)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.invokers.base import Invocation
from broker.invokers.http import HttpInvoker
from tests.conftest import BrokerFactory
from tests.helpers import until
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


# -- the Runtime Interface Emulator's error answers (http_error_bodies) -------------------------
RIE_ERROR = (
    b'{"errorMessage": "boom", "errorType": "RuntimeError", "requestId": "r", "stackTrace": []}'
)
NODE_ERROR = b'{"errorType":"Error","errorMessage":"failure","trace":["Error: failure"]}'
RIE_TIMEOUT = b"Task timed out after 1.00 seconds"


@pytest.fixture
async def rie_invoker() -> Any:
    """An invoker that reads the emulator's error answers (``http_error_bodies``)."""
    invoker = HttpInvoker(error_bodies=True)
    await invoker.start()
    yield invoker
    await invoker.close()


@pytest.mark.parametrize("body", [RIE_ERROR, NODE_ERROR])
async def test_with_error_bodies_an_error_object_without_the_header_is_unhandled(
    function_server: Any, rie_invoker: HttpInvoker, body: bytes
) -> None:
    function = function_server(lambda e, h: (200, {}, body))
    result = await rie_invoker.invoke(call(function.url))
    assert (result.outcome, result.function_error) == ("function_error", "Unhandled")
    assert result.payload == body.decode()


async def test_with_error_bodies_the_emulators_timeout_text_is_sandbox_timedout(
    function_server: Any, rie_invoker: HttpInvoker
) -> None:
    function = function_server(lambda e, h: (200, {}, RIE_TIMEOUT))
    result = await rie_invoker.invoke(call(function.url, timeout_s=1))
    assert (result.outcome, result.function_error) == ("function_error", "Unhandled")
    assert result.payload is not None and '"errorType": "Sandbox.Timedout"' in result.payload


@pytest.mark.parametrize(
    "body",
    [
        b'{"errorType": "X", "errorMessage": "y", "order": 1}',  # more than an error object
        b'{"errorMessage": "only a message"}',
        b'["errorType", "errorMessage"]',
        b"Task timed out after a while",
    ],
)
async def test_with_error_bodies_other_answers_stay_successes(
    function_server: Any, rie_invoker: HttpInvoker, body: bytes
) -> None:
    function = function_server(lambda e, h: (200, {}, body))
    result = await rie_invoker.invoke(call(function.url))
    assert result.outcome == "success" and result.payload == body.decode()


@pytest.mark.parametrize("body", [RIE_ERROR, RIE_TIMEOUT])
async def test_without_error_bodies_the_header_alone_decides(
    function_server: Any, invoker: HttpInvoker, body: bytes
) -> None:
    function = function_server(lambda e, h: (200, {}, body))
    result = await invoker.invoke(call(function.url))
    assert result.outcome == "success"


@pytest.mark.parametrize(("error_bodies", "dead"), [(True, 1), (False, 0)])
async def test_the_setting_reaches_a_brokers_http_functions(
    function_server: Any, make_broker: BrokerFactory, error_bodies: bool, dead: int
) -> None:
    function = function_server(lambda e, h: (200, {}, RIE_ERROR))
    broker = await make_broker(http_error_bodies=error_bodies)
    await broker.put_function("rie", function.url)
    await broker.put_event_invoke_config("rie", {"MaximumRetryAttempts": 0})
    await broker.invoke_async("rie", {"n": 1})

    async def settled() -> bool:
        stats = await broker.stats("rie")
        return stats.get("Succeeded", 0) + stats.get("RetriesExhausted", 0) == 1

    await until(settled)
    assert await broker.dead_letters.count("rie") == dead
