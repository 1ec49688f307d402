"""What the Kinesis and DynamoDB Streams mapping tests share: the function under test (a
small HTTP server following the Lambda Invoke contract), broker settings that keep every
wait short, the two sources in moto behind one small interface (:class:`Source`: a Kinesis
:class:`Stream`, a DynamoDB :class:`Table`), and reading what on-failure destinations in
moto received."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol
from uuid import uuid4

from broker import Broker
from broker.records import iso_ms
from tests.conftest import BrokerFactory, aws_client
from tests.helpers import until
from tests.servers import Answer, LambdaHttpFunction, ok

Event = dict[str, Any]
Record = dict[str, Any]

FUNCTION = "consumer"
KINESIS_SHARD = "shardId-000000000000"

STREAM_BROKER_SETTINGS: dict[str, Any] = {
    "run_pollers": True,
    "poller_refresh_s": 0.1,
    "poller_lease_ttl_s": 5,
    "stream_read_block_s": 0.1,
    "stream_poll_interval_s": 0.05,
    "stream_shard_list_interval_s": 0.1,
    "stream_retry_backoff_s": 0.01,
    "stream_retry_backoff_max_s": 0.05,
}


class StreamFunction:
    """Records each event; ``answer(event)`` decides the reply; ``sequence(record)`` names a
    record (its sequence number) and ``key(record)`` its partition or item key. Tracks the
    invocations running at once and the keys they hold."""

    def __init__(
        self, sequence: Callable[[dict[str, Any]], str], key: Callable[[dict[str, Any]], str]
    ) -> None:
        self.answer: Callable[[Event], Answer] = lambda _event: ok()
        self.delay_s = 0.0
        self.sequence = sequence
        self.key = key
        self.peak = 0
        self.key_clashes = 0  # invocations that began while another held one of their keys
        self._running: list[set[str]] = []
        self._lock = threading.Lock()
        self.server = LambdaHttpFunction(self._respond).start()

    def _respond(self, event: Event, headers: dict[str, str]) -> Answer:
        keys = {self.key(r) for r in event.get("Records", [])}
        with self._lock:
            if any(keys & held for held in self._running):
                self.key_clashes += 1
            self._running.append(keys)
            self.peak = max(self.peak, len(self._running))
        try:
            if self.delay_s:
                time.sleep(self.delay_s)
            return self.answer(event)
        finally:
            with self._lock:
                self._running.remove(keys)

    @property
    def events(self) -> list[Event]:
        return [event for _, event, _ in self.server.calls]

    def batches(self) -> list[list[str]]:
        """The sequence numbers of each invocation, in order."""
        return [[self.sequence(r) for r in e["Records"]] for e in self.events]

    def delivered(self) -> list[str]:
        return [sequence for batch in self.batches() for sequence in batch]

    def request_id(self, n: int = -1) -> str:
        return str(self.server.calls[n][2]["x-sluice-request-id"])


def make_queue(url: str, name: str) -> tuple[str, str]:
    sqs = aws_client("sqs", url)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return queue_url, attributes["Attributes"]["QueueArn"]


async def received(url: str, queue_url: str, count: int = 1) -> list[dict[str, Any]]:
    """The bodies of ``count`` messages from a queue (waiting for them), parsed."""
    sqs = aws_client("sqs", url)
    bodies: list[dict[str, Any]] = []

    def arrived() -> bool:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        for message in answer.get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return len(bodies) >= count

    await until(arrived, timeout=20, interval_s=0.1)
    return bodies


async def checkpoint(broker: Broker, uuid: str, shard_id: str) -> str | None:
    raw = await broker.redis.hget(broker.keys.mapping_checkpoint(uuid), shard_id)
    return None if raw is None else raw.decode()


async def stats(broker: Broker, uuid: str) -> dict[str, int]:
    raw = await broker.redis.hgetall(broker.keys.mapping_stats(uuid))
    return {k.decode(): int(v) for k, v in raw.items()}


async def equals(value: Any, expected: Any) -> bool:
    """For ``until``: the awaited ``value`` is ``expected``."""
    return bool(await value == expected)


async def stream_broker(
    make_broker: BrokerFactory, function: StreamFunction, **extra: Any
) -> Broker:
    """A broker with its pollers on and :data:`FUNCTION` served by ``function``."""
    broker = await make_broker(**{**STREAM_BROKER_SETTINGS, **extra})
    await broker.put_function(FUNCTION, function.server.url, timeout_s=2)
    return broker


async def map_source(broker: Broker, arn: str, **fields: Any) -> str:
    """A mapping of ``arn`` to :data:`FUNCTION` from TRIM_HORIZON (unless ``fields`` say);
    its UUID."""
    body = {"EventSourceArn": arn, "FunctionName": FUNCTION, "StartingPosition": "TRIM_HORIZON"}
    return str((await broker.mappings.create({**body, **fields}))["UUID"])


# -- the two sources --------------------------------------------------------------------------


class Source(Protocol):
    """A stream in moto as the tests shared by Kinesis and DynamoDB Streams see it. Bodies
    are strings; ``data(record)`` gives one back from a record Lambda would be invoked with."""

    arn: str
    shard_id: str  # the shard the records go to
    batch_info_key: str  # the on-failure record's field for the batch
    arrival_pattern: str  # an arrival time in the on-failure record (regex)

    def put(self, *bodies: str, key: str = ...) -> list[str]:
        """One record per body, in order, under the partition or item key ``key``; their
        sequence numbers."""
        ...

    def another(self) -> Source:
        """A second stream of the same kind."""
        ...

    def stored(self) -> list[tuple[str, str]]:
        """Each record of the shard as moto holds it: (sequence number, arrival as the
        on-failure record writes it), oldest first."""
        ...

    def data(self, record: Record) -> Any: ...
    def sequence(self, record: Record) -> str: ...
    def key(self, record: Record) -> str: ...
    def arrival_text(self, record: Record) -> str: ...


def every_record(client: Any, **shard: str) -> list[dict[str, Any]]:
    """Every record of a shard as ``client`` (Kinesis or DynamoDB Streams: they page alike)
    gets it from moto, oldest first."""
    request = {**shard, "ShardIteratorType": "TRIM_HORIZON"}
    iterator = client.get_shard_iterator(**request)["ShardIterator"]
    found: list[dict[str, Any]] = []
    while True:
        page = client.get_records(ShardIterator=iterator)
        if not page["Records"]:
            return found
        found.extend(page["Records"])
        iterator = page["NextShardIterator"]


class Stream:
    """A Kinesis stream in moto, named per test."""

    batch_info_key = "KinesisBatchInfo"
    arrival_pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"  # milliseconds
    shard_id = KINESIS_SHARD

    def __init__(self, url: str, shards: int = 1) -> None:
        self.url = url
        self.client = aws_client("kinesis", url)
        self.name = f"clicks-{uuid4().hex[:8]}"
        self.client.create_stream(StreamName=self.name, ShardCount=shards)
        summary = self.client.describe_stream_summary(StreamName=self.name)
        self.arn: str = summary["StreamDescriptionSummary"]["StreamARN"]

    def put(self, *bodies: Any, key: str = "k", hash_key: str | None = None) -> list[str]:
        """One PutRecord per body (JSON), in order; their sequence numbers."""
        sequences = []
        for body in bodies:
            extra = {"ExplicitHashKey": hash_key} if hash_key else {}
            answer = self.client.put_record(
                StreamName=self.name, Data=json.dumps(body).encode(), PartitionKey=key, **extra
            )
            sequences.append(answer["SequenceNumber"])
        return sequences

    def shards(self) -> list[dict[str, Any]]:
        return list(self.client.list_shards(StreamName=self.name)["Shards"])

    def another(self) -> Stream:
        return Stream(self.url)

    def stored(self) -> list[tuple[str, str]]:
        found = []
        for raw in every_record(self.client, StreamName=self.name, ShardId=self.shard_id):
            # Lambda gives the arrival to the millisecond, rounded.
            arrival_s = round(raw["ApproximateArrivalTimestamp"].timestamp(), 3)
            found.append((raw["SequenceNumber"], iso_ms(arrival_s)))
        return found

    @staticmethod
    def data(record: Record) -> Any:
        return json.loads(base64.b64decode(record["kinesis"]["data"]))

    @staticmethod
    def sequence(record: Record) -> str:
        return str(record["kinesis"]["sequenceNumber"])

    @staticmethod
    def key(record: Record) -> str:
        return str(record["kinesis"]["partitionKey"])

    @staticmethod
    def arrival_text(record: Record) -> str:
        return iso_ms(record["kinesis"]["approximateArrivalTimestamp"])


def iso_s(moment: float | datetime) -> str:
    """Whole-second ISO-8601 of an epoch or of a datetime (as botocore parses a record)."""
    epoch_s = moment.timestamp() if isinstance(moment, datetime) else moment
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


class Table:
    """A DynamoDB table with a stream in moto, named per test. moto gives it one shard."""

    batch_info_key = "DDBStreamBatchInfo"
    arrival_pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"  # whole seconds

    def __init__(self, url: str, view: str = "NEW_AND_OLD_IMAGES") -> None:
        self.url = url
        self.client = aws_client("dynamodb", url)
        self.streams = aws_client("dynamodbstreams", url)
        self.name = f"carts-{uuid4().hex[:8]}"
        created = self.client.create_table(
            TableName=self.name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
        )
        self.arn: str = created["TableDescription"]["LatestStreamArn"]
        (shard,) = self.streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        self.shard_id: str = shard["ShardId"]

    def put(self, *values: str, key: str | None = None) -> list[str]:
        """One PutItem per value (``pk`` = ``key``, else the value itself; ``v`` = the
        value), in order; the sequence numbers of their stream records."""
        for value in values:
            item = {"pk": {"S": key if key is not None else value}, "v": {"S": value}}
            self.client.put_item(TableName=self.name, Item=item)
        written = self.sequences()
        return written[len(written) - len(values) :]

    def records(self) -> list[dict[str, Any]]:
        """Every record of the stream, as moto holds it, oldest first."""
        return every_record(self.streams, StreamArn=self.arn, ShardId=self.shard_id)

    def sequences(self) -> list[str]:
        return [r["dynamodb"]["SequenceNumber"] for r in self.records()]

    def another(self) -> Table:
        return Table(self.url)

    def stored(self) -> list[tuple[str, str]]:
        return [
            (r["dynamodb"]["SequenceNumber"], iso_s(r["dynamodb"]["ApproximateCreationDateTime"]))
            for r in self.records()
        ]

    @staticmethod
    def data(record: Record) -> str:
        """What a test wrote: the ``v`` attribute of the new image (else the old one)."""
        change = record["dynamodb"]
        image = change.get("NewImage") or change["OldImage"]
        return str(image["v"]["S"])

    @staticmethod
    def sequence(record: Record) -> str:
        return str(record["dynamodb"]["SequenceNumber"])

    @staticmethod
    def key(record: Record) -> str:
        return str(record["dynamodb"]["Keys"]["pk"]["S"])

    @staticmethod
    def arrival_text(record: Record) -> str:
        return iso_s(record["dynamodb"]["ApproximateCreationDateTime"])


def batch_info(source: Source, records: list[Record]) -> dict[str, Any]:
    """The on-failure record's batch info for these invoked records, in order."""
    return _batch_info(source, [(source.sequence(r), source.arrival_text(r)) for r in records])


def stored_batch_info(source: Source) -> dict[str, Any]:
    """The on-failure record's batch info for every record of the shard, as moto holds them."""
    return _batch_info(source, source.stored())


def _batch_info(source: Source, records: list[tuple[str, str]]) -> dict[str, Any]:
    (first, first_arrival), (last, last_arrival) = records[0], records[-1]
    return {
        "shardId": source.shard_id,
        "startSequenceNumber": first,
        "endSequenceNumber": last,
        "approximateArrivalOfFirstRecord": first_arrival,
        "approximateArrivalOfLastRecord": last_arrival,
        "batchSize": len(records),
        "streamArn": source.arn,
    }
