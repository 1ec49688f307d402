"""``sluice dlq replay`` and ``sluice dlq history`` against a real redis-server, on the
dead-letter entries of ``tests/test_cli_dlq.py``'s ``store`` fixture (real failures).

Crashes are simulated by calling the replay's steps (intend, store, remove) one by one and
stopping between them; then a replay through the CLI must store nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner, Result

from broker import Broker
from broker.cli import app
from broker.pacing import Pacer
from broker.replay import Replayer, Step, intents_key, paced_batch_size, replay_request_id
from tests.conftest import BrokerFactory
from tests.helpers import FakeTime, run_installed_sluice, stream_records, until
from tests.test_cli_dlq import H, Store, store

__all__ = ["store"]  # the fixture, shared with tests/test_cli_dlq.py

RECEIVED = "replayed-records"  # OnSuccess stream of the functions the replays run


async def sluice(store: Store, *args: str, stdin: str | None = None) -> Result:
    """``sluice dlq ARGS`` through typer's runner in a thread; one delivery try."""
    argv = ["dlq", *args, "--redis-url", store.url, "--key-prefix", store.prefix]
    env = {"COLUMNS": "400", "SLUICE_DELIVERY_RETRIES": "1", "SLUICE_DELIVERY_BACKOFF_S": "0"}
    return await asyncio.to_thread(
        CliRunner().invoke, app, argv, input=stdin, env=env, catch_exceptions=False
    )


async def replay_json(store: Store, *args: str) -> dict[str, Any]:
    result = await sluice(store, "replay", "--yes", "--json", *args)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


async def received(store: Store, name: str) -> int:
    return (await store.broker.stats(name)).get("AsyncEventsReceived", 0)


async def queued(store: Store, name: str) -> list[dict[str, Any]]:
    """The envelopes waiting in a function's queue."""
    raw = await store.broker.redis.hvals(store.broker.keys.for_function(name).events)
    return [json.loads(r) for r in raw]


async def replayer(make_broker: BrokerFactory, store: Store) -> Replayer:
    """A replayer on the store, as the CLI makes one: a broker that dispatches nothing."""
    return Replayer(await make_broker(key_prefix=store.prefix, dispatch=False))


async def working(make_broker: BrokerFactory, store: Store, *names: str) -> Broker:
    """The functions now succeed and report to a stream; a broker runs their events."""
    for name in names:
        await store.broker.put_function(name, f"{H}:ok")
        await store.broker.put_event_invoke_config(
            name, {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:{RECEIVED}"}}}
        )
    return await make_broker(key_prefix=store.prefix)


async def ran(store: Store, n: int) -> list[dict[str, Any]]:
    """The success records of the first ``n`` replayed events to run."""
    client = store.broker.redis
    await until(lambda: client.xlen(RECEIVED), timeout=20)
    await until(lambda: _at_least(store, n))
    return await stream_records(client, RECEIVED)


async def _at_least(store: Store, n: int) -> bool:
    return int(await store.broker.redis.xlen(RECEIVED)) >= n


async def orders_entries(store: Store) -> list[dict[str, Any]]:
    return await store.broker.dead_letters.list("orders")


# -- pure parts --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate", "batches", "sleeps"),
    [
        (10, [1, 1, 1, 1], [0.1, 0.1, 0.1]),  # the first goes at once
        (10, [5, 5], [0.5]),
        (2, [1, 3, 1], [0.5, 1.5]),
        (1000, [100, 100, 100], [0.1, 0.1]),
    ],
)
async def test_pacer_waits_for_the_rate_between_batches(
    rate: float, batches: list[int], sleeps: list[float]
) -> None:
    fake = FakeTime()
    pacer = Pacer(rate, clock=fake.now, async_sleep=fake.sleep)
    for n in batches:
        await pacer.take(n)
    assert fake.slept == sleeps


async def test_pacer_does_not_make_up_for_time_spent_elsewhere() -> None:
    fake = FakeTime()
    pacer = Pacer(10, clock=fake.now, async_sleep=fake.sleep)
    await pacer.take(1)
    fake.now_s += 5  # slow work: the next batch is due already
    await pacer.take(1)
    await pacer.take(1)
    assert fake.slept == [0.1]


@pytest.mark.parametrize(("rate", "size"), [(0.5, 1), (5, 1), (10, 1), (250, 25), (10_000, 100)])
def test_pacer_batches_are_a_tenth_of_a_second_of_events(rate: float, size: int) -> None:
    assert paced_batch_size(Pacer(rate), 100) == size


def test_a_replayed_event_id_is_fixed_per_entry_and_new_for_an_entry_stored_again() -> None:
    entry = {"id": "m/shard/1/9", "requestId": "r1", "at": "2025-03-04T10:11:12.000Z"}
    same = replay_request_id("clicks", dict(entry))
    assert replay_request_id("clicks", entry) == same
    assert replay_request_id("clicks", {**entry, "at": "2025-03-05T10:11:12.000Z"}) != same
    assert replay_request_id("other", entry) != same


# -- replaying async entries -------------------------------------------------------------------
async def test_failed_async_entries_become_new_events_that_run_and_leave_the_store(
    store: Store, make_broker: BrokerFactory
) -> None:
    originals = await orders_entries(store)
    record = await replay_json(store, "--function", "orders")
    assert record["status"] == "finished"
    assert (record["stored"], record["alreadyStored"], record["matched"]) == (2, 0, 2)
    assert record["routes"] == {"orders -> orders": 2}
    assert await store.count("orders") == 0
    assert await received(store, "orders") == 4  # 2 at first, 2 replayed

    await working(make_broker, store, "orders")
    records = await ran(store, 2)
    assert sorted(r["requestPayload"]["n"] for r in records) == [1, 2]
    new_ids = {r["requestContext"]["requestId"] for r in records}
    assert new_ids == {replay_request_id("orders", e) for e in originals}
    assert not new_ids & set(store.orders)  # new events, linked in the record
    assert {(link["replayOf"], link["requestId"]) for link in record["links"]} == {
        (e["requestId"], replay_request_id("orders", e)) for e in originals
    }
    assert all(r["requestContext"]["approximateInvokeCount"] == 1 for r in records)


async def test_to_replays_into_another_function(store: Store) -> None:
    await store.broker.put_function("audit", f"{H}:ok")
    record = await replay_json(store, "--id", store.orders[0], "--to", "audit")
    assert record["routes"] == {"orders -> audit": 1}
    (event,) = await queued(store, "audit")
    assert (event["function"], json.loads(event["payload"])) == ("audit", {"n": 1})
    assert event["function_arn"].endswith(":function:audit:$LATEST")
    assert [e["id"] for e in await orders_entries(store)] == [store.orders[1]]
    assert await queued(store, "orders") == []


async def test_stream_batch_entries_become_async_events_of_the_mapping_function(
    store: Store,
) -> None:
    (entry,) = await store.broker.dead_letters.list("clicks")
    record = await replay_json(store, "--mapping", store.mapping)
    assert record["routes"] == {"clicks -> clicks": 1}
    (event,) = await queued(store, "clicks")
    assert event["payload"] == entry["payload"]
    (one,) = json.loads(event["payload"])["Records"]
    assert one["eventSourceARN"] == "redis-stream:dlq-clicks"
    assert await store.count("clicks") == 0


async def test_replay_to_a_missing_function_skips_and_keeps_the_entries(store: Store) -> None:
    result = await sluice(store, "replay", "--function", "orders", "--to", "nope", "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing to replay" in result.stdout
    assert "function nope:$LATEST not found" in result.stderr
    assert await store.count("orders") == 2


# -- dry run, confirmation, refusal ------------------------------------------------------------
async def _snapshot(store: Store) -> dict[Any, Any]:
    client = store.broker.redis
    return {key: await client.dump(key) for key in sorted(await client.keys("*"))}


async def test_dry_run_shows_each_entry_and_where_it_goes_and_changes_nothing(
    store: Store,
) -> None:
    before = await _snapshot(store)
    result = await sluice(store, "replay", "--all", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = {row["id"]: row for row in json.loads(result.stdout)}
    assert {i: (p["action"], p["to"]) for i, p in plan.items()} == {
        store.orders[0]: ("enqueue", "orders"),
        store.orders[1]: ("enqueue", "orders"),
        store.billing: ("enqueue", "billing"),
        store.notify: ("redeliver", plan[store.notify]["to"]),
        store.clicks: ("enqueue", "clicks"),
    }
    assert plan[store.notify]["to"].startswith("http://127.0.0.1:")
    table = await sluice(store, "replay", "--function", "orders", "--dry-run")
    assert table.exit_code == 0, table.output
    assert store.orders[0] in table.stdout and "dry run: 2 of 2 entries" in table.stdout
    assert await _snapshot(store) == before


async def test_a_declined_replay_replays_nothing(store: Store) -> None:
    result = await sluice(store, "replay", "--function", "orders", stdin="n\n")
    assert result.exit_code == 1
    assert "2 entries to replay: orders -> orders (new async events): 2" in result.stdout
    assert await store.count("orders") == 2 and await queued(store, "orders") == []


async def test_a_confirmed_replay_prints_what_it_did(store: Store) -> None:
    result = await sluice(store, "replay", "--function", "orders", stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "2 matched: stored 2" in result.stdout
    assert "replayed 2/2" in result.stdout  # not a terminal: plain progress lines


async def test_replay_without_a_filter_is_refused_unless_all(store: Store) -> None:
    refused = await sluice(store, "replay", "--yes")
    assert refused.exit_code == 2 and "--all" in refused.stderr
    assert await store.counts() == {"orders": 2, "billing": 1, "notify": 1, "clicks": 1}


async def test_an_unknown_id_exits_1(store: Store) -> None:
    result = await sluice(store, "replay", "--id", "nope", "--yes")
    assert result.exit_code == 1 and "no dead-letter entry 'nope'" in result.stderr


# -- never twice -------------------------------------------------------------------------------
async def test_a_replay_interrupted_after_storing_stores_nothing_again_when_resumed(
    store: Store, make_broker: BrokerFactory
) -> None:
    steps = await (await replayer(make_broker, store)).plan(
        [("orders", e) for e in await orders_entries(store)], None
    )
    replay = await replayer(make_broker, store)
    pinned = await replay.intend(steps, "crashed")
    assert await replay.store(pinned, "crashed") == [True, True]
    # ... killed here: the entries are still in the store, their events queued.
    assert await store.count("orders") == 2 and await received(store, "orders") == 4

    record = await replay_json(store, "--function", "orders")
    assert (record["stored"], record["alreadyStored"]) == (0, 2)
    assert await store.count("orders") == 0
    assert await received(store, "orders") == 4
    assert len(await queued(store, "orders")) == 2
    assert await store.broker.redis.hlen(intents_key(store.broker.keys, "orders")) == 0


async def test_an_event_stored_and_run_before_the_crash_is_not_stored_again(
    store: Store, make_broker: BrokerFactory
) -> None:
    replay = await replayer(make_broker, store)
    steps = await replay.plan([("orders", e) for e in await orders_entries(store)], None)
    await replay.store(await replay.intend(steps[:1], "crashed"), "crashed")
    runner = await working(make_broker, store, "orders")
    await ran(store, 1)
    await until(lambda: _queue_empty(runner))  # gone from the queue: only the mark is left
    await runner.stop()  # no log line of it lands in the output the CLI's runner captures

    record = await replay_json(store, "--function", "orders")
    assert (record["stored"], record["alreadyStored"]) == (1, 1)
    await make_broker(key_prefix=store.prefix)
    records = await ran(store, 2)
    assert sorted(r["requestPayload"]["n"] for r in records) == [1, 2]
    assert await received(store, "orders") == 4


async def _queue_empty(broker: Broker) -> bool:
    depth = await broker.queue_depth("orders")
    return depth["ready"] + depth["inflight"] + depth["delayed"] + depth["outbox"] == 0


async def test_a_replay_interrupted_after_its_intent_stores_once_when_resumed(
    store: Store, make_broker: BrokerFactory
) -> None:
    replay = await replayer(make_broker, store)
    steps = await replay.plan([("orders", e) for e in await orders_entries(store)], None)
    await replay.intend(steps, "crashed")  # killed before storing
    record = await replay_json(store, "--function", "orders")
    assert (record["stored"], record["alreadyStored"]) == (2, 0)
    assert await received(store, "orders") == 4


async def test_a_resumed_replay_goes_where_the_interrupted_one_was_going(
    store: Store, make_broker: BrokerFactory
) -> None:
    await store.broker.put_function("audit", f"{H}:ok")
    replay = await replayer(make_broker, store)
    steps = await replay.plan([("orders", e) for e in await orders_entries(store)], "audit")
    await replay.store(await replay.intend(steps, "crashed"), "crashed")
    record = await replay_json(store, "--function", "orders")  # no --to this time
    assert record["routes"] == {"orders -> audit": 2}
    assert (record["stored"], record["alreadyStored"]) == (0, 2)
    assert await queued(store, "orders") == [] and len(await queued(store, "audit")) == 2


async def test_a_second_replay_reinjects_nothing(store: Store) -> None:
    await replay_json(store, "--function", "orders")
    again = await sluice(store, "replay", "--function", "orders", "--yes")
    assert again.exit_code == 0, again.output
    assert "no matching dead-letter entries; nothing replayed" in again.stdout
    assert await received(store, "orders") == 4 and len(await queued(store, "orders")) == 2


async def test_entries_gone_since_planning_are_not_replayed(
    store: Store, make_broker: BrokerFactory
) -> None:
    replay = await replayer(make_broker, store)
    steps = await replay.plan([("orders", e) for e in await orders_entries(store)], None)
    await store.broker.dead_letters.delete("orders", store.orders[0])  # purged meanwhile
    result = await replay.run(steps, "late")
    assert (result.stored, result.gone) == (1, 1)
    assert await received(store, "orders") == 3


async def test_intents_of_entries_trimmed_meanwhile_are_dropped(
    store: Store, make_broker: BrokerFactory
) -> None:
    replay = await replayer(make_broker, store)
    steps = await replay.plan([("orders", e) for e in await orders_entries(store)], None)
    await replay.intend(steps, "crashed")
    await store.broker.dead_letters.delete("orders", store.orders[0])
    assert await replay.drop_orphan_intents("orders") == 1
    key = intents_key(store.broker.keys, "orders")
    assert await store.broker.redis.hkeys(key) == [store.orders[1].encode()]


# -- redelivery --------------------------------------------------------------------------------
class _Webhook(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def webhook_at() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(url: str) -> list[dict[str, Any]]:
        parts = urlsplit(url)
        bodies: list[dict[str, Any]] = []
        handler = type("Webhook", (_Webhook,), {"bodies": bodies})
        server = ThreadingHTTPServer((parts.hostname or "", parts.port or 80), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return bodies

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


async def test_delivery_failed_entries_are_redelivered_to_their_now_working_target(
    store: Store, webhook_at: Any
) -> None:
    (entry,) = await store.broker.dead_letters.list("notify")
    bodies = webhook_at(entry["target"])
    record = await replay_json(store, "--kind", "delivery_failed")
    assert (record["redelivered"], record["failed"]) == (1, 0)
    assert record["routes"] == {f"notify -> {entry['target']}": 1}
    (body,) = bodies
    assert body["requestContext"]["requestId"] == entry["requestId"]
    assert body["requestContext"]["condition"] == "Success"
    assert await store.count("notify") == 0


async def test_a_redelivery_that_fails_again_keeps_the_entry_and_exits_1(store: Store) -> None:
    result = await sluice(store, "replay", "--kind", "delivery_failed", "--yes")
    assert result.exit_code == 1
    assert "1 entry could not be redelivered; kept" in result.stderr
    assert await store.count("notify") == 1


async def test_to_does_not_apply_to_redeliveries(store: Store) -> None:
    result = await sluice(store, "replay", "--id", store.notify, "--to", "orders", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "--to does not apply to redeliveries" in result.stdout


# -- pacing ------------------------------------------------------------------------------------
async def test_rate_paces_the_replay_through_its_pacer(
    store: Store, make_broker: BrokerFactory
) -> None:
    fake = FakeTime()
    replay = await replayer(make_broker, store)
    steps: list[Step] = await replay.plan(
        [(f, e) for f in ("orders", "billing") for e in await store.broker.dead_letters.list(f)],
        None,
    )
    result = await replay.run(
        steps, "paced", pacer=Pacer(2, clock=fake.now, async_sleep=fake.sleep)
    )
    assert result.stored == 3
    assert fake.slept == [0.5, 0.5]  # one entry per batch at 2/s: the first at once


async def test_rate_flag_is_recorded_and_replays_everything(store: Store) -> None:
    record = await replay_json(store, "--function", "orders", "--rate", "1000")
    assert record["selection"] == {"functions": ["orders"], "rate": 1000.0}
    assert record["stored"] == 2


# -- history -----------------------------------------------------------------------------------
async def test_history_lists_each_replay_newest_first(store: Store) -> None:
    await store.broker.put_function("audit", f"{H}:ok")
    first = await replay_json(store, "--id", store.orders[0], "--to", "audit")
    second = await replay_json(store, "--kind", "function_failed", "--since", "2025-03-04")
    result = await sluice(store, "history", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [r["replayId"] for r in records] == [second["replayId"], first["replayId"]]
    assert records[1]["selection"] == {"ids": [store.orders[0]], "to": "audit"}
    assert records[1]["routes"] == {"orders -> audit": 1}
    assert records[0]["selection"] == {
        "kinds": ["function_failed"],
        "since": "2025-03-04T00:00:00.000Z",
    }
    assert records[0]["routes"] == {"orders -> orders": 1, "billing -> billing": 1}
    assert all(r["status"] == "finished" and r["finishedAt"] for r in records)

    table = await sluice(store, "history")
    assert table.exit_code == 0, table.output
    assert first["replayId"] in table.stdout and "orders -> audit: 1" in table.stdout


async def test_history_without_replays_says_so(store: Store) -> None:
    result = await sluice(store, "history")
    assert result.exit_code == 0 and "no replays recorded" in result.stdout


# -- the installed command ---------------------------------------------------------------------
async def test_installed_sluice_replays_and_prints_the_record_as_json(store: Store) -> None:
    env = {**os.environ, "SLUICE_REDIS_URL": store.url, "SLUICE_KEY_PREFIX": store.prefix}
    args = ("dlq", "replay", "--function", "orders", "--yes", "--json")
    done = await run_installed_sluice(*args, env=env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert (record["status"], record["stored"]) == ("finished", 2)
    assert "2 entries to replay" in done.stderr
    assert await store.count("orders") == 0 and len(await queued(store, "orders")) == 2
