"""``SyncBroker``: Sluice from code that is not asyncio. It starts, invokes, routes outcomes,
and closes without leaving a thread or a Redis connection, with ``close``, with ``with``, and
at interpreter exit for a program that never closes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from broker import Delivery, Settings, SyncBroker, callable_invoker
from tests.conftest import settings_for_tests
from tests.helpers import Collect
from tests.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent


def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for ``predicate`` in a plain (not asyncio) test."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def hello(event: dict[str, Any], context: Any) -> dict[str, str]:
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"hello": event["name"]}


def facade_options(got: list[Delivery]) -> dict[str, Any]:
    return {
        "extra_invokers": {"emu": callable_invoker(hello)},
        "extra_destinations": {"emu": lambda target, _: Collect(got)},
    }


@pytest.fixture
def plain_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
    yield client
    client.close()


def named_clients(client: redis.Redis, name: str) -> int:
    """Connections to the server that named themselves ``name`` (CLIENT SETNAME)."""
    return sum(1 for c in client.client_list() if c.get("name") == name)


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def test_start_invoke_route_and_close_leave_no_thread_or_connection(
    redis_server: RedisServer, plain_redis: redis.Redis
) -> None:
    before = set(threading.enumerate())
    got: list[Delivery] = []
    url = f"{redis_server.url}?client_name=sync-facade"
    sluice = SyncBroker(settings_for_tests(redis_url=url), **facade_options(got))
    assert [t.name for t in new_threads(before)] == ["sluice-sync-broker"]
    assert named_clients(plain_redis, "sync-facade") > 0

    sluice.put_function("hello", "emu:hello")
    sluice.put_event_invoke_config(
        "hello", {"DestinationConfig": {"OnSuccess": {"Destination": "emu:done"}}}
    )
    result = sluice.invoke("hello", {"name": "now"})
    assert (result.outcome, result.payload) == ("success", '{"hello": "now"}')
    failed = sluice.invoke("hello", {"fail": True})
    assert failed.function_error == "Unhandled" and "asked to fail" in (failed.payload or "")
    request_id = sluice.invoke_async("hello", {"name": "later"})
    eventually(lambda: any(d.request_id == request_id for d in got))
    (delivery,) = got
    assert delivery.target == "emu:done"
    assert delivery.record["requestContext"]["condition"] == "Success"
    assert delivery.record["responsePayload"] == {"hello": "later"}
    assert sluice.call(lambda b: b.queue_depth("hello"))["ready"] == 0

    sluice.close()
    assert sluice.closed and new_threads(before) == []
    assert named_clients(plain_redis, "sync-facade") == 0
    sluice.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sluice.invoke_async("hello", {})


def test_with_block_creates_a_mapping_and_closes_on_exit(
    redis_server: RedisServer, plain_redis: redis.Redis
) -> None:
    before = set(threading.enumerate())
    got: list[Delivery] = []
    settings = settings_for_tests(
        redis_url=redis_server.url, run_pollers=True, poller_refresh_s=0.1, stream_read_block_s=0.1
    )
    with SyncBroker(settings, **facade_options(got)) as sluice:
        sluice.put_function("hello", "emu:hello")
        mapping = sluice.create_event_source_mapping(
            {
                "FunctionName": "hello",
                "EventSourceArn": "redis-stream:sync-orders",
                "StartingPosition": "TRIM_HORIZON",
                "MaximumRetryAttempts": 0,
                "DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}},
            }
        )
        plain_redis.xadd("sync-orders", {"data": '{"fail": true}'})
        eventually(lambda: len(got) == 1)  # the batch failed: hello wants a "name"
        assert got[0].record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert sluice.delete_event_source_mapping(mapping["UUID"])["State"] == "Deleting"
    assert sluice.closed and new_threads(before) == []


def test_a_failed_start_raises_and_leaves_no_thread() -> None:
    before = set(threading.enumerate())
    with pytest.raises(Exception, match="Connect"):
        SyncBroker(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), timeout_s=30)
    assert new_threads(before) == []


FORGETFUL = """
import logging, sys, time
import structlog
from broker import Settings, SyncBroker, callable_invoker

class Loud:
    def __init__(self, got):
        self.got = got
    async def deliver(self, delivery):
        self.got.append(delivery.record)
    async def close(self):
        print("destination closed", flush=True)  # the broker was stopped

if __name__ == "__main__":  # python: targets start worker processes (forkserver)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    got = []
    sluice = SyncBroker(
        Settings(redis_url=sys.argv[1] if len(sys.argv) > 1 else None, worker_processes=1),
        extra_invokers={"emu": callable_invoker(lambda event, context: event)},
        extra_destinations={"loud": lambda target, _: Loud(got)},
    )
    sluice.put_function("echo", "emu:echo")
    sluice.put_function("thumb", "python:broker.demo_functions:thumbnail")
    print("invoked", sluice.invoke("thumb", {"image": "a.png"}).outcome, flush=True)
    sluice.put_event_invoke_config(
        "echo", {"DestinationConfig": {"OnSuccess": {"Destination": "loud:x"}}}
    )
    sluice.invoke_async("echo", {"n": 1})
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    print("outcome", got[0]["requestContext"]["condition"], flush=True)
    # no close(): the atexit hook stops it
"""


@pytest.mark.slow
@pytest.mark.parametrize("where", ["embedded", "redis-server"])
def test_a_program_that_never_closes_exits_cleanly_and_promptly(
    where: str, tmp_path: Path, redis_server: RedisServer, plain_redis: redis.Redis
) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(textwrap.dedent(FORGETFUL))
    args = [] if where == "embedded" else [f"{redis_server.url}?client_name=forgetful"]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    assert done.stdout.splitlines() == [
        "invoked success",
        "outcome Success",
        "destination closed",
    ]
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr
    assert named_clients(plain_redis, "forgetful") == 0
