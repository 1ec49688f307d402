"""Destination schemes an embedder registers are valid wherever a destination string is
(event-invoke OnSuccess/OnFailure, DeadLetterConfig, mapping OnFailure), decided by the
broker's own registry; unregistered ones get AWS's error, and built-in strings keep their
rules."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from broker import (
    ApiError,
    Broker,
    Delivery,
    InvalidParameterValueError,
    ManualClock,
    ValidationError,
    callable_invoker,
)
from broker.api import create_asgi
from broker.event_config import (
    AWS_DESTINATION_PATTERN,
    BUILTIN_DESTINATION_SCHEMES,
    validate_dead_letter_target,
    validate_event_invoke_config,
)
from broker.mappings.validate import validate_create
from tests.conftest import settings_for_tests
from tests.helpers import Collect, until

NOW = 1_741_083_072.0
EMU = frozenset({"emu"})
OK, VE, IPV = None, ValidationError, InvalidParameterValueError

# (case, destination string, registered schemes, expected error class or None)
DESTINATIONS: list[tuple[str, str, frozenset[str], type[ApiError] | None]] = [
    ("registered", "emu:inbox", EMU, OK),
    ("registered-url-like", "emu://host/inbox?x=1", EMU, OK),
    ("registered-any-case", "EMU:inbox", EMU, OK),
    ("not-registered", "emu:inbox", frozenset(), VE),
    ("other-scheme", "nope:inbox", EMU, VE),
    ("empty-rest", "emu:", EMU, VE),
    ("whitespace", "emu:in box", EMU, VE),
    ("builtin-keeps-its-rules", "sqs:orders", frozenset({"sqs"}), VE),
    ("builtin-http", "https://hooks.example/x", frozenset(), OK),
    ("builtin-rq", "rq:jobs?func=app.jobs.handle", frozenset(), OK),
    ("builtin-redis-stream", "redis-stream:outcomes", frozenset(), OK),
]


def pattern_error(value: str, member: str, pattern: str = AWS_DESTINATION_PATTERN) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {pattern}"
    )


@pytest.mark.parametrize(
    ("value", "schemes", "error"),
    [case[1:] for case in DESTINATIONS],
    ids=[case[0] for case in DESTINATIONS],
)
@pytest.mark.parametrize("side", ["OnSuccess", "OnFailure"])
def test_event_invoke_destination_accepts_registered_schemes_only(
    side: str, value: str, schemes: frozenset[str], error: type[ApiError] | None
) -> None:
    body = {"DestinationConfig": {side: {"Destination": value}}}

    def validate() -> Any:
        return validate_event_invoke_config(
            body,
            function_name="orders",
            function_exists=lambda _: True,
            now=NOW,
            destination_schemes=schemes,
        )

    if error is None:
        sides = validate().destination_config
        chosen = sides.on_success if side == "OnSuccess" else sides.on_failure
        assert chosen.destination == value
        return
    with pytest.raises(error) as raised:
        validate()
    member = f"destinationConfig.{side[0].lower()}{side[1:]}.destination"
    assert raised.value.message == pattern_error(value, member)


@pytest.mark.parametrize(
    ("value", "schemes", "error"),
    [case[1:] for case in DESTINATIONS],
    ids=[case[0] for case in DESTINATIONS],
)
def test_dead_letter_target_accepts_registered_schemes_only(
    value: str, schemes: frozenset[str], error: type[ApiError] | None
) -> None:
    if error is None:
        assert validate_dead_letter_target(value, schemes) == value
        return
    with pytest.raises(error) as raised:
        validate_dead_letter_target(value, schemes)
    dlq_pattern = r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()"
    assert raised.value.message == pattern_error(value, "deadLetterConfig.targetArn", dlq_pattern)


@pytest.mark.parametrize(
    ("value", "schemes", "error"),
    [case[1:] for case in DESTINATIONS],
    ids=[case[0] for case in DESTINATIONS],
)
def test_mapping_on_failure_accepts_registered_schemes_only(
    value: str, schemes: frozenset[str], error: type[ApiError] | None
) -> None:
    body = {
        "EventSourceArn": "redis-stream:orders",
        "FunctionName": "orders",
        "StartingPosition": "TRIM_HORIZON",
        "DestinationConfig": {"OnFailure": {"Destination": value}},
    }
    if error is None:
        config = validate_create(body, max_filters=5, now=NOW, destination_schemes=schemes)
        assert config.on_failure_destination == value
        return
    with pytest.raises(error) as raised:
        validate_create(body, max_filters=5, now=NOW, destination_schemes=schemes)
    assert raised.value.message == (
        "1 validation error detected: Value '"
        + value
        + "' at 'destinationConfig.onFailure.destination' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: " + AWS_DESTINATION_PATTERN
    )


def test_registered_arn_service_does_not_loosen_aws_rules() -> None:
    body = {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:emu:us-east-1::x"}}}
    with pytest.raises(InvalidParameterValueError):
        validate_event_invoke_config(
            body,
            function_name="orders",
            function_exists=lambda _: True,
            now=NOW,
            destination_schemes=frozenset({"emu", "arn"}),
        )


def test_every_shipped_destination_scheme_keeps_builtin_rules() -> None:
    import destinations

    assert set(destinations.FACTORIES) <= BUILTIN_DESTINATION_SCHEMES


# -- through the Broker: the registry decides ---------------------------------------------------
def fail(event: Any, context: Any) -> None:
    raise KeyError(event["key"])


@pytest.fixture
async def emu_broker(
    redis_client: aioredis.Redis, clock: ManualClock
) -> AsyncIterator[tuple[Broker, list[Delivery]]]:
    got: list[Delivery] = []
    broker = Broker(
        settings_for_tests(),
        redis_client,
        clock=clock,
        extra_invokers={"emu": callable_invoker({"fail": fail})},
        extra_destinations={"emu": lambda target, _: Collect(got)},
    )
    async with broker:
        yield broker, got


async def test_broker_accepts_its_registered_scheme_in_every_destination_field(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, _ = emu_broker
    config = await broker.put_function("orders", "emu:fail", dead_letter_target="emu:dlq")
    assert config.dead_letter_target == "emu:dlq"
    body = await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}}}
    )
    assert body["DestinationConfig"]["OnFailure"] == {"Destination": "emu:failed"}
    mapping = await broker.create_event_source_mapping(
        {
            "EventSourceArn": "redis-stream:orders",
            "FunctionName": "orders",
            "StartingPosition": "LATEST",
            "DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}},
        }
    )
    assert mapping["DestinationConfig"]["OnFailure"] == {"Destination": "emu:failed"}


async def test_update_function_configuration_takes_a_registered_dead_letter_scheme(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, _ = emu_broker
    await broker.put_function("orders", "emu:fail")
    body = await broker.admin.update_configuration(
        "orders", {"DeadLetterConfig": {"TargetArn": "emu:dlq"}}
    )
    assert body["DeadLetterConfig"] == {"TargetArn": "emu:dlq"}
    with pytest.raises(ValidationError, match="Member must satisfy regular expression"):
        await broker.admin.update_configuration(
            "orders", {"DeadLetterConfig": {"TargetArn": "nope:dlq"}}
        )


async def test_broker_refuses_an_unregistered_scheme_with_aws_error(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, _ = emu_broker
    with pytest.raises(ValidationError, match="Member must satisfy regular expression"):
        await broker.put_function("orders", "emu:fail", dead_letter_target="nope:dlq")
    await broker.put_function("orders", "emu:fail")
    with pytest.raises(ValidationError, match=r"destinationConfig\.onSuccess\.destination"):
        await broker.put_event_invoke_config(
            "orders", {"DestinationConfig": {"OnSuccess": {"Destination": "nope:x"}}}
        )
    with pytest.raises(ValidationError, match=r"destinationConfig\.onFailure\.destination"):
        await broker.create_event_source_mapping(
            {
                "EventSourceArn": "redis-stream:orders",
                "FunctionName": "orders",
                "StartingPosition": "LATEST",
                "DestinationConfig": {"OnFailure": {"Destination": "nope:x"}},
            }
        )


async def test_a_scheme_registered_after_construction_is_valid_at_once(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, got = emu_broker
    await broker.put_function("orders", "emu:fail")
    broker.destinations.register("Late", lambda target, _: Collect(got))
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": "late:x"}}}
    )


async def test_replacing_the_destinations_keeps_builtin_strings_valid(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    got: list[Delivery] = []
    broker = Broker(
        settings_for_tests(),
        redis_client,
        clock=clock,
        destinations={"emu": lambda target, _: Collect(got)},
        dispatch=False,
    )
    await broker.put_function("orders", "python:x:y")
    await broker.put_event_invoke_config(
        "orders",
        {
            "DestinationConfig": {
                "OnSuccess": {"Destination": "emu:ok"},
                "OnFailure": {"Destination": "https://hooks.example/failed"},
            }
        },
    )
    assert set(broker.destinations.schemes) == {"emu"}


async def test_dead_letter_and_on_failure_reach_the_registered_destination(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, got = emu_broker
    await broker.put_function("orders", "emu:fail", dead_letter_target="emu:dlq")
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}},
        },
    )
    request_id = await broker.invoke_async("orders", {"key": "missing"})
    await until(lambda: len(got) == 2)
    by_kind = {d.kind: d for d in got}
    assert by_kind["dead_letter"].target == "emu:dlq"
    assert json.loads(by_kind["dead_letter"].payload) == {"key": "missing"}
    record = by_kind["record"].record
    assert by_kind["record"].target == "emu:failed"
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == "KeyError"


async def test_http_api_accepts_the_registered_scheme_and_refuses_others(
    emu_broker: tuple[Broker, list[Delivery]],
) -> None:
    broker, _ = emu_broker
    await broker.put_function("orders", "emu:fail")
    transport = httpx.ASGITransport(app=create_asgi(broker))
    async with httpx.AsyncClient(transport=transport, base_url="http://sluice") as http:
        path = "/2019-09-25/functions/orders/event-invoke-config"
        ok = await http.put(
            path, json={"DestinationConfig": {"OnSuccess": {"Destination": "emu:x"}}}
        )
        refused = await http.put(
            path, json={"DestinationConfig": {"OnSuccess": {"Destination": "nope:x"}}}
        )
        mapping = await http.post(
            "/2015-03-31/event-source-mappings/",
            json={
                "EventSourceArn": "redis-stream:orders",
                "FunctionName": "orders",
                "StartingPosition": "LATEST",
                "DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}},
            },
        )
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 400
    assert refused.headers["x-amzn-ErrorType"] == "ValidationException"
    assert mapping.status_code == 202, mapping.text
