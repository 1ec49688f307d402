"""Kinesis event source mappings run by real `sluice serve` processes on a real redis-server,
reading a stream in moto's server: a kill -9 loses no record and re-delivers at most the
batch in flight, and two processes split a stream's shards, one taking over the shards of
a killed other within the lease TTL.

A producer ``Broker(dispatch=False)`` in the test registers the function (an HTTP server in
the test process following the Lambda Invoke contract, :class:`StreamFunction`) and the
mapping; the serve processes poll. Shard leases are short (``poller_lease_ttl_s`` 1.5 s),
so a killed process's shards come back within seconds.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker.core import Broker
from broker.keys import Keys
from tests.conftest import settings_for_tests
from tests.helpers import until
from tests.process_helpers import ServeLauncher
from tests.servers import RedisServer
from tests.stream_helpers import Stream, StreamFunction

pytestmark = pytest.mark.slow

TEST_CLIENT = "stream-process-test"  # our connections' name, to tell them from the serves'
LEASE_TTL_S = 1.5
REFRESH_S = 0.1
BATCH_SIZE = 5
SERVE_ENV = {
    "SLUICE_RUN_POLLERS": "true",
    "SLUICE_POLLER_REFRESH_S": str(REFRESH_S),
    "SLUICE_POLLER_LEASE_TTL_S": str(LEASE_TTL_S),
    "SLUICE_STREAM_READ_BLOCK_S": "0.1",
    "SLUICE_STREAM_POLL_INTERVAL_S": "0.05",
    "SLUICE_STREAM_RETRY_BACKOFF_S": "0.01",
    "SLUICE_STREAM_RETRY_BACKOFF_MAX_S": "0.05",
}


def hash_key(shard_index: int, shards: int) -> str:
    """An ExplicitHashKey inside shard ``shard_index`` of a stream of ``shards`` equal
    shards (moto splits the 128-bit hash range evenly)."""
    return str(shard_index * (2**128 // shards) + 1)


@pytest.fixture
def function() -> Iterator[StreamFunction]:
    # eventID (shardId:sequenceNumber) names a record across shards.
    fn = StreamFunction(
        sequence=lambda r: str(r["eventID"]), key=lambda r: str(r["kinesis"]["partitionKey"])
    )
    yield fn
    fn.server.stop()


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=redis_server.port, client_name=TEST_CLIENT)
    yield client
    await client.aclose()


@pytest.fixture
async def producer(
    aws: str, client: aioredis.Redis, function: StreamFunction
) -> AsyncIterator[Broker]:
    broker = Broker(settings_for_tests(), client, dispatch=False)
    await broker.start()
    await broker.put_function("clicks", function.server.url, timeout_s=2)
    yield broker
    await broker.stop()


@pytest.fixture
def serves(
    aws: str, redis_server: RedisServer, producer: Broker, tmp_path: Path
) -> Iterator[ServeLauncher]:
    launcher = ServeLauncher(
        redis_url=redis_server.url,
        key_prefix=producer.settings.key_prefix,
        log_dir=tmp_path,
        flags=["--worker-processes", "1"],  # the function is HTTP: no python workers needed
        env={
            **SERVE_ENV,
            "AWS_ENDPOINT_URL": aws,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    yield launcher
    launcher.close()


async def map_stream(producer: Broker, arn: str, **fields: Any) -> str:
    body = {"EventSourceArn": arn, "FunctionName": "clicks", "StartingPosition": "TRIM_HORIZON"}
    return str((await producer.mappings.create({**body, **fields}))["UUID"])


def put_spread(stream: Stream, shards: int, per_shard: int, label: str) -> dict[str, list[str]]:
    """``per_shard`` records into each shard; the eventIDs written, per shard id, in order."""
    ids = [s["ShardId"] for s in stream.shards()]
    assert len(ids) == shards
    written: dict[str, list[str]] = defaultdict(list)
    for n in range(per_shard):
        for index in range(shards):
            answer = stream.client.put_record(
                StreamName=stream.name,
                Data=f'"{label}-{index}-{n}"'.encode(),
                PartitionKey=f"k{index}",
                ExplicitHashKey=hash_key(index, shards),
            )
            written[answer["ShardId"]].append(f"{answer['ShardId']}:{answer['SequenceNumber']}")
    assert sorted(written) == sorted(ids)  # every shard got its records
    return dict(written)


def shard_of(event_id: str) -> str:
    return event_id.rsplit(":", 1)[0]


def per_shard(batches: list[list[str]]) -> dict[str, list[list[str]]]:
    """Batches (eventIDs) grouped by the shard they came from; a batch is from one shard."""
    grouped: dict[str, list[list[str]]] = defaultdict(list)
    for batch in batches:
        assert len({shard_of(e) for e in batch}) == 1, batch
        grouped[shard_of(batch[0])].append(batch)
    return grouped


async def serve_connections_closed(client: aioredis.Redis, since_id: int) -> bool:
    """No connection opened after client id ``since_id`` is left but ours: Redis has run
    every command a killed serve had sent before it died."""
    return all(
        c["name"] == TEST_CLIENT for c in await client.client_list() if int(c["id"]) > since_id
    )


async def checkpoints(client: aioredis.Redis, keys: Keys, uuid: str) -> dict[str, str]:
    raw = await client.hgetall(keys.mapping_checkpoint(uuid))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def shard_leases(
    client: aioredis.Redis, keys: Keys, uuid: str, shard_ids: list[str]
) -> dict[str, str | None]:
    """Shard id -> the token of the manager holding its lease (None: unowned)."""
    values = await client.mget([keys.shard_lease(uuid, s) for s in shard_ids])
    return {s: None if v is None else v.decode() for s, v in zip(shard_ids, values, strict=True)}


async def new_manager_token(client: aioredis.Redis, keys: Keys, known: set[str]) -> str:
    """The token of the one poller manager that joined beyond ``known``."""
    found: list[str] = []

    async def joined() -> bool:
        members = {m.decode() for m in await client.zrange(keys.poller_members, 0, -1)}
        found[:] = sorted(members - known)
        return len(found) == 1

    await until(joined, timeout=15, interval_s=0.02)
    return found[0]


async def test_a_killed_serve_loses_nothing_and_redelivers_at_most_the_batch_in_flight(
    aws: str,
    client: aioredis.Redis,
    producer: Broker,
    serves: ServeLauncher,
    function: StreamFunction,
) -> None:
    started = time.monotonic()
    keys = Keys(producer.settings.key_prefix)
    function.delay_s = 0.1
    stream = Stream(aws, shards=2)
    written = put_spread(stream, shards=2, per_shard=40, label="r")
    every = {e for ids in written.values() for e in ids}
    uuid = await map_stream(producer, stream.arn, BatchSize=BATCH_SIZE)

    before_serve = int(await client.client_id())
    first = await serves.start()

    def each_shard_invoked(times: int) -> bool:
        grouped = per_shard(function.batches())
        return all(len(grouped[s]) >= times for s in written)

    await until(lambda: each_shard_invoked(2), timeout=30, interval_s=0.01)
    first.kill_group()
    await first.wait_exit(10)
    await until(lambda: serve_connections_closed(client, before_serve), timeout=10)
    at_kill = await checkpoints(client, keys, uuid)
    # What the dead serve sent has arrived (calls are recorded when received): split here.
    calls_at_kill = len(function.server.calls)
    before = per_shard(function.batches()[:calls_at_kill])
    delivered_at_kill = {e for batches in before.values() for b in batches for e in b}
    # The kill landed mid-stream on every shard.
    assert all(not set(ids) <= delivered_at_kill for ids in written.values())

    await serves.start()
    # Done when every shard's checkpoint is at its last record (stored after its batch
    # returned, so every invocation has been recorded by then).

    async def read_to_the_end() -> bool:
        saved = await checkpoints(client, keys, uuid)
        return all(f"{s}:{saved.get(s)}" == ids[-1] for s, ids in written.items())

    await until(read_to_the_end, timeout=60, interval_s=0.05)

    after = per_shard(function.batches()[calls_at_kill:])
    counted = Counter(function.delivered())
    repeated = {e for e, n in counted.items() if n > 1}
    print(
        f"kill -9 after {calls_at_kill} invocations; checkpoints at kill {at_kill}; "
        f"re-delivered {len(repeated)}; {time.monotonic() - started:.1f} s"
    )
    assert set(counted) == every  # none lost, nothing foreign
    for shard_id, ids in written.items():
        saved = at_kill.get(shard_id)
        resume = 0 if saved is None else ids.index(f"{shard_id}:{saved}") + 1
        handed_before = [e for b in before[shard_id] for e in b]
        # Before the kill: everything up to the checkpoint, then at most the batch in flight
        # (invoked, its checkpoint not yet stored).
        assert handed_before[:resume] == ids[:resume]
        in_flight = handed_before[resume:]
        assert len(in_flight) <= BATCH_SIZE, (shard_id, in_flight)
        assert in_flight == ids[resume : resume + len(in_flight)]
        # After: exactly once each, in order, from right after the stored checkpoint.
        assert [e for b in after[shard_id] for e in b] == ids[resume:]
        assert {e for e in repeated if shard_of(e) == shard_id} == set(in_flight)
    assert len(repeated) <= BATCH_SIZE * len(written)


async def test_two_serve_processes_split_shards_and_one_takes_over_from_a_killed_other(
    aws: str,
    client: aioredis.Redis,
    producer: Broker,
    serves: ServeLauncher,
    function: StreamFunction,
) -> None:
    started = time.monotonic()
    keys = Keys(producer.settings.key_prefix)
    stream = Stream(aws, shards=4)
    shard_ids = [s["ShardId"] for s in stream.shards()]
    uuid = await map_stream(producer, stream.arn)

    first = await serves.start()
    first_token = await new_manager_token(client, keys, set())
    second = await serves.start()
    second_token = await new_manager_token(client, keys, {first_token})

    async def held() -> Counter[str | None]:
        return Counter((await shard_leases(client, keys, uuid, shard_ids)).values())

    async def split_evenly() -> bool:
        return await held() == Counter({first_token: 2, second_token: 2})

    await until(split_evenly, timeout=15, interval_s=0.02)
    # Both read what they hold.
    before = put_spread(stream, shards=4, per_shard=2, label="before")
    await until(lambda: {e for ids in before.values() for e in ids} <= set(function.delivered()))

    first.kill_group()
    killed_at = time.monotonic()
    await first.wait_exit(10)

    async def second_holds_all() -> bool:
        return await held() == Counter({second_token: 4})

    # The dead one's leases and heartbeat lapse within the TTL; the next refresh takes them.
    await until(second_holds_all, timeout=LEASE_TTL_S + REFRESH_S + 1.5, interval_s=0.02)
    takeover_s = time.monotonic() - killed_at
    assert second.process.poll() is None

    after = put_spread(stream, shards=4, per_shard=3, label="after")
    wanted = {e for ids in after.values() for e in ids}
    await until(lambda: wanted <= set(function.delivered()), timeout=30)
    delivered = Counter(function.delivered())
    print(
        f"takeover {takeover_s:.2f} s after the kill (TTL {LEASE_TTL_S} s); "
        f"{time.monotonic() - started:.1f} s"
    )
    assert {shard_of(e) for e in wanted} == set(shard_ids)
    assert all(delivered[e] == 1 for e in wanted)  # the survivor alone read them, once
