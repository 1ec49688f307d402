"""``sluice dlq list|show|export|purge`` against a real redis-server, on dead-letter entries
made by real failures: async events out of retries and out of age, a failed destination
delivery and a discarded redis-stream batch."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from broker import Broker, ManualClock
from broker.cli import app
from broker.dead_letter_query import DeadLetterQuery, EntryFilter, error_type, parse_time
from broker.keys import Keys
from tests.conftest import BrokerFactory
from tests.helpers import run_installed_sluice, until
from tests.servers import RedisServer, free_port

H = "python:tests.handlers.async_handlers"
STREAM = "dlq-clicks"
HOUR = 3600.0
T0 = 1_741_083_072.0  # ManualClock's start: 2025-03-04T10:11:12Z
ARN = "arn:aws:lambda:us-east-1:000000000000:function"


@dataclass
class Store:
    """The dead-letter entries the fixture made, one hour apart per function."""

    broker: Broker
    url: str
    prefix: str
    orders: list[str]  # two function_failed, RetriesExhausted, RuntimeError, at T0, T0 + 1 s
    billing: str  # function_failed, EventAgeExceeded, ValueError, at T0 + 2 s + 1 h
    notify: str  # delivery_failed (an OnSuccess webhook that is down), 1 h later
    clicks: str  # stream_batch_failed, RetryAttemptsExhausted, RuntimeError, 1 h later
    mapping: str

    @property
    def ids(self) -> list[str]:
        return [*self.orders, self.billing, self.notify, self.clicks]

    async def count(self, function: str) -> int:
        return await self.broker.dead_letters.count(function)

    async def counts(self) -> dict[str, int]:
        return {f: await self.count(f) for f in ("orders", "billing", "notify", "clicks")}


async def _dead_count_is(broker: Broker, function: str, n: int) -> bool:
    return await broker.dead_letters.count(function) == n


@pytest.fixture
async def store(
    make_broker: BrokerFactory, redis_server: RedisServer, clock: ManualClock
) -> AsyncIterator[Store]:
    broker = await make_broker(
        run_pollers=True,
        poller_refresh_s=0.1,
        stream_read_block_s=0.1,
        stream_retry_backoff_s=0.01,
        retry_base_delay=120,  # past billing's 60 s maximum age: EventAgeExceeded
        delivery_retries=1,
    )
    await broker.put_function("orders", f"{H}:fail")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    orders = []
    for n in (1, 2):  # a second apart, so that their order is known
        orders.append(await broker.invoke_async("orders", {"n": n}))
        await until(lambda n=n: _dead_count_is(broker, "orders", n))
        clock.advance(1)

    clock.advance(HOUR)
    await broker.put_function("billing", f"{H}:fail_long")
    await broker.put_event_invoke_config(
        "billing", {"MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": 60}
    )
    billing = await broker.invoke_async("billing", {"n": 3})
    await until(lambda: _dead_count_is(broker, "billing", 1))

    clock.advance(HOUR)
    webhook = f"http://127.0.0.1:{free_port()}/down"
    await broker.put_function("notify", f"{H}:ok")
    await broker.put_event_invoke_config(
        "notify", {"DestinationConfig": {"OnSuccess": {"Destination": webhook}}}
    )
    notify = await broker.invoke_async("notify", {"n": 4})
    await until(lambda: _dead_count_is(broker, "notify", 1))

    clock.advance(HOUR)
    await broker.put_function("clicks", f"{H}:fail")
    await broker.redis.xadd(STREAM, {"data": "{}"}, id=f"{int(clock.now() * 1000)}-0")
    mapping = await broker.mappings.create(
        {
            "EventSourceArn": f"redis-stream:{STREAM}",
            "FunctionName": "clicks",
            "StartingPosition": "TRIM_HORIZON",
            "MaximumRetryAttempts": 0,
        }
    )
    await until(lambda: _dead_count_is(broker, "clicks", 1))
    # Nothing runs while the CLI does: no log line lands in the output it captures.
    await broker.stop(drain_timeout_s=2.0)
    (clicks,) = await broker.dead_letters.list("clicks")
    (notify_entry,) = await broker.dead_letters.list("notify")
    assert notify_entry["requestId"] == notify
    yield Store(
        broker=broker,
        url=redis_server.url,
        prefix=broker.settings.key_prefix,
        orders=orders,
        billing=billing,
        notify=notify_entry["id"],
        clicks=clicks["id"],
        mapping=str(mapping["UUID"]),
    )


async def dlq(store: Store, *args: str, stdin: str | None = None) -> Result:
    """``sluice dlq ARGS`` through typer's runner, in a thread (the command runs its own
    event loop); a wide terminal so that table rows stay on one line."""
    argv = ["dlq", *args, "--redis-url", store.url, "--key-prefix", store.prefix]
    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, argv, input=stdin, env={"COLUMNS": "400"}, catch_exceptions=False
    )


async def listed(store: Store, *args: str) -> list[str]:
    result = await dlq(store, "list", "--json", *args)
    assert result.exit_code == 0, result.output
    return [row["id"] for row in json.loads(result.stdout)]


# -- pure parts --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "epoch_s"),
    [
        ("1741083072", T0),
        ("1741083072.5", T0 + 0.5),
        ("2025-03-04T10:11:12Z", T0),
        ("2025-03-04T10:11:12.500Z", T0 + 0.5),
        ("2025-03-04T10:11:12", T0),  # no zone: UTC
        ("2025-03-04T12:11:12+02:00", T0),
        ("2025-03-04", T0 - (10 * HOUR + 11 * 60 + 12)),
    ],
)
def test_times_are_iso_8601_or_epoch_seconds(text: str, epoch_s: float) -> None:
    assert parse_time(text) == epoch_s


@pytest.mark.parametrize(
    ("errors", "expected"),
    [
        ([], None),
        ([{"errorType": "RuntimeError", "errorMessage": "x"}], "RuntimeError"),
        ([{"errorType": "A"}, {"errorType": "B"}], "B"),
        ([{"errorType": "A"}, {"statusCode": 429, "message": "Rate exceeded"}], "A"),
        ([{"errorType": "A"}, "OnFailure delivery to x failed after retries"], "A"),
        (["HTTP 500 from http://hook"], None),
        ([None, "text"], None),
    ],
)
def test_error_type_is_the_last_error_type_in_the_entry(
    errors: list[Any], expected: str | None
) -> None:
    assert error_type({"errors": errors}) == expected


def test_a_filter_narrows_only_when_something_is_asked() -> None:
    assert not EntryFilter().narrows
    assert EntryFilter(limit=5).narrows and EntryFilter(kinds=frozenset({"x"})).narrows


# -- list --------------------------------------------------------------------------------------
async def test_list_json_is_one_array_of_rows_oldest_first(store: Store) -> None:
    result = await dlq(store, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows] == store.ids
    by_id = {row["id"]: row for row in rows}
    assert by_id[store.orders[0]] == {
        "id": store.orders[0],
        "function": "orders",
        "kind": "function_failed",
        "condition": "RetriesExhausted",
        "errorType": "RuntimeError",
        "at": "2025-03-04T10:11:12.000Z",
        "attempts": 1,
        "target": None,
        "requestId": store.orders[0],
        "mappingUuid": None,
    }
    billing = by_id[store.billing]
    assert (billing["condition"], billing["errorType"]) == ("EventAgeExceeded", "ValueError")
    assert billing["at"] == "2025-03-04T11:11:14.000Z"  # after 2 s of orders
    notify = by_id[store.notify]
    assert notify["kind"] == "delivery_failed" and notify["condition"] == "Success"
    assert notify["target"].endswith("/down") and notify["errorType"] is None
    clicks = by_id[store.clicks]
    assert clicks["kind"] == "stream_batch_failed" and clicks["mappingUuid"] == store.mapping
    assert (clicks["condition"], clicks["errorType"]) == ("RetryAttemptsExhausted", "RuntimeError")


async def test_list_table_has_a_row_per_entry_with_its_columns(store: Store) -> None:
    result = await dlq(store, "list")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "condition" in line)
    for column in ("id", "function", "kind", "condition", "error type", "at", "attempts"):
        assert column in header
    assert "target" in header
    rows = {
        entry_id: next(line for line in result.stdout.splitlines() if entry_id in line)
        for entry_id in store.ids
    }
    assert all(
        word in rows[store.orders[0]]
        for word in ("orders", "function_failed", "RetriesExhausted", "RuntimeError", "10:11:12")
    )
    assert "EventAgeExceeded" in rows[store.billing] and "ValueError" in rows[store.billing]
    assert "delivery_failed" in rows[store.notify] and "/down" in rows[store.notify]
    assert "stream_batch_failed" in rows[store.clicks]


async def test_each_filter_selects_exactly_its_entries(store: Store) -> None:
    o1, o2 = store.orders
    cases: list[tuple[list[str], list[str]]] = [
        (["--function", "orders"], [o1, o2]),
        (["--function", "clicks", "--function", "orders"], [o1, o2, store.clicks]),
        (["--function", f"{ARN}:billing"], [store.billing]),
        (["--function", "ghost"], []),
        (["--mapping", store.mapping], [store.clicks]),
        (["--kind", "function_failed"], [o1, o2, store.billing]),
        (
            ["--kind", "delivery_failed", "--kind", "stream_batch_failed"],
            [store.notify, store.clicks],
        ),
        (["--condition", "EventAgeExceeded"], [store.billing]),
        (["--condition", "RetriesExhausted", "--condition", "Success"], [o1, o2, store.notify]),
        (["--error-type", "RuntimeError"], [o1, o2, store.clicks]),
        (["--error-type", "ValueError"], [store.billing]),
        (["--since", "2025-03-04T11:11:12Z"], [store.billing, store.notify, store.clicks]),
        (["--until", str(T0 + HOUR)], [o1, o2]),  # until is exclusive
        (
            ["--since", str(T0 + HOUR), "--until", "2025-03-04T13:00:00Z"],
            [store.billing, store.notify],
        ),
        (["--limit", "1"], [o1]),
        (["--function", "orders", "--error-type", "ValueError"], []),
        (
            ["--kind", "function_failed", "--since", str(T0 + 1), "--limit", "2"],
            [o2, store.billing],
        ),
    ]
    for args, expected in cases:
        assert await listed(store, *args) == expected, args


async def test_list_says_when_its_limit_hides_entries(store: Store) -> None:
    cut = await dlq(store, "list", "--limit", "2")
    assert cut.exit_code == 0 and "there are more" in cut.stderr
    assert store.orders[1] in cut.stdout and store.billing not in cut.stdout
    whole = await dlq(store, "list", "--json", "--limit", "5")
    assert len(json.loads(whole.stdout)) == 5 and whole.stderr == ""


async def test_bad_filter_values_are_usage_errors(store: Store) -> None:
    for args in (["--since", "yesterday"], ["--kind", "async"], ["--function", "no spaces"]):
        result = await dlq(store, "list", *args)
        assert result.exit_code == 2, args


async def test_entries_of_a_deleted_function_are_still_listed(store: Store) -> None:
    await store.broker.store.delete("billing")
    assert await listed(store, "--kind", "function_failed") == [*store.orders, store.billing]


async def test_no_redis_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_REDIS_URL", raising=False)
    result = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "list"])
    assert result.exit_code == 2 and "--redis-url" in result.output


async def test_unreachable_redis_exits_1_with_its_address() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = await asyncio.to_thread(CliRunner().invoke, app, ["dlq", "list", "--redis-url", url])
    assert result.exit_code == 1 and url in result.output


# -- show --------------------------------------------------------------------------------------
async def test_show_json_is_the_whole_entry(store: Store) -> None:
    result = await dlq(store, "show", store.clicks, "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.stdout)
    assert entry == await store.broker.dead_letters.get("clicks", store.clicks)
    assert entry["source"]["mappingUuid"] == store.mapping
    assert result.stdout.startswith("{\n  ")  # pretty


async def test_show_without_json_prints_the_summary_and_the_entry(store: Store) -> None:
    result = await dlq(store, "show", store.billing)
    assert result.exit_code == 0, result.output
    assert "EventAgeExceeded" in result.stdout and "ValueError" in result.stdout
    assert '"requestContext"' in result.stdout and '"payload"' in result.stdout


async def test_show_of_an_unknown_id_exits_1(store: Store) -> None:
    result = await dlq(store, "show", "no-such-entry")
    assert result.exit_code == 1
    assert "no dead-letter entry 'no-such-entry'" in result.stderr
    narrowed = await dlq(store, "show", store.billing, "--function", "orders")
    assert narrowed.exit_code == 1


# -- export ------------------------------------------------------------------------------------
async def test_export_writes_whole_entries_as_json_lines_to_stdout(store: Store) -> None:
    result = await dlq(store, "export")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["id"] for e in entries] == store.ids
    assert entries[-1] == await store.broker.dead_letters.get("clicks", store.clicks)
    assert "exported 5 entries" in result.stderr


async def test_export_with_filters_to_a_file(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "dlq.jsonl"
    result = await dlq(store, "export", "--error-type", "RuntimeError", "--output", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    entries = [json.loads(line) for line in target.read_text().splitlines()]
    assert [e["id"] for e in entries] == [*store.orders, store.clicks]
    assert entries[0] == await store.broker.dead_letters.get("orders", store.orders[0])


# -- purge -------------------------------------------------------------------------------------
async def test_purge_declined_changes_nothing(store: Store) -> None:
    before = await store.counts()
    result = await dlq(store, "purge", "--function", "orders", stdin="n\n")
    assert result.exit_code == 1
    assert "2 entries match: orders (2)" in result.stdout and "nothing purged" in result.stdout
    assert await store.counts() == before


async def test_purge_confirmed_removes_the_matching_entries(store: Store) -> None:
    result = await dlq(store, "purge", "--kind", "delivery_failed", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "purged 1 entry" in result.stdout
    assert await store.counts() == {"orders": 2, "billing": 1, "notify": 0, "clicks": 1}


async def test_purge_yes_removes_exactly_the_matching_entries(store: Store) -> None:
    result = await dlq(store, "purge", "--error-type", "RuntimeError", "--yes")
    assert result.exit_code == 0, result.output
    assert "3 entries match: clicks (1), orders (2)" in result.stdout
    assert "purged 3 entries" in result.stdout
    assert await store.counts() == {"orders": 0, "billing": 1, "notify": 1, "clicks": 0}
    assert await listed(store) == [store.billing, store.notify]
    client = store.broker.redis  # the entries' JSON went with their ids
    assert await client.hlen(Keys(store.prefix).for_function("orders").dead_entries) == 0


async def test_purge_without_a_filter_is_refused_unless_all(store: Store) -> None:
    refused = await dlq(store, "purge", "--yes")
    assert refused.exit_code == 2 and "--all" in refused.stderr
    assert sum((await store.counts()).values()) == 5
    result = await dlq(store, "purge", "--all", "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 5 entries" in result.stdout
    assert sum((await store.counts()).values()) == 0


async def test_purge_with_nothing_matching_asks_nothing(store: Store) -> None:
    result = await dlq(store, "purge", "--condition", "ZeroReservedConcurrency")
    assert result.exit_code == 0 and "nothing purged" in result.stdout


async def test_removal_keeps_entries_stored_after_the_match(
    store: Store, make_broker: BrokerFactory, redis_client: aioredis.Redis
) -> None:
    query = DeadLetterQuery(redis_client, Keys(store.prefix))
    matched = await query.find(EntryFilter(functions=("orders",)))
    again = await make_broker(key_prefix=store.prefix)  # the same store, running again
    late = await again.invoke_async("orders", {"n": 5})
    await until(lambda: _dead_count_is(again, "orders", 3))
    assert await query.remove("orders", [m.entry_id for m in matched]) == 2
    assert [e["id"] for e in await again.dead_letters.list("orders")] == [late]


# -- the installed command ---------------------------------------------------------------------
async def test_installed_sluice_lists_as_json(store: Store) -> None:
    env = {**os.environ, "SLUICE_REDIS_URL": store.url, "SLUICE_KEY_PREFIX": store.prefix}
    done = await run_installed_sluice("dlq", "list", "--json", "--kind", "function_failed", env=env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [row["id"] for row in rows] == [*store.orders, store.billing]
