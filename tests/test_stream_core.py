"""The stream core's decisions (spec §9.2) and the Redis Streams record, as tables."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from broker.models import InvokeResult
from pollers.redis_streams import arrival_s, redis_stream_record, start_after
from pollers.stream_decisions import (
    INVALID,
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    Decision,
    Outcome,
    ShardInfo,
    StreamPolicy,
    StreamRecord,
    classify,
    decide,
    expired_count,
    failure_index,
    on_failure_record,
    retry_delay_s,
)

SEQUENCES = ["1-0", "1-1", "2-0", "3-0"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (None, None),
        ("", None),
        ('""', None),
        ("null", None),
        ("[]", None),
        ("{}", None),
        ('{"batchItemFailures": []}', None),
        ('{"batchItemFailures": null}', None),
        ('{"batchItemFailures": [{"itemIdentifier": "2-0"}]}', 2),
        ('{"batchItemFailures": [{"itemIdentifier": "3-0"}, {"itemIdentifier": "1-1"}]}', 1),
        ('{"batchItemFailures": [{"itemIdentifier": "1-0"}]}', 0),
        ('{"batchItemFailures": [{"itemIdentifier": ""}]}', INVALID),
        ('{"batchItemFailures": [{"itemIdentifier": null}]}', INVALID),
        ('{"batchItemFailures": [{"itemIdentifier": 123}]}', INVALID),
        ('{"batchItemFailures": [{"itemIdentifier": "9-9"}]}', INVALID),
        ('{"batchItemFailures": ["1-0"]}', INVALID),
        ('{"batchItemFailures": "1-0"}', INVALID),
        ('{"foo": [{"itemIdentifier": "1-0"}]}', INVALID),
        ('"a string"', INVALID),
        ("not json", INVALID),
    ],
)
def test_failure_index(payload: str | None, expected: int | None) -> None:
    assert failure_index(payload, SEQUENCES) == expected


def _result(outcome: Any, payload: str | None = None) -> InvokeResult:
    return InvokeResult(outcome=outcome, payload=payload)


@pytest.mark.parametrize(
    ("result", "report", "expected"),
    [
        (_result("success"), False, Outcome("success")),
        (_result("success", '{"batchItemFailures": [{"itemIdentifier": "2-0"}]}'), False,
         Outcome("success")),
        (_result("success", '{"batchItemFailures": [{"itemIdentifier": "2-0"}]}'), True,
         Outcome("partial", 2)),
        (_result("success", '{"foo": 1}'), True, Outcome("failed")),
        (_result("function_error", "{}"), True, Outcome("failed")),
        (_result("throttle"), True, Outcome("rejected")),
        (_result("system_error"), False, Outcome("rejected")),
    ],
)  # fmt: skip
def test_classify(result: InvokeResult, report: bool, expected: Outcome) -> None:
    assert classify(result, SEQUENCES, report) == expected


NO_LIMIT = StreamPolicy()
TWO = StreamPolicy(max_retry_attempts=2)
ZERO = StreamPolicy(max_retry_attempts=0)
BISECT = StreamPolicy(max_retry_attempts=0, bisect=True)


@pytest.mark.parametrize(
    ("outcome", "size", "attempts", "policy", "expected"),
    [
        (Outcome("success"), 4, 0, TWO, Decision("checkpoint", 4, 0)),
        (Outcome("rejected"), 4, 1, TWO, Decision("wait", 0, 1)),
        # MaximumRetryAttempts 2: two retries, then discard (3 invocations in all)
        (Outcome("failed"), 4, 0, TWO, Decision("retry", 0, 1)),
        (Outcome("failed"), 4, 1, TWO, Decision("retry", 0, 2)),
        (Outcome("failed"), 4, 2, TWO, Decision("discard", 0, 3)),
        (Outcome("failed"), 4, 0, ZERO, Decision("discard", 0, 1)),
        (Outcome("failed"), 4, 500, NO_LIMIT, Decision("retry", 0, 501)),
        # bisect: splitting uses no retries; a single record cannot be split
        (Outcome("failed"), 4, 0, BISECT, Decision("bisect", 0, 0)),
        (Outcome("failed"), 2, 0, BISECT, Decision("bisect", 0, 0)),
        (Outcome("failed"), 1, 0, BISECT, Decision("discard", 0, 1)),
        # partial: what precedes the lowest failure is done; the attempt counts
        (Outcome("partial", 2), 4, 0, TWO, Decision("retry", 2, 1)),
        (Outcome("partial", 0), 4, 0, TWO, Decision("retry", 0, 1)),
        (Outcome("partial", 3), 4, 2, TWO, Decision("discard", 3, 3)),
        (Outcome("partial", 1), 4, 0, BISECT, Decision("discard", 1, 1)),
    ],
)
def test_decide(
    outcome: Outcome, size: int, attempts: int, policy: StreamPolicy, expected: Decision
) -> None:
    assert decide(outcome, size, attempts, policy) == expected


@pytest.mark.parametrize(
    ("arrivals", "max_age_s", "expected"),
    [
        ([0.0, 10.0, 50.0], -1, 0),
        ([0.0, 10.0, 50.0], 60, 2),
        ([0.0, 10.0, 50.0], 100, 0),  # exactly the maximum age is not older than it
        ([0.0, 10.0, 50.0], 95, 1),
        ([0.0, 10.0, 50.0], 90, 1),
        ([-100.0, -50.0, 99.0], 60, 2),
        ([-100.0, 99.0, -100.0], 60, 1),  # a prefix only: order is never broken
    ],
)
def test_expired_count(arrivals: list[float], max_age_s: int, expected: int) -> None:
    assert expired_count(arrivals, 100.0, max_age_s) == expected


@pytest.mark.parametrize(
    ("attempts", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)]
)
def test_retry_delay_doubles_up_to_the_cap(attempts: int, expected: float) -> None:
    assert retry_delay_s(attempts, 1.0, 60.0) == expected


SHARD = ShardInfo("redis-stream:s", "shardId-000000000000", "RedisStreamBatchInfo")
RECORDS = [
    StreamRecord("1741083072417-0", 1741083072.417, {}),
    StreamRecord("1741083073000-3", 1741083073.0, {}),
]


def test_on_failure_record_after_retries() -> None:
    last = InvokeResult(outcome="function_error", function_error="Unhandled", executed_version="3")
    record = on_failure_record(
        shard=SHARD,
        records=RECORDS,
        condition=RETRY_ATTEMPTS_EXHAUSTED,
        request_id="r-1",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        invoke_count=4,
        last=last,
        now=1741083080.5,
    )
    assert json.dumps(record) == json.dumps(
        {
            "requestContext": {
                "requestId": "r-1",
                "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:f",
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 4,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "3",
                "functionError": "Unhandled",
            },
            "version": "1.0",
            "timestamp": "2025-03-04T10:11:20.500Z",
            "RedisStreamBatchInfo": {
                "shardId": "shardId-000000000000",
                "startSequenceNumber": "1741083072417-0",
                "endSequenceNumber": "1741083073000-3",
                "approximateArrivalOfFirstRecord": "2025-03-04T10:11:12.417Z",
                "approximateArrivalOfLastRecord": "2025-03-04T10:11:13.000Z",
                "batchSize": 2,
                "streamArn": "redis-stream:s",
            },
        }
    )  # key order included


def test_on_failure_record_for_age_has_no_response_context() -> None:
    partial = InvokeResult(outcome="success")
    record = on_failure_record(
        shard=SHARD,
        records=RECORDS[:1],
        condition=RECORD_AGE_EXCEEDED,
        request_id="r-2",
        function_arn="f",
        invoke_count=1,
        last=partial,
        now=1741083080.0,
    )
    assert list(record) == ["requestContext", "version", "timestamp", "RedisStreamBatchInfo"]
    assert record["RedisStreamBatchInfo"]["batchSize"] == 1


def test_partial_failure_record_has_a_null_function_error() -> None:
    record = on_failure_record(
        shard=SHARD,
        records=RECORDS,
        condition=RETRY_ATTEMPTS_EXHAUSTED,
        request_id="r",
        function_arn="f",
        invoke_count=2,
        last=InvokeResult(outcome="success"),
        now=0.0,
    )
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": None,
    }


@pytest.mark.parametrize(
    ("position", "timestamp", "last_id", "expected"),
    [
        ("TRIM_HORIZON", None, "5-1", "0-0"),
        ("LATEST", None, "5-1", "5-1"),
        ("LATEST", None, None, "0-0"),
        ("AT_TIMESTAMP", 1741083072.417, None, "1741083072416-18446744073709551615"),
        ("AT_TIMESTAMP", 1741083072.4171, None, "1741083072417-18446744073709551615"),
        ("AT_TIMESTAMP", 0.0, None, "0-0"),
    ],
)
def test_start_after(
    position: str, timestamp: float | None, last_id: str | None, expected: str
) -> None:
    assert start_after(position, timestamp, last_id) == expected


def test_redis_stream_record_from_raw_fields() -> None:
    record = redis_stream_record(
        "orders", "1741083072417-2", {b"data": b"\xff\x00", b"tenant": b"acme", b"n": b"7"}
    )
    assert record["eventID"] == "orders:1741083072417-2"
    assert record["redisStream"]["data"] == base64.b64encode(b"\xff\x00").decode()
    assert record["redisStream"]["fields"] == {"tenant": "acme", "n": "7"}
    assert record["redisStream"]["approximateArrivalTimestamp"] == 1741083072.417
    assert arrival_s("1741083072417-2") == 1741083072.417


def test_a_record_without_data_has_empty_data() -> None:
    record = redis_stream_record("s", "1-0", {"k": "v"})
    assert record["redisStream"]["data"] == "" and record["redisStream"]["fields"] == {"k": "v"}


def test_the_checkpoint_moves_only_over_a_leading_run_of_handled_records() -> None:
    """ParallelizationFactor lanes finish out of order: the checkpoint may pass a record
    only once it and everything read before it are handled."""
    from pollers.streams import _Progress

    progress = _Progress()
    indices = [progress.add(sequence) for sequence in ["10", "11", "12", "13", "14"]]
    assert indices == [0, 1, 2, 3, 4]
    progress.finish([1, 3])  # another lane's records
    assert progress.advance() is None and progress.pending == 5
    progress.finish([0])
    assert progress.advance() == "11" and progress.pending == 3
    progress.finish([2, 4])
    assert progress.advance() == "14" and progress.pending == 0
    assert progress.add("15") == 5  # indices go on from where they were
    assert progress.advance() is None
