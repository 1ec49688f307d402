"""The decisions of the stream core (spec §9.2), as data and pure functions tested with
tables: what an invocation's result means (:func:`classify`, :func:`failure_index`), what
happens next (:func:`decide`, :func:`expired_count`, :func:`retry_delay_s`), and the
on-failure record (:func:`on_failure_record`). :mod:`pollers.streams` applies them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from broker.errors import SluiceError
from broker.mappings.model import EventSourceMapping
from broker.models import InvokeResult
from broker.records import iso_ms
from pollers.core import REPORT_BATCH_ITEM_FAILURES, PollerSettings, reported_failures

__all__ = [
    "INVALID",
    "RECORD_AGE_EXCEEDED",
    "REPORT_BATCH_ITEM_FAILURES",
    "RETRY_ATTEMPTS_EXHAUSTED",
    "SHARD_END",
    "Decision",
    "Outcome",
    "ShardDesc",
    "ShardInfo",
    "ShardReader",
    "ShardSource",
    "StreamPolicy",
    "StreamReadError",
    "StreamRecord",
    "classify",
    "decide",
    "expired_count",
    "failure_index",
    "on_failure_record",
    "retry_delay_s",
    "window_start",
    "window_state",
]

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"
INVALID = -1  # failure_index: the response is invalid, the whole batch failed


class StreamReadError(SluiceError):
    """A shard could not be read (the source is down, the stream is gone); retried."""

    retriable = True


SHARD_END = "SHARD_END"  # the checkpoint of a shard read to its end: its children may start


@dataclass(frozen=True, slots=True)
class StreamRecord:
    sequence: str  # what ``itemIdentifier`` names and checkpoints store
    arrival_s: float  # approximate arrival, epoch seconds: record age is measured from it
    record: dict[str, Any]  # the record as Lambda delivers it
    # Records with the same key stay in order across ParallelizationFactor lanes: the
    # partition key (Kinesis), the item's key (DynamoDB).
    key: str = ""


class ShardReader(Protocol):
    """Reads one shard forward; the consumer keeps what it must retry in memory."""

    @property
    def ended(self) -> bool:
        """The shard is closed and every record in it has been read: nothing more comes."""
        ...

    async def seek(self, checkpoint: str | None) -> str | None:
        """Read next after ``checkpoint``, or from the StartingPosition when None; returns a
        position to store as the first checkpoint (LATEST pinned to the current end). The
        checkpoint is what an earlier ``seek`` returned or a record's ``sequence``."""
        ...

    async def read(self, limit: int, wait_s: float) -> list[StreamRecord]:
        """Up to ``limit`` next records, waiting at most ``wait_s`` for the first; raises
        :class:`StreamReadError`."""
        ...

    def closed(self, ending_sequence: str | None) -> None:
        """The shard was found closed (resharded), its last record ``ending_sequence``."""
        ...


@dataclass(frozen=True)
class ShardDesc:
    """A shard as the source lists it."""

    shard_id: str
    parents: tuple[str, ...] = ()  # ParentShardId, AdjacentParentShardId
    ending_sequence: str | None = None  # set once the shard is closed

    @property
    def closed(self) -> bool:
        return self.ending_sequence is not None


class ShardSource(Protocol):
    """A stream with shards (Kinesis, DynamoDB Streams): what the shard coordinator lists,
    leases and reads."""

    stream_arn: str
    batch_info_key: str  # KinesisBatchInfo, DDBStreamBatchInfo
    arrival_text: Callable[[float], str]  # the on-failure record's arrival times
    # LATEST: the moment (epoch ms) the mapping first started, set by the coordinator for
    # every shard to start at, so a child shard made later by resharding starts there too.
    pin_ms: int | None

    async def shards(self) -> list[ShardDesc]:
        """Every shard the stream still has, open and closed; raises StreamReadError."""
        ...

    def reader(self, shard: ShardDesc) -> ShardReader: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ShardInfo:
    """What the on-failure record says about the shard (``…BatchInfo``)."""

    stream_arn: str
    shard_id: str
    batch_info_key: str  # KinesisBatchInfo, DDBStreamBatchInfo, RedisStreamBatchInfo
    arrival_text: Callable[[float], str] = iso_ms  # DynamoDB: whole seconds


@dataclass(frozen=True)
class StreamPolicy:
    """A mapping's stream settings, as the decisions read them."""

    batch_size: int = 100
    window_s: float = 0.0
    max_retry_attempts: int = -1  # -1: until the records expire
    max_record_age_s: int = -1  # -1: never too old
    bisect: bool = False
    report_item_failures: bool = False
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 60.0
    lanes: int = 1  # ParallelizationFactor: batches of one shard in flight at once
    tumbling_window_s: int = 0  # TumblingWindowInSeconds (0: no windows)

    @classmethod
    def of(cls, mapping: EventSourceMapping, settings: PollerSettings) -> StreamPolicy:
        def given(value: int | None) -> int:
            return -1 if value is None else value

        return cls(
            batch_size=mapping.batch_size,
            window_s=float(mapping.maximum_batching_window_in_seconds or 0),
            max_retry_attempts=given(mapping.maximum_retry_attempts),
            max_record_age_s=given(mapping.maximum_record_age_in_seconds),
            bisect=bool(mapping.bisect_batch_on_function_error),
            report_item_failures=REPORT_BATCH_ITEM_FAILURES
            in (mapping.function_response_types or []),
            retry_backoff_s=settings.stream_retry_backoff_s,
            retry_backoff_max_s=settings.stream_retry_backoff_max_s,
            # A window's state belongs to the shard, so a windowed shard has one lane.
            lanes=1 if mapping.tumbling_window_in_seconds else mapping.parallelization_factor or 1,
            tumbling_window_s=mapping.tumbling_window_in_seconds or 0,
        )


# -- pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One invocation of a batch, reduced: ``rejected`` is a throttle or system error (no
    invocation happened); ``partial`` names the first failed record's index."""

    kind: Literal["success", "partial", "failed", "rejected"]
    failed_from: int = 0


@dataclass(frozen=True)
class Decision:
    """What to do with a batch: ``done`` leading records are handled (checkpoint after
    them); ``attempts`` is the batch's count of failed attempts from now on."""

    action: Literal["checkpoint", "retry", "bisect", "discard", "wait"]
    done: int = 0
    attempts: int = 0


def failure_index(payload: str | None, sequences: Sequence[str]) -> int | None:
    """Index of the lowest record a ``ReportBatchItemFailures`` response names (records are
    in sequence order); None for complete success; :data:`INVALID` when invalid (spec §9.2:
    an empty, null or unknown ``itemIdentifier`` or a wrong key fail the whole batch)."""
    failed = reported_failures(payload, sequences)
    if failed is None:
        return INVALID
    if not failed:
        return None
    return min(index for index, sequence in enumerate(sequences) if sequence in failed)


def classify(
    result: InvokeResult,
    sequences: Sequence[str],
    report_item_failures: bool,
    needs_state: bool = False,
) -> Outcome:
    """``needs_state``: a tumbling window's invocation, whose response must carry ``state``
    (an object) or it failed."""
    if result.outcome in ("throttle", "system_error"):
        return Outcome("rejected")
    if result.outcome != "success":
        return Outcome("failed")
    if needs_state and window_state(result.payload) is None:
        return Outcome("failed")
    if not report_item_failures:
        return Outcome("success")
    index = failure_index(result.payload, sequences)
    if index is None:
        return Outcome("success")
    if index == INVALID:
        return Outcome("failed")
    return Outcome("partial", index)


def window_state(payload: str | None) -> dict[str, Any] | None:
    """The ``state`` object a tumbling window's response carries; None when it has none."""
    try:
        response = json.loads(payload or "")
    except ValueError:
        return None
    state = response.get("state") if isinstance(response, dict) else None
    return state if isinstance(state, dict) else None


def window_start(arrival_s: float, window_s: int) -> float:
    """The start of the tumbling window an arrival time falls in (epoch seconds)."""
    return float(int(arrival_s // window_s) * window_s)


def decide(outcome: Outcome, size: int, attempts: int, policy: StreamPolicy) -> Decision:
    """Spec §9.2: retry until success or ``MaximumRetryAttempts`` retries have failed (the
    first attempt is not a retry); bisecting does not use up retries, and a batch of one
    cannot be split; a partial failure checkpoints what succeeded and counts as a failed
    attempt; throttles and system errors wait without counting."""
    if outcome.kind == "success":
        return Decision("checkpoint", size, attempts)
    if outcome.kind == "rejected":
        return Decision("wait", 0, attempts)
    if outcome.kind == "failed" and policy.bisect and size > 1:
        return Decision("bisect", 0, attempts)
    done = outcome.failed_from if outcome.kind == "partial" else 0
    failed = attempts + 1
    if 0 <= policy.max_retry_attempts < failed:
        return Decision("discard", done, failed)
    return Decision("retry", done, failed)


def expired_count(arrivals: Sequence[float], now: float, max_age_s: int) -> int:
    """How many leading records are older than ``MaximumRecordAgeInSeconds`` (-1: none)."""
    if max_age_s < 0:
        return 0
    count = 0
    for arrival in arrivals:
        if now - arrival <= max_age_s:
            break
        count += 1
    return count


def retry_delay_s(attempts: int, base_s: float, max_s: float) -> float:
    """Wait before retry number ``attempts`` (1, 2, ...): ``base`` doubling up to ``max``."""
    return float(min(max_s, base_s * 2.0 ** max(0, attempts - 1)))


def on_failure_record(
    *,
    shard: ShardInfo,
    records: Sequence[StreamRecord],
    condition: str,
    request_id: str,
    function_arn: str,
    invoke_count: int,
    last: InvokeResult | None,
    now: float,
) -> dict[str, Any]:
    """The record describing a discarded batch, in Kinesis' shape and key order (§9.2);
    ``responseContext`` only for ``RetryAttemptsExhausted``."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        }
    }
    if condition == RETRY_ATTEMPTS_EXHAUSTED and last is not None:
        record["responseContext"] = {
            "statusCode": last.status_code,
            "executedVersion": last.executed_version or "$LATEST",
            "functionError": last.function_error,
        }
    record["version"] = "1.0"
    record["timestamp"] = iso_ms(now)
    record[shard.batch_info_key] = {
        "shardId": shard.shard_id,
        "startSequenceNumber": records[0].sequence,
        "endSequenceNumber": records[-1].sequence,
        "approximateArrivalOfFirstRecord": shard.arrival_text(records[0].arrival_s),
        "approximateArrivalOfLastRecord": shard.arrival_text(records[-1].arrival_s),
        "batchSize": len(records),
        "streamArn": shard.stream_arn,
    }
    return record
