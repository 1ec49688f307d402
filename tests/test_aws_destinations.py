"""Records and dead letters arrive in AWS services in the shapes their receivers expect
(spec §5.1, §6), checked against moto's standalone server over real HTTP."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from broker import Broker
from tests.conftest import BrokerFactory, aws_client
from tests.helpers import wait_until

H = "python:tests.handlers.async_handlers"
ACCOUNT = "000000000000"
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function"


def make_queue(url: str, name: str) -> tuple[str, str]:
    sqs = aws_client("sqs", url)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return queue_url, arn


async def receive(url: str, queue_url: str, timeout_s: float = 15) -> dict[str, Any]:
    sqs = aws_client("sqs", url)
    got: list[dict[str, Any]] = []

    async def arrived() -> bool:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=1, MessageAttributeNames=["All"]
        )
        got.extend(answer.get("Messages", []))
        return bool(got)

    await wait_until(arrived, timeout_s, interval_s=0.1)
    return got[0]


async def failing(broker: Broker, name: str, **config: Any) -> str:
    await broker.put_function(name, f"{H}:fail", **config)
    return name


async def test_sqs_on_failure_gets_the_record_as_the_body(
    aws: str, make_broker: BrokerFactory
) -> None:
    queue_url, queue_arn = make_queue(aws, "failures")
    broker = await make_broker()
    await failing(broker, "orders")
    await broker.put_event_invoke_config(
        "orders",
        {"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": queue_arn}}},
    )
    request_id = await broker.invoke_async("orders", {"orderId": "A-1002"})
    record = json.loads((await receive(aws, queue_url))["Body"])
    assert list(record) == [
        "version",
        "timestamp",
        "requestContext",
        "requestPayload",
        "responseContext",
        "responsePayload",
    ]
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responseContext"]["functionError"] == "Unhandled"


async def test_sqs_dead_letter_queue_gets_the_event_and_three_attributes(
    aws: str, make_broker: BrokerFactory
) -> None:
    queue_url, queue_arn = make_queue(aws, "dlq")
    broker = await make_broker()
    await failing(broker, "orders", dead_letter_target=queue_arn)
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    request_id = await broker.invoke_async("orders", {"orderId": "A-1002"})
    message = await receive(aws, queue_url)
    assert json.loads(message["Body"]) == {"orderId": "A-1002"}
    attributes = message["MessageAttributes"]
    assert attributes["RequestID"] == {"DataType": "String", "StringValue": request_id}
    assert attributes["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}
    assert attributes["ErrorMessage"]["StringValue"] == "stock service unavailable"


async def test_sns_gets_the_record_as_the_message(aws: str, make_broker: BrokerFactory) -> None:
    queue_url, queue_arn = make_queue(aws, "from-sns")
    sns = aws_client("sns", aws)
    topic = sns.create_topic(Name="results")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": topic}}}
    )
    request_id = await broker.invoke_async("orders", {"n": 1})
    envelope = json.loads((await receive(aws, queue_url))["Body"])
    record = json.loads(envelope["Message"])
    assert envelope["TopicArn"] == topic
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "Success"
    assert "functionError" not in record["responseContext"]


@pytest.mark.parametrize("source", ["lambda", "aws.lambda"])
async def test_eventbridge_gets_a_lambda_result_event(
    aws: str, make_broker: BrokerFactory, source: str
) -> None:
    queue_url, queue_arn = make_queue(aws, f"from-events-{source.replace('.', '-')}")
    events = aws_client("events", aws)
    bus_name = f"ops-bus-{source.replace('.', '-')}"
    bus = events.create_event_bus(Name=bus_name)["EventBusArn"]
    events.put_rule(
        Name="all-lambda", EventBusName=bus_name, EventPattern=json.dumps({"source": [source]})
    )
    events.put_targets(
        Rule="all-lambda", EventBusName=bus_name, Targets=[{"Id": "q", "Arn": queue_arn}]
    )
    broker = await make_broker(eventbridge_source=source)
    await failing(broker, "orders")
    await broker.put_event_invoke_config(
        "orders",
        {"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": bus}}},
    )
    request_id = await broker.invoke_async("orders", {"n": 1})
    event = json.loads((await receive(aws, queue_url))["Body"])
    assert event["source"] == source
    assert event["detail-type"] == "Lambda Function Invocation Result - Failure"
    assert event["resources"] == [bus, f"{ARN}:orders:$LATEST"]
    assert event["detail"]["requestContext"]["requestId"] == request_id


async def test_s3_gets_the_record_under_lambdas_key(aws: str, make_broker: BrokerFactory) -> None:
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="failed-events")
    broker = await make_broker()
    await failing(broker, "orders")
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:s3:::failed-events"}},
        },
    )
    request_id = await broker.invoke_async("orders", {"n": 1})
    keys: list[str] = []

    async def stored() -> bool:
        keys[:] = [o["Key"] for o in s3.list_objects_v2(Bucket="failed-events").get("Contents", [])]
        return bool(keys)

    await wait_until(stored, 15, interval_s=0.1)
    (key,) = keys
    # The test clock starts at 2025-03-04T10:11:12Z.
    assert re.fullmatch(
        r"aws/lambda/async/orders/2025/03/04/2025-03-04T10\.11\.12-[0-9a-f-]{36}", key
    ), key
    record = json.loads(s3.get_object(Bucket="failed-events", Key=key)["Body"].read())
    assert record["requestContext"]["requestId"] == request_id


@pytest.mark.parametrize("kind", ["queue", "topic"])
async def test_fifo_destinations_are_accepted_but_every_delivery_fails(
    aws: str, make_broker: BrokerFactory, kind: str
) -> None:
    target = (
        f"arn:aws:sqs:us-east-1:{ACCOUNT}:orders.fifo"
        if kind == "queue"
        else f"arn:aws:sns:us-east-1:{ACCOUNT}:orders.fifo"
    )
    broker = await make_broker(delivery_retries=1)
    await broker.put_function("orders", f"{H}:ok")
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": target}}}
    )
    await broker.invoke_async("orders", {"n": 1})

    async def failed() -> bool:
        return (await broker.stats("orders")).get("DestinationDeliveryFailures") == 1

    await wait_until(failed)
    (entry,) = await broker.dead_letters.list("orders")
    assert entry["kind"] == "delivery_failed" and entry["target"] == target


async def test_sns_record_over_256_kb_drops_the_payloads(
    aws: str, make_broker: BrokerFactory
) -> None:
    queue_url, queue_arn = make_queue(aws, "from-sns-big")
    sns = aws_client("sns", aws)
    topic = sns.create_topic(Name="big-results")["TopicArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:ok")  # echoes the event: request + response
    await broker.put_event_invoke_config(
        "orders", {"DestinationConfig": {"OnSuccess": {"Destination": topic}}}
    )
    request_id = await broker.invoke_async("orders", {"blob": "x" * 150_000})
    record = json.loads(json.loads((await receive(aws, queue_url))["Body"])["Message"])
    assert record["requestContext"]["requestId"] == request_id
    assert "requestPayload" not in record and "responsePayload" not in record
    assert record["responseContext"]["statusCode"] == 200


async def test_dead_letter_error_message_is_cut_to_1_kib_on_a_character(
    aws: str, make_broker: BrokerFactory
) -> None:
    queue_url, queue_arn = make_queue(aws, "dlq-long")
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:fail_long", dead_letter_target=queue_arn)
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    await broker.invoke_async("orders", {"n": 1})
    message = (await receive(aws, queue_url))["MessageAttributes"]["ErrorMessage"]["StringValue"]
    assert len(message.encode()) == 1024 and message == "é" * 512


async def test_lambda_destination_invokes_the_target_asynchronously_with_the_record(
    make_broker: BrokerFactory,
) -> None:
    from tests.helpers import stream_length_at_least, stream_records

    broker = await make_broker()
    await broker.put_function("audit", f"{H}:ok")
    await broker.put_event_invoke_config(
        "audit", {"DestinationConfig": {"OnSuccess": {"Destination": "redis-stream:audited"}}}
    )
    await failing(broker, "orders")
    await broker.put_event_invoke_config(
        "orders",
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {"OnFailure": {"Destination": f"{ARN}:audit"}},
        },
    )
    request_id = await broker.invoke_async("orders", {"orderId": "A-7"})
    await wait_until(lambda: stream_length_at_least(broker.redis, "audited", 1))
    (audit_record,) = await stream_records(broker.redis, "audited")
    # audit ran with the orders failure record as its event (and echoed it back)
    event = audit_record["requestPayload"]
    assert event["requestContext"]["requestId"] == request_id
    assert event["requestContext"]["condition"] == "RetriesExhausted"
    assert audit_record["requestContext"]["requestId"] != request_id


async def test_missing_dead_letter_queue_counts_an_error_and_never_reruns_the_function(
    aws: str, make_broker: BrokerFactory
) -> None:
    broker = await make_broker()
    await failing(broker, "orders", dead_letter_target=f"arn:aws:sqs:us-east-1:{ACCOUNT}:gone")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    await broker.invoke_async("orders", {"n": 1})

    async def counted() -> bool:
        return (await broker.stats("orders")).get("DeadLetterErrors") == 1

    await wait_until(counted)
    stats = await broker.stats("orders")
    assert stats["Invocations"] == 1 and stats["AsyncEventsDropped"] == 1
    kinds = sorted(e["kind"] for e in await broker.dead_letters.list("orders"))
    assert kinds == ["delivery_failed", "function_failed"]  # kept, not lost
