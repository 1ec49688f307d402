"""``sluice dlq replay --from-sqs ARN`` against moto's server and a real redis-server.

Lambda dead letters and ``OnFailure`` records are made by real failures (a function with a
``DeadLetterConfig`` or an ``OnFailure`` destination on the queue); the command runs through
typer's runner and, once, called directly. :class:`SqsReplay` is driven by hand to simulate a
crash between storing and deleting and to pace on a fake clock; the planning is pure and
tested with tables."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
import redis.asyncio as aioredis
import typer
from typer.testing import CliRunner, Result

from broker import Broker, ManualClock
from broker.arns import parse_function_name
from broker.cli import app
from broker.cli_sqs import Queue, Sqs
from broker.models import FunctionConfig
from broker.pacing import Pacer
from broker.replay import Replayer
from broker.settings import Settings
from broker.sqs_messages import plan_message, sqs_replay_request_id
from broker.sqs_replay import SqsReplay, replay_from_sqs_command
from tests.conftest import BrokerFactory, settings_for_tests
from tests.helpers import FakeTime, stream_records, until
from tests.servers import RedisServer
from tests.test_cli_sqs import depth, make_queue, sqs

__all__ = ["sqs"]  # the fixture, shared with tests/test_cli_sqs.py

H = "python:tests.handlers.async_handlers"
RAN = "sqs-replayed"  # OnSuccess stream of the functions the replayed events run
LAMBDA = "arn:aws:lambda:us-east-1:000000000000:function"


ENTRY = pytest.mark.parametrize("cli", [False, True], ids=["direct", "cli"])


@dataclass
class Setup:
    """A queue, the Redis the command works on, and a broker on it that dispatches nothing
    (for putting functions and reading queues)."""

    sqs: Any
    url: str  # the queue's
    arn: str
    redis_url: str
    broker: Broker

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[1]

    @property
    def prefix(self) -> str:
        return self.broker.settings.key_prefix

    def depth(self) -> tuple[int, int]:
        """(visible, in flight) messages of the queue."""
        return depth(self.sqs, self.url)

    def send(self, body: str, request_id: str | None = None) -> str:
        """A message as Lambda's dead-letter path sends it (spec §6), or a plain one."""
        attributes = {}
        if request_id is not None:
            attributes = {
                "RequestID": {"DataType": "String", "StringValue": request_id},
                "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                "ErrorMessage": {"DataType": "String", "StringValue": "boom"},
            }
        answer = self.sqs.send_message(
            QueueUrl=self.url, MessageBody=body, MessageAttributes=attributes
        )
        return str(answer["MessageId"])

    async def queued(self, function: str) -> list[dict[str, Any]]:
        """The envelopes waiting in a function's queue."""
        raw = await self.broker.redis.hvals(self.broker.keys.for_function(function).events)
        return [json.loads(r) for r in raw]

    async def received(self, function: str) -> int:
        return (await self.broker.stats(function)).get("AsyncEventsReceived", 0)


@pytest.fixture
async def dlq(sqs: Any, make_broker: BrokerFactory, redis_server: RedisServer) -> Setup:
    url, arn = make_queue(sqs, "orders-dlq")
    broker = await make_broker(dispatch=False)
    return Setup(sqs, url, arn, redis_server.url, broker)


direct = typer.Typer(add_completion=False)


@direct.command()
def _direct(
    queue_arn: str,
    to: str | None = None,
    dry_run: bool = False,
    rate: float | None = None,
    max_messages: Annotated[int | None, typer.Option("--max")] = None,
    yes: bool = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
    redis_url: str = "",
    key_prefix: str = "",
) -> None:
    """:func:`replay_from_sqs_command` called directly, with settings as the CLI makes them."""
    settings = Settings.load(redis_url=redis_url, key_prefix=key_prefix)
    replay_from_sqs_command(
        settings,
        queue_arn,
        to=to,
        dry_run=dry_run,
        rate=rate,
        max_messages=max_messages,
        yes=yes,
        json_output=json_output,
    )


async def sluice(
    dlq: Setup, *args: str, stdin: str | None = None, cli: bool = False, **env: str
) -> Result:
    """``sluice dlq replay --from-sqs QUEUE ARGS`` through typer's runner, in a thread: the
    real command with ``cli``, else the function it calls, called directly."""
    argv = [*(["dlq", "replay", "--from-sqs"] if cli else []), dlq.arn, *args]
    argv += ["--redis-url", dlq.redis_url, "--key-prefix", dlq.prefix]
    return await asyncio.to_thread(
        CliRunner().invoke,
        app if cli else direct,
        argv,
        input=stdin,
        env={"COLUMNS": "400", **env},
        catch_exceptions=False,
    )


async def replay_json(dlq: Setup, *args: str, cli: bool = False, **env: str) -> dict[str, Any]:
    result = await sluice(dlq, "--yes", "--json", *args, cli=cli, **env)
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


async def snapshot(client: aioredis.Redis) -> dict[Any, Any]:
    return {key: await client.dump(key) for key in sorted(await client.keys("*"))}


async def working(make_broker: BrokerFactory, dlq: Setup, name: str) -> Broker:
    """``name`` now succeeds and reports to a stream; a broker runs its events."""
    await dlq.broker.put_function(name, f"{H}:ok", dead_letter_target=dlq.arn)
    await dlq.broker.put_event_invoke_config(
        name, {"DestinationConfig": {"OnSuccess": {"Destination": f"redis-stream:{RAN}"}}}
    )
    return await make_broker(key_prefix=dlq.prefix)


# -- what messages become ----------------------------------------------------------------------
@ENTRY
async def test_dead_letters_become_events_of_the_function_whose_dlq_it_is_and_run(
    dlq: Setup, make_broker: BrokerFactory, cli: bool
) -> None:
    failing = await make_broker(key_prefix=dlq.prefix)
    await failing.put_function("orders", f"{H}:fail", dead_letter_target=dlq.arn)
    await failing.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    originals = {await failing.invoke_async("orders", {"n": n}) for n in (1, 2)}
    await until(lambda: dlq.depth() == (2, 0))
    await failing.stop()  # nothing runs while the command does

    record = await replay_json(dlq, cli=cli)
    assert (record["status"], record["stored"], record["skipped"]) == ("finished", 2, 0)
    assert record["routes"] == {f"sqs:{dlq.name} -> orders": 2}
    assert {link["replayOf"] for link in record["links"]} == originals
    new_ids = {link["requestId"] for link in record["links"]}
    assert new_ids == {
        sqs_replay_request_id("orders", dlq.arn, link["messageId"]) for link in record["links"]
    }
    events = await dlq.queued("orders")
    assert {e["request_id"] for e in events} == new_ids
    assert sorted(json.loads(e["payload"])["n"] for e in events) == [1, 2]
    assert dlq.depth() == (0, 0)

    await working(make_broker, dlq, "orders")
    await until(lambda: _stream_has(dlq, 2))
    records = await stream_records(dlq.broker.redis, RAN)
    assert sorted(r["requestPayload"]["n"] for r in records) == [1, 2]
    assert {r["requestContext"]["requestId"] for r in records} == new_ids


async def _stream_has(dlq: Setup, n: int) -> bool:
    return int(await dlq.broker.redis.xlen(RAN)) >= n


async def test_on_failure_records_become_events_of_their_function_and_qualifier(
    dlq: Setup, make_broker: BrokerFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Called directly, as ``dlq replay`` calls it."""
    failing = await make_broker(key_prefix=dlq.prefix)
    await failing.put_function("billing", f"{H}:fail", aliases={"live": "$LATEST"})
    on_failure = {"OnFailure": {"Destination": dlq.arn}}
    await failing.put_event_invoke_config(
        "billing", {"MaximumRetryAttempts": 0, "DestinationConfig": on_failure}, qualifier="live"
    )
    original = await failing.invoke_async("billing", {"order": "A-1002"}, qualifier="live")
    await until(lambda: dlq.depth() == (1, 0))
    await failing.stop()

    settings = settings_for_tests(redis_url=dlq.redis_url, key_prefix=dlq.prefix)
    capsys.readouterr()  # the brokers' log lines
    await asyncio.to_thread(
        replay_from_sqs_command,
        settings,
        dlq.arn,
        to=None,
        dry_run=False,
        rate=None,
        max_messages=None,
        yes=True,
        json_output=True,
    )
    record = json.loads(capsys.readouterr().out)
    assert record["routes"] == {f"sqs:{dlq.name} -> billing": 1}
    assert [link["replayOf"] for link in record["links"]] == [original]
    (event,) = await dlq.queued("billing")
    assert json.loads(event["payload"]) == {"order": "A-1002"}
    assert (event["qualifier"], event["function_arn"]) == ("live", f"{LAMBDA}:billing:live")
    assert dlq.depth() == (0, 0)


async def test_to_replays_into_the_named_function_and_qualifier(dlq: Setup) -> None:
    await dlq.broker.put_function("audit", f"{H}:ok", aliases={"live": "$LATEST"})
    dlq.send('{"n": 1}', "r-1")
    dlq.send('{"n": 2}', "r-2")
    record = await replay_json(dlq, "--to", "audit:live")
    assert record["selection"] == {"fromSqs": dlq.arn, "to": "audit:live"}
    assert record["routes"] == {f"sqs:{dlq.name} -> audit": 2}
    events = await dlq.queued("audit")
    assert sorted(json.loads(e["payload"])["n"] for e in events) == [1, 2]
    assert {e["function_arn"] for e in events} == {f"{LAMBDA}:audit:live"}
    assert dlq.depth() == (0, 0)


@pytest.mark.parametrize("owners", [0, 2])
async def test_without_a_single_function_for_the_queue_messages_are_skipped_and_kept(
    dlq: Setup, owners: int
) -> None:
    for n in range(owners):
        await dlq.broker.put_function(f"f{n}", f"{H}:ok", dead_letter_target=dlq.arn)
    message = dlq.send('{"n": 1}', "r-1")
    result = await sluice(dlq, "--yes")
    assert result.exit_code == 0, result.output
    assert "1 matched: skipped 1" in result.stdout
    reason = (
        f"no function has {dlq.name} as its DeadLetterConfig target; add --to"
        if owners == 0
        else "several functions use this queue as their DLQ: f0, f1; add --to"
    )
    assert f"kept {message}: {reason}" in result.stderr
    assert dlq.depth() == (1, 0)  # visible again at once
    assert [await dlq.queued(f"f{n}") for n in range(owners)] == [[]] * owners


async def test_a_payload_over_the_async_limit_is_skipped_and_kept(dlq: Setup) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok")
    dlq.send('{"n": 1}', "r-small")
    big = dlq.send(json.dumps({"pad": "x" * 200}), "r-big")
    record = await replay_json(dlq, "--to", "orders", SLUICE_ASYNC_PAYLOAD_LIMIT_BYTES="100")
    assert (record["stored"], record["skipped"]) == (1, 1)
    assert record["skips"] == {big: "payload over the 100 byte async limit"}
    assert [json.loads(e["payload"]) for e in await dlq.queued("orders")] == [{"n": 1}]
    assert dlq.depth() == (1, 0)


async def test_a_full_function_queue_stops_the_replay_and_keeps_the_messages(
    dlq: Setup,
) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok")
    for n in range(3):
        dlq.send(json.dumps({"n": n}), f"r-{n}")
    result = await sluice(dlq, "--to", "orders", "--yes", "--json", SLUICE_MAX_QUEUE_DEPTH="2")
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["status"] == "failed" and "max_queue_depth" in record["error"]
    assert record["stored"] == 0  # the batch of three is stored whole or not at all
    assert await dlq.queued("orders") == []
    assert dlq.depth() == (3, 0)


# -- looking, asking, limiting -----------------------------------------------------------------
@ENTRY
async def test_dry_run_shows_each_message_and_changes_nothing(
    dlq: Setup, redis_client: aioredis.Redis, cli: bool
) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok", dead_letter_target=dlq.arn)
    dead = dlq.send('{"n": 1}', "r-1")
    record = {
        "requestContext": {"requestId": "r-2", "functionArn": f"{LAMBDA}:orders:$LATEST"},
        "requestPayload": {"n": 2},
    }
    from_record = dlq.send(json.dumps(record))
    junk = dlq.send("hello")
    before = await snapshot(redis_client)

    result = await sluice(dlq, "--dry-run", "--json", cli=cli)
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.stdout)}
    assert {i: (r["action"], r["to"], r["requestId"]) for i, r in rows.items()} == {
        dead: ("enqueue", "orders", "r-1"),
        from_record: ("enqueue", "orders", "r-2"),
        junk: ("skip", None, None),
    }
    assert rows[dead]["newRequestId"] == sqs_replay_request_id("orders", dlq.arn, dead)
    assert rows[junk]["reason"] == "no RequestID attribute and not an invocation record"

    table = await sluice(dlq, "--dry-run", cli=cli)
    assert table.exit_code == 0, table.output
    assert dead in table.stdout and "orders:$LATEST" in table.stdout
    assert "dry run: 2 of 3 message(s) would be replayed" in table.stdout
    assert await snapshot(redis_client) == before
    assert dlq.depth() == (3, 0)


@ENTRY
async def test_a_declined_prompt_replays_nothing_and_leaves_the_messages_visible(
    dlq: Setup, cli: bool
) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok", dead_letter_target=dlq.arn)
    dlq.send('{"n": 1}', "r-1")
    dlq.send('{"n": 2}', "r-2")
    result = await sluice(dlq, stdin="n\n", cli=cli)
    assert result.exit_code == 1
    assert f"2 message(s) to replay: sqs:{dlq.name} -> orders: 2" in result.stdout
    assert "Replay 2 messages?" in result.stdout and "nothing replayed" in result.stdout
    assert await dlq.queued("orders") == []
    assert dlq.depth() == (2, 0)


async def test_a_confirmed_prompt_replays(dlq: Setup) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok", dead_letter_target=dlq.arn)
    dlq.send('{"n": 1}', "r-1")
    result = await sluice(dlq, stdin="y\n")
    assert result.exit_code == 0, result.output
    assert "1 matched: stored 1" in result.stdout
    assert len(await dlq.queued("orders")) == 1 and dlq.depth() == (0, 0)


async def test_max_replays_at_most_n_messages(dlq: Setup) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok")
    for n in range(25):
        dlq.send(json.dumps({"n": n}), f"r-{n}")
    record = await replay_json(dlq, "--to", "orders", "--max", "7")
    assert (record["matched"], record["stored"]) == (7, 7)
    assert len(await dlq.queued("orders")) == 7
    assert dlq.depth() == (18, 0)


@pytest.mark.parametrize(
    ("arn", "says"),
    [
        ("arn:aws:sns:us-east-1:000000000000:topic", "is not an SQS queue ARN"),
        ("arn:aws:sqs:us-east-1:000000000000:no-such-queue", "no such queue"),
    ],
)
async def test_a_queue_that_is_not_there_exits_2(dlq: Setup, arn: str, says: str) -> None:
    result = await sluice(Setup(dlq.sqs, "", arn, dlq.redis_url, dlq.broker), "--yes")
    assert result.exit_code == 2
    assert says in result.stderr


# -- history -----------------------------------------------------------------------------------
@ENTRY
async def test_the_replay_is_in_the_history_with_its_route(dlq: Setup, cli: bool) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok")
    dlq.send('{"n": 1}', "r-1")
    done = await replay_json(dlq, "--to", "orders", "--rate", "1000", "--max", "5", cli=cli)
    argv = ["dlq", "history", "--redis-url", dlq.redis_url, "--key-prefix", dlq.prefix]
    listed = await asyncio.to_thread(CliRunner().invoke, app, [*argv, "--json"])
    (record,) = json.loads(listed.stdout)
    assert record["replayId"] == done["replayId"]
    assert record["selection"] == {"fromSqs": dlq.arn, "to": "orders", "rate": 1000, "max": 5}
    assert record["routes"] == {f"sqs:{dlq.name} -> orders": 1}
    assert record["status"] == "finished" and record["finishedAt"]
    table = await asyncio.to_thread(CliRunner().invoke, app, argv, env={"COLUMNS": "400"})
    assert f"sqs:{dlq.name} -> orders: 1" in table.stdout


# -- never twice, and pacing (the library) -----------------------------------------------------
class Crash(Exception):
    """The process dies here."""


class CrashingSqs(Sqs):
    """Dies instead of deleting; remembers the receipt handles it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.handles: list[str] = []

    def delete(self, queue: Queue, messages: list[dict[str, Any]]) -> dict[str, str]:
        self.handles += [m["ReceiptHandle"] for m in messages]
        raise Crash


async def sqs_replay(
    make_broker: BrokerFactory, dlq: Setup, engine: Sqs, to: str | None = None
) -> SqsReplay:
    """A replay of the queue, as the command makes one; its broker's clock (the one messages
    sent after the start are told apart by) is set to now."""
    broker = await make_broker(key_prefix=dlq.prefix, dispatch=False)
    assert isinstance(broker.clock, ManualClock)
    broker.clock.set(time.time())
    return SqsReplay(Replayer(broker), engine, engine.resolve(Queue.parse(dlq.arn)), to)


async def test_a_crash_between_storing_and_deleting_stores_nothing_twice(
    dlq: Setup, make_broker: BrokerFactory
) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok", dead_letter_target=dlq.arn)
    dlq.send('{"n": 1}', "r-1")
    dlq.send('{"n": 2}', "r-2")
    crashing = CrashingSqs()
    with pytest.raises(Crash):
        await (await sqs_replay(make_broker, dlq, crashing)).run("crashed")
    assert len(await dlq.queued("orders")) == 2 and dlq.depth() == (0, 2)
    for handle in crashing.handles:  # their hold ends: back in the queue
        dlq.sqs.change_message_visibility(
            QueueUrl=dlq.url, ReceiptHandle=handle, VisibilityTimeout=0
        )

    record = await replay_json(dlq)
    assert (record["stored"], record["alreadyStored"]) == (0, 2)
    assert len(await dlq.queued("orders")) == 2 and await dlq.received("orders") == 2
    assert dlq.depth() == (0, 0)


class RefailingSqs(Sqs):
    """After the first receive, a replayed event fails again: a new dead letter arrives."""

    def __init__(self, dlq: Setup) -> None:
        super().__init__()
        self.dlq = dlq
        self.again = ""

    def receive(self, queue: Queue, count: int, hold_s: int) -> list[dict[str, Any]]:
        messages = super().receive(queue, count, hold_s)
        if messages and not self.again:
            self.again = self.dlq.send('{"n": 1}', "replayed-and-failed")
        return messages


async def test_a_message_sent_after_the_replay_began_is_kept_for_the_next_run(
    dlq: Setup, make_broker: BrokerFactory
) -> None:
    """Else a function that keeps failing, with ``serve`` running, would be replayed round
    and round in one run."""
    await dlq.broker.put_function("orders", f"{H}:ok", dead_letter_target=dlq.arn)
    dlq.send('{"n": 1}', "r-1")
    engine = RefailingSqs(dlq)
    result = await (await sqs_replay(make_broker, dlq, engine)).run("loop")
    assert (result.stored, result.skipped) == (1, 1)
    assert "sent after this replay began" in result.skips[engine.again]
    assert len(await dlq.queued("orders")) == 1
    assert dlq.depth() == (1, 0)


async def test_rate_paces_the_events_through_the_pacer(
    dlq: Setup, make_broker: BrokerFactory
) -> None:
    await dlq.broker.put_function("orders", f"{H}:ok")
    for n in range(3):
        dlq.send(json.dumps({"n": n}), f"r-{n}")
    replay = await sqs_replay(make_broker, dlq, Sqs(), "orders")
    fake = FakeTime()
    result = await replay.run("paced", pacer=Pacer(2, clock=fake.now, async_sleep=fake.sleep))
    assert result.stored == 3
    assert fake.slept == [0.5, 0.5]  # one message per batch at 2/s: the first at once
    assert dlq.depth() == (0, 0)


# -- planning (pure) ---------------------------------------------------------------------------
QUEUE = Queue.parse("arn:aws:sqs:us-east-1:000000000000:orders-dlq")
FUNCTIONS = {
    "orders": FunctionConfig(name="orders", target="t", dead_letter_target=QUEUE.arn),
    "billing": FunctionConfig(name="billing", target="t", aliases={"live": "1"}, versions=["1"]),
}


def dead_letter(body: str = '{"n": 1}') -> dict[str, Any]:
    attribute = {"DataType": "String", "StringValue": "r-1"}
    return {"MessageId": "m", "Body": body, "MessageAttributes": {"RequestID": attribute}}


def on_failure(**context: Any) -> dict[str, Any]:
    """An invocation record; ``context`` replaces fields of its requestContext (None drops)."""
    fields = {"requestId": "r-2", "functionArn": f"{LAMBDA}:billing:live", **context}
    record = {
        "requestContext": {k: v for k, v in fields.items() if v is not None},
        "requestPayload": {"n": 2},
    }
    return {"MessageId": "m", "Body": json.dumps(record)}


def sent_at(message: dict[str, Any], ms: int) -> dict[str, Any]:
    return {**message, "Attributes": {"SentTimestamp": str(ms)}}


KINESIS_RECORD = {"requestContext": {"requestId": "r", "functionArn": f"{LAMBDA}:billing"}}


@pytest.mark.parametrize(
    ("message", "to", "expected"),
    [
        (dead_letter(), None, ("orders", "$LATEST", '{"n": 1}')),
        (dead_letter(), "billing:live", ("billing", "live", '{"n": 1}')),
        (on_failure(), None, ("billing", "live", '{"n": 2}')),
        (on_failure(), "orders", ("orders", "$LATEST", '{"n": 2}')),
        (dead_letter("not json"), None, "the body is not JSON, so not an event payload"),
        ({"MessageId": "m", "Body": "{}"}, None, "no RequestID attribute and not an invocation"),
        (on_failure(functionArn=None), None, "lacks functionArn or requestId"),
        (on_failure(condition="Success"), None, "a success record: nothing failed"),
        ({"MessageId": "m", "Body": json.dumps(KINESIS_RECORD)}, None, "a batch failure record"),
        (dead_letter(), "nope", "function nope:$LATEST not found"),
        (dead_letter(), "billing:gone", "function billing:gone not found"),
        (dead_letter(json.dumps({"pad": "x" * 64})), None, "payload over the 64 byte async limit"),
        (sent_at(dead_letter(), 999), None, ("orders", "$LATEST", '{"n": 1}')),
        (sent_at(dead_letter(), 1000), None, "sent after this replay began"),
    ],
)
def test_plan_message(message: dict[str, Any], to: str | None, expected: Any) -> None:
    ref = to and parse_function_name(to)
    step = plan_message(message, QUEUE, ref, FUNCTIONS, 64, sent_before_ms=1000)
    assert step.function == "sqs:orders-dlq"
    if isinstance(expected, str):
        assert (step.action, step.to) == ("skip", "")
        assert expected in step.reason
    else:
        assert (step.action, step.to, step.qualifier, step.entry["payload"]) == (
            "enqueue",
            *expected,
        )
        assert step.request_id == sqs_replay_request_id(expected[0], QUEUE.arn, "m")


def test_replayed_request_ids_are_fixed_per_function_queue_and_message() -> None:
    same = sqs_replay_request_id("orders", QUEUE.arn, "m")
    assert sqs_replay_request_id("orders", QUEUE.arn, "m") == same
    others = {
        sqs_replay_request_id("billing", QUEUE.arn, "m"),
        sqs_replay_request_id("orders", QUEUE.arn + "2", "m"),
        sqs_replay_request_id("orders", QUEUE.arn, "m2"),
    }
    assert same not in others and len(others) == 3


def test_the_command_refuses_a_malformed_to_before_touching_sqs() -> None:
    settings = settings_for_tests(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(typer.BadParameter):
        replay_from_sqs_command(
            settings,
            QUEUE.arn,
            to="not a function!",
            dry_run=True,
            rate=None,
            max_messages=None,
            yes=True,
            json_output=False,
        )
