"""SQS event source mapping throughput and latency, against moto's standalone server.

Run from the repository root: ``.venv/bin/python bench/sqs_poller.py``. Prints figures and
targets; asserts nothing; exits 0.

Set-up, all in this run: its own redis-server and moto server (``moto_server``, real HTTP on
loopback, in its own process so that it does not share this process's GIL); the function is
a no-op HTTP server following the Lambda Invoke contract (``200``, body ``null``), in a
thread of this process, invoked through Sluice's ``http`` invoker. moto scans the whole
queue on every ReceiveMessage, so with a 2,000-message backlog moto itself is the
bottleneck of both loops: the ratio says whether Sluice keeps up with what the server gives.

1. Throughput: 2,000 messages are sent to a fresh queue, then drained by
   a. a plain boto3 loop: ReceiveMessage (10, long poll 1 s, all attributes, as Lambda's
      poller asks) then DeleteMessageBatch, one loop, until 2,000 are deleted (what a
      hand-written consumer does, with no function);
   b. Sluice's SQS poller (one broker, mapping with BatchSize 10, then 100 with a 1 s
      window), timed from the mapping's creation until the queue is empty.
2. Latency: on an idle, already-polled queue (BatchSize 10, window 0), one message at a
   time: from just before SendMessage is called to the function receiving the invocation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boto3
import redis.asyncio as aioredis

from bench.common import percentile, start_moto
from broker.core import Broker
from broker.logsetup import configure_logging
from broker.settings import Settings
from tests.servers import start_redis

MESSAGES = 2_000
LATENCY_SAMPLES = 60
TARGET_RATIO = 0.8
TARGET_P50_MS = 100.0


class NoopFunction:
    """A no-op function behind the Lambda Invoke HTTP contract; notes when each call came."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.arrivals.append((arrived, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "4")
                self.end_headers()
                self.wfile.write(b"null")

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host!s}:{port}/2015-03-31/functions/function/invocations"

    def records(self) -> int:
        return sum(len(event["Records"]) for _, event in self.arrivals)


def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def fill(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    body = json.dumps({"order": "x" * 200})
    for _ in range(MESSAGES // 10):
        entries = [{"Id": str(i), "MessageBody": body} for i in range(10)]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    return url, arn


def plain_loop(sqs: Any, url: str) -> float:
    """Records/s of a receive-delete loop draining the queue."""
    deleted = 0
    started = time.perf_counter()
    while deleted < MESSAGES:
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            AttributeNames=["All"],  # what a Lambda poller asks for, as Sluice does
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            continue
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        deleted += len(messages)
    return deleted / (time.perf_counter() - started)


def queue_empty(sqs: Any, url: str) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(int(value) == 0 for value in attributes.values())


async def sluice_rate(
    broker: Broker, sqs: Any, function: NoopFunction, arn: str, url: str, **mapping: Any
) -> float:
    started = time.perf_counter()
    seen = function.records()
    body = {"EventSourceArn": arn, "FunctionName": "noop", **mapping}
    uuid = (await broker.mappings.create(body))["UUID"]
    # Watch the function, not the queue: moto scans the whole queue to count it, and
    # asking often would take its time from the poller being measured.
    while function.records() - seen < MESSAGES:
        await asyncio.sleep(0.01)
    while not await asyncio.to_thread(queue_empty, sqs, url):  # the last deletions
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - started
    await broker.mappings.delete(uuid)
    return MESSAGES / elapsed


async def latency(broker: Broker, sqs: Any, function: NoopFunction) -> list[float]:
    url, arn = await asyncio.to_thread(
        lambda: (
            (u := sqs.create_queue(QueueName="idle")["QueueUrl"]),
            sqs.get_queue_attributes(QueueUrl=u, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ],
        )
    )
    await broker.mappings.create({"EventSourceArn": arn, "FunctionName": "noop", "BatchSize": 10})
    await asyncio.sleep(2.0)  # the poller is up and long-polling an idle queue
    samples = []
    for n in range(LATENCY_SAMPLES):
        seen = len(function.arrivals)
        sent = time.time()  # before the call: the figure includes SendMessage itself
        await asyncio.to_thread(sqs.send_message, QueueUrl=url, MessageBody=f"m{n}")
        while len(function.arrivals) == seen:
            await asyncio.sleep(0.001)
        samples.append((function.arrivals[seen][0] - sent) * 1000)
        await asyncio.sleep(0.05)
    return sorted(samples)


async def main() -> None:
    configure_logging("console", "warning")
    moto = await start_moto()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    server = start_redis()
    function = NoopFunction()
    client = aioredis.Redis(port=server.port)
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{server.port}",
        run_pollers=True,
        poller_refresh_s=0.2,
        sqs_wait_time_s=1,
    )
    broker = Broker(settings, client)
    await broker.start()
    await broker.put_function("noop", function.url, timeout_s=3)
    sqs = sqs_client(endpoint)
    try:
        url, _ = await asyncio.to_thread(fill, sqs, "plain")
        plain = await asyncio.to_thread(plain_loop, sqs, url)
        print(f"plain boto3 receive/delete loop: {plain:,.0f} records/s ({MESSAGES} messages)")
        results = []
        for batch_size, window in ((10, None), (100, 1)):
            url, arn = await asyncio.to_thread(fill, sqs, f"sluice-{batch_size}")
            mapping: dict[str, Any] = {"BatchSize": batch_size}
            if window is not None:
                mapping["MaximumBatchingWindowInSeconds"] = window
            rate = await sluice_rate(broker, sqs, function, arn, url, **mapping)
            ratio = rate / plain
            results.append(ratio)
            verdict = "PASS" if ratio >= TARGET_RATIO else "MISS"
            print(
                f"sluice BatchSize {batch_size}"
                + (f", window {window} s" if window else "")
                + f": {rate:,.0f} records/s, ratio {ratio:.2f} ({verdict}, target ≥ {TARGET_RATIO})"
            )
        samples = await latency(broker, sqs, function)
        p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
        verdict = "PASS" if p50 < TARGET_P50_MS else "MISS"
        print(
            f"latency SendMessage → invocation, idle queue, window 0 ({len(samples)} samples): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({verdict}, target p50 < {TARGET_P50_MS:.0f} ms)"
        )
    finally:
        await broker.stop()
        await client.aclose()
        server.stop()
        function.server.shutdown()
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    asyncio.run(main())
