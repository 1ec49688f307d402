"""Kinesis event source mapping throughput, against moto's standalone server.

Run from the repository root: ``.venv/bin/python bench/kinesis_poller.py`` (``--records``,
``--batch-sizes``, ``--profile``). Prints figures; asserts nothing; exits 0.

Set-up, all in this run, as in ``bench/sqs_poller.py``: its own redis-server and moto server
(``moto_server``, real HTTP on loopback, in its own process); the function is the same no-op
HTTP server following the Lambda Invoke contract, invoked through Sluice's ``http`` invoker.
One stream of 4 shards gets N records (PutRecords, 500 a call, ExplicitHashKey spreading
them evenly, distinct partition keys, ~100 bytes each); every reader below starts at
TRIM_HORIZON of that same stream. Polling is short: ``stream_poll_interval_s`` 0.05,
``stream_read_block_s`` 0.1, ``poller_refresh_s`` 0.1. moto serves every request from one
Python process, and on a 2-core machine it, this process and redis-server share the cores.

1. Baselines, one thread per shard (4 at once), each with its own boto3 client:
   a. GetShardIterator TRIM_HORIZON, then GetRecords (Limit 10,000) until the shard's
      records are read, a no-op Python call on each batch;
   b. the same with Limit = BatchSize, each batch shaped as Lambda's Kinesis event and
      POSTed to the no-op function (what a hand-written consumer of that BatchSize does).
2. Sluice: a mapping (TRIM_HORIZON, ParallelizationFactor 1, each BatchSize given) to the
   no-op function, timed from its creation until the checkpoint hash
   (``broker.keys.mapping_checkpoint(uuid)``) holds each shard's last sequence number.
   Per-batch invoke latency is ``Broker.invoke`` as the lane awaits it (HTTP round trip
   included), wrapped in this script.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boto3
import redis.asyncio as aioredis

from bench.common import percentile, start_moto
from bench.sqs_poller import NoopFunction
from broker.core import Broker
from broker.logsetup import configure_logging
from broker.settings import Settings
from pollers.kinesis import default_role_arn, kinesis_record
from tests.servers import start_redis

SHARDS = 4
PUT_CHUNK = 500  # PutRecords' ceiling
POLL_SETTINGS: dict[str, Any] = {
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_poll_interval_s": 0.05,
}


def kinesis_client(endpoint: str) -> Any:
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")


class Stream:
    """A 4-shard stream in moto, filled with ``records`` records spread evenly."""

    def __init__(self, kinesis: Any, name: str, records: int) -> None:
        kinesis.create_stream(StreamName=name, ShardCount=SHARDS)
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        self.name = name
        self.arn: str = summary["StreamARN"]
        shards = kinesis.list_shards(StreamName=name)["Shards"]
        self.shard_ids = [shard["ShardId"] for shard in shards]
        hash_keys = [shard["HashKeyRange"]["StartingHashKey"] for shard in shards]
        self.last: dict[str, str] = {}  # shard id -> its last sequence number
        self.counts = dict.fromkeys(self.shard_ids, 0)
        body = json.dumps({"order": "x" * 80})
        for start in range(0, records, PUT_CHUNK):
            entries = [
                {
                    "Data": body.encode(),
                    "PartitionKey": f"key-{n}",
                    "ExplicitHashKey": hash_keys[n % SHARDS],
                }
                for n in range(start, min(records, start + PUT_CHUNK))
            ]
            answer = kinesis.put_records(StreamName=name, Records=entries)
            assert answer["FailedRecordCount"] == 0
            for result in answer["Records"]:
                self.last[result["ShardId"]] = result["SequenceNumber"]
                self.counts[result["ShardId"]] += 1
        self.total = sum(self.counts.values())


def noop(batch: list[dict[str, Any]]) -> None:
    return None


def lambda_event(stream_arn: str, shard_id: str, raw: list[dict[str, Any]]) -> bytes:
    role = default_role_arn("arn:aws:lambda:us-east-1:000000000000:function:noop")
    records = [
        kinesis_record(
            shard_id=shard_id,
            sequence=item["SequenceNumber"],
            partition_key=item["PartitionKey"],
            data=item["Data"],
            arrival=round(item["ApproximateArrivalTimestamp"].timestamp(), 3),
            stream_arn=stream_arn,
            invoke_identity_arn=role,
        )
        for item in raw
    ]
    return json.dumps({"Records": records}).encode()


def plain_loop(endpoint: str, stream: Stream, limit: int, function_url: str | None) -> float:
    """Records/s of one reader thread per shard: GetRecords(Limit=limit) from TRIM_HORIZON
    until the shard's records are read; each batch goes to ``noop`` or, with
    ``function_url``, is POSTed to the function as Lambda's event."""

    def read(shard_id: str, kinesis: Any, handle: Callable[[list[dict[str, Any]]], None]) -> None:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream.name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        seen = 0
        while seen < stream.counts[shard_id]:
            answer = kinesis.get_records(ShardIterator=iterator, Limit=limit)
            iterator = answer["NextShardIterator"]
            if answer["Records"]:
                handle(answer["Records"])
                seen += len(answer["Records"])

    def poster(shard_id: str) -> Callable[[list[dict[str, Any]]], None]:
        if function_url is None:
            return noop
        url = urlsplit(function_url)
        connection = http.client.HTTPConnection(url.hostname or "", url.port)

        def post(batch: list[dict[str, Any]]) -> None:
            connection.request("POST", url.path, body=lambda_event(stream.arn, shard_id, batch))
            response = connection.getresponse()
            response.read()

        return post

    clients = [kinesis_client(endpoint) for _ in stream.shard_ids]
    threads = [
        threading.Thread(target=read, args=(shard_id, client, poster(shard_id)))
        for shard_id, client in zip(stream.shard_ids, clients, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return stream.total / (time.perf_counter() - started)


class InvokeTimer:
    """Wraps ``broker.invoke`` (what the lanes await) to note each call's duration."""

    def __init__(self, broker: Broker) -> None:
        self.samples_ms: list[float] = []
        original = broker.invoke

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                self.samples_ms.append((time.perf_counter() - started) * 1000)

        broker.invoke = timed  # type: ignore[method-assign]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def checkpointed(broker: Broker, uuid: str, last: dict[str, str]) -> bool:
    raw = await broker.redis.hgetall(broker.keys.mapping_checkpoint(uuid))
    saved = {_text(k): _text(v) for k, v in raw.items()}
    return all(saved.get(shard_id) == sequence for shard_id, sequence in last.items())


async def sluice_run(
    broker: Broker, function: NoopFunction, timer: InvokeTimer, stream: Stream, batch_size: int
) -> dict[str, float]:
    seen_records, seen_calls = function.records(), len(function.arrivals)
    timer.samples_ms.clear()
    body = {
        "EventSourceArn": stream.arn,
        "FunctionName": "noop",
        "StartingPosition": "TRIM_HORIZON",
        "BatchSize": batch_size,
        "ParallelizationFactor": 1,
    }
    started = time.perf_counter()
    wall_started = time.time()
    uuid = (await broker.mappings.create(body))["UUID"]
    while not await checkpointed(broker, uuid, stream.last):
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    wall_done = time.time()
    await broker.mappings.delete(uuid)
    calls = function.arrivals[seen_calls:]
    first_s = calls[0][0] - wall_started if calls else float("nan")
    samples = sorted(timer.samples_ms)
    return {
        "rate": stream.total / elapsed,
        "elapsed_s": elapsed,
        "first_invoke_s": first_s,
        "steady_rate": stream.total / max(1e-9, wall_done - calls[0][0]) if calls else 0.0,
        "invocations": len(calls),
        "delivered": function.records() - seen_records,
        "p50_ms": percentile(samples, 0.50),
        "p99_ms": percentile(samples, 0.99),
    }


async def main(records: int, batch_sizes: list[int], profile: bool) -> None:
    configure_logging("console", "warning")
    moto = await start_moto()
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    server = start_redis()
    function = NoopFunction()
    client = aioredis.Redis(port=server.port)
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{server.port}", run_pollers=True, **POLL_SETTINGS
    )
    broker = Broker(settings, client)
    await broker.start()
    await broker.put_function("noop", function.url, timeout_s=3)
    timer = InvokeTimer(broker)
    profiler = cProfile.Profile() if profile else None
    try:
        kinesis = kinesis_client(endpoint)
        filled = time.perf_counter()
        stream = await asyncio.to_thread(Stream, kinesis, "clicks", records)
        print(
            f"{stream.total:,} records in {SHARDS} shards "
            f"({', '.join(str(n) for n in stream.counts.values())}), "
            f"put in {time.perf_counter() - filled:.1f} s; polling: "
            + ", ".join(f"{k} {v}" for k, v in POLL_SETTINGS.items())
        )
        plain = await asyncio.to_thread(plain_loop, endpoint, stream, 10_000, None)
        print(f"baseline a, boto3 thread/shard, GetRecords Limit 10000, no-op: {plain:,.0f} rec/s")
        for batch_size in batch_sizes:
            posting = await asyncio.to_thread(
                plain_loop, endpoint, stream, batch_size, function.url
            )
            print(
                f"baseline b, boto3 thread/shard, GetRecords Limit {batch_size}, "
                f"POST to function: {posting:,.0f} rec/s"
            )
            if profiler:
                profiler.enable()
            result = await sluice_run(broker, function, timer, stream, batch_size)
            if profiler:
                profiler.disable()
            print(
                f"sluice BatchSize {batch_size}: {result['rate']:,.0f} rec/s "
                f"({result['elapsed_s']:.2f} s, first invoke after "
                f"{result['first_invoke_s']:.2f} s, {result['steady_rate']:,.0f} rec/s from it; "
                f"{result['invocations']:.0f} invocations, {result['delivered']:.0f} records), "
                f"ratio {result['rate'] / plain:.2f} of a, {result['rate'] / posting:.2f} of b; "
                f"invoke p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms"
            )
    finally:
        await broker.stop()
        await client.aclose()
        server.stop()
        function.server.shutdown()
        moto.terminate()
        moto.wait()
    if profiler:
        path = os.path.join(tempfile.gettempdir(), "kinesis_poller.prof")
        profiler.dump_stats(path)
        print(f"\ncProfile of the event loop thread during the Sluice runs ({path}), top 25:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000, help="records put (default 20000)")
    parser.add_argument(
        "--batch-sizes", default="100,1000", help="BatchSize of each Sluice run (default 100,1000)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the event loop during the Sluice runs"
    )
    options = parser.parse_args()
    sizes = [int(size) for size in options.batch_sizes.split(",")]
    asyncio.run(main(options.records, sizes, options.profile))
