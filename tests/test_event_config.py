"""Event-invoke config and dead-letter target validation (spec §3, §4.3, §4.4)."""

from __future__ import annotations

from typing import Any

import pytest

from broker import (
    ApiError,
    InvalidParameterValueError,
    ResourceNotFoundError,
    ValidationError,
)
from tests.conftest import BrokerFactory

H = "python:tests.handlers.async_handlers"
ARN = "arn:aws:lambda:us-east-1:000000000000:function"
SQS = "arn:aws:sqs:us-east-1:000000000000:orders-failed"


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Any:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok", aliases={"live": "1"})
    await broker.put_function("audit", f"{H}:ok")
    return broker


async def test_put_returns_aws_shape_with_unset_fields_omitted(broker: Any) -> None:
    body = await broker.put_event_invoke_config(
        "orders",
        {"MaximumRetryAttempts": 1, "DestinationConfig": {"OnFailure": {"Destination": SQS}}},
    )
    assert body == {
        "LastModified": pytest.approx(1_741_083_072.0),
        "FunctionArn": f"{ARN}:orders:$LATEST",
        "MaximumRetryAttempts": 1,
        "DestinationConfig": {"OnSuccess": {}, "OnFailure": {"Destination": SQS}},
    }
    assert await broker.get_event_invoke_config("orders") == body


async def test_put_replaces_and_update_merges(broker: Any) -> None:
    await broker.put_event_invoke_config(
        "orders", {"MaximumRetryAttempts": 1, "MaximumEventAgeInSeconds": 300}
    )
    replaced = await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    assert "MaximumEventAgeInSeconds" not in replaced
    merged = await broker.update_event_invoke_config("orders", {"MaximumEventAgeInSeconds": 120})
    assert merged["MaximumRetryAttempts"] == 0 and merged["MaximumEventAgeInSeconds"] == 120


async def test_update_without_a_config_is_not_found(broker: Any) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        await broker.update_event_invoke_config("orders", {"MaximumRetryAttempts": 1})
    assert err.value.message == (
        f"The function {ARN}:orders:$LATEST doesn't have an EventInvokeConfig"
    )


async def test_configs_are_per_qualifier_without_fallback(broker: Any) -> None:
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 1})
    with pytest.raises(ResourceNotFoundError) as err:
        await broker.get_event_invoke_config("orders", qualifier="live")
    assert err.value.message == f"The function {ARN}:orders:live doesn't have an EventInvokeConfig"
    await broker.put_event_invoke_config("orders:live", {"MaximumRetryAttempts": 0})
    listed = (await broker.list_event_invoke_configs("orders"))["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{ARN}:orders:$LATEST", f"{ARN}:orders:live"]
    await broker.delete_event_invoke_config("orders", qualifier="live")
    listed = (await broker.list_event_invoke_configs("orders"))["FunctionEventInvokeConfigs"]
    assert len(listed) == 1


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            {},
            InvalidParameterValueError,
            "You must specify at least one of error handling or destination setting.",
        ),
        (
            {"MaximumRetryAttempts": 3},
            ValidationError,
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy "
            "constraint: Member must have value less than or equal to 2",
        ),
        (
            {"MaximumRetryAttempts": -1},
            ValidationError,
            "1 validation error detected: Value '-1' at 'maximumRetryAttempts' failed to satisfy "
            "constraint: Member must have value greater than or equal to 0",
        ),
        (
            {"MaximumEventAgeInSeconds": 59},
            ValidationError,
            "1 validation error detected: Value '59' at 'maximumEventAgeInSeconds' failed to "
            "satisfy constraint: Member must have value greater than or equal to 60",
        ),
        (
            {"MaximumEventAgeInSeconds": 21601},
            ValidationError,
            "1 validation error detected: Value '21601' at 'maximumEventAgeInSeconds' failed to "
            "satisfy constraint: Member must have value less than or equal to 21600",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": f"{ARN}:orders"}}},
            InvalidParameterValueError,
            "You can't specify the function as a destination for itself.",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": f"{ARN}:nope"}}},
            InvalidParameterValueError,
            f"The destination ARN {ARN}:nope is invalid.",
        ),
        (
            {
                "DestinationConfig": {
                    "OnSuccess": {"Destination": "arn:aws:iam::000000000000:role/x"}
                }
            },
            InvalidParameterValueError,
            "The provided destination config DestinationConfig(onSuccess=OnSuccess(destination="
            "arn:aws:iam::000000000000:role/x), onFailure=null) is invalid.",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:s3:::bucket"}}},
            InvalidParameterValueError,
            "The provided destination config DestinationConfig(onSuccess=OnSuccess(destination="
            "arn:aws:s3:::bucket), onFailure=null) is invalid.",
        ),
    ],
)
async def test_invalid_configs_get_aws_errors(
    broker: Any, body: dict[str, Any], error: type[ApiError], message: str
) -> None:
    with pytest.raises(error) as raised:
        await broker.put_event_invoke_config("orders", body)
    assert raised.value.message == message
    with pytest.raises(ResourceNotFoundError):
        await broker.get_event_invoke_config("orders")  # nothing was stored


async def test_destination_outside_the_pattern_is_a_validation_error(broker: Any) -> None:
    with pytest.raises(ValidationError) as raised:
        await broker.put_event_invoke_config(
            "orders", {"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}}
        )
    assert raised.value.message.startswith(
        "1 validation error detected: Value 'not-an-arn' at 'destinationConfig.onFailure."
        "destination' failed to satisfy constraint: Member must satisfy regular expression "
        "pattern: "
    )


@pytest.mark.parametrize(
    "destination",
    [
        "arn:aws:s3:::failed-events",
        "arn:aws:sqs:us-east-1:000000000000:orders.fifo",  # accepted; deliveries fail later
        "redis-stream:failures",
        "https://hooks.example.com/lambda",
        "amqp://guest:guest@127.0.0.1:5672/%2f?exchange=x&routing_key=y",
        "rq:failures?func=app.jobs.handle",
        f"{ARN}:audit",
    ],
)
async def test_accepted_on_failure_destinations(broker: Any, destination: str) -> None:
    body = await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnFailure": {"Destination": destination}}}
    )
    assert body["DestinationConfig"]["OnFailure"] == {"Destination": destination}


async def test_empty_destination_objects_are_accepted(broker: Any) -> None:
    body = await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {}, "OnFailure": {}}}
    )
    assert body["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}


async def test_unknown_function_or_qualifier_does_not_exist(broker: Any) -> None:
    for function, qualifier in (("ghost", None), ("orders", "nope")):
        with pytest.raises(ResourceNotFoundError) as raised:
            await broker.put_event_invoke_config(
                function, {"MaximumRetryAttempts": 1}, qualifier=qualifier
            )
        assert raised.value.message == "The function doesn't exist."


async def test_qualifier_in_name_must_match_the_parameter(broker: Any) -> None:
    with pytest.raises(InvalidParameterValueError) as raised:
        await broker.put_event_invoke_config(
            "orders:live", {"MaximumRetryAttempts": 1}, qualifier="1"
        )
    assert raised.value.message == (
        "The derived qualifier from the function name does not match the specified qualifier."
    )


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("arn:aws:sqs:us-east-1:000000000000:dlq", True),
        ("arn:aws:sns:us-east-1:000000000000:dlq-topic", True),
        ("", True),
        ("redis-stream:dlq", True),
        ("dlq-queue", False),
    ],
)
async def test_dead_letter_target_validation(broker: Any, target: str, ok: bool) -> None:
    if ok:
        config = await broker.put_function("orders", f"{H}:ok", dead_letter_target=target)
        assert config.dead_letter_target == (target or None)
    else:
        with pytest.raises(ValidationError):
            await broker.put_function("orders", f"{H}:ok", dead_letter_target=target)
