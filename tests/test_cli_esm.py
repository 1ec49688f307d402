"""``sluice esm``: list, get, enable, disable and reset-checkpoint against a real redis-server,
through typer's runner (in a thread: the command runs its own event loop) and the installed
``sluice``; one end-to-end reset with a running redis-stream poller."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner, Result

from broker import Broker, ManualClock, checkpoint_reset
from broker.cli import app
from broker.mappings import SourceKind
from pollers import redis_streams, shards, stream_decisions
from pollers.aws_shards import TRIM_HORIZON, Position
from pollers.core import PollerSettings
from pollers.dynamodb_streams import DynamoDbStreamReader, DynamoDbStreamSource
from pollers.kinesis import KinesisReader, KinesisSource
from pollers.stream_decisions import ShardDesc
from tests.conftest import BrokerFactory
from tests.helpers import run_installed_sluice, until
from tests.servers import LambdaHttpFunction, RedisServer, ok

OK = "python:tests.handlers.async_handlers:ok"
SQS = "arn:aws:sqs:us-east-1:000000000000:orders"
KINESIS = "arn:aws:kinesis:us-east-1:000000000000:stream/orders"
DYNAMODB = "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2025-03-04T00:00:00.000"
STREAM = "clicks"
REDIS_STREAM = f"redis-stream:{STREAM}"
SHARD = "shardId-000000000000"
SHARD_1 = "shardId-000000000001"
MAX_SEQ = 2**64 - 1
SOURCES = {"kinesis": KINESIS, "dynamodb": DYNAMODB, "redis-stream": REDIS_STREAM}


@pytest.fixture
async def broker(make_broker: BrokerFactory) -> Broker:
    broker = await make_broker(dispatch=False, check_event_sources=False)
    await broker.put_function("orders", OK)
    await broker.put_function("clicks", OK)
    return broker


async def sluice(
    broker: Broker, redis_server: RedisServer, *args: str, input: str | None = None
) -> Result:
    """``sluice ARGS`` on the broker's Redis and key prefix, in a thread."""
    where = ["--redis-url", redis_server.url, "--key-prefix", broker.settings.key_prefix]
    return await asyncio.to_thread(CliRunner().invoke, app, [*args, *where], input=input)


async def create(broker: Broker, source: str, function: str = "orders", **fields: Any) -> str:
    body: dict[str, Any] = {"EventSourceArn": source, "FunctionName": function, **fields}
    if source != SQS:
        body.setdefault("StartingPosition", "TRIM_HORIZON")
    mapping = await broker.mappings.create(body)
    await broker.mappings.get(mapping["UUID"])  # settled: Enabled or Disabled
    return str(mapping["UUID"])


async def read_hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in (await client.hgetall(key)).items()}


async def redis_ms(client: aioredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def row(output: str, uuid: str) -> list[str]:
    """The cells of the table row that starts with ``uuid``."""
    (line,) = [line for line in output.splitlines() if uuid in line]
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


# -- list, get --------------------------------------------------------------------------------


async def test_list_table_has_a_row_per_mapping_with_its_counters(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    queue = await create(broker, SQS)
    stream = await create(broker, REDIS_STREAM, "clicks", Enabled=False, BatchSize=7)
    stats = {"polled": 12, "filtered_out": 2, "invoked": 4, "failed": 1}
    await redis_client.hset(broker.keys.mapping_stats(stream), mapping=stats)
    result = await sluice(broker, redis_server, "esm", "list")
    assert result.exit_code == 0, result.output
    assert row(result.stdout, queue)[1:5] == ["orders", SQS, "Enabled", "10"]
    assert row(result.stdout, queue)[-4:] == ["0", "0", "0", "0"]
    assert row(result.stdout, stream) == [
        stream,
        "clicks",
        REDIS_STREAM,
        "Disabled",
        "7",
        "PROBLEM: no poller for this source type yet",  # no poller in this broker
        "12",
        "2",
        "4",
        "1",
    ]


async def test_list_json_is_list_shape_with_stats_and_filters_by_function(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    await create(broker, SQS)
    stream = await create(broker, REDIS_STREAM, "clicks")
    await redis_client.hset(broker.keys.mapping_stats(stream), mapping={"invoked": 3})
    result = await sluice(broker, redis_server, "esm", "list", "--function", "clicks", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["EventSourceMappings"]
    expected = (await broker.mappings.list(function_name="clicks"))["EventSourceMappings"][0]
    assert entry == {**expected, "Stats": {"invoked": 3}}


async def test_get_json_is_the_api_answer_with_checkpoints_pin_and_stats(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, KINESIS, StartingPosition="LATEST")
    checkpoints = {
        SHARD: "49590338271490256608559692538361571095921575989136588898",
        "@latest": "5",
    }
    await redis_client.hset(broker.keys.mapping_checkpoint(uuid), mapping=checkpoints)
    await redis_client.hset(broker.keys.mapping_stats(uuid), mapping={"polled": 9})
    result = await sluice(broker, redis_server, "esm", "get", uuid, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        **(await broker.mappings.get(uuid)),
        "Checkpoints": {SHARD: checkpoints[SHARD]},
        "LatestPinMs": 5,
        "Stats": {"polled": 9},
    }


async def test_get_table_shows_fields_checkpoints_and_stats(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, REDIS_STREAM, "clicks")
    await redis_client.hset(broker.keys.mapping_checkpoint(uuid), SHARD, "17-3")
    await redis_client.hset(broker.keys.mapping_stats(uuid), mapping={"invoked": 2})
    result = await sluice(broker, redis_server, "esm", "get", uuid)
    assert result.exit_code == 0, result.output
    assert row(result.stdout, "EventSourceArn") == ["EventSourceArn", REDIS_STREAM]
    assert row(result.stdout, "StartingPosition") == ["StartingPosition", "TRIM_HORIZON"]
    assert row(result.stdout, SHARD) == [SHARD, "17-3"]
    assert row(result.stdout, "invoked") == ["invoked", "2"]


@pytest.mark.parametrize(
    "command",
    [["get"], ["enable"], ["disable"], ["reset-checkpoint", "--trim-horizon", "--yes"]],
    ids=lambda c: c[0],
)
async def test_unknown_uuid_is_aws_not_found_on_stderr_with_status_1(
    broker: Broker, redis_server: RedisServer, command: list[str]
) -> None:
    result = await sluice(broker, redis_server, "esm", command[0], "no-such-uuid", *command[1:])
    assert result.exit_code == 1
    assert result.stderr == (
        "ResourceNotFoundException: The resource you requested does not exist.\n"
    )
    assert result.stdout == ""


def test_commands_need_a_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["esm", "list"])
    assert result.exit_code == 2
    assert "--redis-url" in result.stderr


# -- enable, disable --------------------------------------------------------------------------


async def test_disable_and_enable_round_trip_through_update(
    broker: Broker, redis_server: RedisServer
) -> None:
    uuid = await create(broker, SQS)
    result = await sluice(broker, redis_server, "esm", "disable", uuid)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{uuid}: Disabled (was Enabled)\n"
    mapping = await broker.mappings.get(uuid)
    assert (mapping["State"], mapping["StateTransitionReason"]) == ("Disabled", "USER_INITIATED")
    result = await sluice(broker, redis_server, "esm", "enable", uuid, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["State"] == "Enabled"
    assert (await broker.mappings.get(uuid))["State"] == "Enabled"


# -- reset-checkpoint -------------------------------------------------------------------------


async def seed(
    broker: Broker, client: aioredis.Redis, uuid: str, checkpoints: dict[str, str]
) -> None:
    """Checkpoints and open windows as a poller leaves them."""
    if not checkpoints:
        return
    await client.hset(broker.keys.mapping_checkpoint(uuid), mapping=checkpoints)
    windows = {shard: '{"start": 1, "state": {}}' for shard in checkpoints if shard != "@latest"}
    await client.hset(broker.keys.mapping_windows(uuid), mapping=windows)


async def test_reset_is_refused_while_the_mapping_is_enabled(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, REDIS_STREAM, "clicks")
    await seed(broker, redis_client, uuid, {SHARD: "5-0"})
    result = await sluice(broker, redis_server, "esm", "reset-checkpoint", uuid, "--trim-horizon")
    assert result.exit_code == 2
    assert f"{uuid} is Enabled" in result.stderr
    assert f"sluice esm disable {uuid}" in result.stderr
    assert await read_hash(redis_client, broker.keys.mapping_checkpoint(uuid)) == {SHARD: "5-0"}


async def test_reset_is_refused_while_a_serve_process_holds_a_lease(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, KINESIS, Enabled=False)
    await seed(broker, redis_client, uuid, {SHARD: "111"})
    await redis_client.set(broker.keys.shard_lease(uuid, SHARD), "token", px=60_000)
    result = await sluice(
        broker, redis_server, "esm", "reset-checkpoint", uuid, "--trim-horizon", "--yes"
    )
    assert result.exit_code == 2
    assert "still holds" in result.stderr
    assert await read_hash(redis_client, broker.keys.mapping_checkpoint(uuid)) == {SHARD: "111"}


async def test_reset_is_refused_for_a_queue_source(
    broker: Broker, redis_server: RedisServer
) -> None:
    uuid = await create(broker, SQS, Enabled=False)
    result = await sluice(broker, redis_server, "esm", "reset-checkpoint", uuid, "--latest")
    assert result.exit_code == 2
    assert "not a stream" in result.stderr


@pytest.mark.parametrize(
    "options", [[], ["--latest", "--trim-horizon"], ["--timestamp", "yesterday"]]
)
async def test_reset_needs_exactly_one_valid_position(
    broker: Broker, redis_server: RedisServer, options: list[str]
) -> None:
    uuid = await create(broker, KINESIS, Enabled=False)
    result = await sluice(broker, redis_server, "esm", "reset-checkpoint", uuid, *options)
    assert result.exit_code == 2


ISO = "2025-03-04T10:11:12.345+00:00"
ISO_MS = 1_741_083_072_345
# (source, options, checkpoint before, checkpoint after; NOW: the Redis time of the reset)
NOW = "<now>"
CASES: list[tuple[str, list[str], dict[str, str], dict[str, str]]] = [
    (
        "kinesis",
        ["--trim-horizon"],
        {SHARD: "SHARD_END", SHARD_1: "222"},
        {SHARD: "TRIM_HORIZON", SHARD_1: "TRIM_HORIZON"},
    ),
    (
        "kinesis",
        ["--latest"],
        {SHARD: "SHARD_END", SHARD_1: "222", "@latest": "5"},
        {SHARD: "SHARD_END", SHARD_1: f"AT_TIMESTAMP:{NOW}", "@latest": NOW},
    ),
    (
        "kinesis",
        ["--timestamp", ISO],
        {SHARD: "111", SHARD_1: "222"},
        {SHARD: f"AT_TIMESTAMP:{ISO_MS}", SHARD_1: f"AT_TIMESTAMP:{ISO_MS}"},
    ),
    (
        "kinesis",
        ["--sequence", "150", "--shard", SHARD_1],
        {SHARD: "111", SHARD_1: "222"},
        {SHARD: "111", SHARD_1: "150"},
    ),
    ("dynamodb", ["--trim-horizon"], {SHARD: "300"}, {SHARD: "TRIM_HORIZON"}),
    ("dynamodb", ["--latest"], {SHARD: "300"}, {SHARD: f"AFTER_TIME:{NOW}"}),
    (
        "dynamodb",
        ["--timestamp", str(ISO_MS / 1000)],
        {SHARD: "300"},
        {SHARD: f"AFTER_TIME:{ISO_MS}"},
    ),
    ("redis-stream", ["--trim-horizon"], {SHARD: "9-0"}, {SHARD: "0-0"}),
    ("redis-stream", ["--latest"], {SHARD: "9-0"}, {SHARD: "12-1"}),
    (
        "redis-stream",
        ["--timestamp", "2025-03-04T10:11:12.345"],  # no offset: UTC
        {},
        {SHARD: f"{ISO_MS - 1}-{MAX_SEQ}"},
    ),
    ("redis-stream", ["--sequence", "10-0"], {SHARD: "12-1"}, {SHARD: "10-0"}),
]


@pytest.mark.parametrize(("source", "options", "before", "after"), CASES)
async def test_each_position_is_written_as_its_reader_expects_and_windows_go(
    broker: Broker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    source: str,
    options: list[str],
    before: dict[str, str],
    after: dict[str, str],
) -> None:
    uuid = await create(broker, SOURCES[source], Enabled=False)
    await seed(broker, redis_client, uuid, before)
    await redis_client.xadd(STREAM, {"data": "a"}, id="12-0")
    await redis_client.xadd(STREAM, {"data": "b"}, id="12-1")
    start_ms = await redis_ms(redis_client)
    result = await sluice(broker, redis_server, "esm", "reset-checkpoint", uuid, *options, "-y")
    end_ms = await redis_ms(redis_client)
    assert result.exit_code == 0, result.output
    written = await read_hash(redis_client, broker.keys.mapping_checkpoint(uuid))
    for shard, value in after.items():
        if NOW in value:
            prefix = value.removesuffix(NOW)
            assert written[shard].startswith(prefix)
            assert start_ms <= int(written[shard].removeprefix(prefix)) <= end_ms
            written[shard] = value
    assert written == after
    windows = await read_hash(redis_client, broker.keys.mapping_windows(uuid))
    untouched = {s for s in before if s != "@latest" and after.get(s) == before[s]}
    assert set(windows) == untouched


async def test_a_sequence_needs_a_shard_when_there_are_several(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, KINESIS, Enabled=False)
    await seed(broker, redis_client, uuid, {SHARD: "111", SHARD_1: "222"})
    result = await sluice(
        broker, redis_server, "esm", "reset-checkpoint", uuid, "--sequence", "5", "--yes"
    )
    assert result.exit_code == 2
    assert "--shard" in result.stderr


async def test_declined_prompt_changes_nothing(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, KINESIS, Enabled=False)
    await seed(broker, redis_client, uuid, {SHARD: "111"})
    result = await sluice(
        broker, redis_server, "esm", "reset-checkpoint", uuid, "--trim-horizon", input="n\n"
    )
    assert result.exit_code == 1
    assert f"{SHARD}: 111 -> TRIM_HORIZON" in result.stdout
    assert f"Reset 1 checkpoint(s) of {uuid} ({KINESIS})? [y/N]" in result.stdout
    assert "nothing changed" in result.stderr
    assert await read_hash(redis_client, broker.keys.mapping_checkpoint(uuid)) == {SHARD: "111"}
    assert set(await read_hash(redis_client, broker.keys.mapping_windows(uuid))) == {SHARD}


async def test_confirmed_prompt_resets(
    broker: Broker, redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    uuid = await create(broker, KINESIS, Enabled=False)
    await seed(broker, redis_client, uuid, {SHARD: "111"})
    result = await sluice(
        broker, redis_server, "esm", "reset-checkpoint", uuid, "--trim-horizon", input="y\n"
    )
    assert result.exit_code == 0, result.output
    checkpoints = await read_hash(redis_client, broker.keys.mapping_checkpoint(uuid))
    assert checkpoints == {SHARD: "TRIM_HORIZON"}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown()


@pytest.mark.parametrize(
    ("source", "marker", "expected"),
    [
        ("kinesis", "TRIM_HORIZON", TRIM_HORIZON),
        ("kinesis", f"AT_TIMESTAMP:{ISO_MS}", Position("AT_TIMESTAMP", timestamp_ms=ISO_MS)),
        ("kinesis", "150", Position("AFTER_SEQUENCE_NUMBER", sequence="150")),
        ("dynamodb", "TRIM_HORIZON", TRIM_HORIZON),
        ("dynamodb", f"AFTER_TIME:{ISO_MS}", TRIM_HORIZON),  # and records before it skipped
    ],
)
async def test_aws_markers_are_positions_the_shard_readers_seek_to(
    broker: Broker, executor: ThreadPoolExecutor, source: str, marker: str, expected: Position
) -> None:
    uuid = await create(broker, SOURCES[source], Enabled=False)
    mapping = await broker.mappings.mapping(uuid)
    cls = KinesisSource if source == "kinesis" else DynamoDbStreamSource
    reader = cls(mapping, PollerSettings(), executor).reader(ShardDesc(SHARD, (), None))
    assert await reader.seek(marker) is None  # nothing new to save: the marker stays
    assert reader._position == expected
    if marker.startswith("AFTER_TIME:"):
        assert reader._not_before_s == ISO_MS // 1000


def test_checkpoint_vocabulary_is_the_pollers_own() -> None:
    assert TRIM_HORIZON.kind == checkpoint_reset.TRIM_HORIZON
    assert checkpoint_reset.SHARD_END == stream_decisions.SHARD_END
    assert checkpoint_reset.PIN_FIELD == shards.PIN_FIELD
    assert checkpoint_reset.REDIS_STREAM_SHARD == redis_streams.SHARD_ID
    assert {
        SourceKind.KINESIS: KinesisReader.pin_prefix,
        SourceKind.DYNAMODB: DynamoDbStreamReader.pin_prefix,
    } == checkpoint_reset.PIN_PREFIXES


@pytest.mark.parametrize(
    ("kind", "timestamp_s", "last_id"),
    [
        ("TRIM_HORIZON", None, None),
        ("LATEST", None, "12-1"),
        ("LATEST", None, None),
        ("AT_TIMESTAMP", ISO_MS / 1000, None),
        ("AT_TIMESTAMP", 1_741_083_072.3451, None),
        ("AT_TIMESTAMP", 0.0005, None),
        ("AT_TIMESTAMP", 0.0, None),
    ],
)
def test_redis_stream_positions_are_where_a_first_start_would_begin(
    kind: checkpoint_reset.PositionKind, timestamp_s: float | None, last_id: str | None
) -> None:
    position = checkpoint_reset.Position(kind, timestamp_s=timestamp_s)
    written = checkpoint_reset.checkpoint_value(
        SourceKind.REDIS_STREAM, position, now_ms=1, last_id=last_id
    )
    assert written == redis_streams.start_after(kind, timestamp_s, last_id)


# -- end to end -------------------------------------------------------------------------------


@pytest.fixture
def clicks_function() -> Iterator[LambdaHttpFunction]:
    function = LambdaHttpFunction(lambda _event, _headers: ok()).start()
    yield function
    function.stop()


@pytest.fixture
async def polling_broker(
    make_broker: BrokerFactory, clock: ManualClock, clicks_function: LambdaHttpFunction
) -> AsyncIterator[Broker]:
    clock.set(time.time())  # entry ids are Redis's own (XADD *): records are not from the future
    broker = await make_broker(
        run_pollers=True,
        poller_refresh_s=0.1,
        poller_lease_ttl_s=5,
        stream_read_block_s=0.1,
    )
    await broker.put_function("clicks", clicks_function.url, timeout_s=2)
    yield broker


def delivered(function: LambdaHttpFunction) -> list[str]:
    return [r["redisStream"]["entryId"] for _, event, _ in function.calls for r in event["Records"]]


async def test_disable_reset_to_trim_horizon_enable_delivers_the_stream_again(
    polling_broker: Broker,
    redis_server: RedisServer,
    redis_client: aioredis.Redis,
    clicks_function: LambdaHttpFunction,
) -> None:
    broker = polling_broker
    ids = [(await redis_client.xadd(STREAM, {"data": str(n)})).decode() for n in range(3)]
    uuid = await create(broker, REDIS_STREAM, "clicks")
    await until(lambda: delivered(clicks_function) == ids)
    checkpoint_key = broker.keys.mapping_checkpoint(uuid)
    await until(lambda: read_hash(redis_client, checkpoint_key), timeout=10)
    assert (await read_hash(redis_client, checkpoint_key))[SHARD] == ids[-1]

    assert (await sluice(broker, redis_server, "esm", "disable", uuid)).exit_code == 0
    # The poller finishes and lets go of its lease within a refresh or two.
    await until(lambda: _no_lease(redis_client, broker.keys.mapping_lease(uuid)))
    reset = await sluice(
        broker, redis_server, "esm", "reset-checkpoint", uuid, "--trim-horizon", "--yes"
    )
    assert reset.exit_code == 0, reset.output
    assert await read_hash(redis_client, checkpoint_key) == {SHARD: "0-0"}
    assert delivered(clicks_function) == ids  # nothing read while disabled

    assert (await sluice(broker, redis_server, "esm", "enable", uuid)).exit_code == 0
    await until(lambda: delivered(clicks_function) == ids + ids)
    await until(lambda: _checkpoint_is(redis_client, checkpoint_key, ids[-1]))


async def _no_lease(client: aioredis.Redis, key: str) -> bool:
    return not await client.exists(key)


async def _checkpoint_is(client: aioredis.Redis, key: str, value: str) -> bool:
    return (await read_hash(client, key)).get(SHARD) == value


# -- the installed command --------------------------------------------------------------------


async def test_installed_sluice_lists_mappings_as_json(
    broker: Broker, redis_server: RedisServer
) -> None:
    uuid = await create(broker, REDIS_STREAM, "clicks")
    env = {
        **os.environ,
        "SLUICE_REDIS_URL": redis_server.url,
        "SLUICE_KEY_PREFIX": broker.settings.key_prefix,
    }
    done = await run_installed_sluice("esm", "list", "--json", env=env)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(done.stdout)["EventSourceMappings"]
    assert (entry["UUID"], entry["EventSourceArn"], entry["State"]) == (
        uuid,
        REDIS_STREAM,
        "Enabled",
    )
    assert entry["Stats"] == {}
