"""Re-reading a failed stream batch by its sequence range (``pollers/stream_reread.py``):
Kinesis and DynamoDB Streams in moto's standalone server, ``redis-stream:`` on a real
redis-server.

The batches are made to fail for real (a function that errors, ``MaximumRetryAttempts``
0), so the ``stream_batch_failed`` entry the poller writes gives the range and, in its
payload, the records the function was invoked with: a re-read must give the same ones.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import Broker
from broker.redis_client import as_text
from broker.rereads import Reread, StreamRereader
from broker.wiring import default_stream_rereader
from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.servers import Answer, function_error, ok
from tests.stream_helpers import (
    FUNCTION,
    Event,
    Source,
    Stream,
    StreamFunction,
    map_source,
    stream_broker,
)

REDIS_STREAM = "reread-clicks"
REDIS_SHARD = "shardId-000000000000"


def _failing(data: Callable[[dict[str, Any]], Any]) -> Callable[[Event], Answer]:
    """An answer failing every batch with a record whose data starts with ``x``."""

    def answer(event: Event) -> Answer:
        failing = any(str(data(r)).startswith("x") for r in event["Records"])
        return function_error() if failing else ok()

    return answer


async def _failed_entry(broker: Broker) -> dict[str, Any]:
    """The one ``stream_batch_failed`` entry of :data:`FUNCTION`, once written."""
    await until(lambda: broker.dead_letters.count(FUNCTION))
    (entry,) = await broker.dead_letters.list(FUNCTION)
    assert entry["kind"] == "stream_batch_failed"
    return entry


def _stored(entry: dict[str, Any]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(entry["payload"])["Records"]
    return records


@pytest.fixture
async def rereader(broker: Broker) -> AsyncIterator[StreamRereader]:
    found = default_stream_rereader(broker)
    yield found
    await found.close()


@pytest.fixture
async def quiet_broker(make_broker: BrokerFactory) -> Broker:
    """A broker without pollers, so a mapping only names its stream and filters."""
    broker = await make_broker()
    await broker.put_function(FUNCTION, "http://127.0.0.1:9/never-called", timeout_s=2)
    return broker


def _range(arn: str, uuid: str, shard_id: str, start: str, end: str) -> dict[str, Any]:
    """An entry's ``source``, as ``pollers/stream_failure.py`` writes it."""
    return {
        "eventSourceArn": arn,
        "mappingUuid": uuid,
        "shardId": shard_id,
        "startSequenceNumber": start,
        "endSequenceNumber": end,
    }


async def _reread(broker: Broker, source: dict[str, Any]) -> Reread:
    rereader = default_stream_rereader(broker)
    try:
        return await rereader.reread(source)
    finally:
        await rereader.close()


# -- Kinesis and DynamoDB Streams ---------------------------------------------------------------


async def test_a_failed_range_is_reread_as_the_poller_delivered_it(
    broker: Broker, source: Source, function: StreamFunction, rereader: StreamRereader
) -> None:
    """The middle batch of three fails; its range, re-read with records on both sides in
    the shard, gives exactly the records stored with the entry and sent to the function."""
    function.answer = _failing(source.data)
    sequences = source.put("a", "b", "c", "x1", "x2", "x3", "d", "e")
    await map_source(broker, source.arn, BatchSize=3, MaximumRetryAttempts=0)
    entry = await _failed_entry(broker)
    assert entry["source"]["startSequenceNumber"] == sequences[3]
    assert entry["source"]["endSequenceNumber"] == sequences[5]
    found = await rereader.reread(entry["source"])
    assert found == Reread(_stored(entry))
    (failed,) = [e for e in function.events if source.data(e["Records"][0]) == "x1"]
    assert found.records == failed["Records"]


@pytest.fixture
def kinesis_function() -> Iterator[StreamFunction]:
    fn = StreamFunction(sequence=Stream.sequence, key=Stream.key)
    yield fn
    fn.server.stop()


async def test_only_the_failed_lane_is_reread_with_a_parallelization_factor(
    make_broker: BrokerFactory, aws: str, kinesis_function: StreamFunction
) -> None:
    """ParallelizationFactor 2: the failed batch holds one lane's keys; the other lane's
    record inside its range (delivered fine) is not re-read."""
    keys = [f"key-{n}" for n in range(20)]
    lane_a = next(k for k in keys if zlib.crc32(k.encode()) % 2 == 0)
    lane_b = next(k for k in keys if zlib.crc32(k.encode()) % 2 == 1)
    stream = Stream(aws)
    kinesis_function.answer = _failing(Stream.data)
    (x1,) = stream.put("x1", key=lane_a)
    stream.put("b1", key=lane_b)
    (x2,) = stream.put("x2", key=lane_a)
    broker = await stream_broker(make_broker, kinesis_function)
    await map_source(broker, stream.arn, ParallelizationFactor=2, MaximumRetryAttempts=0)
    entry = await _failed_entry(broker)
    assert (entry["source"]["startSequenceNumber"], entry["source"]["endSequenceNumber"]) == (
        x1,
        x2,
    )
    found = await _reread(broker, entry["source"])
    assert found == Reread(_stored(entry))
    assert [Stream.data(r) for r in found.records or []] == ["x1", "x2"]


async def test_a_deleted_kinesis_stream_is_not_reread(quiet_broker: Broker, aws: str) -> None:
    stream = Stream(aws)
    sequences = stream.put("a", "b", "c")
    uuid = await map_source(quiet_broker, stream.arn)
    source = _range(stream.arn, uuid, stream.shard_id, sequences[0], sequences[1])
    rereader = default_stream_rereader(quiet_broker)
    try:
        before = await rereader.reread(source)
        assert [Stream.data(r) for r in before.records or []] == ["a", "b"]
        stream.client.delete_stream(StreamName=stream.name)
        found = await rereader.reread(source)
    finally:
        await rereader.close()
    assert found.records is None and "ResourceNotFoundException" in found.reason


async def test_a_start_the_shard_no_longer_holds_is_not_reread(
    quiet_broker: Broker, aws: str
) -> None:
    """As after trimming past retention (moto never trims): the first record read from
    the start sequence is a later one, so the range is not all there."""
    stream = Stream(aws)
    sequences = stream.put("a", "b")
    uuid = await map_source(quiet_broker, stream.arn)
    gone = str(int(sequences[0]) - 1)
    source = _range(stream.arn, uuid, stream.shard_id, gone, sequences[1])
    found = await _reread(quiet_broker, source)
    assert found == Reread(
        None,
        f"shard {stream.shard_id} trimmed past {gone}: its first record from there is "
        f"{sequences[0]}",
    )


async def test_a_range_past_the_shard_tip_is_not_reread(quiet_broker: Broker, aws: str) -> None:
    """The end sequence is not (or no longer) in the shard: the range cannot be read whole."""
    stream = Stream(aws)
    (first,) = stream.put("a")
    uuid = await map_source(quiet_broker, stream.arn)
    source = _range(stream.arn, uuid, stream.shard_id, first, str(int(first) + 5))
    found = await _reread(quiet_broker, source)
    assert found.records is None and f"holds {first} but not" in found.reason


async def test_a_deleted_mapping_is_not_reread(quiet_broker: Broker, aws: str) -> None:
    stream = Stream(aws)
    sequences = stream.put("a")
    uuid = await map_source(quiet_broker, stream.arn)
    await quiet_broker.mappings.delete(uuid)
    source = _range(stream.arn, uuid, stream.shard_id, sequences[0], sequences[0])
    found = await _reread(quiet_broker, source)
    assert found == Reread(None, f"mapping {uuid} deleted")


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:sqs:us-east-1:000000000000:orders",
        "amqp://guest:guest@127.0.0.1:5672/orders",
        "",
    ],
)
async def test_a_source_that_is_no_stream_is_not_reread(quiet_broker: Broker, arn: str) -> None:
    source = _range(arn, "6f1c1d7e-0000-4000-8000-000000000000", REDIS_SHARD, "1", "2")
    found = await _reread(quiet_broker, source)
    assert found.records is None and "names no stream source" in found.reason


# -- redis-stream: ------------------------------------------------------------------------------


@pytest.fixture
def redis_function() -> Iterator[StreamFunction]:
    fn = StreamFunction(sequence=lambda r: r["redisStream"]["entryId"], key=lambda _r: "")
    yield fn
    fn.server.stop()


def _data(record: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(record["redisStream"]["data"]))


async def _add(client: aioredis.Redis, *bodies: dict[str, Any]) -> list[str]:
    ids = [await client.xadd(REDIS_STREAM, {"data": json.dumps(body)}) for body in bodies]
    return [as_text(raw) for raw in ids]


async def test_a_redis_stream_range_is_reread_through_the_current_filters(
    make_broker: BrokerFactory, redis_client: aioredis.Redis, redis_function: StreamFunction
) -> None:
    """The poller filtered ``skip`` out of the failed batch; the re-read does the same, and
    after an update it applies the mapping's new filters."""
    redis_function.answer = lambda _event: function_error()
    ids = await _add(
        redis_client,
        {"kind": "keep", "n": 1},
        {"kind": "skip", "n": 2},
        {"kind": "keep", "n": 3},
    )
    broker = await stream_broker(make_broker, redis_function)
    pattern = json.dumps({"data": {"kind": ["keep"]}})
    uuid = await map_source(
        broker,
        f"redis-stream:{REDIS_STREAM}",
        MaximumRetryAttempts=0,
        FilterCriteria={"Filters": [{"Pattern": pattern}]},
    )
    entry = await _failed_entry(broker)
    assert entry["source"] == {
        "eventSourceArn": f"redis-stream:{REDIS_STREAM}",
        "mappingUuid": uuid,
        "shardId": REDIS_SHARD,
        "startSequenceNumber": ids[0],
        "endSequenceNumber": ids[2],
    }
    found = await _reread(broker, entry["source"])
    assert found == Reread(_stored(entry))
    assert [_data(r)["n"] for r in found.records or []] == [1, 3]
    assert found.records == redis_function.events[0]["Records"]

    only_three = json.dumps({"data": {"n": [3]}})
    await broker.mappings.update(uuid, {"FilterCriteria": {"Filters": [{"Pattern": only_three}]}})
    now = await _reread(broker, entry["source"])
    assert [_data(r)["n"] for r in now.records or []] == [3]
    none = json.dumps({"data": {"n": [4]}})
    await broker.mappings.update(uuid, {"FilterCriteria": {"Filters": [{"Pattern": none}]}})
    assert await _reread(broker, entry["source"]) == Reread(
        [], "the mapping's filters now keep none of 3 records"
    )


async def test_a_trimmed_redis_stream_is_not_reread(
    quiet_broker: Broker, redis_client: aioredis.Redis
) -> None:
    ids = await _add(redis_client, {"n": 1}, {"n": 2}, {"n": 3})
    uuid = await map_source(quiet_broker, f"redis-stream:{REDIS_STREAM}")
    source = _range(f"redis-stream:{REDIS_STREAM}", uuid, REDIS_SHARD, ids[0], ids[1])
    whole = await _reread(quiet_broker, source)
    assert [_data(r)["n"] for r in whole.records or []] == [1, 2]
    await redis_client.xtrim(REDIS_STREAM, maxlen=2, approximate=False)
    found = await _reread(quiet_broker, source)
    assert found == Reread(
        None, f"stream {REDIS_STREAM} trimmed past {ids[0]}: its first entry from there is {ids[1]}"
    )
    await redis_client.delete(REDIS_STREAM)
    gone = await _reread(quiet_broker, source)
    assert gone.records is None and "no longer holds" in gone.reason
