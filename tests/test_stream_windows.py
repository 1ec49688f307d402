"""Tumbling windows of Kinesis and DynamoDB Streams mappings (spec §9.2, §12 70): state
carried between invocations, the final invocation, a window ended early; a backlog read in
pages staying in one window; batches leaving room for the window's state.

Each test of both sources runs against moto's standalone server with the fixtures of
``tests/stream_fixtures.py``. moto stamps records with the wall clock, so the broker's
ManualClock is set to now and moved from there.
"""

from __future__ import annotations

import asyncio
import json
import time

from broker import Broker, ManualClock
from pollers.core import MappingRuntime, PollerSettings
from pollers.stream_decisions import ShardInfo, StreamRecord
from pollers.streams import Fence, ShardConsumer
from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.servers import Answer, ok
from tests.stream_helpers import (
    Event,
    Source,
    Stream,
    StreamFunction,
    iso_s,
    map_source,
    stream_broker,
)


def _inside_a_window(clock: ManualClock, size: int) -> None:
    """Wait out a window's last 20 s (too near its end to stay inside it); set the clock."""
    if size - time.time() % size < 20:
        time.sleep(size - time.time() % size + 0.1)
    clock.set(time.time())


async def test_tumbling_window_carries_state_to_a_final_invocation(
    broker: Broker, source: Source, function: StreamFunction, clock: ManualClock
) -> None:
    """Spec §12 70: each invocation gets the state the previous one returned; a response
    without ``state`` failed (retried); the window's end brings isFinalInvokeForWindow."""
    size = 900
    _inside_a_window(clock, size)
    start = int(time.time() // size) * size
    answers = iter([ok({"no": "state"})])

    def answer(event: Event) -> Answer:
        forced = next(answers, None)
        if forced is not None:
            return forced
        count = event["state"].get("count", 0) + len(event["Records"])
        return ok({"state": {"count": count}})

    function.answer = answer
    source.put("a", "b", "c")
    await map_source(broker, source.arn, BatchSize=2, TumblingWindowInSeconds=size)
    await until(lambda: len(function.events) >= 3)
    await until(lambda: sum(len(e["Records"]) for e in function.events[1:]) == 3)
    first, retried, second = function.events[:3]
    assert first["state"] == {} and retried["state"] == {}  # the stateless reply failed
    assert retried["Records"] == first["Records"]
    assert second["state"] == {"count": 2}
    assert first["window"] == {"start": iso_s(start), "end": iso_s(start + size)}
    assert first["shardId"] == source.shard_id and first["eventSourceARN"] == source.arn
    assert not any(
        e["isFinalInvokeForWindow"] or e["isWindowTerminatedEarly"] for e in function.events
    )
    clock.set(start + size + 1)
    await until(lambda: function.events[-1]["isFinalInvokeForWindow"])
    final = function.events[-1]
    assert final["Records"] == [] and final["state"] == {"count": 3}
    assert final["isWindowTerminatedEarly"] is False


async def test_a_state_over_1_mb_ends_the_window_early(
    broker: Broker, source: Source, function: StreamFunction, clock: ManualClock
) -> None:
    """Past 1 MB of state the window ends early: a final invocation with
    isWindowTerminatedEarly, then the same window goes on with a fresh state."""
    size = 900
    _inside_a_window(clock, size)
    big = "x" * (1024 * 1024 + 1)

    def answer(event: Event) -> Answer:
        if event["isFinalInvokeForWindow"]:
            return ok({"state": {}})
        if source.data(event["Records"][0]) == "grow":
            return ok({"state": {"blob": big}})
        return ok({"state": {"seen": len(event["Records"])}})

    function.answer = answer
    source.put("grow")
    await map_source(broker, source.arn, BatchSize=1, TumblingWindowInSeconds=size)
    await until(lambda: len(function.events) >= 2)
    grow, final = function.events[:2]
    assert (grow["isFinalInvokeForWindow"], grow["isWindowTerminatedEarly"]) == (False, False)
    assert (final["isFinalInvokeForWindow"], final["isWindowTerminatedEarly"]) == (True, True)
    assert final["Records"] == [] and final["state"] == {"blob": big}
    assert final["window"] == grow["window"]
    source.put("next")
    await until(lambda: len(function.events) >= 3)
    after = function.events[2]
    assert after["state"] == {} and after["window"] == grow["window"]
    assert after["isFinalInvokeForWindow"] is False


class PagedReader:
    """A shard read in pages that come apart, as GetRecords serves a backlog: the lane runs
    dry between pages while the reader is still behind."""

    def __init__(self, pages: list[list[StreamRecord]], gap_s: float) -> None:
        self.pages = pages
        self.gap_s = gap_s
        self.ended = False

    def closed(self, ending_sequence: str | None) -> None:
        """Never closed."""

    async def seek(self, checkpoint: str | None) -> str | None:
        return None

    async def read(self, limit: int, wait_s: float) -> list[StreamRecord]:
        if not self.pages:
            await asyncio.sleep(wait_s)
            return []
        await asyncio.sleep(self.gap_s)
        return self.pages.pop(0)


async def test_a_backlog_read_in_pages_stays_in_one_window(
    make_broker: BrokerFactory, aws: str, clock: ManualClock
) -> None:
    """The clock is long past the window's end, but the shard is not read up to it: the
    window's records, in two pages, share one state and one final invocation."""
    stream = Stream(aws)
    function = StreamFunction(sequence=Stream.sequence, key=Stream.key)
    try:
        broker = await stream_broker(make_broker, function, run_pollers=False)

        def answer(event: Event) -> Answer:
            return ok({"state": {"n": event["state"].get("n", 0) + len(event["Records"])}})

        function.answer = answer
        uuid = await map_source(broker, stream.arn, BatchSize=2, TumblingWindowInSeconds=60)
        mapping = await broker.mappings.mapping(uuid)
        clock.set(10_000.0)  # windows [900, 960) of the records below ended long ago
        records = [
            StreamRecord(
                str(n), 900.0 + n, {"kinesis": {"sequenceNumber": str(n), "partitionKey": "k"}}, "k"
            )
            for n in range(4)
        ]
        reader = PagedReader([records[:2], records[2:]], gap_s=0.5)
        lease = broker.keys.shard_lease(uuid, "shardId-1")
        await broker.redis.set(lease, "token")
        consumer = ShardConsumer(
            MappingRuntime(broker, mapping, "token"),
            PollerSettings(stream_read_block_s=0.05),
            reader,
            ShardInfo(stream.arn, "shardId-1", "KinesisBatchInfo"),
            Fence(lease, "token"),
        )
        task = asyncio.create_task(consumer.run())
        await until(lambda: any(e["isFinalInvokeForWindow"] for e in function.events))
        await asyncio.sleep(0.3)  # no second final invocation follows
        consumer.stop()
        await task
        states = [
            (e["state"], e["isFinalInvokeForWindow"], len(e["Records"])) for e in function.events
        ]
        assert states == [({}, False, 2), ({"n": 2}, False, 2), ({"n": 4}, True, 0)]
    finally:
        function.server.stop()


async def test_batches_leave_room_for_the_window_state(
    make_broker: BrokerFactory, aws: str, clock: ManualClock
) -> None:
    """A 1,000,000-byte state rides along with each invocation: batches of 1 MB Kinesis
    records stop short of 6 MB with it (four such records and the state would not fit one
    payload, and the batch would be refused for ever)."""
    size = 900
    _inside_a_window(clock, size)
    stream = Stream(aws)
    function = StreamFunction(sequence=Stream.sequence, key=Stream.key)
    try:
        broker = await stream_broker(make_broker, function)
        state = {"blob": "s" * 1_000_000}
        function.answer = lambda _event: ok({"state": state})
        stream.put("small")
        await map_source(broker, stream.arn, BatchSize=10, TumblingWindowInSeconds=size)
        await until(lambda: len(function.events) == 1)
        big = stream.put(*["r" * 999_000 for _ in range(5)])
        await until(lambda: len(function.delivered()) == 6, timeout=30)
        later = function.events[1:]
        assert [len(e["Records"]) for e in later] == [3, 2]
        assert [Stream.sequence(r) for e in later for r in e["Records"]] == big
        assert all(e["state"] == state for e in later)
        compact = [json.dumps(e, separators=(",", ":")).encode() for e in later]
        assert max(len(payload) for payload in compact) <= 6_291_456
    finally:
        function.server.stop()
