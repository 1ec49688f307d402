"""Functions, concurrency, versions and aliases over HTTP with boto3 (spec §3)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api_fixtures import MakeFunction, aws_error

ARN = "arn:aws:lambda:us-east-1:000000000000:function"


async def test_get_function_and_its_configuration(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function(timeout_s=7, memory_mb=256)
    config = lam.get_function_configuration(FunctionName=name)
    assert config["FunctionName"] == name and config["FunctionArn"] == f"{ARN}:{name}"
    assert (config["Timeout"], config["MemorySize"], config["Version"]) == (7, 256, "$LATEST")
    assert config["State"] == "Active"
    config.pop("ResponseMetadata")
    assert lam.get_function(FunctionName=name)["Configuration"] == config


def test_unknown_function_is_not_found(lam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam.get_function(FunctionName="ghost")
    assert aws_error(raised) == (
        404,
        "ResourceNotFoundException",
        f"Function not found: {ARN}:ghost",
    )


async def test_list_functions_pages_with_markers(lam: Any, make_function: MakeFunction) -> None:
    names = {await make_function() for _ in range(3)}
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_functions(MaxItems=2, **marker)
        seen += [f["FunctionName"] for f in page["Functions"]]
        assert len(page["Functions"]) <= 2
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert names <= set(seen) and len(seen) == len(set(seen))


async def test_update_function_configuration(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    dlq = "arn:aws:sqs:us-east-1:000000000000:dlq"
    updated = lam.update_function_configuration(
        FunctionName=name, Timeout=30, MemorySize=512, DeadLetterConfig={"TargetArn": dlq}
    )
    assert (updated["Timeout"], updated["MemorySize"]) == (30, 512)
    assert updated["DeadLetterConfig"] == {"TargetArn": dlq}
    removed = lam.update_function_configuration(
        FunctionName=name, DeadLetterConfig={"TargetArn": ""}
    )
    assert "DeadLetterConfig" not in removed


async def test_update_out_of_range_is_a_validation_error(
    lam_unvalidated: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam_unvalidated.update_function_configuration(FunctionName=name, Timeout=901)
    assert aws_error(raised) == (
        400,
        "ValidationException",
        "1 validation error detected: Value '901' at 'timeout' failed to satisfy constraint: "
        "Member must have value less than or equal to 900",
    )


async def test_reserved_concurrency_put_get_delete(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    assert (
        lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    )
    put = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    lam.delete_function_concurrency(FunctionName=name)
    assert (
        lam.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions") is None
    )


async def test_published_version_keeps_its_configuration(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function(timeout_s=3)
    version = lam.publish_version(FunctionName=name, Description="first")
    assert version["Version"] == "1" and version["FunctionArn"] == f"{ARN}:{name}:1"
    lam.update_function_configuration(FunctionName=name, Timeout=9)
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Timeout"] == 3
    assert lam.get_function_configuration(FunctionName=name)["Timeout"] == 9
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]
    answer = lam.invoke(FunctionName=name, Qualifier="1", Payload=b"{}")
    assert answer["ExecutedVersion"] == "1"


async def test_alias_lifecycle(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="d")
    assert alias["AliasArn"] == f"{ARN}:{name}:live" and alias["FunctionVersion"] == "1"
    assert lam.get_alias(FunctionName=name, Name="live")["Description"] == "d"
    with pytest.raises(ClientError) as raised:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert aws_error(raised)[:2] == (409, "ResourceConflictException")
    assert (
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="$LATEST")[
            "FunctionVersion"
        ]
        == "$LATEST"
    )
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["live"]
    assert json.loads(lam.invoke(FunctionName=f"{name}:live", Payload=b"{}")["Payload"].read())
    lam.delete_alias(FunctionName=name, Name="live")
    with pytest.raises(ClientError) as raised:
        lam.get_alias(FunctionName=name, Name="live")
    assert aws_error(raised) == (
        404,
        "ResourceNotFoundException",
        f"Cannot find alias arn: {ARN}:{name}:live",
    )


async def test_alias_to_a_missing_version_is_not_found(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="4")
    assert aws_error(raised)[:2] == (404, "ResourceNotFoundException")


def test_health_and_openapi_are_served(api: Any) -> None:
    import httpx

    assert httpx.get(f"{api.endpoint_url}/healthz").json() == {"status": "ok"}
    spec = httpx.get(f"{api.endpoint_url}/openapi.json").json()
    assert "/2015-03-31/functions/{FunctionName}/invocations" in spec["paths"]


async def test_two_serves_answer_alike(api: Any, make_function: MakeFunction) -> None:
    """State lives in Redis: a change made through one serve is seen through another."""
    second = await api.launcher.start()
    other = api.client()
    through_second = api.client(endpoint_url=second.endpoint_url)
    name = await make_function()
    other.publish_version(FunctionName=name)
    other.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert through_second.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
    uuid = other.create_event_source_mapping(
        EventSourceArn=f"arn:aws:sqs:us-east-1:000000000000:two-{name}", FunctionName=name
    )["UUID"]
    assert through_second.get_event_source_mapping(UUID=uuid)["FunctionArn"].endswith(name)
