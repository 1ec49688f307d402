"""Invoke over HTTP with boto3: the three invocation types and every limit (spec §1, §12 1-6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from broker import Broker
from tests.api_fixtures import MakeFunction, aws_error

ARN = "arn:aws:lambda:us-east-1:000000000000:function"


async def test_event_invoke_is_202_with_the_events_request_id(
    lam: Any, make_function: MakeFunction, producer: Broker
) -> None:
    name = await make_function()
    answer = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"a": 1}')
    assert answer["StatusCode"] == 202
    assert answer["Payload"].read() == b""
    headers = answer["ResponseMetadata"]["HTTPHeaders"]
    assert "x-amz-executed-version" not in headers and "x-amz-function-error" not in headers
    request_id = headers["x-amzn-requestid"]
    stored = await producer.redis.hget(producer.keys.for_function(name).events, request_id)
    assert stored is not None and json.loads(stored)["payload"] == '{"a": 1}'


async def test_dry_run_is_204_and_queues_nothing(
    lam: Any, make_function: MakeFunction, producer: Broker
) -> None:
    name = await make_function()
    answer = lam.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")
    assert answer["StatusCode"] == 204
    assert (await producer.queue_depth(name))["ready"] == 0


async def test_event_payload_limit_is_exact(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    fits = b'"' + b"x" * (1_048_576 - 2) + b'"'
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=fits)["StatusCode"] == 202
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=fits + b" ")
    assert aws_error(raised) == (
        413,
        "RequestEntityTooLargeException",
        "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)",
    )


async def test_sync_payload_limit_is_exact(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, Payload=b'"' + b"x" * 6_291_455 + b'"')
    assert aws_error(raised) == (
        413,
        "RequestEntityTooLargeException",
        "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
    )


async def test_non_json_payload_is_invalid_request_content(
    lam: Any, make_function: MakeFunction, producer: Broker
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{nope")
    status, code, message = aws_error(raised)
    assert (status, code) == (400, "InvalidRequestContentException")
    assert message.startswith("Could not parse request body into json")
    assert (await producer.queue_depth(name))["ready"] == 0


def test_event_invoke_of_a_missing_function_is_404_never_202(lam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName="ghost", InvocationType="Event", Payload=b"{}")
    assert aws_error(raised) == (
        404,
        "ResourceNotFoundException",
        f"Function not found: {ARN}:ghost",
    )


async def test_request_response_returns_the_result_and_version(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    answer = lam.invoke(FunctionName=name, Payload=b'{"n": 7}')
    assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in answer
    assert json.loads(answer["Payload"].read()) == {"accepted": True, "echo": {"n": 7}}


async def test_request_response_function_error(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function("fail")
    answer = lam.invoke(FunctionName=name, Payload=b"{}")
    assert answer["StatusCode"] == 200 and answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorMessage"] == "stock service unavailable"
    assert error["requestId"] == answer["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


@pytest.mark.parametrize(
    ("function", "qualifier"),
    [
        ("{name}", None),
        ("{name}:live", None),
        ("{name}", "live"),
        (f"{ARN}:{{name}}:live", None),
        ("000000000000:function:{name}", "$LATEST"),
    ],
)
async def test_names_and_qualifiers_resolve_over_http(
    lam: Any, make_function: MakeFunction, function: str, qualifier: str | None
) -> None:
    name = await make_function(aliases={"live": "1"})
    kwargs: dict[str, Any] = {"FunctionName": function.format(name=name), "Payload": b"{}"}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    answer = lam.invoke(**kwargs)
    assert answer["StatusCode"] == 200
    expected = "1" if "live" in (function + str(qualifier)) else "$LATEST"
    assert answer["ExecutedVersion"] == expected


async def test_mismatched_qualifiers_are_rejected(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function(aliases={"live": "1"})
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=f"{name}:live", Qualifier="1", Payload=b"{}")
    assert aws_error(raised)[:2] == (400, "InvalidParameterValueException")


def test_unknown_invocation_type_is_a_validation_error(lam_unvalidated: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam_unvalidated.invoke(FunctionName="x", InvocationType="Later", Payload=b"{}")
    assert aws_error(raised)[:2] == (400, "ValidationException")
