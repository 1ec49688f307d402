"""Embedders plug in their own invokers and destinations; the core needs neither ours."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from broker import (
    Broker,
    Delivery,
    DestinationContext,
    Invocation,
    InvokeResult,
    InvokerRegistry,
    ManualClock,
)
from tests.conftest import settings_for_tests
from tests.helpers import wait_until


class UppercaseInvoker:
    """An emulator's own way of running functions."""

    async def start(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        event = json.loads(invocation.payload)
        return InvokeResult(
            outcome="success",
            payload=json.dumps({"shout": str(event["word"]).upper()}),
            executed_version=invocation.function_version,
        )

    async def close(self) -> None:
        return None


class ListDestination:
    received: list[Delivery] = []

    def __init__(self, target: str, context: DestinationContext) -> None:
        self.target = target

    async def deliver(self, delivery: Delivery) -> None:
        ListDestination.received.append(delivery)

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        ListDestination.received.extend(deliveries)
        return [None for _ in deliveries]

    async def close(self) -> None:
        return None


async def test_custom_invoker_and_destination_are_used(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    settings = settings_for_tests()
    invokers = InvokerRegistry({"shout": UppercaseInvoker})
    # The embedder serves the `rq:` destination scheme with its own class.
    destinations = {"rq": ListDestination}
    async with Broker(
        settings, redis_client, clock=clock, invokers=invokers, destinations=destinations
    ) as broker:
        await broker.put_function("echo", "shout:anything")
        await broker.put_event_invoke_config(
            "echo", {"DestinationConfig": {"OnSuccess": {"Destination": "rq:x?func=a.b"}}}
        )
        request_id = await broker.invoke_async("echo", {"word": "hi"})

        async def arrived() -> bool:
            return any(d.request_id == request_id for d in ListDestination.received)

        await wait_until(arrived)
    (delivery,) = [d for d in ListDestination.received if d.request_id == request_id]
    record: dict[str, Any] = delivery.record
    assert record["responsePayload"] == {"shout": "HI"}
    assert record["requestContext"]["condition"] == "Success"
