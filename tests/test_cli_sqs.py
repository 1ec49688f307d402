"""``sluice sqs redrive`` against moto's server: typer's runner, the ``redrive`` engine for
failures that need a hand (a target deleted mid-way, entries refused), the installed
``sluice`` once; and the pacer on a fake clock."""

from __future__ import annotations

import json
import os
from typing import Any
from uuid import uuid4

import pytest
from typer.testing import CliRunner, Result

from broker import cli_sqs
from broker.cli import app
from broker.cli_sqs import Queue, Sqs, redrive, send_entry, size_chunks
from broker.pacing import Pacer
from tests.conftest import aws_client
from tests.helpers import run_installed_sluice

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


@pytest.fixture
def sqs(aws: str) -> Any:
    return aws_client("sqs", aws)


def make_queue(sqs: Any, name: str, **attributes: str) -> tuple[str, str]:
    name = f"{name}-{uuid4().hex[:8]}"  # moto's server outlives each test
    if attributes.get("FifoQueue") == "true":
        name += ".fifo"
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    return url, arn["QueueArn"]


def redrive_policy(dlq_arn: str) -> str:
    return json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})


def attributes_of(i: int) -> dict[str, Any]:
    return {
        "kind": {"DataType": "String", "StringValue": f"order-{i}"},
        "amount": {"DataType": "Number.cents", "StringValue": str(100 + i)},
        "blob": {"DataType": "Binary", "BinaryValue": bytes([i, 0, 255])},
    }


def fill(sqs: Any, url: str, count: int, *, fifo_groups: int = 0) -> None:
    """``count`` messages ``m0``.. with :func:`attributes_of`. (No AWSTraceHeader: moto's
    SendMessageBatch drops MessageSystemAttributes; ``send_entry``'s test covers it.)"""
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(count, start + 10)):
            entry: dict[str, Any] = {
                "Id": str(i),
                "MessageBody": f"m{i}",
                "MessageAttributes": attributes_of(i),
            }
            if fifo_groups:
                entry["MessageGroupId"] = f"g{i % fifo_groups}"
                entry["MessageDeduplicationId"] = f"d{i}"
            entries.append(entry)
        answer = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not answer.get("Failed"), answer


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Every message in ``url``, received and deleted (a FIFO queue hands out no more of a
    group while one is in flight)."""
    messages: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        if not answer.get("Messages"):
            return messages
        messages += answer["Messages"]
        handles = [
            {"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in answer["Messages"]
        ]
        sqs.delete_message_batch(QueueUrl=url, Entries=handles)


def depth(sqs: Any, url: str) -> tuple[int, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return int(found[names[0]]), int(found[names[1]])


def sluice(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, ["sqs", "redrive", *args], input=input)


@pytest.fixture
def pair(sqs: Any) -> tuple[str, str, str, str]:
    """(dlq url, dlq arn, source url, source arn): a queue whose RedrivePolicy names the DLQ."""
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq")
    url, arn = make_queue(sqs, "orders", RedrivePolicy=redrive_policy(dlq_arn))
    return dlq_url, dlq_arn, url, arn


# -- moving ------------------------------------------------------------------------------------


def test_redrive_moves_every_message_to_the_discovered_source_unchanged(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, _ = pair
    fill(sqs, dlq_url, 25)
    result = sluice(dlq_arn, "--yes")
    assert result.exit_code == 0, result.output
    assert "moved 25, failed 0, not deleted 0, remaining ~0" in result.stdout
    moved = sorted(drain(sqs, url), key=lambda m: int(m["Body"][1:]))
    assert [m["Body"] for m in moved] == [f"m{i}" for i in range(25)]
    for i, message in enumerate(moved):
        assert message["MessageAttributes"] == attributes_of(i)
    assert depth(sqs, dlq_url) == (0, 0)


def test_redrive_to_moves_to_the_named_queue_not_the_source(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, _ = pair
    other_url, other_arn = make_queue(sqs, "elsewhere")
    fill(sqs, dlq_url, 12)
    result = sluice(dlq_arn, "--to", other_arn, "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(m["Body"] for m in drain(sqs, other_url)) == sorted(f"m{i}" for i in range(12))
    assert depth(sqs, url) == (0, 0)
    assert depth(sqs, dlq_url) == (0, 0)


def test_max_stops_after_n_messages(sqs: Any, pair: tuple[str, str, str, str]) -> None:
    dlq_url, dlq_arn, url, _ = pair
    fill(sqs, dlq_url, 25)
    result = sluice(dlq_arn, "--max", "7", "--yes")
    assert result.exit_code == 0, result.output
    assert "moved 7, failed 0, not deleted 0, remaining ~18" in result.stdout
    assert depth(sqs, url) == (7, 0)
    assert depth(sqs, dlq_url) == (18, 0)


def test_fifo_redrive_keeps_group_and_deduplication_ids_and_order(sqs: Any) -> None:
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq", FifoQueue="true")
    url, _ = make_queue(sqs, "orders", FifoQueue="true", RedrivePolicy=redrive_policy(dlq_arn))
    fill(sqs, dlq_url, 15, fifo_groups=3)
    result = sluice(dlq_arn, "--yes")
    assert result.exit_code == 0, result.output
    moved = drain(sqs, url)
    assert len(moved) == 15
    for message in moved:
        i = int(message["Body"][1:])
        assert message["Attributes"]["MessageGroupId"] == f"g{i % 3}"
        assert message["Attributes"]["MessageDeduplicationId"] == f"d{i}"
    for group in range(3):
        bodies = [m["Body"] for m in moved if m["Attributes"]["MessageGroupId"] == f"g{group}"]
        assert bodies == [f"m{i}" for i in range(15) if i % 3 == group]
    assert depth(sqs, dlq_url) == (0, 0)


def test_with_rate_batches_are_paced_on_the_clock(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, arn = pair
    fill(sqs, dlq_url, 23)
    clock = FakeClock()
    pacer = Pacer(5, clock=clock.now, sleep=clock.sleep)
    engine = Sqs()
    dlq = engine.resolve(Queue.parse(dlq_arn))
    outcome = redrive(engine, dlq, engine.resolve(Queue.parse(arn)), pacer=pacer)
    assert (outcome.moved, outcome.ok) == (23, True)
    # batches of 5 (a second's worth): 5 at 0 s, then one a second; the empty receive at the
    # end does not wait, and the last short batch (3) gave back its unused tokens.
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]
    assert depth(sqs, url) == (23, 0)


# -- changing nothing --------------------------------------------------------------------------


def test_dry_run_shows_what_would_move_and_changes_nothing(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, arn = pair
    fill(sqs, dlq_url, 25)
    result = sluice(dlq_arn, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{dlq_arn} -> {arn}"
    assert lines[1] == "would move ~25 message(s) (25 visible, 0 in flight)"
    peeked = [line for line in lines if "attributes: amount,blob,kind" in line]
    assert len(peeked) == 10
    assert lines[-1] == "dry run: nothing sent, nothing deleted"
    assert depth(sqs, dlq_url) == (25, 0)  # peeked with a zero hold: still visible
    assert depth(sqs, url) == (0, 0)


def test_declined_confirmation_changes_nothing(sqs: Any, pair: tuple[str, str, str, str]) -> None:
    dlq_url, dlq_arn, url, _ = pair
    fill(sqs, dlq_url, 5)
    result = sluice(dlq_arn, input="n\n")
    assert result.exit_code == 1
    assert f"Move ~5 message(s) from {dlq_arn.rsplit(':', 1)[1]} to " in result.stdout
    assert "Not moved; nothing changed." in result.stderr
    assert depth(sqs, dlq_url) == (5, 0)
    assert depth(sqs, url) == (0, 0)


@pytest.mark.parametrize("sources", [0, 2])
def test_without_a_single_source_queue_exits_2_asking_for_to(sqs: Any, sources: int) -> None:
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq")
    for n in range(sources):
        make_queue(sqs, f"orders{n}", RedrivePolicy=redrive_policy(dlq_arn))
    fill(sqs, dlq_url, 3)
    result = sluice(dlq_arn, "--yes")
    assert result.exit_code == 2
    assert f"is the dead-letter queue of {sources} queues" in result.stderr
    assert "--to QUEUE_ARN" in result.stderr
    assert depth(sqs, dlq_url) == (3, 0)


def test_a_nonexistent_to_exits_2_and_deletes_nothing(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, _, _ = pair
    fill(sqs, dlq_url, 3)
    missing = "arn:aws:sqs:us-east-1:000000000000:no-such-queue"
    result = sluice(dlq_arn, "--to", missing, "--yes")
    assert result.exit_code == 2
    assert f"{missing}: no such queue" in result.stderr
    assert depth(sqs, dlq_url) == (3, 0)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["arn:aws:sns:us-east-1:000000000000:topic"], "is not an SQS queue ARN"),
        (["--rate", "0"], "must be a positive number"),
        (["--max", "0"], "--max"),
    ],
)
def test_bad_arguments_exit_2(aws: str, args: list[str], says: str) -> None:
    dlq = "arn:aws:sqs:us-east-1:000000000000:dlq"
    result = sluice(*(args if args[0].startswith("arn") else [dlq, *args]), "--yes")
    assert result.exit_code == 2
    assert says in result.stderr


def test_a_standard_dlq_into_a_fifo_target_is_refused(sqs: Any) -> None:
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq")
    _, fifo_arn = make_queue(sqs, "orders", FifoQueue="true")
    fill(sqs, dlq_url, 2)
    result = sluice(dlq_arn, "--to", fifo_arn, "--yes")
    assert result.exit_code == 2
    assert "no MessageGroupId" in result.stderr
    assert depth(sqs, dlq_url) == (2, 0)


# -- failures keep messages in the dead-letter queue -------------------------------------------


def test_a_message_the_target_refuses_stays_and_the_rest_move(sqs: Any) -> None:
    """moto refuses a whole batch for one oversized message: the batch is sent again one by
    one, the big message fails alone, is reported, and is visible again at the end."""
    dlq_url, dlq_arn = make_queue(sqs, "orders-dlq")
    url, _ = make_queue(
        sqs, "orders", MaximumMessageSize="1024", RedrivePolicy=redrive_policy(dlq_arn)
    )
    fill(sqs, dlq_url, 9)
    big = sqs.send_message(QueueUrl=dlq_url, MessageBody="x" * 2000)["MessageId"]
    result = sluice(dlq_arn, "--yes")
    assert result.exit_code == 1
    assert "moved 9, failed 1, not deleted 0, remaining ~1" in result.stdout
    assert f"failed {big}: InvalidParameterValue" in result.stderr
    assert depth(sqs, url) == (9, 0)
    assert depth(sqs, dlq_url) == (1, 0)


def test_entries_refused_in_a_batch_answer_stay_in_the_dlq(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    """SendMessageBatch's ``Failed`` entries (moto never returns one: a proxy does)."""
    dlq_url, dlq_arn, url, arn = pair
    fill(sqs, dlq_url, 12)
    poison = {"m3", "m7", "m11"}
    engine = Sqs(
        lambda region: RefusingClient(aws_client("sqs", os.environ["AWS_ENDPOINT_URL"]), poison)
    )
    dlq = engine.resolve(Queue.parse(dlq_arn))
    outcome = redrive(engine, dlq, engine.resolve(Queue.parse(arn)))
    assert outcome.moved == 9
    assert len(outcome.failed) == 3
    assert set(outcome.failed.values()) == {"KmsThrottled: refused by the test"}
    assert sorted(m["Body"] for m in drain(sqs, url)) == sorted(
        f"m{i}" for i in range(12) if f"m{i}" not in poison
    )
    assert sorted(m["Body"] for m in drain(sqs, dlq_url)) == sorted(poison)


def test_a_target_deleted_mid_way_stops_the_run_and_keeps_the_rest(
    sqs: Any, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, arn = pair
    fill(sqs, dlq_url, 25)
    engine = Sqs()
    dlq = engine.resolve(Queue.parse(dlq_arn))
    target = engine.resolve(Queue.parse(arn))

    def delete_target(_outcome: object) -> None:
        sqs.delete_queue(QueueUrl=url)

    outcome = redrive(engine, dlq, target, progress=delete_target)
    assert outcome.moved == 10
    assert outcome.stopped is not None
    assert "NonExistentQueue" in outcome.stopped or "QueueDoesNotExist" in outcome.stopped
    assert depth(sqs, dlq_url) == (15, 0)  # the unsent batch is visible again at once


# -- the installed command ---------------------------------------------------------------------


async def test_installed_sluice_redrives_in_a_subprocess(
    sqs: Any, moto_url: str, pair: tuple[str, str, str, str]
) -> None:
    dlq_url, dlq_arn, url, _ = pair
    fill(sqs, dlq_url, 4)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
    }
    done = await run_installed_sluice("sqs", "redrive", dlq_arn, "--rate", "50", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(
        "moved 4, failed 0, not deleted 0, remaining ~0 in " + dlq_arn.rsplit(":", 1)[1] + "\n"
    )
    assert depth(sqs, url) == (4, 0)
    assert depth(sqs, dlq_url) == (0, 0)


# -- the pure parts ----------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock that moves only when slept on; records every sleep."""

    def __init__(self) -> None:
        self.t = 100.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@pytest.mark.parametrize(
    ("rate", "batch", "batches", "sleeps"),
    [
        (10, 10, 3, [1.0, 1.0]),  # a second's worth at once, then one batch a second
        (5, 5, 4, [1.0, 1.0, 1.0]),
        (4, 2, 3, [0.5, 0.5]),  # smaller batches than a second's worth go more often
        (0.5, 1, 3, [2.0, 2.0]),  # under one a second: single items, 1/rate apart
        (25, 10, 3, [0.4, 0.4]),
    ],
)
def test_pacer_sleeps_batch_over_rate_between_batches(
    rate: float, batch: int, batches: int, sleeps: list[float]
) -> None:
    clock = FakeClock()
    pacer = Pacer(rate, clock=clock.now, sleep=clock.sleep)
    for _ in range(batches):
        pacer.acquire(batch)
    assert clock.sleeps == pytest.approx(sleeps)


def test_pacer_batch_size_is_a_seconds_worth() -> None:
    assert [Pacer(rate).batch_size for rate in (0.2, 1, 7.9, 10, 500)] == [1, 1, 7, 10, 500]


def test_pacer_time_already_passed_counts_and_idle_time_earns_no_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(2, clock=clock.now, sleep=clock.sleep)
    pacer.acquire(2)  # at 0; the next may go at 1 s
    clock.t += 0.75  # work took 0.75 s: only 0.25 s left to wait
    pacer.acquire(2)
    assert clock.sleeps == [0.25]
    clock.t += 60  # a long pause
    pacer.acquire(2)
    pacer.acquire(2)  # no saved-up credit: a full second after the previous batch
    assert clock.sleeps == [0.25, 1.0]


def test_pacer_release_gives_back_a_short_batchs_tokens() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock.now, sleep=clock.sleep)
    pacer.acquire(10)
    pacer.release(6)  # only 4 went: the next may go 0.4 s after the first
    pacer.acquire(10)
    assert clock.sleeps == pytest.approx([0.4])


def test_pacer_book_and_delay_serve_async_callers_without_sleeping() -> None:
    clock = FakeClock()
    pacer = Pacer(4, clock=clock.now, sleep=clock.sleep)
    assert pacer.delay_s(pacer.book(4)) == 0
    assert pacer.delay_s(pacer.book(4)) == 1.0
    assert clock.sleeps == []


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_pacer_refuses_a_rate_that_is_not_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(rate)


def test_send_entry_keeps_body_attributes_trace_and_fifo_ids() -> None:
    message = {
        "MessageId": "a",
        "Body": "hello",
        "Attributes": {
            "MessageGroupId": "g",
            "MessageDeduplicationId": "d",
            "AWSTraceHeader": TRACE,
            "ApproximateReceiveCount": "3",
        },
        "MessageAttributes": {
            "s": {"DataType": "String", "StringValue": "v", "StringListValues": []},
            "b": {"DataType": "Binary", "BinaryValue": b"\x00", "BinaryListValues": []},
        },
    }
    common = {
        "Id": "4",
        "MessageBody": "hello",
        "MessageAttributes": {
            "s": {"DataType": "String", "StringValue": "v"},
            "b": {"DataType": "Binary", "BinaryValue": b"\x00"},
        },
        "MessageSystemAttributes": {"AWSTraceHeader": {"DataType": "String", "StringValue": TRACE}},
    }
    assert send_entry(message, "4", fifo_target=False) == common
    fifo = {**common, "MessageGroupId": "g", "MessageDeduplicationId": "d"}
    assert send_entry(message, "4", fifo_target=True) == fifo
    assert send_entry({"MessageId": "b", "Body": ""}, "0", False) == {"Id": "0", "MessageBody": ""}


def test_size_chunks_keep_order_and_stay_under_the_limit() -> None:
    entries = [{"Id": str(i), "MessageBody": "x" * size} for i, size in enumerate([4, 4, 3, 9, 1])]
    chunks = list(size_chunks(entries, limit=8))
    assert [[e["Id"] for e in chunk] for chunk in chunks] == [["0", "1"], ["2"], ["3"], ["4"]]


def test_queue_parse_reads_region_account_name_and_fifo() -> None:
    queue = Queue.parse("arn:aws:sqs:eu-west-2:123456789012:orders.fifo")
    assert (queue.region, queue.account, queue.name, queue.fifo) == (
        "eu-west-2",
        "123456789012",
        "orders.fifo",
        True,
    )
    assert cli_sqs.MAX_BATCH == 10


class RefusingClient:
    """A boto3 SQS client whose SendMessageBatch answers ``Failed`` for bodies in ``poison``
    and sends the rest for real."""

    def __init__(self, client: Any, poison: set[str]) -> None:
        self._client = client
        self._poison = poison

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        good = [e for e in Entries if e["MessageBody"] not in self._poison]
        answer = self._client.send_message_batch(QueueUrl=QueueUrl, Entries=good) if good else {}
        failed = [
            {
                "Id": e["Id"],
                "SenderFault": False,
                "Code": "KmsThrottled",
                "Message": "refused by the test",
            }
            for e in Entries
            if e["MessageBody"] in self._poison
        ]
        return {"Successful": answer.get("Successful", []), "Failed": failed}
