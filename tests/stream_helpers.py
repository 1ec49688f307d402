"""What the Kinesis and DynamoDB Streams mapping tests share: the function under test (a
small HTTP server following the Lambda Invoke contract), broker settings that keep every
wait short, and reading what on-failure destinations in moto received."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from broker import Broker
from tests.conftest import aws_client
from tests.helpers import until
from tests.servers import Answer, LambdaHttpFunction, ok

Event = dict[str, Any]

STREAM_BROKER_SETTINGS: dict[str, Any] = {
    "run_pollers": True,
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_poll_interval_s": 0.05,
    "stream_retry_backoff_s": 0.01,
    "stream_retry_backoff_max_s": 0.05,
}


class StreamFunction:
    """Records each event; ``answer(event)`` decides the reply; ``sequence(record)`` names a
    record (its sequence number) and ``key(record)`` its partition or item key. Tracks the
    invocations running at once and the keys they hold."""

    def __init__(
        self, sequence: Callable[[dict[str, Any]], str], key: Callable[[dict[str, Any]], str]
    ) -> None:
        self.answer: Callable[[Event], Answer] = lambda _event: ok()
        self.delay_s = 0.0
        self.sequence = sequence
        self.key = key
        self.peak = 0
        self.key_clashes = 0  # invocations that began while another held one of their keys
        self._running: list[set[str]] = []
        self._lock = threading.Lock()
        self.server = LambdaHttpFunction(self._respond).start()

    def _respond(self, event: Event, headers: dict[str, str]) -> Answer:
        keys = {self.key(r) for r in event.get("Records", [])}
        with self._lock:
            if any(keys & held for held in self._running):
                self.key_clashes += 1
            self._running.append(keys)
            self.peak = max(self.peak, len(self._running))
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.answer(event)
        finally:
            with self._lock:
                self._running.remove(keys)

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.server.calls]

    def batches(self) -> list[list[str]]:
        """The sequence numbers of each invocation, in order."""
        return [[self.sequence(r) for r in e["Records"]] for e in self.events]

    def delivered(self) -> list[str]:
        return [sequence for batch in self.batches() for sequence in batch]

    def request_id(self, n: int = -1) -> str:
        return str(self.server.calls[n][2]["x-sluice-request-id"])


def make_queue(url: str, name: str) -> tuple[str, str]:
    sqs = aws_client("sqs", url)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return queue_url, attributes["Attributes"]["QueueArn"]


async def received(url: str, queue_url: str, count: int = 1) -> list[dict[str, Any]]:
    """The bodies of ``count`` messages from a queue (waiting for them), parsed."""
    sqs = aws_client("sqs", url)
    bodies: list[dict[str, Any]] = []

    def arrived() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        for message in answer.get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= count

    await until(arrived, timeout=20, interval_s=0.1)
    return bodies


async def checkpoint(broker: Broker, uuid: str, shard_id: str) -> str | None:
    raw = await broker.redis.hget(broker.keys.mapping_checkpoint(uuid), shard_id)
    return None if raw is None else raw.decode()


async def stats(broker: Broker, uuid: str) -> dict[str, int]:
    raw = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    return {k.decode(): int(v) for k, v in raw.items()}
