"""Sluice's async-invoke pipeline end to end against an rq baseline, on one redis-server.

Run from the repository root: ``.venv/bin/python bench/async_throughput.py [--events N]``.
Prints figures and targets; asserts nothing; exits 0.

1. Throughput: N events to ``python:bench.handlers:noop`` with an OnSuccess destination
   ``redis-stream:bench-ok``, timed from the first store to the N-th success record in the
   stream. The producer is a separate process (like an API front end), started and warmed
   before timing; the dispatcher (with its 2 ``python:`` worker processes) runs in this one.
2. Baseline: rq, 2 ``SimpleWorker`` processes (started and registered before timing), the
   same no-op function, jobs enqueued with ``Queue.enqueue_many`` in pipelined batches,
   timed from the first enqueue to the M-th job in the ``FinishedJobRegistry``.
3. Dispatch latency at half the measured Sluice maximum: a producer process stores events
   one ``invoke_async`` call at a time on a fixed schedule (several asyncio tasks share the
   schedule so that a slow call does not hold the next one back); ``bench.handlers:stamp``
   returns ``time.time()`` at handler start; latency = that minus the moment the producer's
   store call began (an upper bound on "stored to handler start"), matched by request id
   through the success records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # workers (forkserver children) inherit it: bench.handlers

import redis  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bench import handlers  # noqa: E402
from bench.common import cpu_seconds, percentile, terminate  # noqa: E402
from broker.core import Broker  # noqa: E402
from broker.logsetup import configure_logging  # noqa: E402
from broker.settings import Settings  # noqa: E402
from tests.servers import RedisServer, start_redis  # noqa: E402

PREFIX = "bench"
OK_STREAM = "bench-ok"
LATENCY_STREAM = "bench-latency"
RQ_QUEUE = "bench"

TARGET_RATIO = 10.0
TARGET_RATE = 5_000.0
TARGET_P50_MS = 5.0
TARGET_P99_MS = 50.0


# -- CPU accounting (Linux /proc) --------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cpu_snapshot(redis_pid: int, exclude: set[int]) -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = [p for p in descendants(os.getpid()) if p not in exclude]
    return {
        "dispatcher": own.ru_utime + own.ru_stime,
        "workers": sum(cpu_seconds(p) for p in workers),
        "redis": cpu_seconds(redis_pid),
    }


# -- helpers -----------------------------------------------------------------------------------


def make_settings(url: str, args: argparse.Namespace) -> Settings:
    return Settings(
        redis_url=url,
        key_prefix=PREFIX,
        worker_processes=args.workers,
        concurrency=args.concurrency,
        claim_batch=args.claim_batch,
    )


async def wait_xlen(client: aioredis.Redis, stream: str, count: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        length = int(await client.xlen(stream))
        if length >= count or time.monotonic() > deadline:
            return length
        await asyncio.sleep(0.005)


async def recv_async(conn: Connection, timeout_s: float = 300.0) -> Any:
    """``conn.recv()`` without blocking the event loop (no thread: ``add_reader``)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    fd = conn.fileno()

    def readable() -> None:
        loop.remove_reader(fd)
        if future.done():
            return
        try:
            future.set_result(conn.recv())
        except BaseException as exc:  # EOFError when the child died
            future.set_exception(exc)

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(future, timeout_s)
    finally:
        loop.remove_reader(fd)


async def stop_broker(broker: Broker, client: aioredis.Redis, label: str) -> None:
    """``broker.stop()``, bounded: a hang is reported (with the tasks' stacks), not waited on."""
    try:
        await asyncio.wait_for(broker.stop(drain_timeout_s=5), 30)
    except TimeoutError:
        print(f"WARNING: {label} Broker.stop() did not return within 30 s", file=sys.stderr)
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.print_stack(limit=6, file=sys.stderr)
    await client.aclose()


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- producer processes ------------------------------------------------------------------------


async def produce_burst(conn: Connection, url: str, params: dict[str, Any]) -> dict[str, Any]:
    """Store ``events`` events in batches as fast as possible, then watch the stream."""
    client = aioredis.Redis.from_url(url)
    broker = Broker(Settings(redis_url=url, key_prefix=PREFIX), client, dispatch=False)
    await broker.start()
    events, batch = params["events"], params["batch"]
    payloads = [{"n": i} for i in range(events)]
    await broker.functions.get("noop")  # warm the function cache
    conn.send("ready")
    conn.recv()  # go
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    for start in range(0, events, batch):
        await broker.invoke_async_many("noop", payloads[start : start + batch])
    stored = time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    deadline = time.monotonic() + params["timeout_s"]
    while int(await client.xlen(OK_STREAM)) < events and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    done = time.time()
    arrived = int(await client.xlen(OK_STREAM))
    await stop_broker(broker, client, "producer")
    return {
        "t0": t0,
        "stored": stored,
        "done": done,
        "arrived": arrived,
        "store_cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


async def produce_paced(conn: Connection, url: str, params: dict[str, Any]) -> dict[str, Any]:
    """Store events one ``invoke_async`` at a time at ``rate`` per second for ``seconds``."""
    client = aioredis.Redis.from_url(url)
    broker = Broker(Settings(redis_url=url, key_prefix=PREFIX), client, dispatch=False)
    await broker.start()
    rate, tasks = params["rate"], params["tasks"]
    total = max(1, int(rate * params["seconds"]))
    await broker.functions.get("stamp")
    returned: dict[str, float] = {}
    started: dict[str, float] = {}  # when each store call began (a conservative origin)
    lags: list[float] = []
    calls: list[float] = []
    conn.send("ready")
    conn.recv()  # go
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time() + 0.02

    async def run(first: int) -> None:
        for i in range(first, total, tasks):
            due = t0 + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.time()
            lags.append(sent - due)
            request_id = await broker.invoke_async("stamp", {})
            returned[request_id] = now = time.time()
            started[request_id] = sent
            calls.append(now - sent)

    await asyncio.gather(*(run(k) for k in range(tasks)))
    finished = time.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    await stop_broker(broker, client, "producer")
    lags.sort()
    calls.sort()
    return {
        "returned": returned,
        "started": started,
        "t0": t0,
        "finished": finished,
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "call_p50_ms": percentile(calls, 0.5) * 1000,
        "call_p99_ms": percentile(calls, 0.99) * 1000,
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
    }


ROLES: dict[str, Callable[[Connection, str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "burst": produce_burst,
    "paced": produce_paced,
}


def child_main(conn: Connection, role: str, url: str, params: dict[str, Any]) -> None:
    configure_logging("console", "warning")
    conn.send(asyncio.run(ROLES[role](conn, url, params)))
    conn.close()


async def run_producer(
    ctx: SpawnContext,
    role: str,
    url: str,
    params: dict[str, Any],
    on_go: Callable[[int], None],
    timeout_s: float,
) -> dict[str, Any]:
    """Start a producer process, wait until it is ready, let it go, return its result."""
    ours, theirs = ctx.Pipe()
    process = ctx.Process(target=child_main, args=(theirs, role, url, params), daemon=True)
    process.start()
    theirs.close()
    try:
        ready = await recv_async(ours, 60)
        assert ready == "ready", ready
        assert process.pid is not None
        on_go(process.pid)
        ours.send("go")
        result: dict[str, Any] = await recv_async(ours, timeout_s)
    finally:
        await asyncio.to_thread(process.join, 10)
        if process.is_alive():
            process.kill()
        ours.close()
    return result


# -- Sluice ------------------------------------------------------------------------------------


async def sluice(server: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    client = aioredis.Redis.from_url(server.url)
    broker = Broker(make_settings(server.url, args), client)
    out: dict[str, Any] = {}
    await broker.start()
    try:
        await broker.put_function("noop", "python:bench.handlers:noop")
        await broker.put_event_invoke_config(
            "noop",
            {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:{OK_STREAM}"}}},
        )
        # Warm up: spawn the workers, import the handler, fill caches.
        await broker.invoke_async_many("noop", [{} for _ in range(args.warmup)])
        if await wait_xlen(client, OK_STREAM, args.warmup, 60) < args.warmup:
            raise RuntimeError("Sluice warm-up events did not all arrive")
        await client.delete(OK_STREAM)

        # 1. throughput
        producer_pid: list[int] = []
        before: dict[str, float] = {}

        def go(pid: int) -> None:
            producer_pid.append(pid)
            before.update(cpu_snapshot(server.process.pid, {pid}))

        burst = await run_producer(
            ctx,
            "burst",
            server.url,
            {"events": args.events, "batch": args.batch, "timeout_s": args.timeout},
            go,
            args.timeout + 60,
        )
        after = cpu_snapshot(server.process.pid, set(producer_pid))
        elapsed = burst["done"] - burst["t0"]
        out["arrived"] = burst["arrived"]
        out["rate"] = burst["arrived"] / elapsed
        out["elapsed"] = elapsed
        out["store_s"] = burst["stored"] - burst["t0"]
        out["cpu"] = {k: after[k] - before[k] for k in after}
        out["cpu"]["producer (storing)"] = burst["store_cpu"]
        stats = await broker.stats("noop")
        out["failed"] = stats.get("AsyncEventsDropped", 0) + stats.get("DeadLetterErrors", 0)

        # 2. latency at half the maximum
        rate = args.latency_rate or out["rate"] / 2
        await broker.put_function("stamp", "python:bench.handlers:stamp")
        await broker.put_event_invoke_config(
            "stamp",
            {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:{LATENCY_STREAM}"}}},
        )
        await broker.invoke_async_many("stamp", [{} for _ in range(100)])
        await wait_xlen(client, LATENCY_STREAM, 100, 30)
        await client.delete(LATENCY_STREAM)
        paced_pid: list[int] = []
        paced_before: dict[str, float] = {}

        def go_paced(pid: int) -> None:
            paced_pid.append(pid)
            paced_before.update(cpu_snapshot(server.process.pid, {pid}))

        paced = await run_producer(
            ctx,
            "paced",
            server.url,
            {"rate": rate, "seconds": args.latency_seconds, "tasks": args.latency_tasks},
            go_paced,
            args.latency_seconds + args.timeout,
        )
        after = cpu_snapshot(server.process.pid, set(paced_pid))
        paced_cpu = {k: after[k] - paced_before[k] for k in after}
        paced_cpu["producer"] = paced["cpu"]
        returned: dict[str, float] = paced["returned"]
        started: dict[str, float] = paced["started"]
        arrived = await wait_xlen(client, LATENCY_STREAM, len(returned), 60)
        # Headline: from the moment the store call began (an upper bound: it includes the
        # store round trip). "From return" can be slightly negative when the producer's
        # loop resumes after the handler has already started.
        latencies: list[float] = []
        from_return: list[float] = []
        for _, fields in await client.xrange(LATENCY_STREAM):
            record = json.loads(fields[b"record"])
            request_id = record["requestContext"]["requestId"]
            if request_id in returned:
                handler_start = record["responsePayload"]["t"]
                latencies.append((handler_start - started[request_id]) * 1000)
                from_return.append((handler_start - returned[request_id]) * 1000)
        latencies.sort()
        from_return.sort()
        out["latency"] = {
            "rate": rate,
            "achieved": len(returned) / (paced["finished"] - paced["t0"]),
            "sent": len(returned),
            "arrived": arrived,
            "matched": len(latencies),
            "p50": percentile(latencies, 0.5),
            "p90": percentile(latencies, 0.9),
            "p99": percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else float("nan"),
            "negative": sum(v < 0 for v in from_return),
            "return_p50": percentile(from_return, 0.5),
            "return_p99": percentile(from_return, 0.99),
            "lag_p50_ms": paced["lag_p50_ms"],
            "lag_p99_ms": paced["lag_p99_ms"],
            "call_p50_ms": paced["call_p50_ms"],
            "call_p99_ms": paced["call_p99_ms"],
            "cpu": paced_cpu,
            "wall": paced["finished"] - paced["t0"],
        }
    finally:
        await stop_broker(broker, client, "dispatcher")
    return out


# -- rq ----------------------------------------------------------------------------------------


def rq_baseline(server: RedisServer, args: argparse.Namespace, jobs: int) -> dict[str, Any]:
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry

    conn = redis.Redis.from_url(server.url)
    queue = Queue(RQ_QUEUE, connection=conn)
    finished = FinishedJobRegistry(queue=queue)
    failed = FailedJobRegistry(queue=queue)
    rq_bin = os.path.join(os.path.dirname(sys.executable), "rq")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    workers = [
        subprocess.Popen(
            [
                rq_bin,
                "worker",
                "--url",
                server.url,
                "--worker-class",
                "rq.worker.SimpleWorker",
                "--quiet",  # rq at its best: no per-job INFO log lines
                "--name",
                f"bench-rq-{i}",
                RQ_QUEUE,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(args.workers)
    ]

    def done_count() -> int:
        return int(conn.zcard(finished.key)) + int(conn.zcard(failed.key))

    def enqueue(count: int) -> None:
        for start in range(0, count, args.batch):
            size = min(args.batch, count - start)
            queue.enqueue_many(
                [Queue.prepare_data(handlers.noop, args=({}, None)) for _ in range(size)]
            )

    def wait_done(count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while done_count() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"rq finished only {done_count()} of {count} jobs")
            time.sleep(0.002)

    try:
        deadline = time.monotonic() + 30
        while Worker.count(connection=conn, queue=queue) < args.workers:
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError("rq workers did not register")
            time.sleep(0.05)
        enqueue(100)  # warm up: both workers import the function
        wait_done(100, 60)
        base = done_count()
        before = {w.pid: cpu_seconds(w.pid) for w in workers}
        redis_before = cpu_seconds(server.process.pid)
        own_before = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.time()
        enqueue(jobs)
        wait_done(base + jobs, args.timeout)
        elapsed = time.time() - t0
        own_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {
            "workers": sum(cpu_seconds(w.pid) - before[w.pid] for w in workers),
            "redis": cpu_seconds(server.process.pid) - redis_before,
            "enqueuer": (own_after.ru_utime + own_after.ru_stime)
            - (own_before.ru_utime + own_before.ru_stime),
        }
        return {
            "rate": jobs / elapsed,
            "elapsed": elapsed,
            "failed": int(conn.zcard(failed.key)),
            "cpu": cpu,
        }
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(10)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
        conn.close()


# -- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="Sluice events (throughput)")
    parser.add_argument("--rq-jobs", type=int, default=0, help="rq jobs (default: events / 4)")
    parser.add_argument("--batch", type=int, default=500, help="events per store call")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (both)")
    parser.add_argument("--concurrency", type=int, default=512, help="Sluice concurrency")
    parser.add_argument("--claim-batch", type=int, default=256, help="Sluice claim batch")
    parser.add_argument("--warmup", type=int, default=1_000, help="Sluice warm-up events")
    parser.add_argument("--latency-rate", type=float, default=0.0, help="default: max / 2")
    parser.add_argument("--latency-seconds", type=float, default=4.0)
    parser.add_argument("--latency-tasks", type=int, default=8, help="paced producer tasks")
    parser.add_argument("--timeout", type=float, default=120.0, help="per phase, seconds")
    parser.add_argument("--skip-rq", action="store_true", help="Sluice only (for profiling)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, terminate)
    configure_logging("console", "warning")
    rq_jobs = args.rq_jobs or max(100, args.events // 4)
    server = start_redis()
    try:
        print(
            f"redis-server on port {server.port} (no persistence); {os.cpu_count()} CPUs; "
            f"{args.workers} worker processes on both sides"
        )
        print(
            f"sluice setup: dispatcher in this process (concurrency={args.concurrency}, "
            f"claim_batch={args.claim_batch}); producer in a separate process, "
            f"invoke_async_many x {args.batch}; OnSuccess -> redis-stream:{OK_STREAM}"
        )
        s = asyncio.run(sluice(server, args))
        print(
            f"sluice: {args.events} events in {s['elapsed']:.2f} s = {s['rate']:.0f} events/s"
            f"  (stores took {s['store_s']:.2f} s; {s['arrived']} records arrived; failed "
            f"{s['failed']})"
        )
        cpu = ", ".join(f"{k} {v:.2f} s" for k, v in s["cpu"].items())
        print(f"  CPU during the sluice run ({s['elapsed']:.2f} s wall): {cpu}")

        if args.skip_rq:
            r = None
            print("rq: skipped")
        else:
            r = rq_baseline(server, args, rq_jobs)
            print(
                f"rq setup: {args.workers} x `rq worker --worker-class rq.worker.SimpleWorker "
                f"--quiet`, registered before timing; Queue.enqueue_many x {args.batch} "
                "(pipelined) from this process; timed to the last job in FinishedJobRegistry"
            )
            print(
                f"rq: {rq_jobs} jobs in {r['elapsed']:.2f} s = {r['rate']:.0f} jobs/s"
                f"  (failed {r['failed']})"
            )
            cpu = ", ".join(f"{k} {v:.2f} s" for k, v in r["cpu"].items())
            print(f"  CPU during the rq run ({r['elapsed']:.2f} s wall): {cpu}")
        ratio = s["rate"] / r["rate"] if r else float("nan")
        print(f"ratio: {ratio:.2f}")

        lat = s["latency"]
        print(
            f"latency setup: separate producer process, {args.latency_tasks} asyncio tasks "
            f"sharing one fixed schedule, one invoke_async per event, for "
            f"{args.latency_seconds:g} s (achieved {lat['achieved']:.0f} events/s; send lag "
            f"p50 {lat['lag_p50_ms']:.2f} ms p99 {lat['lag_p99_ms']:.2f} ms; "
            f"{lat['matched']}/{lat['sent']} matched)"
        )
        print(
            "latency is measured from the start of each store call to handler start "
            f"(measured from the call's return instead: p50 {lat['return_p50']:.2f} ms, "
            f"p99 {lat['return_p99']:.2f} ms, {lat['negative']} negative)"
        )
        print(
            f"latency p50: {lat['p50']:.2f} ms p99: {lat['p99']:.2f} ms at "
            f"{lat['rate']:.0f} events/s  (p90 {lat['p90']:.2f} ms, max {lat['max']:.2f} ms)"
        )
        cpu = ", ".join(f"{k} {v:.2f} s" for k, v in lat["cpu"].items())
        print(
            f"  invoke_async call p50 {lat['call_p50_ms']:.2f} ms p99 {lat['call_p99_ms']:.2f} ms;"
            f" CPU while pacing ({lat['wall']:.2f} s wall): {cpu}"
        )

        rows = [
            (">= 10x rq", f"{ratio:.2f}x", ratio >= TARGET_RATIO),
            (">= 5,000 events/s", f"{s['rate']:.0f} events/s", s["rate"] >= TARGET_RATE),
            ("p50 < 5 ms", f"{lat['p50']:.2f} ms", lat["p50"] < TARGET_P50_MS),
            ("p99 < 50 ms", f"{lat['p99']:.2f} ms", lat["p99"] < TARGET_P99_MS),
        ]
        print("targets:")
        for name, figure, ok in rows:
            print(f"  {name:<20} {figure:>18}  {verdict(ok)}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
