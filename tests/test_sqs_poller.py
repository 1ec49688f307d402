"""SQS event source mappings against moto's standalone server (spec §8, §9.1, §12 52-61).

The function is a small HTTP server following the Lambda Invoke contract; its responder
decides, per test, what the function answers. Queues use a 1-second visibility timeout
(and functions a 1-second timeout) so failed messages come back within a second.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest

from broker import Broker
from tests.conftest import BrokerFactory, aws_client
from tests.helpers import until
from tests.servers import Answer, LambdaHttpFunction, function_error, ok

Event = dict[str, Any]


class Function:
    """The function under test: records each event; ``answer(event)`` decides the reply."""

    def __init__(self) -> None:
        self.answer: Callable[[Event], Answer] = lambda _event: ok()
        self.delay_s = 0.0
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()
        self.server = LambdaHttpFunction(self._respond).start()

    def _respond(self, event: Event, headers: dict[str, str]) -> Answer:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.answer(event)
        finally:
            with self._lock:
                self.running -= 1

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.server.calls]

    def bodies(self) -> list[str]:
        return [r["body"] for event in self.events for r in event["Records"]]


@pytest.fixture
def function() -> Iterator[Function]:
    fn = Function()
    yield fn
    fn.server.stop()


@pytest.fixture
def sqs(aws: str) -> Any:
    return aws_client("sqs", aws)


@pytest.fixture
async def broker(aws: str, make_broker: BrokerFactory, function: Function) -> AsyncIterator[Broker]:
    broker = await make_broker(
        run_pollers=True, poller_refresh_s=0.1, sqs_wait_time_s=1, poller_lease_ttl_s=5
    )
    await broker.put_function("orders", function.server.url, timeout_s=1)
    yield broker


def make_queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    attributes.setdefault("VisibilityTimeout", "1")
    name = f"{name}-{uuid4().hex[:8]}"  # moto's server outlives each test
    if attributes.get("FifoQueue") == "true":
        name += ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def send(sqs: Any, url: str, *bodies: str) -> list[str]:
    ids = []
    for start in range(0, len(bodies), 10):
        entries = [
            {"Id": str(i), "MessageBody": body} for i, body in enumerate(bodies[start : start + 10])
        ]
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        ids += [
            entry["MessageId"]
            for entry in sorted(response["Successful"], key=lambda e: int(e["Id"]))
        ]
    return ids


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def map_queue(broker: Broker, arn: str, **fields: Any) -> str:
    body = {"EventSourceArn": arn, "FunctionName": "orders", **fields}
    return str((await broker.mappings.create(body))["UUID"])


async def counters(broker: Broker, uuid: str) -> dict[str, int]:
    raw = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    return {key.decode(): int(value) for key, value in raw.items()}


async def counter(broker: Broker, uuid: str, name: str, value: int) -> bool:
    """Has counter ``name`` reached ``value`` (never passing it: more is a failure)?"""
    current = (await counters(broker, uuid)).get(name, 0)
    assert current <= value, f"{name} = {current} > {value}"
    return current == value


async def drained(sqs: Any, url: str) -> bool:
    return queue_counts(sqs, url) == (0, 0)


async def test_batches_by_size_and_deletes_what_succeeded(
    broker: Broker, sqs: Any, function: Function
) -> None:
    url, arn = make_queue(sqs, "orders")
    bodies = [json.dumps({"n": n}) for n in range(25)]
    send(sqs, url, *bodies)
    uuid = await map_queue(broker, arn, BatchSize=10)
    await until(lambda: len(function.bodies()) >= 25, timeout=20)
    await until(lambda: drained(sqs, url), timeout=10)
    assert sorted(function.bodies()) == sorted(bodies)
    assert all(1 <= len(event["Records"]) <= 10 for event in function.events)
    # The queue empties a moment before the poller counts the deletion: wait for the count.
    await until(lambda: counter(broker, uuid, "deleted", 25), timeout=10)
    stats = await counters(broker, uuid)
    assert stats["polled"] == 25 and stats["deleted"] == 25 and "filtered_out" not in stats
    mapping = await broker.mappings.get(uuid)
    assert mapping["LastProcessingResult"] == "OK"


async def test_record_shape_is_lambdas(broker: Broker, sqs: Any, function: Function) -> None:
    url, arn = make_queue(sqs, "shapes")
    sqs.send_message(
        QueueUrl=url,
        MessageBody="plain text",
        MessageAttributes={
            "tenant": {"StringValue": "acme", "DataType": "String"},
            "blob": {"BinaryValue": b"\x00\x01", "DataType": "Binary"},
        },
    )
    await map_queue(broker, arn)
    await until(lambda: function.events, timeout=15)
    (record,) = function.events[0]["Records"]
    assert list(record) == [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ]
    assert record["body"] == "plain text"
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
        record["attributes"]
    )
    assert record["messageAttributes"]["tenant"] == {
        "stringValue": "acme",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["messageAttributes"]["blob"]["binaryValue"] == "AAE="


async def test_window_gathers_one_batch(broker: Broker, sqs: Any, function: Function) -> None:
    """§12 item 58: BatchSize 50, a window, 12 messages at once: one invocation of 12."""
    url, arn = make_queue(sqs, "window", VisibilityTimeout="30")
    uuid = await map_queue(broker, arn, BatchSize=50, MaximumBatchingWindowInSeconds=3)
    await until(lambda: uuid in broker.pollers.running, timeout=5)  # type: ignore[union-attr]
    sent_at = time.time()
    send(sqs, url, *[f"m{n}" for n in range(12)])
    await until(lambda: function.events, timeout=15)
    await until(lambda: drained(sqs, url), timeout=10)
    assert [len(event["Records"]) for event in function.events] == [12]
    assert function.server.calls[0][0] - sent_at > 0  # invoked after the send, once


async def test_filtered_out_messages_are_deleted(
    broker: Broker, sqs: Any, function: Function
) -> None:
    url, arn = make_queue(sqs, "filtered")
    keep = [json.dumps({"kind": "refund", "n": n}) for n in range(3)]
    drop = [json.dumps({"kind": "sale", "n": n}) for n in range(3)] + ["refund as text"]
    send(sqs, url, *keep, *drop)
    pattern = json.dumps({"body": {"kind": ["refund"]}})
    uuid = await map_queue(broker, arn, FilterCriteria={"Filters": [{"Pattern": pattern}]})
    await until(lambda: drained(sqs, url), timeout=20)
    assert sorted(function.bodies()) == sorted(keep)
    await until(lambda: counter(broker, uuid, "deleted", 7), timeout=10)
    stats = await counters(broker, uuid)
    assert stats["filtered_out"] == 4 and stats["deleted"] == 7


async def test_nothing_passing_the_filter_means_no_invocation(
    broker: Broker, sqs: Any, function: Function
) -> None:
    url, arn = make_queue(sqs, "none-pass")
    send(sqs, url, "a", "b")
    pattern = json.dumps({"body": ["c"]})
    await map_queue(broker, arn, FilterCriteria={"Filters": [{"Pattern": pattern}]})
    await until(lambda: drained(sqs, url), timeout=20)
    assert function.events == []


async def test_partial_batch_response_keeps_only_the_failed(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """§12 item 54: only the reported message remains, and comes back with count 2."""
    url, arn = make_queue(sqs, "partial")
    ids = send(sqs, url, "good-1", "bad", "good-2")
    bad_id = ids[1]

    def answer(event: Event) -> Answer:
        failed = [
            {"itemIdentifier": r["messageId"]}
            for r in event["Records"]
            if r["body"] == "bad" and r["attributes"]["ApproximateReceiveCount"] == "1"
        ]
        return ok({"batchItemFailures": failed})

    function.answer = answer
    await map_queue(broker, arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: function.bodies().count("bad") == 2, timeout=20)
    await until(lambda: drained(sqs, url), timeout=10)
    assert function.bodies().count("good-1") == 1 and function.bodies().count("good-2") == 1
    retried = [r for e in function.events[1:] for r in e["Records"]]
    assert [(r["messageId"], r["attributes"]["ApproximateReceiveCount"]) for r in retried] == [
        (bad_id, "2")
    ]


SUCCESS_RESPONSES = [{"batchItemFailures": []}, {"batchItemFailures": None}, {}, None]


@pytest.mark.parametrize(
    "response", SUCCESS_RESPONSES, ids=["empty", "null-list", "empty-object", "null"]
)
async def test_partial_responses_meaning_success_delete_all(
    broker: Broker, sqs: Any, function: Function, response: Any
) -> None:
    url, arn = make_queue(sqs, "success-forms")
    send(sqs, url, "a", "b", "c")
    function.answer = lambda _event: ok(response)
    await map_queue(broker, arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: drained(sqs, url), timeout=20)
    assert sorted(function.bodies()) == ["a", "b", "c"]


INVALID_RESPONSES: list[Callable[[Event], Answer]] = [
    lambda e: ok({"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}),
    lambda e: ok({"batchItemFailures": [{"itemIdentifier": ""}]}),
    lambda e: ok({"batchItemFailures": [{"itemIdentifier": None}]}),
    lambda e: ok({"foo": [{"itemIdentifier": e["Records"][0]["messageId"]}]}),
    lambda e: (200, {}, b"this is not json"),
    lambda e: function_error(),
]


@pytest.mark.parametrize(
    "invalid",
    INVALID_RESPONSES,
    ids=["unknown-id", "empty-id", "null-id", "wrong-key", "not-json", "function-error"],
)
async def test_invalid_partial_responses_retry_the_whole_batch(
    broker: Broker, sqs: Any, function: Function, invalid: Callable[[Event], Answer]
) -> None:
    """§12 items 55 and 57: the whole batch comes back (receive count 2), nothing deleted."""
    url, arn = make_queue(sqs, "invalid")
    send(sqs, url, "a", "b", "c")

    def answer(event: Event) -> Answer:
        first = event["Records"][0]["attributes"]["ApproximateReceiveCount"] == "1"
        return invalid(event) if first else ok()

    function.answer = answer
    await map_queue(broker, arn, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: drained(sqs, url), timeout=25)
    counts = sorted(
        (r["body"], r["attributes"]["ApproximateReceiveCount"])
        for e in function.events
        for r in e["Records"]
    )
    assert counts == [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("c", "1"), ("c", "2")]


async def test_partial_response_ignored_without_report_batch_item_failures(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """§12 item 56."""
    url, arn = make_queue(sqs, "ignored")
    send(sqs, url, "a", "b")
    function.answer = lambda e: ok(
        {"batchItemFailures": [{"itemIdentifier": e["Records"][0]["messageId"]}]}
    )
    await map_queue(broker, arn)
    await until(lambda: drained(sqs, url), timeout=20)
    assert sorted(function.bodies()) == ["a", "b"]


async def test_failing_messages_redrive_to_the_queues_dlq(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """§12 items 52-53: nothing deleted on failure; after maxReceiveCount 2, the DLQ."""
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq")
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
    url, arn = make_queue(sqs, "redriven", RedrivePolicy=policy)
    send(sqs, url, "poison")
    function.answer = lambda _event: function_error()
    uuid = await map_queue(broker, arn)
    await until(lambda: queue_counts(sqs, dlq_url)[0] == 1, timeout=25)
    assert function.bodies() == ["poison", "poison"]
    counts = [e["Records"][0]["attributes"]["ApproximateReceiveCount"] for e in function.events]
    assert counts == ["1", "2"]
    mapping = await broker.mappings.get(uuid)
    assert mapping["LastProcessingResult"] == "PROBLEM: Function call failed"


async def test_maximum_concurrency_caps_concurrent_invocations(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """§12 item 61."""
    url, arn = make_queue(sqs, "busy", VisibilityTimeout="30")
    send(sqs, url, *[f"m{n}" for n in range(40)])
    function.delay_s = 0.2
    uuid = await map_queue(broker, arn, BatchSize=1, ScalingConfig={"MaximumConcurrency": 2})
    await until(lambda: drained(sqs, url), timeout=40)
    assert len(function.bodies()) >= 40
    assert function.peak == 2
    poller = broker.pollers.running[uuid].poller  # type: ignore[union-attr]
    assert poller.peak_loops == 2  # type: ignore[attr-defined]


async def test_disable_enable_and_delete_apply_within_seconds(
    broker: Broker, sqs: Any, function: Function
) -> None:
    url, arn = make_queue(sqs, "toggled")
    uuid = await map_queue(broker, arn)
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: uuid in pollers.running, timeout=5)
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: not pollers.polling(uuid), timeout=10)
    send(sqs, url, "while-disabled")
    await pollers.refresh()
    assert not pollers.polling(uuid)
    assert queue_counts(sqs, url) == (1, 0)  # nobody received it
    await broker.mappings.update(uuid, {"Enabled": True})
    await until(lambda: function.bodies() == ["while-disabled"], timeout=15)
    await broker.mappings.delete(uuid)
    await until(lambda: not pollers.polling(uuid), timeout=10)
    assert await broker.redis.get(broker.keys.mapping_lease(uuid)) is None


async def test_a_changed_batch_size_restarts_the_poller(
    broker: Broker, sqs: Any, function: Function
) -> None:
    _, arn = make_queue(sqs, "changed", VisibilityTimeout="30")
    uuid = await map_queue(broker, arn, BatchSize=1)
    pollers = broker.pollers
    assert pollers is not None
    await until(lambda: uuid in pollers.running, timeout=5)
    first = pollers.running[uuid]
    await broker.mappings.update(uuid, {"BatchSize": 10})
    await until(lambda: uuid in pollers.running and pollers.running[uuid] is not first, timeout=5)
    assert pollers.running[uuid].mapping.batch_size == 10


async def test_fifo_keeps_group_order_and_a_failing_group_blocks_only_itself(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """§12 item 59: per-group order across batches; a failure holds back its group only."""
    url, arn = make_queue(sqs, "orders", FifoQueue="true", ContentBasedDeduplication="true")
    for n in range(1, 6):
        for group in ("a", "b"):
            sqs.send_message(QueueUrl=url, MessageBody=f"{group}{n}", MessageGroupId=group)
    processed: list[str] = []

    def answer(event: Event) -> Answer:
        failed: list[dict[str, str]] = []
        broken: set[str] = set()
        for record in event["Records"]:
            group = record["attributes"]["MessageGroupId"]
            first_time = record["attributes"]["ApproximateReceiveCount"] == "1"
            if group in broken or (record["body"] == "a2" and first_time):
                broken.add(group)  # stop the group here: report it and the rest of it
                failed.append({"itemIdentifier": record["messageId"]})
            else:
                processed.append(record["body"])
        return ok({"batchItemFailures": failed})

    function.answer = answer
    await map_queue(broker, arn, BatchSize=4, FunctionResponseTypes=["ReportBatchItemFailures"])
    await until(lambda: drained(sqs, url), timeout=30)
    assert [body for body in processed if body[0] == "a"] == ["a1", "a2", "a3", "a4", "a5"]
    assert [body for body in processed if body[0] == "b"] == ["b1", "b2", "b3", "b4", "b5"]
    # group b went on while a2 waited out its visibility timeout
    assert processed.index("b5") < processed.index("a2")


async def test_a_restart_loses_no_message_and_deletes_none_twice(
    aws: str, make_broker: BrokerFactory, sqs: Any, function: Function
) -> None:
    """Stop the broker mid-backlog (SIGTERM semantics), start another on the same Redis."""
    first = await make_broker(
        run_pollers=True, poller_refresh_s=0.1, sqs_wait_time_s=1, drain_timeout_s=30
    )
    await first.put_function("orders", function.server.url, timeout_s=1)
    url, arn = make_queue(sqs, "restart", VisibilityTimeout="30")
    bodies = [f"m{n}" for n in range(30)]
    send(sqs, url, *bodies)
    function.delay_s = 0.1
    uuid = await map_queue(first, arn, BatchSize=3, ScalingConfig={"MaximumConcurrency": 2})
    await until(lambda: len(function.bodies()) >= 6, timeout=20)
    await first.stop()  # finishes the batches in hand, releases the lease
    assert await first.redis.get(first.keys.mapping_lease(uuid)) is None
    handled_before = len(function.bodies())
    assert handled_before < 30
    second = await make_broker(
        run_pollers=True,
        poller_refresh_s=0.1,
        sqs_wait_time_s=1,
        key_prefix=first.settings.key_prefix,
    )
    await until(lambda: drained(sqs, url), timeout=30)
    assert sorted(function.bodies()) == sorted(bodies)  # each exactly once
    await until(lambda: counter(second, uuid, "deleted", 30), timeout=10)
    stats = await counters(second, uuid)
    assert stats["deleted"] == 30 and stats["polled"] == 30


async def test_processes_share_mappings_and_take_over_a_dead_ones(
    aws: str, make_broker: BrokerFactory, sqs: Any, function: Function
) -> None:
    options = {"run_pollers": True, "poller_refresh_s": 0.1, "poller_lease_ttl_s": 1.0}
    first = await make_broker(sqs_wait_time_s=1, **options)
    await first.put_function("orders", function.server.url, timeout_s=1)
    second = await make_broker(sqs_wait_time_s=1, key_prefix=first.settings.key_prefix, **options)
    queues = [make_queue(sqs, f"shared{n}") for n in range(4)]
    uuids = [await map_queue(first, arn) for _, arn in queues]
    a, b = first.pollers, second.pollers
    assert a is not None and b is not None
    await until(lambda: len(a.running) == 2 and len(b.running) == 2, timeout=10)
    assert set(a.running) | set(b.running) == set(uuids)
    # The first process dies: its tasks vanish, its leases and heartbeat are left behind.
    assert a._task is not None
    a._task.cancel()
    for running in a.running.values():
        running.task.cancel()
    await until(lambda: len(b.running) == 4, timeout=10)
    for (url, _), n in zip(queues, range(4), strict=True):
        send(sqs, url, f"after-{n}")
    await until(lambda: len(function.bodies()) == 4, timeout=15)
    assert sorted(function.bodies()) == [f"after-{n}" for n in range(4)]
    a.running.clear()


async def test_batches_count_against_reserved_concurrency(
    broker: Broker, sqs: Any, function: Function
) -> None:
    """Reserved concurrency 1 under MaximumConcurrency 2: one batch at a time; the other
    loop is throttled and retries while its messages stay hidden."""
    await broker.put_function_concurrency("orders", 1)
    url, arn = make_queue(sqs, "reserved", VisibilityTimeout="30")
    send(sqs, url, *[f"m{n}" for n in range(12)])
    function.delay_s = 0.2
    uuid = await map_queue(broker, arn, BatchSize=1, ScalingConfig={"MaximumConcurrency": 2})
    await until(lambda: drained(sqs, url), timeout=40)
    assert sorted(function.bodies()) == sorted(f"m{n}" for n in range(12))
    assert function.peak == 1
    stats = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    assert int(stats[b"throttled"]) > 0
