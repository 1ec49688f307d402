"""``sluice dlq replay --rate R``: the pace a replay achieves against the one asked for.

Run from the repository root: ``.venv/bin/python bench/replay.py [--entries N]``.
Prints a table; asserts nothing; exits 0.

1. Real dead-letter entries: one function per rate, ``python:bench.replay:fail`` (raises)
   with ``MaximumRetryAttempts`` 0; N async events each, run by a broker in this process
   (2 ``python:`` worker processes) until its ``function_failed`` entries are all in the
   store (N per paced rate; more for the run without ``--rate``, so that it lasts long
   enough to time). The broker is then stopped, so the replayed events stay queued.
2. Each replay is the installed ``sluice dlq replay --function F --yes --json [--rate R]``
   in a subprocess, the command an operator runs (planning, history record, pacer). The
   replay's own time is its record's ``startedAt`` to ``finishedAt`` (Redis's clock, ms);
   the subprocess's wall time (start-up and planning included) is shown next to it.

The pacer lets the first batch (a tenth of a second's worth) go at once, so N entries at
rate R take (N - batch) / R seconds: the ideal ratio is N / (N - batch), a little over 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # worker processes inherit it: bench.replay:fail

import redis.asyncio as aioredis  # noqa: E402

from bench.common import terminate  # noqa: E402
from broker.core import Broker  # noqa: E402
from broker.logsetup import configure_logging  # noqa: E402
from broker.pacing import Pacer  # noqa: E402
from broker.replay import paced_batch_size  # noqa: E402
from broker.settings import Settings  # noqa: E402
from tests.servers import RedisServer, start_redis  # noqa: E402

PREFIX = "bench"
SLUICE = os.path.join(os.path.dirname(sys.executable), "sluice")
BATCH = 100  # Replayer.run's batch without a pacer


def fail(event: Any = None, context: Any = None) -> None:
    """The handler of every benchmark function: each event fails once, for good."""
    raise RuntimeError("bench: always fails")


def function_name(rate: float) -> str:
    return f"replay-{int(rate)}" if rate else "replay-unlimited"


async def make_entries(server: RedisServer, counts: dict[float, int]) -> float:
    """Real ``function_failed`` entries, ``counts[rate]`` per rate; the seconds it took."""
    client = aioredis.Redis.from_url(server.url)
    settings = Settings(redis_url=server.url, key_prefix=PREFIX, worker_processes=2)
    broker = Broker(settings, client)
    await broker.start()
    try:
        t0 = time.monotonic()
        for rate, n in counts.items():
            name = function_name(rate)
            await broker.put_function(name, "python:bench.replay:fail")
            await broker.put_event_invoke_config(name, {"MaximumRetryAttempts": 0})
            for start in range(0, n, 500):
                size = min(500, n - start)
                await broker.invoke_async_many(name, [{"n": start + i} for i in range(size)])
        deadline = time.monotonic() + 120
        for rate, n in counts.items():
            while await broker.dead_letters.count(function_name(rate)) < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{function_name(rate)}: fewer than {n} entries")
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t0
        first = function_name(next(iter(counts)))
        kinds = {e.get("kind") for e in await broker.dead_letters.list(first)}
        if kinds != {"function_failed"}:
            raise RuntimeError(f"unexpected entry kinds {kinds}")
    finally:
        await asyncio.wait_for(broker.stop(drain_timeout_s=5), 30)
        await client.aclose()
    return elapsed


async def leftovers(server: RedisServer, name: str) -> tuple[int, int]:
    """(entries still in the store, events ready in the queue) of one function."""
    client = aioredis.Redis.from_url(server.url)
    broker = Broker(Settings(redis_url=server.url, key_prefix=PREFIX), client, dispatch=False)
    try:
        depth = await broker.queue_depth(name)
        return await broker.dead_letters.count(name), int(depth["ready"])
    finally:
        await client.aclose()


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def replay(server: RedisServer, rate: float) -> dict[str, Any]:
    """``sluice dlq replay`` in a subprocess; its record plus the wall time."""
    argv = [SLUICE, "dlq", "replay", "--function", function_name(rate), "--yes", "--json"]
    if rate:
        argv += ["--rate", f"{rate:g}"]
    argv += ["--redis-url", server.url, "--key-prefix", PREFIX]
    t0 = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"sluice dlq replay exited {done.returncode}: {done.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(done.stdout)
    record["wall_s"] = wall
    record["elapsed_s"] = seconds(record["finishedAt"]) - seconds(record["startedAt"])
    record["argv"] = " ".join(["sluice", *argv[1:]])
    return record


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2_000, help="entries per paced rate")
    parser.add_argument(
        "--unlimited-entries", type=int, default=10_000, help="entries for the run without --rate"
    )
    parser.add_argument(
        "--rates", default="200,1000,0", help="comma-separated events/s; 0 = no --rate"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, terminate)
    configure_logging("console", "warning")
    rates = [float(r) for r in args.rates.split(",")]
    counts = {rate: args.entries if rate else args.unlimited_entries for rate in rates}
    server = start_redis()
    try:
        print(f"redis-server on port {server.port} (no persistence); {os.cpu_count()} CPUs")
        made = asyncio.run(make_entries(server, counts))
        print(
            f"made {sum(counts.values())} function_failed entries "
            f"({', '.join(f'{function_name(r)} {n}' for r, n in counts.items())}; "
            f"python:bench.replay:fail, MaximumRetryAttempts 0) in {made:.2f} s"
        )
        rows = []
        for rate in rates:
            record = replay(server, rate)
            stored = int(record["stored"])
            entries_left, ready = asyncio.run(leftovers(server, function_name(rate)))
            rows.append((rate, record, stored, entries_left, ready))
            print(f"  {record['argv']}")
        print()
        header = (
            f"{'--rate':>9} {'stored':>7} {'replay s':>9} {'events/s':>9} {'ratio':>6} "
            f"{'ideal':>6} {'wall s':>7} {'left':>5} {'queued':>7}"
        )
        print(header)
        for rate, record, stored, entries_left, ready in rows:
            n = counts[rate]
            elapsed = record["elapsed_s"]
            achieved = stored / elapsed if elapsed > 0 else float("inf")
            if rate:
                batch = paced_batch_size(Pacer(rate), BATCH)
                ratio = f"{achieved / rate:.3f}"
                ideal = f"{n / (n - batch):.3f}" if n > batch else "-"
            else:
                ratio = ideal = "-"
            label = f"{rate:g}" if rate else "none"
            print(
                f"{label:>9} {stored:>7} {elapsed:>9.3f} {achieved:>9.0f} {ratio:>6} "
                f"{ideal:>6} {record['wall_s']:>7.2f} {entries_left:>5} {ready:>7}"
            )
        print(
            "replay s: the record's startedAt -> finishedAt; wall s: the whole subprocess; "
            "left: entries still in the store; queued: new events ready in the queue"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
