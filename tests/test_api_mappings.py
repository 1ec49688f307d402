"""Event source mappings over HTTP with boto3 (spec §7, §12 items 35-51 that apply)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.api_fixtures import MakeFunction, aws_error

ACCOUNT = "000000000000"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"
SQS = f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders-in"
KINESIS = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/clicks"
NOT_FOUND = "The resource you requested does not exist."


def body(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


async def test_sqs_mapping_defaults(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    created = lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}", FunctionName=name)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["BatchSize"] == 10 and created["MaximumBatchingWindowInSeconds"] == 0
    assert created["FunctionResponseTypes"] == [] and created["State"] == "Creating"
    assert created["StateTransitionReason"] == "USER_INITIATED"
    assert created["FunctionArn"] == f"{ARN}:{name}"
    assert created["EventSourceMappingArn"].endswith(f":event-source-mapping:{created['UUID']}")
    got = lam.get_event_source_mapping(UUID=created["UUID"])
    assert got["State"] == "Enabled"
    # Sluice has no SQS poller yet and says so rather than doing nothing silently.
    assert got["LastProcessingResult"] == "PROBLEM: no poller for this source type yet"


async def test_kinesis_mapping_defaults(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    created = lam.create_event_source_mapping(
        EventSourceArn=f"{KINESIS}-{name}", FunctionName=name, StartingPosition="LATEST"
    )
    assert (
        created["MaximumRecordAgeInSeconds"],
        created["MaximumRetryAttempts"],
        created["ParallelizationFactor"],
        created["TumblingWindowInSeconds"],
        created["BisectBatchOnFunctionError"],
    ) == (-1, -1, 1, 0, False)
    assert created["DestinationConfig"] == {"OnFailure": {}}
    assert created["BatchSize"] == 100 and created["StateTransitionReason"] == "User action"


async def test_disabled_create_and_state_transitions(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    created = lam.create_event_source_mapping(
        EventSourceArn=f"{SQS}-{name}", FunctionName=name, Enabled=False
    )
    uuid = created["UUID"]
    assert lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled"
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=True)["State"] == "Enabling"
    assert lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled"
    assert lam.update_event_source_mapping(UUID=uuid, Enabled=False)["State"] == "Disabling"
    assert lam.get_event_source_mapping(UUID=uuid)["State"] == "Disabled"
    assert lam.update_event_source_mapping(UUID=uuid, BatchSize=5)["State"] == "Updating"
    assert lam.get_event_source_mapping(UUID=uuid)["BatchSize"] == 5


async def test_delete_then_get_is_404(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    uuid = lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}", FunctionName=name)[
        "UUID"
    ]
    assert lam.delete_event_source_mapping(UUID=uuid)["State"] == "Deleting"
    with pytest.raises(ClientError) as raised:
        lam.get_event_source_mapping(UUID=uuid)
    assert aws_error(raised) == (404, "ResourceNotFoundException", NOT_FOUND)


def test_unknown_uuid_is_404(lam: Any) -> None:
    for call in (
        lambda: lam.get_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000"),
        lambda: lam.delete_event_source_mapping(UUID="00000000-0000-0000-0000-000000000000"),
    ):
        with pytest.raises(ClientError) as raised:
            call()
        assert aws_error(raised) == (404, "ResourceNotFoundException", NOT_FOUND)


async def test_duplicate_mapping_is_409(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}", FunctionName=name)
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}", FunctionName=name)
    assert aws_error(raised)[:2] == (409, "ResourceConflictException")


async def test_validation_errors(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}", FunctionName="ghost")
    assert aws_error(raised)[:2] == (400, "InvalidParameterValueException")
    assert "Function does not exist" in aws_error(raised)[2]
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=f"{SQS}-{name}.fifo", FunctionName=name, BatchSize=11
        )
    assert aws_error(raised)[0] == 400
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=f"{KINESIS}-{name}",
            FunctionName=name,
            StartingPosition="LATEST",
            MaximumRecordAgeInSeconds=30,
        )
    assert aws_error(raised)[0] == 400


async def test_kafka_is_refused_clearly(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=f"arn:aws:kafka:us-east-1:{ACCOUNT}:cluster/c/abc",
            FunctionName=name,
            Topics=["t"],
            StartingPosition="LATEST",
        )
    status, code, message = aws_error(raised)
    assert (status, code) == (400, "InvalidParameterValueException")
    assert "Sluice" in message and "Kafka" in message


async def test_sluice_sources_redis_stream_and_rabbitmq(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    stream = lam.create_event_source_mapping(
        EventSourceArn=f"redis-stream:clicks-{name}", FunctionName=name, StartingPosition="LATEST"
    )
    assert stream["BatchSize"] == 100 and stream["MaximumRetryAttempts"] == -1
    rabbit = lam.create_event_source_mapping(
        EventSourceArn="amqp://guest:guest@127.0.0.1:5672/%2f",
        FunctionName=name,
        Queues=[f"orders-{name}"],
    )
    assert rabbit["Queues"] == [f"orders-{name}"]
    assert rabbit["EventSourceArn"] == "amqp://guest:****@127.0.0.1:5672/%2f"  # never echoed


async def test_list_filters_and_pages(lam: Any, make_function: MakeFunction) -> None:
    name = await make_function()
    for n in range(3):
        lam.create_event_source_mapping(EventSourceArn=f"{SQS}-{name}-{n}", FunctionName=name)
    seen: list[str] = []
    marker: dict[str, str] = {}
    while True:
        page = lam.list_event_source_mappings(FunctionName=name, MaxItems=2, **marker)
        seen += [m["UUID"] for m in page["EventSourceMappings"]]
        if "NextMarker" not in page:
            break
        marker = {"Marker": page["NextMarker"]}
    assert len(seen) == 3 == len(set(seen))
    empty = lam.list_event_source_mappings(FunctionName="nobody-has-this")
    assert empty["EventSourceMappings"] == []


async def test_function_arn_keeps_the_callers_qualification(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function(aliases={"live": "1"})
    for n, function in enumerate([name, f"{name}:$LATEST", f"{name}:1", f"{ARN}:{name}:live"]):
        created = body(
            lam.create_event_source_mapping(
                EventSourceArn=f"{SQS}-q{n}-{name}", FunctionName=function
            )
        )
        expected = function if function.startswith("arn:") else f"{ARN}:{function}"
        assert created["FunctionArn"] == expected


DDB = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/orders/stream/2025-03-04T10:11:12.000"


async def test_dynamodb_stream_mapping_defaults_and_starting_position(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    created = lam.create_event_source_mapping(
        EventSourceArn=f"{DDB}{name[-2:]}", FunctionName=name, StartingPosition="TRIM_HORIZON"
    )
    assert created["BatchSize"] == 100 and created["DestinationConfig"] == {"OnFailure": {}}
    assert created["StartingPosition"] == "TRIM_HORIZON"
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=f"{DDB}x",
            FunctionName=name,
            StartingPosition="AT_TIMESTAMP",
            StartingPositionTimestamp=1_700_000_000,
        )
    assert aws_error(raised) == (
        400,
        "InvalidParameterValueException",
        f"Unsupported starting position for arn type: {DDB}x",
    )
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(EventSourceArn=f"{DDB}y", FunctionName=name)
    assert aws_error(raised)[2] == (
        "1 validation error detected: Value null at 'startingPosition' failed to satisfy "
        "constraint: Member must not be null."
    )


async def test_on_success_in_a_mapping_is_refused_first(lam: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=KINESIS,
            FunctionName="does-not-exist",
            StartingPosition="LATEST",
            DestinationConfig={"OnSuccess": {"Destination": f"arn:aws:sqs:us-east-1:{ACCOUNT}:q"}},
        )
    assert aws_error(raised) == (
        400,
        "InvalidParameterValueException",
        "Unsupported DestinationConfig parameter for given event source mapping type.",
    )


def test_mapping_without_a_source_is_unrecognized(lam_unvalidated: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam_unvalidated.create_event_source_mapping(FunctionName="any")
    assert aws_error(raised) == (
        400,
        "InvalidParameterValueException",
        "Unrecognized event source.",
    )


@pytest.mark.parametrize(("age", "accepted"), [(30, False), (-1, True), (60, True)])
async def test_maximum_record_age_bounds(
    lam: Any, make_function: MakeFunction, age: int, accepted: bool
) -> None:
    name = await make_function()
    kwargs = {
        "EventSourceArn": f"{KINESIS}-age{age}-{name}",
        "FunctionName": name,
        "StartingPosition": "LATEST",
        "MaximumRecordAgeInSeconds": age,
    }
    if accepted:
        assert lam.create_event_source_mapping(**kwargs)["MaximumRecordAgeInSeconds"] == age
    else:
        with pytest.raises(ClientError):
            lam.create_event_source_mapping(**kwargs)


async def test_sqs_batch_size_needs_a_window_above_ten(
    lam: Any, make_function: MakeFunction
) -> None:
    name = await make_function()
    with pytest.raises(ClientError) as raised:
        lam.create_event_source_mapping(
            EventSourceArn=f"{SQS}-b-{name}", FunctionName=name, BatchSize=11
        )
    assert aws_error(raised)[2] == (
        "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
        "greater than 10"
    )
    created = lam.create_event_source_mapping(
        EventSourceArn=f"{SQS}-b-{name}",
        FunctionName=name,
        BatchSize=11,
        MaximumBatchingWindowInSeconds=1,
    )
    assert created["BatchSize"] == 11
