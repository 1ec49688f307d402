"""The Kinesis shard source (spec §9.2) against moto's server: the record as Lambda delivers
it, starting positions, checkpoints, resharding, iterator renewal and errors.

moto cannot expire an iterator or throttle a read; those tests make the client answer one
call with AWS's error (a botocore ``before-call`` hook) and let every other call reach moto.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from broker.mappings.model import EventSourceMapping, SourceKind, State
from pollers.core import PollerSettings
from pollers.kinesis import KinesisSource, kinesis_record
from pollers.stream_decisions import ShardDesc, ShardSource, StreamReadError
from tests.conftest import aws_client

SETTINGS = PollerSettings(stream_poll_interval_s=0.02)
ACCOUNT = "000000000000"
FUNCTION_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:click-agg"


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def make_mapping(
    arn: str, kind: SourceKind, position: str, timestamp_s: float | None = None
) -> EventSourceMapping:
    return EventSourceMapping(
        event_source_arn=arn,
        source_kind=kind,
        function_name="click-agg",
        batch_size=100,
        starting_position=position,
        starting_position_timestamp=timestamp_s,
        uuid=str(uuid.uuid4()),
        mapping_arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:event-source-mapping:x",
        function_arn=FUNCTION_ARN,
        state=State.ENABLED,
        state_transition_reason="USER_INITIATED",
        last_modified=0.0,
        created_at=0.0,
    )


def fail_next(client: Any, operation: str, code: str) -> list[dict[str, Any]]:
    """Answer the next ``operation`` call with AWS's ``code`` error; the calls that did
    reach the hook are listed (their serialized request) in the returned list."""
    seen: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()

    def answer(params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        seen.append(params)
        if len(seen) > 1:
            return None
        error = {"Code": code, "Message": f"simulated {code}"}
        return AWSResponse("", 400, {}, None), {"Error": error, "ResponseMetadata": {}}

    client.meta.events.register(f"before-call.{service}.{operation}", answer)
    return seen


def requests_to(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every later ``operation`` call the client makes."""
    seen: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"provide-client-params.{service}.{operation}",
        lambda params, **_: seen.append(dict(params)),
    )
    return seen


async def assert_missing(source: ShardSource, list_operation: str, shard_id: str) -> None:
    """Listing and reading a stream that does not exist raise StreamReadError, saying so."""
    with pytest.raises(StreamReadError, match=rf"{list_operation} .*ResourceNotFoundException"):
        await source.shards()
    reader = source.reader(ShardDesc(shard_id))
    await reader.seek(None)
    with pytest.raises(StreamReadError, match=r"GetShardIterator .*ResourceNotFoundException"):
        await reader.read(10, 0.0)


@pytest.fixture
def kinesis(aws: str) -> Any:
    return aws_client("kinesis", aws)


def make_stream(kinesis: Any, shards: int = 1) -> str:
    name = f"clicks-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    return str(
        kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    )


def put(
    kinesis: Any, arn: str, *payloads: bytes, key: str = "user-42", hash_key: str = "0"
) -> list[str]:
    return [
        kinesis.put_record(StreamARN=arn, Data=data, PartitionKey=key, ExplicitHashKey=hash_key)[
            "SequenceNumber"
        ]
        for data in payloads
    ]


def source_for(
    arn: str, executor: ThreadPoolExecutor, position: str = "TRIM_HORIZON", **kw: Any
) -> KinesisSource:
    return KinesisSource(make_mapping(arn, SourceKind.KINESIS, position, **kw), SETTINGS, executor)


async def read_all(
    source: KinesisSource, shard: ShardDesc, checkpoint: str | None = None
) -> list[str]:
    """Sequence numbers a fresh reader reads from ``checkpoint`` until a read is empty."""
    reader = source.reader(shard)
    await reader.seek(checkpoint)
    sequences: list[str] = []
    while records := await reader.read(100, 0.05):
        sequences.extend(r.sequence for r in records)
    return sequences


def test_record_is_the_spec_example_key_for_key() -> None:
    arn = "arn:aws:kinesis:eu-west-1:210987654321:stream/clicks"
    sequence = "49660000000000000000000000000000000000000000000000000001"
    record = kinesis_record(
        shard_id="shardId-000000000003",
        sequence=sequence,
        partition_key="user-42",
        data=b'{"page": "/home"}',
        arrival=1741083072.417,
        stream_arn=arn,
        invoke_identity_arn="arn:aws:iam::210987654321:role/click-agg-role",
    )
    expected = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "user-42",
            "sequenceNumber": sequence,
            "data": "eyJwYWdlIjogIi9ob21lIn0=",
            "approximateArrivalTimestamp": 1741083072.417,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000003:{sequence}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::210987654321:role/click-agg-role",
        "awsRegion": "eu-west-1",
        "eventSourceARN": arn,
    }
    assert json.dumps(record) == json.dumps(expected)  # same keys in the same order


async def test_trim_horizon_reads_every_record_base64_with_shard_event_ids(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    sequences = put(kinesis, arn, b"\x00\xffbinary", b'{"n": 2}')
    source: ShardSource = source_for(arn, executor)
    (shard,) = await source.shards()
    assert shard == ShardDesc("shardId-000000000000")
    reader = source.reader(shard)
    assert await reader.seek(None) is None
    first, second = await reader.read(10, 1.0)
    assert [first.sequence, second.sequence] == sequences
    assert first.key == "user-42"
    assert base64.b64decode(first.record["kinesis"]["data"]) == b"\x00\xffbinary"
    assert first.record["eventID"] == f"shardId-000000000000:{sequences[0]}"
    assert first.record["invokeIdentityArn"] == f"arn:aws:iam::{ACCOUNT}:role/sluice"
    assert first.record["awsRegion"] == "us-east-1"
    assert first.record["eventSourceARN"] == arn
    assert first.arrival_s == first.record["kinesis"]["approximateArrivalTimestamp"]
    assert source.batch_info_key == "KinesisBatchInfo"
    assert source.arrival_text(1741083072.417) == "2025-03-04T10:11:12.417Z"
    assert await reader.read(10, 0.05) == []
    await source.close()


async def test_latest_is_pinned_so_a_restart_reads_what_came_meanwhile(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    put(kinesis, arn, b"old")
    source = source_for(arn, executor, "LATEST")
    (shard,) = await source.shards()  # a round trip: the pin falls after "old" arrived
    marker = await source.reader(shard).seek(None)
    assert marker is not None and marker.startswith("AT_TIMESTAMP:")
    new = put(kinesis, arn, b"new-1", b"new-2")
    # Restarted before any record was handled: the stored marker is the checkpoint.
    assert await read_all(source, shard, marker) == new


async def test_at_timestamp_starts_at_the_first_record_at_or_after_it(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    put(kinesis, arn, b"before")
    later = put(kinesis, arn, b"at", b"after")
    iterator = kinesis.get_shard_iterator(
        StreamARN=arn,
        ShardId="shardId-000000000000",
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=later[0],
    )["ShardIterator"]
    at = kinesis.get_records(StreamARN=arn, ShardIterator=iterator)["Records"][0]
    source = source_for(
        arn, executor, "AT_TIMESTAMP", timestamp_s=at["ApproximateArrivalTimestamp"].timestamp()
    )
    (shard,) = await source.shards()
    assert await read_all(source, shard) == later


async def test_a_checkpoint_resumes_after_it(kinesis: Any, executor: ThreadPoolExecutor) -> None:
    arn = make_stream(kinesis)
    sequences = put(kinesis, arn, b"1", b"2", b"3", b"4")
    source = source_for(arn, executor, "LATEST")
    (shard,) = await source.shards()
    assert await read_all(source, shard, sequences[1]) == sequences[2:]


async def test_a_trim_horizon_checkpoint_reads_from_the_oldest_record_even_for_latest(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    sequences = put(kinesis, arn, b"1", b"2")
    source = source_for(arn, executor, "LATEST")
    (shard,) = await source.shards()
    assert await read_all(source, shard, "TRIM_HORIZON") == sequences


async def test_read_waits_for_records_in_small_polls(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    source = source_for(arn, executor)
    (shard,) = await source.shards()
    reader = source.reader(shard)
    await reader.seek(None)
    assert await reader.read(10, 0.1) == []
    sequences = put(kinesis, arn, b"late")
    assert [r.sequence for r in await reader.read(10, 1.0)] == sequences


async def test_shards_are_listed_page_by_page(kinesis: Any, executor: ThreadPoolExecutor) -> None:
    arn = make_stream(kinesis, shards=3)
    source = source_for(arn, executor)
    pages: list[dict[str, Any]] = []

    def one_per_page(params: dict[str, Any], **_: Any) -> None:
        params["MaxResults"] = 1
        pages.append(dict(params))

    client = await source.api.get()
    client.meta.events.register("provide-client-params.kinesis.ListShards", one_per_page)
    shards = await source.shards()
    assert [s.shard_id for s in shards] == [f"shardId-00000000000{i}" for i in range(3)]
    assert ["NextToken" in page for page in pages] == [False, True, True]


async def test_split_reports_the_parent_closed_and_its_reader_ends_after_its_records(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    put(kinesis, arn, b"a", b"b")
    kinesis.split_shard(
        StreamARN=arn, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127)
    )
    source = source_for(arn, executor)
    parent, left, right = await source.shards()
    # moto re-puts a split parent's records, and they land in the parent again: "1", "2".
    assert parent == ShardDesc("shardId-000000000000", (), "2")
    assert left.parents == right.parents == ("shardId-000000000000",)
    assert not left.closed and not right.closed
    reader = source.reader(parent)
    await reader.seek(None)
    assert [r.sequence for r in await reader.read(1, 1.0)] == ["1"]
    assert not reader.ended
    assert [r.sequence for r in await reader.read(10, 1.0)] == ["2"]
    assert reader.ended


async def test_an_empty_closed_shard_ends_at_the_first_empty_read(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    kinesis.split_shard(
        StreamARN=arn, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127)
    )
    source = source_for(arn, executor)
    parent, _, _ = await source.shards()
    assert parent == ShardDesc("shardId-000000000000", (), "0")
    reader = source.reader(parent)
    await reader.seek(None)
    assert not reader.ended
    assert await reader.read(10, 1.0) == []  # caught up (MillisBehindLatest 0) on a closed shard
    assert reader.ended


async def test_merge_parents_end_once_their_records_are_read(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis, shards=2)
    first = put(kinesis, arn, b"a1", b"a2", hash_key="0")
    put(kinesis, arn, b"b1", hash_key=str(2**127))
    source = source_for(arn, executor)
    open_reader = source.reader(ShardDesc("shardId-000000000000"))  # known open when made
    await open_reader.seek(None)
    assert [r.sequence for r in await open_reader.read(1, 1.0)] == first[:1]
    kinesis.merge_shards(
        StreamARN=arn,
        ShardToMerge="shardId-000000000000",
        AdjacentShardToMerge="shardId-000000000001",
    )
    parent_a, parent_b, child = await source.shards()
    assert child.parents == ("shardId-000000000000", "shardId-000000000001")
    assert parent_a.ending_sequence == first[-1] and parent_b.ending_sequence == "1"
    # Told the shard closed mid-way: it ends with the last record, not before.
    open_reader.closed(parent_a.ending_sequence)
    assert not open_reader.ended
    assert [r.sequence for r in await open_reader.read(10, 1.0)] == first[1:]
    assert open_reader.ended
    # Known closed from the start: ended as soon as its last record is read.
    reader = source.reader(parent_b)
    await reader.seek(None)
    assert len(await reader.read(10, 1.0)) == 1
    assert reader.ended


async def test_latest_on_a_closed_shard_reads_nothing(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    source = source_for(arn, executor, "LATEST")
    reader = source.reader(ShardDesc("shardId-000000000000", (), "5"))
    assert await reader.seek(None) is None
    assert reader.ended
    assert await reader.read(10, 1.0) == []


async def test_an_expired_iterator_is_renewed_after_the_last_record_read(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    sequences = put(kinesis, arn, b"1", b"2")
    source = source_for(arn, executor)
    (shard,) = await source.shards()
    reader = source.reader(shard)
    await reader.seek(None)
    assert [r.sequence for r in await reader.read(10, 1.0)] == sequences
    more = put(kinesis, arn, b"3")
    client = await source.api.get()
    iterators = requests_to(client, "GetShardIterator")
    failed = fail_next(client, "GetRecords", "ExpiredIteratorException")
    assert [r.sequence for r in await reader.read(10, 1.0)] == more
    assert len(failed) == 2  # the expired call, then the one with the renewed iterator
    assert iterators == [
        {
            "StreamARN": arn,
            "ShardId": shard.shard_id,
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "StartingSequenceNumber": sequences[-1],
        }
    ]


async def test_a_throttled_read_waits_and_returns_nothing(
    kinesis: Any, executor: ThreadPoolExecutor
) -> None:
    arn = make_stream(kinesis)
    sequences = put(kinesis, arn, b"1")
    source = source_for(arn, executor)
    (shard,) = await source.shards()
    reader = source.reader(shard)
    await reader.seek(None)
    fail_next(await source.api.get(), "GetRecords", "ProvisionedThroughputExceededException")
    assert await reader.read(10, 0.05) == []
    assert [r.sequence for r in await reader.read(10, 1.0)] == sequences


async def test_a_missing_stream_is_a_stream_read_error(
    aws: str, executor: ThreadPoolExecutor
) -> None:
    arn = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/missing-{uuid.uuid4().hex[:8]}"
    await assert_missing(source_for(arn, executor), "ListShards", "shardId-000000000000")
