"""RabbitMQ event source mappings against a real RabbitMQ (spec §8, §9.3, §10.5).

Each test declares its own queues (unique names) through kombu; the function is a small
HTTP server following the Lambda Invoke contract. What RabbitMQ still holds is read with a
passive ``queue.declare`` (ready messages, consumers): once a mapping's consumer is gone,
every message it left unacknowledged is back in the queue, so "0 messages" proves the acks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import uuid4

import pytest
from amqp import Message
from kombu.connection import Connection

from broker import Broker
from broker.errors import ResourceNotFoundError
from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.servers import Answer, LambdaHttpFunction, RabbitServer, function_error, ok

Event = dict[str, Any]
MQ_ARN = "arn:aws:mq:us-east-1:000000000000:broker:jobs:b-0a1b2c3d-4e5f-6789-abcd-ef0123456789"


class Function:
    """The function under test: records each event; ``answer(event)`` decides the reply."""

    def __init__(self) -> None:
        self.answer: Callable[[Event], Answer] = lambda _event: ok()
        self.release = threading.Event()  # answers that wait for the test wait on this
        self.server = LambdaHttpFunction(lambda event, _headers: self.answer(event)).start()

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.server.calls]

    def records(self) -> list[dict[str, Any]]:
        return [
            record
            for event in self.events
            for records in event["rmqMessagesByQueue"].values()
            for record in records
        ]

    def bodies(self) -> list[str]:
        return [base64.b64decode(record["data"]).decode() for record in self.records()]

    def batch_sizes(self) -> list[int]:
        return [sum(map(len, e["rmqMessagesByQueue"].values())) for e in self.events]


class Rabbit:
    """The test's own kombu connection: declare, publish (with confirms), count."""

    def __init__(self, server: RabbitServer) -> None:
        self.server = server
        self.connection: Any = Connection(server.url)
        self.channel: Any = self.connection.channel()
        self.channel.confirm_select()
        self.declared: list[str] = []

    def queue(self, name: str, **arguments: Any) -> str:
        name = f"{name}-{uuid4().hex[:8]}"
        self.channel.queue_declare(
            queue=name, durable=True, auto_delete=False, arguments=arguments or None
        )
        self.declared.append(name)
        return name

    def publish(self, queue: str, *bodies: str | bytes, **properties: Any) -> None:
        properties.setdefault("delivery_mode", 2)
        for body in bodies:
            self.channel.basic_publish(Message(body, **properties), exchange="", routing_key=queue)

    def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers)."""
        _, messages, consumers = self.channel.queue_declare(queue=queue, passive=True)
        return int(messages), int(consumers)

    def get(self, queue: str) -> Any:
        return self.channel.basic_get(queue=queue, no_ack=True)

    def ctl(self, *args: str) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.server.node, *args], check=True, capture_output=True
        )

    def close(self) -> None:
        if self.connection is None:
            return
        for name in self.declared:
            self.channel.queue_delete(queue=name)
        self.connection.release()
        self.connection = None


@pytest.fixture
def function() -> Iterator[Function]:
    fn = Function()
    yield fn
    fn.release.set()
    fn.server.stop()


@pytest.fixture
def rabbit(rabbitmq: RabbitServer) -> Iterator[Rabbit]:
    client = Rabbit(rabbitmq)
    yield client
    client.close()


@pytest.fixture
async def broker(
    make_broker: BrokerFactory, function: Function, rabbitmq: RabbitServer
) -> AsyncIterator[Broker]:
    broker = await make_broker(
        run_pollers=True,
        poller_refresh_s=0.1,
        poller_lease_ttl_s=5,
        amqp_reconnect_max_s=0.5,
        amqp_broker_urls={MQ_ARN: rabbitmq.url},
    )
    await broker.put_function("orders", function.server.url, timeout_s=5)
    yield broker


def dead_lettered_to(queue: str) -> dict[str, Any]:
    """Queue arguments that send rejected messages to ``queue`` (the default exchange)."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}


async def map_queue(broker: Broker, source: str, queue: str, **fields: Any) -> str:
    body = {"EventSourceArn": source, "FunctionName": "orders", "Queues": [queue], **fields}
    return str((await broker.mappings.create(body))["UUID"])


async def stats(broker: Broker, uuid: str) -> dict[str, int]:
    raw = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    return {k.decode(): int(v) for k, v in raw.items()}


async def result(broker: Broker, uuid: str) -> str:
    return str((await broker.mappings.get(uuid)).get("LastProcessingResult"))


async def test_event_is_lambdas_rabbitmq_event(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("shape")
    rabbit.publish(
        queue,
        '{"frame": 121}',
        content_type="application/json",
        content_encoding="utf-8",
        application_headers={"attempt": 1, "tenant": "acme", "urgent": True},
        priority=3,
        correlation_id="c-1",
        reply_to="replies",
        expiration="60000",
        message_id="m-1",
        timestamp=2021,
        type="order.created",
        user_id="guest",
        app_id="shop",
    )
    rabbit.publish(queue, b"\xff\x00raw", delivery_mode=1)
    await map_queue(broker, rabbitmq.url, queue, BatchSize=2)
    await until(lambda: len(function.records()) == 2)
    (event,) = function.events
    assert list(event) == ["eventSource", "eventSourceArn", "rmqMessagesByQueue"]
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == rabbitmq.url.replace("guest:guest@", "guest:****@")
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    full, bare = event["rmqMessagesByQueue"][f"{queue}::/"]
    assert list(full) == ["basicProperties", "redelivered", "data"]
    assert full["basicProperties"] == {
        "contentType": "application/json",
        "contentEncoding": "utf-8",
        "headers": {"attempt": 1, "tenant": {"bytes": list(b"acme")}, "urgent": True},
        "deliveryMode": 2,
        "priority": 3,
        "correlationId": "c-1",
        "replyTo": "replies",
        "expiration": "60000",
        "messageId": "m-1",
        "timestamp": "Jan 1, 1970, 12:33:41 AM",
        "type": "order.created",
        "userId": "guest",
        "appId": "shop",
        "clusterId": None,
        "bodySize": 14,
    }
    assert full["redelivered"] is False
    assert base64.b64decode(full["data"]) == b'{"frame": 121}'
    expected_bare = dict.fromkeys(full["basicProperties"]) | {"deliveryMode": 1, "bodySize": 5}
    assert bare["basicProperties"] == expected_bare
    assert base64.b64decode(bare["data"]) == b"\xff\x00raw"


async def test_amazon_mq_arn_uses_the_configured_url_and_virtual_host(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    vhost = f"jobs-{uuid4().hex[:6]}"
    rabbit.ctl("add_vhost", vhost)
    try:
        rabbit.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        with Connection(rabbitmq.url.rstrip("/") + "/" + vhost) as other:
            channel: Any = other.channel()
            channel.queue_declare(queue="render", durable=True, auto_delete=False)
            channel.basic_publish(Message("frame"), exchange="", routing_key="render")
            access = [{"Type": "VIRTUAL_HOST", "URI": vhost}]
            await map_queue(broker, MQ_ARN, "render", SourceAccessConfigurations=access)
            await until(lambda: function.events)
        (event,) = function.events
        assert event["eventSourceArn"] == MQ_ARN
        assert list(event["rmqMessagesByQueue"]) == [f"render::{vhost}"]
        assert function.bodies() == ["frame"]
    finally:
        rabbit.ctl("delete_vhost", vhost)


async def test_unknown_broker_arn_reports_a_problem(
    broker: Broker, rabbit: Rabbit, function: Function
) -> None:
    unknown = MQ_ARN.replace("broker:jobs", "broker:other")
    uuid = await map_queue(broker, unknown, "render")
    await until(lambda: _startswith(result(broker, uuid), "PROBLEM: No URL for " + unknown))
    assert uuid in broker.pollers.running  # type: ignore[union-attr]  # waiting, not polling
    assert function.events == [] and await stats(broker, uuid) == {}


async def _startswith(text: Any, prefix: str) -> bool:
    return str(await text).startswith(prefix)


async def test_batches_by_size(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("size")
    bodies = [f"m{n}" for n in range(25)]
    rabbit.publish(queue, *bodies)
    uuid = await map_queue(broker, rabbitmq.url, queue, BatchSize=10)
    await until(lambda: len(function.records()) == 25)
    assert function.batch_sizes() == [10, 10, 5]
    assert function.bodies() == bodies  # one consumer: queue order
    await until(lambda: _startswith(result(broker, uuid), "OK"))


async def test_window_starts_with_the_first_message(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("window")
    uuid = await map_queue(
        broker, rabbitmq.url, queue, BatchSize=100, MaximumBatchingWindowInSeconds=2
    )
    await until(lambda: rabbit.counts(queue)[1] == 1)
    rabbit.publish(queue, "first")
    await until(lambda: _polled(broker, uuid, 1))
    rabbit.publish(queue, "second", "third")  # within the window the first one opened
    await until(lambda: function.events)
    assert function.batch_sizes() == [3]
    assert function.bodies() == ["first", "second", "third"]


async def _polled(broker: Broker, uuid: str, n: int) -> bool:
    return await _counter(broker, uuid, "polled", n)


async def _counter(broker: Broker, uuid: str, name: str, n: int) -> bool:
    return (await stats(broker, uuid)).get(name, 0) >= n


async def test_filtered_out_messages_are_acked_and_never_invoked(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("filtered")
    keep = [json.dumps({"kind": "refund", "n": n}) for n in range(3)]
    drop = [json.dumps({"kind": "sale", "n": n}) for n in range(4)]
    rabbit.publish(queue, keep[0], drop[0], drop[1], keep[1], drop[2], drop[3], keep[2])
    pattern = json.dumps({"data": {"kind": ["refund"]}})
    uuid = await map_queue(
        broker, rabbitmq.url, queue, FilterCriteria={"Filters": [{"Pattern": pattern}]}
    )
    await until(lambda: _polled(broker, uuid, 7))
    await until(lambda: len(function.records()) == 3)
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: rabbit.counts(queue)[1] == 0)
    assert rabbit.counts(queue) == (0, 0)  # nothing was left unacked
    assert function.bodies() == keep
    counters = await stats(broker, uuid)
    assert counters["filtered_out"] == 4 and counters["acked"] == 7


async def test_success_acks_every_message(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("success")
    bodies = [f"m{n}" for n in range(30)]
    rabbit.publish(queue, *bodies)
    uuid = await map_queue(
        broker, rabbitmq.url, queue, BatchSize=10, MaximumBatchingWindowInSeconds=0
    )
    await until(lambda: len(function.records()) == 30)
    await until(lambda: _counter(broker, uuid, "acked", 30))
    await until(lambda: _startswith(result(broker, uuid), "OK"))
    await broker.mappings.delete(uuid)
    await until(lambda: rabbit.counts(queue)[1] == 0)
    assert rabbit.counts(queue) == (0, 0)
    assert sorted(function.bodies()) == sorted(bodies)


async def test_failure_dead_letters_and_is_not_invoked_again(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    dlq = rabbit.queue("dlq")
    queue = rabbit.queue("failing", **dead_lettered_to(dlq))
    function.answer = lambda _event: function_error()
    bodies = [f"m{n}" for n in range(5)]
    rabbit.publish(queue, *bodies)
    uuid = await map_queue(broker, rabbitmq.url, queue, BatchSize=10)
    await until(lambda: rabbit.counts(dlq)[0] == 5)
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: rabbit.counts(queue)[1] == 0)  # stopped: its last batch is settled
    assert rabbit.counts(queue) == (0, 0)
    assert await result(broker, uuid) == "PROBLEM: Function call failed"
    assert sorted(function.bodies()) == bodies  # each exactly once
    dead = rabbit.get(dlq)
    assert dead.properties["application_headers"]["x-death"][0]["reason"] == "rejected"
    assert (await stats(broker, uuid))["rejected"] == 5


async def test_timeout_and_missing_function_dead_letter_too(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    dlq = rabbit.queue("dlq")
    queue = rabbit.queue("slow", **dead_lettered_to(dlq))
    await broker.put_function("orders", function.server.url, timeout_s=1)

    def answer(_event: Event) -> Answer:
        function.release.wait(30)  # outlives the 1-second timeout
        return ok()

    function.answer = answer
    uuid = await map_queue(broker, rabbitmq.url, queue, MaximumBatchingWindowInSeconds=0)
    rabbit.publish(queue, "slow")
    await until(lambda: rabbit.counts(dlq)[0] == 1)
    await broker.delete_function("orders")
    rabbit.publish(queue, "orphan")
    await until(lambda: rabbit.counts(dlq)[0] == 2)
    assert function.bodies() == ["slow"]  # the orphan never reached a function
    await until(lambda: _counter(broker, uuid, "rejected", 2))
    await until(lambda: _startswith(result(broker, uuid), "PROBLEM: Function call failed"))


async def test_throttles_are_retried_then_acked(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("throttled")
    function.answer = lambda _event: (
        (429, {}, b'{"message": "Rate exceeded"}') if len(function.events) <= 2 else ok()
    )
    rabbit.publish(queue, "m")
    uuid = await map_queue(broker, rabbitmq.url, queue)
    await until(lambda: _startswith(result(broker, uuid), "OK"))
    assert function.bodies() == ["m", "m", "m"]
    assert [r["redelivered"] for r in function.records()] == [False] * 3  # never returned
    counters = await stats(broker, uuid)
    assert counters["throttled"] == 2 and counters["acked"] == 1


async def test_stop_returns_a_gathering_batch_and_it_comes_back_redelivered(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("abandoned")
    rabbit.publish(queue, "held")
    uuid = await map_queue(
        broker, rabbitmq.url, queue, BatchSize=10, MaximumBatchingWindowInSeconds=300
    )
    await until(lambda: _polled(broker, uuid, 1))  # held in a 300-second window
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: rabbit.counts(queue) == (1, 0), timeout=10)  # back in the queue
    assert function.events == []
    await broker.mappings.update(uuid, {"Enabled": True, "MaximumBatchingWindowInSeconds": 0})
    await until(lambda: function.events)
    (record,) = function.records()
    assert record["redelivered"] is True
    assert base64.b64decode(record["data"]) == b"held"


async def test_disable_enable_delete(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("lifecycle")
    uuid = await map_queue(broker, rabbitmq.url, queue, MaximumBatchingWindowInSeconds=0)
    rabbit.publish(queue, "one")
    await until(lambda: function.bodies() == ["one"])
    await broker.mappings.update(uuid, {"Enabled": False})
    await until(lambda: rabbit.counts(queue)[1] == 0, timeout=10)
    rabbit.publish(queue, "two")
    # RabbitMQ counts a just-confirmed message a moment later: wait for it to show.
    await until(lambda: rabbit.counts(queue) == (1, 0))  # nobody consumes it while disabled
    await broker.mappings.update(uuid, {"Enabled": True})
    await until(lambda: function.bodies() == ["one", "two"], timeout=10)
    await broker.mappings.delete(uuid)
    await until(lambda: rabbit.counts(queue)[1] == 0, timeout=10)
    await until(lambda: _gone(broker, uuid), timeout=10)


async def _gone(broker: Broker, uuid: str) -> bool:
    try:
        await broker.mappings.get(uuid)
    except ResourceNotFoundError:
        return True
    return False


async def test_message_in_flight_when_rabbitmq_stops_is_delivered_after_restart(
    broker: Broker, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    queue = rabbit.queue("restart")

    def answer(event: Event) -> Answer:
        if len(function.events) == 1:
            function.release.wait(30)  # in flight while RabbitMQ stops
        return ok()

    function.answer = answer
    rabbit.publish(queue, "precious")
    rabbit.declared.remove(queue)  # deleted by the connection opened after the restart
    rabbit.close()  # the node stops: the test's own connection would go too
    uuid = await map_queue(broker, rabbitmq.url, queue, MaximumBatchingWindowInSeconds=0)
    await until(lambda: function.events)
    try:
        await asyncio.to_thread(rabbit.ctl, "stop_app")
        function.release.set()
        await until(lambda: _startswith(result(broker, uuid), "PROBLEM: Connection error"))
    finally:
        await asyncio.to_thread(rabbit.ctl, "start_app")
    await until(lambda: len(function.events) == 2, timeout=30)
    await until(lambda: _startswith(result(broker, uuid), "OK"))
    assert function.bodies() == ["precious", "precious"]
    assert function.records()[1]["redelivered"] is True
    after = Rabbit(rabbitmq)
    after.declared.append(queue)
    try:
        await broker.mappings.delete(uuid)
        await until(lambda: after.counts(queue)[1] == 0)
        assert after.counts(queue) == (0, 0)
    finally:
        after.close()


async def test_requeue_setting_lets_a_quorum_delivery_limit_decide(
    make_broker: BrokerFactory, rabbit: Rabbit, rabbitmq: RabbitServer, function: Function
) -> None:
    broker = await make_broker(run_pollers=True, poller_refresh_s=0.1, amqp_requeue_failed=True)
    await broker.put_function("orders", function.server.url, timeout_s=5)
    dlq = rabbit.queue("dlq")
    queue = rabbit.queue(
        "quorum",
        **{
            "x-queue-type": "quorum",
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dlq,
        },
    )
    function.answer = lambda _event: function_error()
    rabbit.publish(queue, "poison")
    await map_queue(broker, rabbitmq.url, queue, MaximumBatchingWindowInSeconds=0)
    await until(lambda: rabbit.counts(dlq)[0] == 1)
    assert function.bodies() == ["poison", "poison"]  # delivered twice: the limit is 1
    assert [r["redelivered"] for r in function.records()] == [False, True]
