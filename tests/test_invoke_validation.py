"""invoke_async validates JSON, size and function before storing anything (spec §1.4, §1.5)."""

from __future__ import annotations

from typing import Any

import pytest

from broker import (
    InvalidParameterValueError,
    InvalidRequestContentError,
    RequestTooLargeError,
    ResourceNotFoundError,
)
from tests.conftest import BrokerFactory

H = "python:tests.handlers.async_handlers"
ARN = "arn:aws:lambda:us-east-1:000000000000:function"


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Any:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok", aliases={"live": "3"})
    return broker


async def nothing_stored(broker: Any) -> bool:
    return (await broker.queue_depth("orders"))["ready"] == 0


async def test_body_that_is_not_json_is_invalid_request_content(broker: Any) -> None:
    with pytest.raises(InvalidRequestContentError) as raised:
        await broker.invoke_async("orders", b"{not json")
    assert raised.value.status == 400
    assert raised.value.message.startswith(
        "Could not parse request body into json: Could not parse payload into json: "
    )
    assert await nothing_stored(broker)


@pytest.mark.parametrize("limit", [1_048_576, 262_144])
async def test_payload_over_the_event_limit_is_too_large(
    make_broker: BrokerFactory, limit: int
) -> None:
    broker = await make_broker(dispatch=False, async_payload_limit_bytes=limit)
    await broker.put_function("orders", f"{H}:ok")
    fits = '"' + "x" * (limit - 2) + '"'
    await broker.invoke_async("orders", fits)
    too_big = '"' + "x" * (limit - 1) + '"'
    with pytest.raises(RequestTooLargeError) as raised:
        await broker.invoke_async("orders", too_big)
    assert raised.value.status == 413
    assert raised.value.code == "RequestEntityTooLargeException"
    assert raised.value.message == (
        f"{limit + 1} byte payload is too large for the Event invocation type (limit {limit} bytes)"
    )
    assert (await broker.queue_depth("orders"))["ready"] == 1


async def test_multibyte_payload_size_counts_utf8_bytes(make_broker: BrokerFactory) -> None:
    broker = await make_broker(dispatch=False, async_payload_limit_bytes=100)
    await broker.put_function("orders", f"{H}:ok")
    with pytest.raises(RequestTooLargeError) as raised:
        await broker.invoke_async("orders", '"' + "é" * 50 + '"')  # 50 chars, 102 bytes
    assert raised.value.message.startswith("102 byte payload")


@pytest.mark.parametrize(
    ("name", "qualifier", "message"),
    [
        ("ghost", None, f"Function not found: {ARN}:ghost"),
        ("orders", "9", f"Function not found: {ARN}:orders:9"),
        ("orders:nope", None, f"Function not found: {ARN}:orders:nope"),
        (f"{ARN}:ghost", None, f"Function not found: {ARN}:ghost"),
    ],
)
async def test_unknown_function_or_qualifier_is_not_found_and_never_stored(
    broker: Any, name: str, qualifier: str | None, message: str
) -> None:
    with pytest.raises(ResourceNotFoundError) as raised:
        await broker.invoke_async(name, {"n": 1}, qualifier=qualifier)
    assert raised.value.status == 404 and raised.value.message == message
    assert raised.value.body()["Message"] == message  # AWS spells this one "Message"
    assert await nothing_stored(broker)


@pytest.mark.parametrize(
    ("name", "qualifier"),
    [
        ("orders", None),
        ("orders:live", None),
        ("orders", "live"),
        ("000000000000:function:orders", None),
        (f"{ARN}:orders:$LATEST", None),
        (f"{ARN}:orders:3", "3"),
    ],
)
async def test_names_partial_and_full_arns_with_qualifiers_resolve(
    broker: Any, name: str, qualifier: str | None
) -> None:
    assert await broker.invoke_async(name, {"n": 1}, qualifier=qualifier)


async def test_qualifier_in_name_must_match_the_parameter(broker: Any) -> None:
    with pytest.raises(InvalidParameterValueError):
        await broker.invoke_async("orders:live", {}, qualifier="3")


async def test_empty_payload_is_an_empty_object(broker: Any) -> None:
    request_id = await broker.invoke_async("orders", b"")
    raw = await broker.redis.hget(broker.keys.for_function("orders").events, request_id)
    assert b'"payload":"{}"' in raw
