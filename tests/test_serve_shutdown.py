"""SIGTERM on a busy ``sluice serve``: one drain budget (``drain_timeout_s``) for the request
in progress and the in-flight event, then at most ``SHUTDOWN_CLEANUP_S`` to stop what did
not finish; the unfinished event is queued again, not lost. This bound is what a container's
stop timeout (compose's ``stop_grace_period``) is set from."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from broker.core import Broker
from broker.defaults import SHUTDOWN_CLEANUP_S
from tests.conftest import settings_for_tests
from tests.helpers import wait_until
from tests.process_helpers import ServeLauncher
from tests.servers import RedisServer

DRAIN_S = 2.0
SLEEPY = "python:tests.handlers.async_handlers:sleepy"


@pytest.fixture
async def producer(redis_server: RedisServer) -> AsyncIterator[Broker]:
    client = aioredis.Redis.from_url(redis_server.url)
    broker = Broker(settings_for_tests(), client, dispatch=False)
    await broker.start()
    yield broker
    await broker.stop()
    await client.aclose()


@pytest.fixture
def serves(redis_server: RedisServer, producer: Broker, tmp_path: Path) -> Iterator[ServeLauncher]:
    launcher = ServeLauncher(
        redis_url=redis_server.url,
        key_prefix=producer.settings.key_prefix,
        log_dir=tmp_path,
        flags=["--worker-processes", "1"],
        env={"SLUICE_DRAIN_TIMEOUT_S": str(DRAIN_S)},
    )
    yield launcher
    launcher.close()


async def test_sigterm_stops_a_busy_serve_within_its_budget_and_queues_the_event_again(
    producer: Broker, serves: ServeLauncher
) -> None:
    await producer.put_function("slow", SLEEPY, timeout_s=120)
    serve = await serves.start()
    request_id = await producer.invoke_async("slow", {"sleep_s": 60})
    keys = producer.keys.for_function("slow")

    async def in_flight() -> bool:
        return int(await producer.redis.zcard(keys.inflight)) == 1

    await wait_until(in_flight, 30, interval_s=0.05)
    url = f"{serve.endpoint_url}/2015-03-31/functions/slow/invocations"
    async with httpx.AsyncClient(timeout=120) as http:
        # A synchronous invoke still running when SIGTERM comes: the API's share of the budget.
        call = asyncio.create_task(http.post(url, content=json.dumps({"sleep_s": 60})))
        await asyncio.sleep(0.5)
        started = asyncio.get_running_loop().time()
        serve.send_signal(signal.SIGTERM)
        assert await serve.wait_exit(DRAIN_S + SHUTDOWN_CLEANUP_S) == 0
        took_s = asyncio.get_running_loop().time() - started
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
    assert took_s <= DRAIN_S + SHUTDOWN_CLEANUP_S
    # The event that could not finish is queued again (given back, or its killed call
    # scheduled for retry as a system error) for the next serve, not lost and not held.
    ready = [r.decode() for r in await producer.redis.lrange(keys.ready, 0, -1)]
    delayed = [r.decode() for r in await producer.redis.zrange(keys.delayed, 0, -1)]
    assert ready + delayed == [request_id]
    assert await producer.redis.hexists(keys.events, request_id)
    assert int(await producer.redis.zcard(keys.inflight)) == 0
    assert await producer.dead_letters.count("slow") == 0
