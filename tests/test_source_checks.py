"""A mapping's AWS source must exist, and an SQS queue must hide messages at least as long
as the function may run (spec §7.3 rules 14-16), checked against moto's server over HTTP."""

from __future__ import annotations

import pytest

from broker import InvalidParameterValueError
from tests.conftest import BrokerFactory
from tests.conftest import aws_client as client

H = "python:tests.handlers.async_handlers"
ACCOUNT = "000000000000"


async def test_missing_queue_is_refused(aws: str, make_broker: BrokerFactory) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    with pytest.raises(InvalidParameterValueError) as refused:
        await broker.mappings.create(
            {"EventSourceArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:nope", "FunctionName": "orders"}
        )
    assert refused.value.message == (
        "Error occurred while ReceiveMessage. SQS Error Code: "
        "AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified queue "
        "does not exist."
    )


async def test_visibility_timeout_shorter_than_the_function_timeout_is_refused(
    aws: str, make_broker: BrokerFactory
) -> None:
    sqs = client("sqs", aws)
    url = sqs.create_queue(QueueName="short", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    broker = await make_broker(dispatch=False)
    await broker.put_function("slow", f"{H}:ok", timeout_s=60)
    await broker.put_function("quick", f"{H}:ok", timeout_s=10)
    with pytest.raises(InvalidParameterValueError) as refused:
        await broker.mappings.create({"EventSourceArn": arn, "FunctionName": "slow"})
    assert refused.value.message == (
        "Queue visibility timeout: 30 seconds is less than Function timeout: 60 seconds"
    )
    created = await broker.mappings.create({"EventSourceArn": arn, "FunctionName": "quick"})
    assert created["State"] == "Creating"


async def test_missing_kinesis_stream_is_refused(aws: str, make_broker: BrokerFactory) -> None:
    broker = await make_broker(dispatch=False)
    await broker.put_function("orders", f"{H}:ok")
    arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/missing"
    with pytest.raises(InvalidParameterValueError) as refused:
        await broker.mappings.create(
            {"EventSourceArn": arn, "FunctionName": "orders", "StartingPosition": "LATEST"}
        )
    assert refused.value.message == f"Stream not found: {arn}"
    kinesis = client("kinesis", aws)
    kinesis.create_stream(StreamName="present", ShardCount=1)
    present = kinesis.describe_stream_summary(StreamName="present")["StreamDescriptionSummary"][
        "StreamARN"
    ]
    created = await broker.mappings.create(
        {"EventSourceArn": present, "FunctionName": "orders", "StartingPosition": "LATEST"}
    )
    assert created["EventSourceArn"] == present
