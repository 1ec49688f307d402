"""`sluice serve` as real processes on a real redis-server: a kill -9 and a restart lose
nothing, SIGTERM drains so every event runs once, and two processes share one queue without
running an event twice at once or passing a function's reserved concurrency.

A producer ``Broker(dispatch=False)`` in the test registers the function, its OnSuccess
destination (a Redis stream) and the events; the handlers in
``tests/handlers/serve_handlers.py`` report what ran to Redis. Leases are short
(``--visibility-grace-s 1``, ``--delivery-lease-s 1``), so a killed process's work comes back
within seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker.core import Broker
from tests.conftest import settings_for_tests as settings_for_tests
from tests.helpers import stream_length_at_least, wait_until
from tests.process_helpers import ServeLauncher
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

H = "python:tests.handlers.serve_handlers"
FUNCTION = "work"
TEST_CLIENT = "serve-test"  # our connections' name, to tell them from the serves'
CONCURRENCY = 32  # --concurrency of every serve here
CLAIM_BATCH = 256  # the serves' claim batch (the default)
IN_FLIGHT_MAX = CONCURRENCY + CLAIM_BATCH  # most work one serve can have in flight
DRAIN_TIMEOUT_S = 5.0  # SLUICE_DRAIN_TIMEOUT_S of every serve here
EMPTY = {"ready": 0, "delayed": 0, "inflight": 0, "outbox": 0, "dead": 0}


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_server.port, client_name=TEST_CLIENT)
    yield client
    await client.aclose()


@pytest.fixture
async def producer(client: aioredis.Redis) -> AsyncIterator[Broker]:
    # clock=None: RedisClock, the time the serve processes use too.
    broker = Broker(settings_for_tests(), client, dispatch=False)
    await broker.start()
    yield broker
    await broker.stop()


@pytest.fixture
def serves(redis_server: RedisServer, producer: Broker, tmp_path: Path) -> Iterator[ServeLauncher]:
    launcher = ServeLauncher(
        redis_url=redis_server.url,
        key_prefix=producer.settings.key_prefix,
        log_dir=tmp_path,
        flags=[
            "--visibility-grace-s",
            "1",
            "--delivery-lease-s",
            "1",
            "--worker-processes",
            "2",
            "--concurrency",
            str(CONCURRENCY),
        ],
        env={"SLUICE_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S)},
    )
    yield launcher
    launcher.close()


def streams(producer: Broker) -> tuple[str, str]:
    """The (OnSuccess, OnFailure) streams of this test's function."""
    prefix = producer.settings.key_prefix
    return f"{prefix}-ok", f"{prefix}-failed"


async def configure(producer: Broker, target: str, **function: Any) -> None:
    """The function, with no retries (a failure shows up at once on the OnFailure stream
    instead of waiting out a 60 s retry) and both destinations."""
    ok, failed = streams(producer)
    await producer.put_function(FUNCTION, target, **function)
    await producer.put_event_invoke_config(
        FUNCTION,
        {
            "MaximumRetryAttempts": 0,
            "DestinationConfig": {
                "OnSuccess": {"Destination": f"redis-stream:{ok}"},
                "OnFailure": {"Destination": f"redis-stream:{failed}"},
            },
        },
    )


async def enqueue(producer: Broker, n: int, sleep_s: float) -> list[str]:
    event = {"ns": producer.settings.key_prefix, "sleep_s": sleep_s}
    ids = await producer.invoke_async_many(FUNCTION, [event] * n)
    assert len(set(ids)) == n
    return ids


async def success_ids(client: aioredis.Redis, stream: str) -> list[str]:
    """The request id of every success record on ``stream``, duplicates included."""
    ids: list[str] = []
    for _, fields in await client.xrange(stream):
        record = json.loads(fields[b"record"])
        assert record["requestContext"]["condition"] == "Success"
        assert fields[b"requestId"].decode() == record["requestContext"]["requestId"]
        ids.append(record["requestContext"]["requestId"])
    return ids


async def wait_for_every_success(
    client: aioredis.Redis, producer: Broker, ids: list[str], timeout_s: float = 60.0
) -> None:
    """Until each id has a success record; a failure record fails the test at once."""
    ok, failed = streams(producer)
    wanted = set(ids)

    async def all_succeeded() -> bool:
        failures = await client.xrange(failed, count=3)
        assert not failures, f"events failed: {[f[b'record'] for _, f in failures]}"
        if int(await client.xlen(ok)) < len(wanted):
            return False
        return wanted <= set(await success_ids(client, ok))

    await wait_until(all_succeeded, timeout_s, interval_s=0.1)


async def wait_for_empty_queue(producer: Broker) -> None:
    """The last outbox entries are acknowledged just after their records are written."""

    async def empty() -> bool:
        return await producer.queue_depth(FUNCTION) == EMPTY

    await wait_until(empty, 10)


async def serve_connections_closed(client: aioredis.Redis, since_id: int) -> bool:
    """No connection opened after client id ``since_id`` is left but ours: Redis has run
    every command a killed serve (or its workers) had sent before it died."""
    return all(
        c["name"] == TEST_CLIENT for c in await client.client_list() if int(c["id"]) > since_id
    )


async def executions(client: aioredis.Redis, producer: Broker) -> list[str]:
    """The request id of every handler execution, in order."""
    ran = await client.lrange(f"{producer.settings.key_prefix}:ran", 0, -1)
    return [request_id.decode() for request_id in ran]


async def test_kill_9_mid_run_loses_no_event_and_a_restart_finishes_the_queue(
    client: aioredis.Redis, producer: Broker, serves: ServeLauncher
) -> None:
    started = time.monotonic()
    ok, _ = streams(producer)
    await configure(producer, f"{H}:record")  # lease: timeout 3 s + 1 s grace
    before_serve = int(await client.client_id())
    first = await serves.start()
    ids = await enqueue(producer, 1000, sleep_s=0.002)
    await wait_until(lambda: stream_length_at_least(client, ok, 100), 30, interval_s=0.01)

    first.kill_group()
    await first.wait_exit(10)
    await wait_until(lambda: serve_connections_closed(client, before_serve), 10)
    at_kill = await producer.queue_depth(FUNCTION)
    records_at_kill = int(await client.xlen(ok))
    # The kill landed mid-run: events were held by the dead process, and more were waiting.
    assert at_kill["inflight"] > 0, at_kill
    assert records_at_kill < 1000

    await serves.start()
    await wait_for_every_success(client, producer, ids)
    await wait_for_empty_queue(producer)

    recorded = Counter(await success_ids(client, ok))
    ran = Counter(await executions(client, producer))
    duplicate_records = sum(recorded.values()) - len(recorded)
    duplicate_runs = sum(ran.values()) - len(ran)
    print(
        f"kill -9 after {records_at_kill} records; state at kill {at_kill}; "
        f"duplicate records {duplicate_records}, duplicate runs {duplicate_runs}, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert set(recorded) == set(ids)  # none lost
    assert set(ran) == set(ids)
    # At least once: only work in flight at the kill may repeat, events the dead process
    # held (claimed, maybe run) and records it had written but not yet acknowledged.
    assert duplicate_records <= IN_FLIGHT_MAX
    assert duplicate_runs <= IN_FLIGHT_MAX
    assert await producer.queue_depth(FUNCTION) == EMPTY
    assert (await producer.stats(FUNCTION)).get("Reclaimed", 0) > 0


async def test_sigterm_drains_in_flight_work_so_every_event_runs_and_is_recorded_once(
    client: aioredis.Redis, producer: Broker, serves: ServeLauncher
) -> None:
    started = time.monotonic()
    ok, _ = streams(producer)
    await configure(producer, f"{H}:record")
    first = await serves.start()
    ids = await enqueue(producer, 1000, sleep_s=0.005)
    await wait_until(lambda: stream_length_at_least(client, ok, 100), 30, interval_s=0.01)

    first.send_signal(signal.SIGTERM)
    assert await first.wait_exit(DRAIN_TIMEOUT_S + 5) == 0
    after_drain = await producer.queue_depth(FUNCTION)
    # It stopped mid-queue, and left nothing held: in-flight events ran and were delivered.
    assert after_drain["ready"] > 0, after_drain
    assert after_drain["inflight"] == 0 and after_drain["outbox"] == 0, after_drain

    await serves.start()
    await wait_for_every_success(client, producer, ids)
    await wait_for_empty_queue(producer)

    recorded = Counter(await success_ids(client, ok))
    ran = Counter(await executions(client, producer))
    print(
        f"SIGTERM with {1000 - after_drain['ready']} events taken; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert set(recorded) == set(ids) and set(recorded.values()) == {1}
    assert set(ran) == set(ids) and set(ran.values()) == {1}
    assert (await producer.stats(FUNCTION)).get("Reclaimed", 0) == 0


async def test_two_serves_share_a_queue_within_reserved_concurrency(
    client: aioredis.Redis, producer: Broker, serves: ServeLauncher
) -> None:
    started = time.monotonic()
    ns = producer.settings.key_prefix
    ok, _ = streams(producer)
    await configure(producer, f"{H}:exclusive", reserved_concurrency=3)
    first, second = await asyncio.gather(serves.start(), serves.start())
    ids = await enqueue(producer, 600, sleep_s=0.015)
    await wait_for_every_success(client, producer, ids)

    most = int(await client.get(f"{ns}:max") or 0)
    runs = {int(pid): int(n) for pid, n in (await client.hgetall(f"{ns}:pids")).items()}
    print(
        f"two serves, reserved 3: most at once {most}; runs per serve {sorted(runs.values())};"
        f" {time.monotonic() - started:.1f} s"
    )
    assert set(await success_ids(client, ok)) == set(ids)
    assert int(await client.get(f"{ns}:violations") or 0) == 0
    assert 2 <= most <= 3
    assert set(runs) == {first.pid, second.pid}
    assert min(runs.values()) >= 600 // 10  # both share the function's concurrency


async def test_two_serves_never_run_one_event_twice_at_once(
    client: aioredis.Redis, producer: Broker, serves: ServeLauncher
) -> None:
    started = time.monotonic()
    ns = producer.settings.key_prefix
    ok, _ = streams(producer)
    await configure(producer, f"{H}:exclusive")
    await asyncio.gather(serves.start(), serves.start())
    ids = await enqueue(producer, 2000, sleep_s=0.001)
    await wait_for_every_success(client, producer, ids)

    recorded = Counter(await success_ids(client, ok))
    print(
        f"two serves, unreserved: most at once {int(await client.get(f'{ns}:max') or 0)}; "
        f"{time.monotonic() - started:.1f} s"
    )
    assert int(await client.get(f"{ns}:violations") or 0) == 0
    assert recorded == Counter(ids)  # exactly one success record each
