"""``sluice dlq replay`` of stream entries: the records are re-read from the stream by the
entry's sequence range while it keeps them, else the stored event is sent; and the link
from a replayed event back to the request it replays (``replay_of``). Uses the real
dead-letter entries of ``tests/test_cli_dlq.py``'s ``store`` fixture."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.test_cli_dlq import STREAM, Store, store
from tests.test_dlq_replay import orders_entries, queued, replay_json, sluice

__all__ = ["store"]  # the fixture, shared with tests/test_cli_dlq.py


async def plan_of(store: Store, entry_id: str) -> dict[str, Any]:
    result = await sluice(store, "replay", "--id", entry_id, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    return dict(row)


async def spoil_stored_payload(store: Store) -> None:
    """Overwrite the clicks entry's stored event: only a re-read can still send the truth."""
    key = store.broker.keys.for_function("clicks").dead_entries
    entry = json.loads(await store.broker.redis.hget(key, store.clicks))
    entry["payload"] = json.dumps({"Records": [{"spoiled": True}]})
    await store.broker.redis.hset(key, store.clicks, json.dumps(entry))


async def test_a_stream_entry_is_replayed_from_the_stream_while_it_keeps_the_range(
    store: Store,
) -> None:
    (entry,) = await store.broker.dead_letters.list("clicks")
    await spoil_stored_payload(store)
    plan = await plan_of(store, store.clicks)
    assert (plan["action"], plan["from"]) == ("enqueue", "stream")
    assert "reason" not in plan

    record = await replay_json(store, "--id", store.clicks)
    assert record["stored"] == 1
    (event,) = await queued(store, "clicks")
    (one,) = json.loads(event["payload"])["Records"]
    (original,) = json.loads(entry["payload"])["Records"]
    assert one == original  # the stream's record, not the spoiled copy
    assert one["redisStream"]["entryId"] == entry["source"]["startSequenceNumber"]


async def test_a_trimmed_stream_falls_back_to_the_stored_event_and_says_why(
    store: Store,
) -> None:
    (entry,) = await store.broker.dead_letters.list("clicks")
    await store.broker.redis.delete(STREAM)
    plan = await plan_of(store, store.clicks)
    assert (plan["action"], plan["from"]) == ("enqueue", "stored")
    assert plan["reason"].startswith("not re-read: ")
    assert STREAM in plan["reason"]

    table = await sluice(store, "replay", "--id", store.clicks, "--dry-run")
    assert "not re-read" in table.stdout and "stored" in table.stdout
    await replay_json(store, "--id", store.clicks)
    (event,) = await queued(store, "clicks")
    assert event["payload"] == entry["payload"]


async def test_records_the_mapping_now_filters_out_are_not_replayed(store: Store) -> None:
    nothing = json.dumps({"redisStream": {"fields": {"tenant": ["nobody"]}}})
    await store.broker.mappings.update(
        store.mapping, {"FilterCriteria": {"Filters": [{"Pattern": nothing}]}}
    )
    plan = await plan_of(store, store.clicks)
    assert plan["action"] == "skip"
    assert "filters" in plan["reason"]
    result = await sluice(store, "replay", "--id", store.clicks, "--yes")
    assert "nothing to replay" in result.stdout
    assert await store.count("clicks") == 1  # kept


async def test_a_replayed_event_names_what_it_replays_and_a_second_failure_keeps_the_link(
    store: Store, make_broker: BrokerFactory
) -> None:
    first = store.orders[0]
    await replay_json(store, "--id", first)
    (event,) = await queued(store, "orders")
    assert event["replay_of"] == first and event["request_id"] != first

    # orders still fails (no retries): the replay lands in the store again, linked.
    await make_broker(key_prefix=store.prefix)

    async def failed_again() -> bool:
        return any(e.get("replayOf") == first for e in await orders_entries(store))

    await until(failed_again, timeout=20)
    (again,) = [e for e in await orders_entries(store) if e.get("replayOf")]
    assert again["requestId"] == event["request_id"]
    shown = await sluice(store, "show", again["id"], "--json")
    assert json.loads(shown.stdout)["replayOf"] == first
