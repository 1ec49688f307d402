"""Amazon SQS event source (spec §9.1): long polling, batches, filtering, partial batch
responses, deletion of what succeeded; failures are left for the queue's redrive policy.

Each mapping runs up to ``MaximumConcurrency`` receive-invoke loops (default
``PollerSettings.sqs_default_concurrency``): one to start, one more whenever a loop finds a
full batch that took longer to process than to gather (the function, not the queue, is the
bottleneck), one fewer whenever a loop finds the queue empty. boto3 calls run in the
manager's thread pool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from broker.models import InvokeResult
from pollers.core import (
    FUNCTION_CALL_FAILED,
    OK,
    REPORT_BATCH_ITEM_FAILURES,
    BatchBuffer,
    MappingRuntime,
    PollerSettings,
    record_size,
    reported_failures,
)

__all__ = ["SqsPoller", "sqs_record"]

T = TypeVar("T")
_MAX_RECEIVE = 10  # SQS returns at most 10 messages per ReceiveMessage
_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})


def sqs_record(message: dict[str, Any], arn: str, region: str) -> dict[str, Any]:
    """A ReceiveMessage message as Lambda delivers it (spec §9.1 event shape)."""
    attributes = {
        name: _message_attribute(value)
        for name, value in message.get("MessageAttributes", {}).items()
    }
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": attributes,
        "md5OfMessageAttributes": message.get("MD5OfMessageAttributes"),
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {}
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    shaped["stringListValues"] = list(value.get("StringListValues", []))
    shaped["binaryListValues"] = [
        base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
    ]
    shaped["dataType"] = value.get("DataType", "String")
    return shaped


class SqsPoller:
    """Polls one queue for one mapping until :meth:`stop`."""

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, executor: Executor
    ) -> None:
        self.runtime = runtime
        self.mapping = runtime.mapping
        self.settings = settings
        self._executor = executor
        parts = self.mapping.event_source_arn.split(":")
        self.region, self.account_id, self.queue_name = parts[3], parts[4], parts[5]
        self._client: Any = None
        self._queue_url = ""
        self._visibility_timeout = 30  # the queue's, or the override, once opened
        self._visibility_override: int | None = None  # passed on ReceiveMessage (§9.1 rule 2)
        self._stopping = asyncio.Event()
        self._loops: set[asyncio.Task[None]] = set()
        self.cap = self.mapping.maximum_concurrency or settings.sqs_default_concurrency
        self.peak_loops = 0
        self.log = runtime.log.bind(source="sqs", queue=self.queue_name)

    async def run(self) -> None:
        """Poll until stopped; returns once every receive-invoke loop has finished."""
        try:
            await self._open()
        except (BotoCoreError, ClientError) as exc:
            await self.runtime.report(f"PROBLEM: Error occurred while ReceiveMessage: {exc}")
            self.log.warning("sqs_open_failed", error=repr(exc))
            return
        self._spawn()
        try:
            while self._loops:
                await asyncio.wait(set(self._loops))
        finally:  # cancelled (a stop that timed out): take the loops down too
            self._stopping.set()
            loops = list(self._loops)
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)

    async def stop(self) -> None:
        """Finish the batches in hand, then stop (at most one receive wait later)."""
        self._stopping.set()

    def _spawn(self) -> None:
        if self._stopping.is_set() or len(self._loops) >= self.cap:
            return
        task = asyncio.create_task(self._loop(), name=f"sqs-poller-{self.mapping.uuid}")
        self._loops.add(task)
        task.add_done_callback(self._loops.discard)
        self.peak_loops = max(self.peak_loops, len(self._loops))

    async def _open(self) -> None:
        def connect() -> tuple[Any, str, int]:
            client = boto3.session.Session().client("sqs", region_name=self.region, config=_CONFIG)
            url = client.get_queue_url(
                QueueName=self.queue_name, QueueOwnerAWSAccountId=self.account_id
            )["QueueUrl"]
            attributes = client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout"]
            )["Attributes"]
            return client, url, int(attributes["VisibilityTimeout"])

        self._client, self._queue_url, queue_timeout = await self._call(connect)
        self._visibility_timeout = queue_timeout
        self._visibility_override = await self._effective_visibility_timeout(queue_timeout)
        if self._visibility_override is not None:
            self._visibility_timeout = self._visibility_override

    async def _effective_visibility_timeout(self, queue_timeout: int) -> int | None:
        """Spec §9.1 rule 2: with a window, window + timeout + 30 s when the queue's own
        visibility timeout is shorter than window + timeout (None: the queue's applies)."""
        window = self.mapping.maximum_batching_window_in_seconds or 0
        if window <= 0:
            return None
        timeout_s = await self.runtime.broker.store.timeout_s(
            self.mapping.function_name, self.mapping.qualifier
        )
        if timeout_s is None:  # the function is gone: invocations will say so
            return None
        if window + timeout_s > queue_timeout:
            return window + timeout_s + 30
        return None

    async def _call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _loop(self) -> None:
        carry: list[tuple[dict[str, Any], int]] = []
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                records, carry, full = await self._collect(carry)
            except (BotoCoreError, ClientError) as exc:
                self.log.warning("sqs_receive_failed", error=repr(exc))
                await self.runtime.report(f"PROBLEM: Error occurred while ReceiveMessage: {exc}")
                await self._sleep(self.settings.throttle_backoff_max_s)
                continue
            except Exception as exc:  # Redis unreachable (counters, filters' bookkeeping)
                self.log.warning("sqs_poll_failed", error=repr(exc))
                await self._sleep(self.settings.throttle_backoff_max_s)
                continue
            if records:
                collected = time.monotonic()
                try:
                    await self._process(records)
                except Exception as exc:  # not deleted: the messages reappear and run again
                    self.log.warning("sqs_batch_not_settled", error=repr(exc))
                    await self._sleep(self.settings.throttle_backoff_max_s)
                    continue
                # A backlog whose batches take longer to run than to gather: the function is
                # the bottleneck, so one more loop helps (up to the cap). When the queue is
                # the slower side, more loops would only compete for it.
                if full and time.monotonic() - collected >= collected - started:
                    self._spawn()
            elif len(self._loops) > 1 and not carry:
                return  # the queue is empty: one loop fewer

    async def _collect(
        self, carry: list[tuple[dict[str, Any], int]]
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], int]], bool]:
        """One batch (spec §8): until ``BatchSize`` records, the window, or 6 MB. Returns the
        batch, the records held over for the next one, and whether the batch is full."""
        buffer = BatchBuffer(self.mapping.batch_size)
        leftover: list[tuple[dict[str, Any], int]] = []
        for record, size in carry:
            if buffer.fits(size):
                buffer.add(record, size)
            else:
                leftover.append((record, size))
        window = self.mapping.maximum_batching_window_in_seconds or 0
        deadline = time.monotonic() + window
        while not leftover and not buffer.full and not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if buffer and (window <= 0 or remaining <= 0):
                break
            wait = self.settings.sqs_wait_time_s
            if window > 0:
                wait = min(wait, max(0, math.floor(remaining)))
            wanted = min(_MAX_RECEIVE, self.mapping.batch_size - len(buffer))
            records = await self._receive(wanted, wait)
            for record in records:
                size = record_size(record)
                if not leftover and buffer.fits(size):
                    buffer.add(record, size)
                else:
                    leftover.append((record, size))
            if not buffer:
                break  # an empty poll: the loop decides whether to go on
            if not records and wait == 0:  # under a second of window left: wait it out
                await self._sleep(max(0.0, deadline - time.monotonic()))
        full = buffer.full or bool(leftover)
        return buffer.take(), leftover, full

    async def _receive(self, wanted: int, wait_s: int) -> list[dict[str, Any]]:
        """ReceiveMessage, then filtering: records that no filter keeps are deleted now."""
        request: dict[str, Any] = {
            "QueueUrl": self._queue_url,
            "MaxNumberOfMessages": wanted,
            "WaitTimeSeconds": max(0, wait_s),
            "AttributeNames": ["All"],
            "MessageAttributeNames": ["All"],
        }
        if self._visibility_override is not None:
            request["VisibilityTimeout"] = self._visibility_override
        response = await self._call(lambda: self._client.receive_message(**request))
        messages = response.get("Messages", [])
        if not messages:
            return []
        arn = self.mapping.event_source_arn
        records = [sqs_record(message, arn, self.region) for message in messages]
        kept, dropped = self.runtime.filter.split(records)
        await self.runtime.count(polled=len(records), filtered_out=len(dropped))
        if dropped:
            await self._delete(dropped)  # spec §10.5: filtered-out SQS messages are deleted
        return kept

    async def _process(self, records: list[dict[str, Any]]) -> None:
        result = await self._invoke(records)
        if result is None:
            return  # throttled until the messages were about to reappear: SQS retries them
        if result.outcome != "success":
            # Function error, timeout, missing function: delete nothing (spec §9.1 rule 5).
            self.log.info(
                "sqs_batch_failed",
                records=len(records),
                outcome=result.outcome,
                error=result.function_error or result.error_message,
            )
            await self.runtime.count(failed_records=len(records))
            await self.runtime.report(FUNCTION_CALL_FAILED)
            return
        failed: set[str] | None = set()
        if REPORT_BATCH_ITEM_FAILURES in (self.mapping.function_response_types or []):
            failed = reported_failures(result.payload, [r["messageId"] for r in records])
        if failed is None:
            self.log.info("sqs_batch_response_invalid", records=len(records))
            await self.runtime.count(failed_records=len(records))
            await self.runtime.report(FUNCTION_CALL_FAILED)
            return
        await self.runtime.count(failed_records=len(failed))
        await self._delete([r for r in records if r["messageId"] not in failed])
        await self.runtime.report(OK)

    async def _invoke(self, records: list[dict[str, Any]]) -> InvokeResult | None:
        """Invoke, retrying throttles with back-off while the messages are still hidden
        (spec §9.1 rule 6); None once half their visibility timeout has passed."""
        started = time.monotonic()
        budget = self._visibility_timeout / 2
        backoff = self.settings.throttle_backoff_s
        while True:
            result = await self.runtime.invoke(records)
            if result.outcome != "throttle":
                return result
            await self.runtime.count(throttled=1)
            if time.monotonic() - started + backoff > budget or self._stopping.is_set():
                return None
            await self._sleep(backoff)
            backoff = min(backoff * 2, self.settings.throttle_backoff_max_s)

    async def _delete(self, records: Sequence[dict[str, Any]]) -> None:
        # Shielded: a stop that runs out of time must not cut a deletion off from its count.
        await asyncio.shield(self._delete_now(records))

    async def _delete_now(self, records: Sequence[dict[str, Any]]) -> None:
        deleted = 0
        for start in range(0, len(records), _MAX_RECEIVE):
            chunk = records[start : start + _MAX_RECEIVE]
            entries = [
                {"Id": str(i), "ReceiptHandle": record["receiptHandle"]}
                for i, record in enumerate(chunk)
            ]
            try:
                response = await self._call(
                    partial(
                        self._client.delete_message_batch, QueueUrl=self._queue_url, Entries=entries
                    )
                )
            except (BotoCoreError, ClientError) as exc:  # they reappear and run again
                self.log.warning("sqs_delete_failed", error=repr(exc), records=len(chunk))
                continue
            deleted += len(response.get("Successful", []))
            for failure in response.get("Failed", []):
                self.log.warning("sqs_delete_failed", error=failure.get("Message", ""))
        await self.runtime.count(deleted=deleted)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
