"""``sluice dlq replay --background`` and ``--status``: the replay runs in the rq worker of a
real ``sluice serve`` process, survives that process's shutdown (rq queues it again and the
next serve finishes it) and replays every entry exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from broker import Broker
from broker.cli import app
from broker.replay_jobs import RETRIES
from tests.conftest import BrokerFactory
from tests.helpers import stream_records, until
from tests.process_helpers import ServeLauncher
from tests.servers import RedisServer, free_port

H = "python:tests.handlers.async_handlers"
RECEIVED = "background-replayed"  # OnSuccess stream of the function once it works
ENTRIES = 30


async def sluice(broker: Broker, url: str, *args: str) -> Result:
    argv = ["dlq", *args, "--redis-url", url, "--key-prefix", broker.settings.key_prefix]
    return await asyncio.to_thread(
        CliRunner().invoke, app, argv, env={"COLUMNS": "400"}, catch_exceptions=False
    )


async def status(broker: Broker, url: str, replay_id: str) -> dict[str, Any]:
    result = await sluice(broker, url, "replay", "--status", replay_id, "--json")
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


@pytest.fixture
async def failed(make_broker: BrokerFactory) -> Broker:
    """``ENTRIES`` dead-letter entries of ``bulk`` (it failed, no retries); then ``bulk``
    works and reports each success to ``RECEIVED``. The broker that ran it is stopped, so
    only ``sluice serve`` runs what a replay stores."""
    broker = await make_broker()
    await broker.put_function("bulk", f"{H}:fail")
    await broker.put_event_invoke_config("bulk", {"MaximumRetryAttempts": 0})
    for n in range(ENTRIES):
        await broker.invoke_async("bulk", {"n": n})

    async def all_dead() -> bool:
        return await broker.dead_letters.count("bulk") == ENTRIES

    await until(all_dead, timeout=30)
    await broker.stop(drain_timeout_s=2.0)
    await broker.put_function("bulk", f"{H}:ok")
    await broker.put_event_invoke_config(
        "bulk", {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:{RECEIVED}"}}}
    )
    return broker


@pytest.fixture
def serves(redis_server: RedisServer, failed: Broker, tmp_path: Path) -> Iterator[ServeLauncher]:
    launcher = ServeLauncher(
        redis_url=redis_server.url,
        key_prefix=failed.settings.key_prefix,
        log_dir=tmp_path,
        flags=["--worker-processes", "1"],
        env={"SLUICE_DRAIN_TIMEOUT_S": "10"},
    )
    yield launcher
    launcher.close()


async def replayed_ns(broker: Broker) -> Counter[int]:
    """How many times each event ran after its replay (its success record's payload)."""
    records = await stream_records(broker.redis, RECEIVED)
    return Counter(int(r["requestPayload"]["n"]) for r in records)


async def test_a_background_replay_runs_in_serve_and_is_followed_by_status(
    failed: Broker, serves: ServeLauncher, redis_server: RedisServer
) -> None:
    await serves.start()
    result = await sluice(
        failed, redis_server.url, "replay", "--function", "bulk", "--background", "--yes", "--json"
    )
    assert result.exit_code == 0, result.output
    queued = json.loads(result.stdout)
    replay_id = queued["replayId"]
    assert queued["status"] == "queued" and queued["matched"] == ENTRIES
    assert queued["selection"] == {"functions": ["bulk"], "background": True}

    async def finished() -> bool:
        now = await status(failed, redis_server.url, replay_id)
        return now["record"]["status"] == "finished" and now["job"]["status"] == "finished"

    await until(finished, timeout=30)
    final = await status(failed, redis_server.url, replay_id)
    assert final["record"]["stored"] == ENTRIES and final["record"]["gone"] == 0
    assert final["job"]["worker"].startswith("sluice-")
    assert await failed.dead_letters.count("bulk") == 0

    async def all_ran() -> bool:
        return sum((await replayed_ns(failed)).values()) >= ENTRIES

    await until(all_ran, timeout=30)
    assert await replayed_ns(failed) == Counter(range(ENTRIES))

    text = await sluice(failed, redis_server.url, "replay", "--status", replay_id)
    assert text.exit_code == 0
    assert f"replay {replay_id}: finished, {ENTRIES}/{ENTRIES} done" in text.stdout
    assert "rq job: finished on sluice-" in text.stdout
    history = await sluice(failed, redis_server.url, "history", "--json")
    (record,) = json.loads(history.stdout)
    assert record["replayId"] == replay_id and record["status"] == "finished"


async def test_a_replay_cut_short_by_shutdown_is_finished_by_the_next_serve_once(
    failed: Broker, serves: ServeLauncher, redis_server: RedisServer
) -> None:
    first = await serves.start()
    args = ("replay", "--function", "bulk", "--background", "--rate", "5", "--yes", "--json")
    result = await sluice(failed, redis_server.url, *args)
    assert result.exit_code == 0, result.output
    replay_id = json.loads(result.stdout)["replayId"]

    async def some_done() -> bool:
        record = (await status(failed, redis_server.url, replay_id))["record"]
        return int(record["stored"]) >= 3

    await until(some_done, timeout=30)
    first.send_signal(signal.SIGTERM)
    assert await first.wait_exit(20) == 0
    cut = await status(failed, redis_server.url, replay_id)
    assert cut["record"]["status"] == "interrupted"
    assert 3 <= cut["record"]["stored"] < ENTRIES
    assert cut["job"]["status"] == "queued"  # rq's retry: back on the queue at once
    assert cut["job"]["retriesLeft"] == RETRIES - 1
    left = await failed.dead_letters.count("bulk")
    assert left == ENTRIES - cut["record"]["stored"]

    await serves.start()

    async def finished() -> bool:
        now = await status(failed, redis_server.url, replay_id)
        return now["record"]["status"] == "finished" and now["job"]["status"] == "finished"

    await until(finished, timeout=60)
    final = (await status(failed, redis_server.url, replay_id))["record"]
    # The re-run finds what the first run replayed gone, and stores only the rest.
    assert final["matched"] == ENTRIES
    assert final["gone"] == ENTRIES - left and final["stored"] == left
    assert await failed.dead_letters.count("bulk") == 0

    async def all_ran() -> bool:
        return sum((await replayed_ns(failed)).values()) >= ENTRIES

    await until(all_ran, timeout=30)
    await asyncio.sleep(0.5)  # a duplicate would land now
    assert await replayed_ns(failed) == Counter(range(ENTRIES))


async def test_status_of_an_unknown_replay_exits_1(
    failed: Broker, redis_server: RedisServer
) -> None:
    result = await sluice(failed, redis_server.url, "replay", "--status", "nosuchreplay")
    assert result.exit_code == 1
    assert "no replay 'nosuchreplay'" in result.stderr


async def test_status_of_a_foreground_replay_shows_its_record(
    failed: Broker, redis_server: RedisServer
) -> None:
    result = await sluice(
        failed, redis_server.url, "replay", "--function", "bulk", "--limit", "2", "--yes", "--json"
    )
    assert result.exit_code == 0, result.output
    replay_id = json.loads(result.stdout)["replayId"]
    shown = await sluice(failed, redis_server.url, "replay", "--status", replay_id)
    assert shown.exit_code == 0
    assert f"replay {replay_id}: finished, 2/2 done" in shown.stdout
    assert "not a background replay" in shown.stdout


async def test_a_background_replay_waits_in_the_queue_while_no_serve_runs(
    failed: Broker, redis_server: RedisServer
) -> None:
    result = await sluice(
        failed, redis_server.url, "replay", "--function", "bulk", "--background", "--yes"
    )
    assert result.exit_code == 0, result.output
    assert "queued for sluice serve's worker" in result.stdout
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("replay ")]
    replay_id = line.split()[1]
    shown = await sluice(failed, redis_server.url, "replay", "--status", replay_id)
    assert "rq job: queued" in shown.stdout
    assert "is sluice serve running?" in shown.stdout
    assert await failed.dead_letters.count("bulk") == ENTRIES  # nothing done yet


async def test_a_replay_rq_cannot_take_is_recorded_failed_and_changes_nothing(
    failed: Broker, redis_server: RedisServer
) -> None:
    argv = ["dlq", "replay", "--function", "bulk", "--background", "--yes", "--redis-url"]
    argv += [redis_server.url, "--key-prefix", failed.settings.key_prefix]
    env = {"SLUICE_RQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = await asyncio.to_thread(CliRunner().invoke, app, argv, env=env)
    assert result.exit_code == 1
    assert "rq's Redis" in result.stderr
    history = await sluice(failed, redis_server.url, "history", "--json")
    (record,) = json.loads(history.stdout)
    assert record["status"] == "failed" and "Connection" in record["error"]
    assert await failed.dead_letters.count("bulk") == ENTRIES
