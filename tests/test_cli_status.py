"""``sluice status`` against a real redis-server: real async traffic (retries, dead letters,
parked events) and a running redis-stream poller, read back through typer's runner (in a
thread: the command runs its own event loop), the ``--watch`` loop with an injected sleep, and
the installed ``sluice``. The command reads the test's ManualClock, so ages are exact."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from broker import Broker, ManualClock, cli_status
from broker.cli import app
from broker.cli_status import Options, Selection, duration, per_minute, run_status
from broker.clock import Clock
from tests.conftest import BrokerFactory
from tests.helpers import add_aged, run_installed_sluice, stream_checkpoint_is, until
from tests.servers import RedisServer

H = "python:tests.handlers.async_handlers"
SHARD = "shardId-000000000000"
STREAM_SETTINGS: dict[str, Any] = {
    "run_pollers": True,
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_retry_backoff_s": 0.01,
    "stream_retry_backoff_max_s": 0.05,
}


@pytest.fixture(autouse=True)
def command_reads_manual_clock(monkeypatch: pytest.MonkeyPatch, clock: ManualClock) -> ManualClock:
    """The command reads the tests' ManualClock instead of Redis ``TIME``."""

    async def manual(_client: aioredis.Redis) -> Clock:
        return clock

    monkeypatch.setattr(cli_status, "server_clock", manual)
    return clock


async def sluice(broker: Broker, redis_server: RedisServer, *args: str) -> Result:
    """``sluice status ARGS`` on the broker's Redis and key prefix, in a thread."""
    where = ["--redis-url", redis_server.url, "--key-prefix", broker.settings.key_prefix]
    return await asyncio.to_thread(CliRunner().invoke, app, ["status", *args, *where])


async def status_json(broker: Broker, redis_server: RedisServer, *args: str) -> dict[str, Any]:
    result = await sluice(broker, redis_server, "--json", *args)
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def row(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    (line,) = [line for line in output.splitlines() if line.startswith(f"│ {first} ")]
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


@dataclass(frozen=True)
class Traffic:
    broker: Broker  # dispatch off: what the tests read through
    settled_at: float  # when the failed attempt of "retrying" was settled (its retry: +60 s)


@pytest.fixture
async def traffic(make_broker: BrokerFactory, clock: ManualClock) -> Traffic:
    """orders: 3 events failed without retries (3 dead letters); audit: 2 succeeded;
    retrying: 1 failed once, its retry due in 60 s; then, with nothing dispatching, parked:
    2 ready events queued 7 s and 5 s ago."""
    worker = await make_broker()
    await worker.put_function("orders", f"{H}:fail")
    await worker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    await worker.put_function("audit", f"{H}:ok")
    await worker.put_function("retrying", f"{H}:fail")
    await worker.put_function("parked", f"{H}:ok")
    for n in range(3):
        await worker.invoke_async("orders", {"n": n})
    for n in range(2):
        await worker.invoke_async("audit", {"n": n})
    await worker.invoke_async("retrying", {"n": 0})

    async def settled() -> bool:
        orders, audit = await worker.queue_depth("orders"), await worker.queue_depth("audit")
        retrying = await worker.queue_depth("retrying")
        return (
            orders["dead"] == 3
            and orders["inflight"] + orders["outbox"] == 0
            and (await worker.stats("audit")).get("Succeeded") == 2
            and audit["inflight"] + audit["outbox"] == 0
            and retrying["delayed"] == 1
        )

    await until(settled)
    await worker.stop()  # nothing claims from here on
    settled_at = clock.now()
    reader = await make_broker(dispatch=False, key_prefix=worker.settings.key_prefix)
    await reader.invoke_async("parked", {"n": 1})
    clock.advance(2)
    await reader.invoke_async("parked", {"n": 2})
    clock.advance(5)
    return Traffic(reader, settled_at)


def iso(epoch_s: float) -> str:
    return cli_status._iso(epoch_s)


# -- one reading --------------------------------------------------------------------------------


async def test_json_has_exact_queue_ages_retry_times_and_counters_per_function(
    traffic: Traffic, redis_server: RedisServer, clock: ManualClock
) -> None:
    document = await status_json(traffic.broker, redis_server)
    assert set(document) == {"at", "rate_window_s", "functions", "mappings"}
    assert document["at"] == iso(clock.now())
    assert document["rate_window_s"] is None
    assert document["mappings"] == []
    functions = {f["function"]: f for f in document["functions"]}
    assert list(functions) == ["audit", "orders", "parked", "retrying"]
    assert functions["orders"] == {
        "function": "orders",
        "ready": 0,
        "inflight": 0,
        "delayed": 0,
        "outbox": 0,
        "oldest_event_age_s": None,
        "next_retry_at": None,
        "next_retry_in_s": None,
        "received": 3,
        "finished": 3,
        "finished_per_min": None,  # one reading: nothing stores per-minute data
        "succeeded": 0,
        "dropped": 3,
        "invocations": 3,
        "errors": 3,
        "throttles": 0,
        "dead_letters": 3,
    }
    audit = functions["audit"]
    assert (audit["finished"], audit["succeeded"], audit["errors"], audit["dead_letters"]) == (
        2,
        2,
        0,
        0,
    )
    retrying = functions["retrying"]
    assert (retrying["delayed"], retrying["errors"], retrying["finished"]) == (1, 1, 0)
    assert retrying["next_retry_at"] == iso(traffic.settled_at + 60)
    assert retrying["next_retry_in_s"] == 53.0  # due 60 s after the failure, 7 s ago
    parked = functions["parked"]
    assert (parked["ready"], parked["received"], parked["oldest_event_age_s"]) == (2, 2, 7.0)
    assert parked["next_retry_at"] is None


async def test_table_has_a_row_per_function_with_its_queue_and_counters(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    result = await sluice(traffic.broker, redis_server)
    assert result.exit_code == 0, result.output
    # Function, Ready, In flight, Delayed, Outbox, Oldest, Next retry, Done/min, Errors,
    # Throttles, Dead letters
    assert row(result.stdout, "orders") == [
        "orders", "0", "0", "0", "0", "", "", "n/a", "3", "0", "3",
    ]  # fmt: skip
    assert row(result.stdout, "retrying") == [
        "retrying", "0", "0", "1", "0", "", "in 53.0s", "n/a", "1", "0", "0",
    ]  # fmt: skip
    assert row(result.stdout, "parked") == [
        "parked", "2", "0", "0", "0", "7.0s", "", "n/a", "0", "0", "0",
    ]  # fmt: skip
    assert "No event source mappings." in result.stdout


async def test_function_filter_keeps_only_the_named_functions(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    document = await status_json(
        traffic.broker, redis_server, "--function", "parked", "--function", "orders"
    )
    assert [f["function"] for f in document["functions"]] == ["orders", "parked"]
    arn = "arn:aws:lambda:us-east-1:000000000000:function:retrying"
    document = await status_json(traffic.broker, redis_server, "--function", arn)
    assert [f["function"] for f in document["functions"]] == ["retrying"]


async def test_bad_function_name_is_a_usage_error(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    result = await sluice(traffic.broker, redis_server, "--function", "no spaces allowed")
    assert result.exit_code == 2
    assert "--function" in result.output


# -- mappings -----------------------------------------------------------------------------------


@pytest.fixture
async def streams(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, clock: ManualClock
) -> tuple[Broker, dict[str, Any], dict[str, Any]]:
    """Two redis-stream mappings, read to the end: clicks (5 records 3 s old, 3 filtered
    out) and poison (2 records 1 s old; the function fails, no retries)."""
    broker = await make_broker(**STREAM_SETTINGS)
    await broker.put_function("clicks", f"{H}:ok")
    await broker.put_function("poison", f"{H}:fail")
    kinds = ["sale", "refund", "sale", "refund", "sale"]
    good = await add_aged(redis_client, clock, "clicks", *({"kind": k} for k in kinds), age_s=3)
    bad = await add_aged(redis_client, clock, "poison", {"n": 1}, {"n": 2}, age_s=1)
    clicks = await broker.mappings.create(
        {
            "EventSourceArn": "redis-stream:clicks",
            "FunctionName": "clicks",
            "StartingPosition": "TRIM_HORIZON",
            "FilterCriteria": {
                "Filters": [{"Pattern": json.dumps({"data": {"kind": ["refund"]}})}]
            },
        }
    )
    poison = await broker.mappings.create(
        {
            "EventSourceArn": "redis-stream:poison",
            "FunctionName": "poison",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 0,
        }
    )
    await until(lambda: stream_checkpoint_is(broker, clicks["UUID"], good[-1]))
    await until(lambda: stream_checkpoint_is(broker, poison["UUID"], bad[-1]))
    return broker, clicks, poison


async def test_json_has_each_mappings_state_counters_and_shard_lag(
    streams: tuple[Broker, dict[str, Any], dict[str, Any]], redis_server: RedisServer
) -> None:
    broker, clicks, poison = streams
    document = await status_json(broker, redis_server)
    mappings = {m["uuid"]: m for m in document["mappings"]}
    # In creation order; both were created at the same ManualClock time, so by UUID.
    assert list(mappings) == sorted([clicks["UUID"], poison["UUID"]])
    first = mappings[clicks["UUID"]]
    assert {k: v for k, v in first.items() if k != "counters"} == {
        "uuid": clicks["UUID"],
        "function": "clicks",
        "source": "redis-stream:clicks",
        "state": "Enabled",
        "last_processing_result": "OK",
        "polled_per_min": None,
        "shard_lag_ms": 3000,
        "iterator_age_ms": {SHARD: 3000},
    }
    counters = first["counters"]
    assert (counters["polled"], counters["filtered_out"], counters["invoked_records"]) == (5, 3, 2)
    assert (counters["invoked"], counters.get("failed", 0)) == (1, 0)
    assert not any(name.startswith("iterator_age_ms") for name in counters)
    second = mappings[poison["UUID"]]
    assert second["shard_lag_ms"] == 1000
    assert (second["counters"]["polled"], second["counters"]["failed_records"]) == (2, 2)
    assert second["counters"]["dropped"] == 2


async def test_table_has_a_row_per_mapping_and_the_filter_applies_to_mappings(
    streams: tuple[Broker, dict[str, Any], dict[str, Any]], redis_server: RedisServer
) -> None:
    broker, clicks, poison = streams
    result = await sluice(broker, redis_server, "--function", "clicks")
    assert result.exit_code == 0, result.output
    # UUID, Function, Source, State, Last result, Polled, Invoked, Failed, Polled/min, Lag
    assert row(result.stdout, clicks["UUID"]) == [
        clicks["UUID"], "clicks", "redis-stream:clicks", "Enabled", "OK",
        "5", "2", "0", "n/a", "3.0s",
    ]  # fmt: skip
    assert poison["UUID"] not in result.stdout
    assert row(result.stdout, "clicks")[:2] == ["clicks", "0"]  # the function's own row
    assert "│ poison " not in result.stdout


# -- --watch ------------------------------------------------------------------------------------


async def test_watch_computes_throughput_between_readings_from_the_totals(
    make_broker: BrokerFactory,
    redis_server: RedisServer,
    clock: ManualClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = await make_broker()
    await broker.put_function("audit", f"{H}:ok")
    sent = 0

    async def traffic_then_30s(interval_s: float) -> None:
        """The injected sleep: 3 more events finish, and 30 s pass."""
        nonlocal sent
        assert interval_s == 30
        for _ in range(3):
            await broker.invoke_async("audit", {"n": sent})
            sent += 1
        await until(lambda: finished(broker, sent))
        clock.advance(30)

    settings = broker.settings.model_copy(update={"redis_url": redis_server.url})
    options = Options(Selection(), json_output=True, watch=True, interval_s=30, iterations=3)
    await run_status(settings, options, sleep=traffic_then_30s)
    lines = capsys.readouterr().out.splitlines()
    # One object per line and reading (the test's broker logs to stdout too).
    documents = [json.loads(line) for line in lines if line.startswith("{")]
    assert [d["rate_window_s"] for d in documents] == [None, 30.0, 30.0]
    audit = [d["functions"][0] for d in documents]
    assert [a["finished"] for a in audit] == [0, 3, 6]
    assert [a["finished_per_min"] for a in audit] == [None, 6.0, 6.0]


async def finished(broker: Broker, count: int) -> bool:
    return (await broker.stats("audit")).get("Succeeded") == count and (
        await broker.queue_depth("audit")
    )["inflight"] == 0


async def test_watch_redraws_the_tables_a_bounded_number_of_times(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    result = await sluice(
        traffic.broker, redis_server, "--watch", "--interval", "0", "--iterations", "2"
    )
    assert result.exit_code == 0, result.output
    assert "(every 0s; Ctrl-C stops)" in result.stdout
    assert row(result.stdout, "parked")[:6] == ["parked", "2", "0", "0", "0", "7.0s"]
    # No time passes on the ManualClock between the two readings: no rate to give.
    assert row(result.stdout, "parked")[7] == "n/a"


async def test_watch_json_prints_one_object_per_reading(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    result = await sluice(
        traffic.broker, redis_server, "--json", "--watch", "--interval", "0", "--iterations", "3"
    )
    assert result.exit_code == 0, result.output
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(documents) == 3
    assert all(len(d["functions"]) == 4 for d in documents)


# -- errors and the installed command -----------------------------------------------------------


def test_missing_redis_url_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 2
    assert "sluice status needs --redis-url" in result.output


def test_unreachable_redis_exits_1() -> None:
    result = CliRunner().invoke(app, ["status", "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 1
    assert "sluice status: Redis at redis://127.0.0.1:1/0 failed" in result.output


async def test_installed_sluice_prints_status_as_json(
    traffic: Traffic, redis_server: RedisServer
) -> None:
    env = {
        **os.environ,
        "SLUICE_REDIS_URL": redis_server.url,
        "SLUICE_KEY_PREFIX": traffic.broker.settings.key_prefix,
    }
    done = await run_installed_sluice("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    functions = {f["function"]: f for f in document["functions"]}
    assert (functions["orders"]["dead_letters"], functions["orders"]["errors"]) == (3, 3)
    assert (functions["parked"]["ready"], functions["retrying"]["delayed"]) == (2, 1)
    # Redis's own clock this time: the ManualClock's events are long since queued.
    assert functions["parked"]["oldest_event_age_s"] > 0


# -- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "elapsed_s", "expected"),
    [
        (None, 10, 30.0, None),  # a single reading
        (4, 10, None, None),
        (4, 10, 0.0, None),  # no time passed
        (4, 10, 30.0, 12.0),
        (4, 4, 2.0, 0.0),
        (10, 3, 60.0, 3.0),  # counters reset in between: counted from zero
        (0, 1, 7.0, 8.571),
    ],
)
def test_per_minute(
    before: int | None, after: int, elapsed_s: float | None, expected: float | None
) -> None:
    assert per_minute(before, after, elapsed_s) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0.0s"), (7.04, "7.0s"), (59.9, "59.9s"), (125, "2m05s"), (3720, "1h02m"),
     (273_600, "3d04h")],
)  # fmt: skip
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
