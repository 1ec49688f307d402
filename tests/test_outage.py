"""A destination down past all retries loses nothing: records wait as delivery_failed and
redelivery delivers each at least once after it returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import BrokerFactory
from tests.helpers import wait_until
from tests.servers import LambdaHttpFunction

H = "python:tests.handlers.async_handlers"


class Switch:
    up = False
    accepted: list[str] = []  # request ids of the records the hook accepted


@pytest.fixture
def flaky_hook() -> Iterator[tuple[LambdaHttpFunction, type[Switch]]]:
    def respond(event: Any, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if not Switch.up:
            return 503, {}, b"down"
        Switch.accepted.append(event["requestContext"]["requestId"])
        return 204, {}, b""

    Switch.up = False
    Switch.accepted = []
    hook = LambdaHttpFunction(respond).start()
    yield hook, Switch
    hook.stop()


async def test_records_survive_an_outage_and_are_redelivered(
    make_broker: BrokerFactory, flaky_hook: tuple[LambdaHttpFunction, type[Switch]]
) -> None:
    hook, switch = flaky_hook
    broker = await make_broker(delivery_retries=2)
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": hook.server_url}}}
    )
    ids = set(await broker.invoke_async_many("orders", [{"n": n} for n in range(20)]))

    async def all_kept() -> bool:
        return await broker.dead_letters.count("orders") == 20

    await wait_until(all_kept, 20)
    assert (await broker.stats("orders"))["DestinationDeliveryFailures"] == 20
    kept = await broker.dead_letters.list("orders")
    assert {e["requestId"] for e in kept} == ids and {e["kind"] for e in kept} == {
        "delivery_failed"
    }

    switch.up = True
    assert await broker.redeliver("orders") == 20
    assert set(switch.accepted) == ids  # every record delivered at least once...
    duplicates = len(switch.accepted) - len(set(switch.accepted))
    print(f"redelivered {len(switch.accepted)} records, {duplicates} duplicates")
    assert duplicates == 0  # ...and here exactly once, each with its request id
    assert await broker.dead_letters.count("orders") == 0
