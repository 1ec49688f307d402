"""What only Kinesis mappings have, against moto's standalone server (spec §9.2, §12 62,
73, 78): the record shape, AT_TIMESTAMP, filters on the decoded data, resharding and the
shards of a stream spread over processes. What Kinesis shares with DynamoDB Streams
(retries, on-failure records, bisect, windows, the lifecycle) is in
``test_stream_mappings.py``.

The function is a small HTTP server following the Lambda Invoke contract; ``answer``
decides, per test, what it replies.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from broker import Broker, ManualClock
from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.stream_helpers import (
    STREAM_BROKER_SETTINGS,
    Stream,
    StreamFunction,
    checkpoint,
    equals,
    map_source,
    stats,
    stream_broker,
)

SHARD = Stream.shard_id


@pytest.fixture
def source(aws: str) -> Stream:
    """This module's source (``function`` and ``broker``: ``tests/stream_fixtures.py``)."""
    return Stream(aws)


@pytest.fixture
def stream(source: Stream) -> Stream:
    return source


# -- shape, starting positions, filters -------------------------------------------------------


async def test_record_shape_is_lambdas(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 62: data base64-encoded, eventID = shardId:sequenceNumber, keys in order."""
    (sequence,) = stream.put({"page": "/home"}, key="user-42")
    await map_source(broker, stream.arn)
    await until(lambda: function.events)
    (record,) = function.events[0]["Records"]
    assert list(record) == [
        "kinesis",
        "eventSource",
        "eventVersion",
        "eventID",
        "eventName",
        "invokeIdentityArn",
        "awsRegion",
        "eventSourceARN",
    ]
    arrival = record["kinesis"].pop("approximateArrivalTimestamp")
    assert record == {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-42",
            "sequenceNumber": sequence,
            "data": base64.b64encode(b'{"page": "/home"}').decode(),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{SHARD}:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/sluice",
        "awsRegion": "us-east-1",
        "eventSourceARN": stream.arn,
    }
    assert isinstance(arrival, float) and abs(arrival - time.time()) < 60
    assert round(arrival, 3) == arrival


async def test_latest_ignores_earlier_records_and_trim_horizon_replays_them(
    broker: Broker, aws: str, function: StreamFunction
) -> None:
    """Spec §12 73."""
    early, late = Stream(aws), Stream(aws)
    early_old = early.put("old-1", "old-2")
    late.put("old-1", "old-2")
    latest = await map_source(broker, late.arn, StartingPosition="LATEST")
    await map_source(broker, early.arn)
    await until(lambda: len(function.delivered()) == 2)
    # LATEST pinned its start when it began: what comes now is read.
    await until(lambda: equals(_has_checkpoint(broker, latest), True))
    new = late.put("new-1")
    await until(lambda: len(function.delivered()) == 3)
    assert sorted(function.delivered()) == sorted([*early_old, *new])
    seen = {r["eventSourceARN"]: Stream.data(r) for e in function.events for r in e["Records"]}
    assert seen[late.arn] == "new-1"


async def _has_checkpoint(broker: Broker, uuid: str) -> bool:
    return await checkpoint(broker, uuid, SHARD) is not None


async def test_at_timestamp_reads_records_from_that_time_on(
    broker: Broker, stream: Stream, function: StreamFunction, clock: ManualClock
) -> None:
    clock.set(time.time() + 1)  # the timestamp must not be in the future
    stream.put("before")
    time.sleep(0.05)
    moment = time.time()
    time.sleep(0.05)
    after = stream.put("after")
    await map_source(
        broker, stream.arn, StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=moment
    )
    await until(lambda: function.delivered() == after)


async def test_filtered_out_records_are_skipped_and_checkpointed(
    broker: Broker, stream: Stream, function: StreamFunction
) -> None:
    """Spec §12 78: JSON data filtered on decoded fields; non-JSON data skipped."""
    sequences = stream.put({"kind": "keep"}, {"kind": "drop"})
    raw = stream.client.put_record(StreamName=stream.name, Data=b"not json", PartitionKey="k")
    uuid = await map_source(
        broker,
        stream.arn,
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"data": {"kind": ["keep"]}})}]},
    )
    await until(lambda: equals(checkpoint(broker, uuid, SHARD), raw["SequenceNumber"]))
    assert function.delivered() == sequences[:1]
    assert (await stats(broker, uuid))["filtered_out"] == 2


# -- shards, processes ------------------------------------------------------------------------


def split_as_aws_does(stream: Stream, shard_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SplitShard with AWS's semantics, on moto's backend (the server runs in this process).

    moto 5.2.5's SplitShard re-puts the parent's records into the parent, and its PutRecord
    keeps routing to the first shard whose hash range matches, closed parents included, so
    a child never gets a record. AWS leaves the parent's records where they are, closes it,
    and routes new records to the open children: done here by hand, then read by Sluice
    over moto's HTTP API like any other shard."""
    from moto.kinesis.models import Shard, kinesis_backends
    from moto.kinesis.models import Stream as MotoStream

    moto_stream = kinesis_backends["000000000000"]["us-east-1"].streams[stream.name]
    parent = moto_stream.shards[shard_id]
    middle = (parent.starting_hash + parent.ending_hash) // 2
    last = max(s._shard_id for s in moto_stream.shards.values())
    for n, (low, high) in enumerate([(parent.starting_hash, middle), (middle, parent.ending_hash)]):
        child = Shard(last + 1 + n, low, high, parent=shard_id)
        moto_stream.shards[child.shard_id] = child
    parent.is_open = False
    routing = MotoStream.get_shard_for_key

    def open_shard_for_key(self: Any, partition_key: str, explicit_hash_key: str) -> Any:
        open_shards = {k: v for k, v in self.shards.items() if v.is_open}
        every, self.shards = self.shards, open_shards
        try:
            return routing(self, partition_key, explicit_hash_key)
        finally:
            self.shards = every

    monkeypatch.setattr(MotoStream, "get_shard_for_key", open_shard_for_key)


async def test_a_split_shard_is_drained_before_its_children(
    broker: Broker, stream: Stream, function: StreamFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resharding: the parent's records first, then the children's (spec §9.2 (D)); the
    parent ends with SHARD_END, each child is checkpointed on its own."""
    function.delay_s = 0.1  # the parent takes a while: its children wait for it
    parent = stream.put(*range(10))
    split_as_aws_does(stream, SHARD, monkeypatch)
    listed = {s["ShardId"]: s for s in stream.shards()}
    assert "EndingSequenceNumber" in listed[SHARD]["SequenceNumberRange"]
    children = sorted(k for k, s in listed.items() if s.get("ParentShardId") == SHARD)
    low = stream.put("low-1", "low-2", hash_key="1")
    high = stream.put("high-1", hash_key=str(2**127 + 5))
    uuid = await map_source(broker, stream.arn, BatchSize=2)
    await until(lambda: len(function.delivered()) == 13, timeout=30)
    delivered = [
        (r["eventID"].split(":")[0], Stream.data(r)) for e in function.events for r in e["Records"]
    ]
    assert delivered[:10] == [(SHARD, n) for n in range(10)]
    assert sorted(delivered[10:]) == sorted(
        [(children[0], "low-1"), (children[0], "low-2"), (children[1], "high-1")]
    )
    assert [d for _, d in delivered if d in ("low-1", "low-2")] == ["low-1", "low-2"]
    await until(lambda: equals(checkpoint(broker, uuid, SHARD), "SHARD_END"))
    await until(lambda: equals(checkpoint(broker, uuid, children[0]), low[-1]))
    await until(lambda: equals(checkpoint(broker, uuid, children[1]), high[-1]))
    assert len(parent) == 10


async def test_latest_reads_a_child_shard_from_when_the_mapping_started(
    broker: Broker, stream: Stream, function: StreamFunction, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LATEST pins one moment for the whole mapping: a child shard made by resharding later
    is read from it, so records it got before its reader started are not skipped."""
    stream.put("before")
    uuid = await map_source(broker, stream.arn, StartingPosition="LATEST")
    await until(lambda: _pinned(broker, uuid))
    function.delay_s = 0.2  # the parent is slow: its children wait
    parent = stream.put("p-1", "p-2", "p-3")
    split_as_aws_does(stream, SHARD, monkeypatch)
    children = stream.put("c-1", hash_key="1") + stream.put("c-2", hash_key=str(2**127 + 5))
    await until(lambda: len(function.delivered()) == 5, timeout=8)
    delivered = [Stream.data(r) for e in function.events for r in e["Records"]]
    assert delivered[:3] == ["p-1", "p-2", "p-3"]
    assert len(parent) == 3 and len(children) == 2


async def _pinned(broker: Broker, uuid: str) -> bool:
    """The shard's reader started: LATEST is pinned (as a moment, not a record)."""
    return (await checkpoint(broker, uuid, SHARD) or "").startswith("AT_TIMESTAMP:")


async def test_processes_split_shards_and_take_over_a_dead_ones(
    aws: str, make_broker: BrokerFactory, function: StreamFunction
) -> None:
    stream = Stream(aws, shards=4)
    options = {**STREAM_BROKER_SETTINGS, "poller_lease_ttl_s": 1.0}
    first = await stream_broker(make_broker, function, **options)
    second = await make_broker(key_prefix=first.settings.key_prefix, **options)
    uuid = await map_source(first, stream.arn)

    def shares(broker: Broker) -> set[str]:
        assert broker.pollers is not None
        running = broker.pollers.running.get(uuid)
        return set(running.poller.reading) if running else set()  # type: ignore[attr-defined]

    await until(lambda: len(shares(first)) == 2 and len(shares(second)) == 2, timeout=15)
    assert shares(first) | shares(second) == {s["ShardId"] for s in stream.shards()}
    # The first process dies: its tasks vanish, its leases and heartbeat are left behind.
    a = first.pollers
    assert a is not None and a._task is not None
    a._task.cancel()
    for running in a.running.values():
        running.task.cancel()
    await until(lambda: len(shares(second)) == 4, timeout=15)
    sent = [stream.put(f"after-{n}", hash_key=str(n * 2**126 + 1))[0] for n in range(4)]
    await until(lambda: len(function.delivered()) == 4, timeout=15)
    assert sorted(Stream.data(r) for e in function.events for r in e["Records"]) == [
        f"after-{n}" for n in range(4)
    ]
    assert len(sent) == 4
    a.running.clear()
