"""Event-invoke config over HTTP with boto3 (spec §4, §12 items 24-34)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api_fixtures import MakeFunction, aws_error

ARN = "arn:aws:lambda:us-east-1:000000000000:function"
SQS = "arn:aws:sqs:us-east-1:000000000000:failed"


async def test_put_get_update_list_delete(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function(aliases={"live": "1"})
    put = lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        MaximumEventAgeInSeconds=300,
        DestinationConfig={"OnFailure": {"Destination": SQS}},
    )
    assert put["FunctionArn"] == f"{ARN}:{name}:$LATEST"
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": SQS}}
    # 25: Put replaces; the age setting disappears.
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumRetryAttempts"] == 0 and "MaximumEventAgeInSeconds" not in got
    merged = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=120
    )
    assert (merged["MaximumRetryAttempts"], merged["MaximumEventAgeInSeconds"]) == (0, 120)
    lam.put_function_event_invoke_config(
        FunctionName=name, Qualifier="live", MaximumRetryAttempts=2
    )
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [f"{ARN}:{name}:$LATEST", f"{ARN}:{name}:live"]
    lam.delete_function_event_invoke_config(FunctionName=name, Qualifier="live")
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert len(listed) == 1


async def test_missing_configs_are_404_naming_the_qualified_arn(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.get_function_event_invoke_config(FunctionName=name)
    assert aws_error(raised) == (
        404,
        "ResourceNotFoundException",
        f"The function {ARN}:{name}:$LATEST doesn't have an EventInvokeConfig",
    )
    with pytest.raises(ClientError) as raised:
        lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    assert aws_error(raised)[:2] == (404, "ResourceNotFoundException")


async def test_new_version_has_no_config(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError) as raised:
        lam.get_function_event_invoke_config(FunctionName=name, Qualifier="1")
    assert aws_error(raised)[:2] == (404, "ResourceNotFoundException")


@pytest.mark.parametrize(
    ("kwargs", "code", "message"),
    [
        (
            {},
            "InvalidParameterValueException",
            "You must specify at least one of error handling or destination setting.",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "{self}"}}},
            "InvalidParameterValueException",
            "You can't specify the function as a destination for itself.",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": f"{ARN}:nope"}}},
            "InvalidParameterValueException",
            f"The destination ARN {ARN}:nope is invalid.",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:s3:::bucket"}}},
            "InvalidParameterValueException",
            "The provided destination config DestinationConfig(onSuccess=OnSuccess(destination="
            "arn:aws:s3:::bucket), onFailure=null) is invalid.",
        ),
        (
            {"MaximumRetryAttempts": 3},
            "ValidationException",
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy "
            "constraint: Member must have value less than or equal to 2",
        ),
        (
            {"MaximumEventAgeInSeconds": 59},
            "ValidationException",
            "1 validation error detected: Value '59' at 'maximumEventAgeInSeconds' failed to "
            "satisfy constraint: Member must have value greater than or equal to 60",
        ),
    ],
)
async def test_put_errors_match_aws(
    lam_unvalidated: Any,
    make_function: MakeFunction,
    kwargs: dict[str, Any],
    code: str,
    message: str,
) -> None:
    name = await make_function()
    body = json.loads(json.dumps(kwargs).replace("{self}", f"{ARN}:{name}"))
    with pytest.raises(ClientError) as raised:
        lam_unvalidated.put_function_event_invoke_config(FunctionName=name, **body)
    assert aws_error(raised) == (400, code, message)


async def test_derived_qualifier_mismatch(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function(aliases={"live": "1"})
    with pytest.raises(ClientError) as raised:
        lam.put_function_event_invoke_config(
            FunctionName=f"{name}:live", Qualifier="1", MaximumRetryAttempts=1
        )
    assert aws_error(raised) == (
        400,
        "InvalidParameterValueException",
        "The derived qualifier from the function name does not match the specified qualifier.",
    )


def test_put_on_a_missing_function(lam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam.put_function_event_invoke_config(FunctionName="ghost", MaximumRetryAttempts=1)
    assert aws_error(raised) == (404, "ResourceNotFoundException", "The function doesn't exist.")


async def test_unset_fields_are_omitted_not_null_on_the_wire(
    api: Any, lam: Any, make_function: MakeFunction
) -> None:
    import httpx

    name = await make_function()
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    raw = httpx.get(f"{api.endpoint_url}/2019-09-25/functions/{name}/event-invoke-config").json()
    assert set(raw) == {"LastModified", "FunctionArn", "MaximumRetryAttempts", "DestinationConfig"}
    assert raw["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    concurrency = httpx.get(f"{api.endpoint_url}/2019-09-30/functions/{name}/concurrency").json()
    assert concurrency == {}


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        (
            {"Qualifier": "nope", "MaximumRetryAttempts": 1},
            404,
            "ResourceNotFoundException",
            "The function doesn't exist.",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}},
            400,
            "ValidationException",
            "1 validation error detected: Value 'not-an-arn' at 'destinationConfig.onFailure."
            "destination' failed to satisfy constraint: Member must satisfy regular expression "
            "pattern: ",
        ),
        (
            {
                "DestinationConfig": {
                    "OnSuccess": {"Destination": "arn:aws:iam::000000000000:role/x"}
                }
            },
            400,
            "InvalidParameterValueException",
            "The provided destination config DestinationConfig(onSuccess=OnSuccess(destination="
            "arn:aws:iam::000000000000:role/x), onFailure=null) is invalid.",
        ),
    ],
)
async def test_more_put_errors_match_aws(
    lam_unvalidated: Any,
    make_function: MakeFunction,
    kwargs: dict[str, Any],
    status: int,
    code: str,
    message: str,
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam_unvalidated.put_function_event_invoke_config(FunctionName=name, **kwargs)
    got_status, got_code, got_message = aws_error(raised)
    assert (got_status, got_code) == (status, code)
    assert got_message.startswith(message)


@pytest.mark.parametrize(
    "destination_config",
    [
        {"OnSuccess": {}, "OnFailure": {}},  # empty sides are accepted and stored empty
        {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:orders.fifo"}},
    ],
)
async def test_accepted_destination_configs(
    lam: Any, make_function: MakeFunction, destination_config: dict[str, Any]
) -> None:
    name = await make_function()
    put = lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig=destination_config
    )
    expected = {"OnSuccess": {}, "OnFailure": {}, **destination_config}
    assert put["DestinationConfig"] == expected
