"""``amqp://…`` publishes records to a real RabbitMQ, with publisher confirms."""

from __future__ import annotations

import json

from kombu import Connection

from tests.conftest import BrokerFactory
from tests.helpers import wait_until
from tests.servers import RabbitServer

H = "python:tests.handlers.async_handlers"


async def test_records_and_dead_letters_reach_rabbitmq(
    make_broker: BrokerFactory, rabbitmq: RabbitServer
) -> None:
    with Connection(rabbitmq.url) as connection:
        results = connection.SimpleQueue("results")
        dead = connection.SimpleQueue("dead")
        base = rabbitmq.url.rstrip("/") + "/%2f"
        broker = await make_broker()
        await broker.put_function(
            "orders", f"{H}:fail", dead_letter_target=f"{base}?exchange=&routing_key=dead"
        )
        await broker.put_event_invoke_config(
            "orders",
            {
                "MaximumRetryAttempts": 0,
                "DestinationConfig": {
                    "OnFailure": {"Destination": f"{base}?exchange=&routing_key=results"}
                },
            },
        )
        request_id = await broker.invoke_async("orders", {"orderId": "A-9"})

        async def both_delivered() -> bool:
            return (
                (await broker.queue_depth("orders"))["outbox"] == 0
                and bool(await broker.stats("orders")).__bool__()
                and results.qsize() == 1
                and dead.qsize() == 1
            )

        await wait_until(both_delivered, 20, interval_s=0.1)
        record_message = results.get(timeout=5)
        record = json.loads(record_message.body)
        assert record["requestContext"]["requestId"] == request_id
        assert record_message.headers["X-Sluice-Request-Id"] == request_id
        record_message.ack()
        dead_message = dead.get(timeout=5)
        assert json.loads(dead_message.body) == {"orderId": "A-9"}
        assert dead_message.headers["RequestID"] == request_id
        assert dead_message.headers["ErrorCode"] == 200
        dead_message.ack()
        results.close()
        dead.close()
        assert await broker.dead_letters.count("orders") == 1  # only function_failed
