"""Synchronous invocations (RequestResponse, event source mapping batches) count against a
function's reserved concurrency, together with the async queue's in-flight events."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from broker import Broker
from tests.conftest import BrokerFactory
from tests.helpers import wait_until
from tests.servers import LambdaHttpFunction


class GatedFunction:
    """Each call waits until the test opens the gate; ``calls`` shows who got in."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.server = LambdaHttpFunction(self._respond).start()

    def _respond(self, event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        self.gate.wait(timeout=20)
        return 200, {}, json.dumps({"echo": event}).encode()

    @property
    def calls(self) -> list[Any]:
        return [event for _, event, _ in self.server.calls]


@pytest.fixture
def function() -> Iterator[GatedFunction]:
    fn = GatedFunction()
    yield fn
    fn.gate.set()
    fn.server.stop()


async def calls(function: GatedFunction, n: int) -> None:
    async def arrived() -> bool:
        return len(function.calls) >= n

    await wait_until(arrived, timeout_s=10)


async def test_a_second_sync_call_is_throttled_while_the_reserved_slot_is_busy(
    make_broker: BrokerFactory, function: GatedFunction
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("f", function.server.url, reserved_concurrency=1)
    first = asyncio.create_task(broker.invoke("f", {"n": 1}))
    await calls(function, 1)
    second = await broker.invoke("f", {"n": 2})
    assert (second.outcome, second.status_code, second.error_message) == (
        "throttle",
        429,
        "Rate Exceeded.",
    )
    function.gate.set()
    assert (await first).outcome == "success"
    third = await broker.invoke("f", {"n": 3})  # the slot is free again
    assert third.outcome == "success"
    assert [call["n"] for call in function.calls] == [1, 3]


async def test_zero_reserved_concurrency_throttles_every_sync_call(
    make_broker: BrokerFactory, function: GatedFunction
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("f", function.server.url, reserved_concurrency=0)
    result = await broker.invoke("f", {})
    assert result.outcome == "throttle"
    assert function.calls == []


async def test_unreserved_functions_take_any_number_of_sync_calls(
    make_broker: BrokerFactory, function: GatedFunction
) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("f", function.server.url)
    running = [asyncio.create_task(broker.invoke("f", {"n": n})) for n in range(5)]
    await calls(function, 5)
    function.gate.set()
    assert [r.outcome for r in await asyncio.gather(*running)] == ["success"] * 5
    assert await broker.redis.zcard(broker.keys.for_function("f").slots) == 0


async def test_a_sync_call_holds_back_async_events_of_a_reserved_function(
    make_broker: BrokerFactory, function: GatedFunction
) -> None:
    broker: Broker = await make_broker()
    await broker.put_function("f", function.server.url, reserved_concurrency=1)
    sync = asyncio.create_task(broker.invoke("f", {"kind": "sync"}))
    await calls(function, 1)
    await broker.invoke_async("f", {"kind": "async"})
    await asyncio.sleep(0.5)  # ten claim rounds: the async event must not start meanwhile
    assert [call["kind"] for call in function.calls] == ["sync"]
    function.gate.set()
    await sync
    await calls(function, 2)
    assert [call["kind"] for call in function.calls] == ["sync", "async"]
