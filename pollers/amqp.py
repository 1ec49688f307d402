"""RabbitMQ event source through kombu (spec §8, §9.3, §10.5): one consumer per mapping,
batches shaped as Lambda delivers Amazon MQ for RabbitMQ events, acks on success and rejects
without requeue on failure (the queue's dead-letter exchange decides what happens next).

The source is the mapping's ``amqp://user:pass@host:port/vhost`` URL, or an Amazon MQ broker
ARN that the ``amqp_broker_urls`` setting maps to such a URL; ``Queues`` names the queue and
a ``VIRTUAL_HOST`` source access configuration overrides the URL's virtual host.

kombu is blocking: every call on the connection runs in the manager's thread pool, one at a
time (:class:`_Consumer` holds a lock), and a wait for messages is cut into short slices so
that :meth:`AmqpPoller.stop` is noticed within a fraction of a second. Messages of a batch
that is still being gathered when the poller stops are returned to the queue by RabbitMQ
when the connection closes; a batch already handed to the function is finished and settled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from kombu.connection import Connection

from broker.errors import ApiError, SluiceError
from broker.mappings.model import EventSourceMapping
from broker.models import InvokeResult
from broker.payloads import SYNC_PAYLOAD_LIMIT_BYTES
from pollers.core import (
    FUNCTION_CALL_FAILED,
    OK,
    BatchBuffer,
    MappingRuntime,
    PollerSettings,
    record_size,
)

__all__ = ["AmqpPoller", "AmqpSourceError", "amqp_record", "java_date", "source_url"]

T = TypeVar("T")
Delivery = tuple[int, dict[str, Any], int]  # delivery tag, record, its size in the payload

DEFAULT_WINDOW_S = 0.5  # spec §8: MQ's batching window when the mapping sets none
_IDLE_WAIT_S = 1.0  # one wait for a first message; the loop then looks again
_SLICE_S = 0.2  # a blocked wait notices stop() this often
_QUIET_S = 0.05  # after a message, gather what follows at once, then hand it over
_MAX_PREFETCH = 65_535  # basic.qos prefetch-count is an AMQP short
_RECORDS_ENVELOPE = len(b'{"Records": []}')  # what BatchBuffer's byte count starts from
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_PROPERTIES = (  # AWS's basicProperties keys, in AWS's order, and py-amqp's names
    ("contentType", "content_type"),
    ("contentEncoding", "content_encoding"),
    ("headers", "application_headers"),
    ("deliveryMode", "delivery_mode"),
    ("priority", "priority"),
    ("correlationId", "correlation_id"),
    ("replyTo", "reply_to"),
    ("expiration", "expiration"),
    ("messageId", "message_id"),
    ("timestamp", "timestamp"),
    ("type", "type"),
    ("userId", "user_id"),
    ("appId", "app_id"),
    ("clusterId", "cluster_id"),
)


class AmqpSourceError(SluiceError):
    """RabbitMQ cannot be reached, or the queue is missing; the poller reconnects."""

    retriable = True


def java_date(value: int | float | datetime) -> str:
    """A timestamp as AWS's Java serializer writes it, in UTC: ``Jan 1, 1970, 12:33:41 AM``."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(value, tz=UTC)
    moment = moment.astimezone(UTC)
    hour = moment.hour % 12 or 12
    noon = "AM" if moment.hour < 12 else "PM"
    month = _MONTHS[moment.month - 1]
    return f"{month} {moment.day}, {moment.year}, {hour}:{moment:%M:%S} {noon}"


def _header_value(value: Any) -> Any:
    """A header value as AWS delivers it: AMQP strings as ``{"bytes": [...]}`` (Java's
    LongString), numbers and booleans as they are, tables and arrays element by element."""
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": list(bytes(value))}
    if isinstance(value, Mapping):
        return {str(key): _header_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_header_value(item) for item in value]
    if isinstance(value, datetime):
        return java_date(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def amqp_record(properties: Mapping[str, Any], body: bytes, redelivered: bool) -> dict[str, Any]:
    """One delivered message as Lambda shows it (spec §9.3): every ``basicProperties`` key,
    ``null`` when the message lacks it, ``bodySize`` always; ``data`` is the body in base64."""
    shaped: dict[str, Any] = {}
    for key, name in _PROPERTIES:
        value = properties.get(name)
        if value is not None and name == "application_headers":
            value = _header_value(value)
        elif value is not None and name == "timestamp":
            value = java_date(value)
        shaped[key] = value
    shaped["bodySize"] = len(body)
    return {
        "basicProperties": shaped,
        "redelivered": bool(redelivered),
        "data": base64.b64encode(body).decode(),
    }


def source_url(mapping: EventSourceMapping, broker_urls: Mapping[str, str]) -> str | None:
    """The URL to consume from: the mapping's own ``amqp(s)://`` source, or the URL set for
    its Amazon MQ broker ARN (None: none is set); ``VIRTUAL_HOST`` replaces the vhost."""
    arn = mapping.event_source_arn
    url = arn if arn.startswith(("amqp://", "amqps://")) else broker_urls.get(arn)
    if url is None:
        return None
    parts = urlsplit(url)._replace(query="", fragment="")
    for access in mapping.source_access_configurations or []:
        if access.type == "VIRTUAL_HOST":
            parts = parts._replace(path="/" + quote(access.uri, safe=""))
    return urlunsplit(parts)


def virtual_host(url: str) -> str:
    """The vhost a kombu URL names (``amqp://h//`` and ``amqp://h`` both mean ``/``)."""
    path = urlsplit(url).path
    return unquote(path[1:]) or "/"


class _Consumer:
    """One connection, one channel, one consumer. Blocking; one call at a time."""

    def __init__(self, url: str, queue: str, prefetch: int) -> None:
        self.url, self.queue, self.prefetch = url, queue, prefetch
        self._connection: Any = None
        self._channel: Any = None
        self._inbox: list[Delivery] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        with self._lock:
            # heartbeat 0: nothing would answer RabbitMQ's heartbeats while a batch is being
            # invoked (up to 15 minutes); a dead broker shows as a socket error instead.
            connection: Any = Connection(self.url, connect_timeout=5, heartbeat=0)  # type: ignore[no-untyped-call]
            errors = (*connection.connection_errors, *connection.channel_errors)
            try:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, reraise_as_library_errors=False
                )
                channel = connection.channel()
                channel.auto_decode = False  # bodies stay bytes, whatever contentEncoding says
                channel.queue_declare(queue=self.queue, passive=True)  # NotFound when missing
                channel.basic_qos(0, self.prefetch, False)
                channel.basic_consume(queue=self.queue, callback=self._on_message)
            except errors as exc:
                _release(connection)
                raise AmqpSourceError(_describe(exc, self.queue)) from exc
            self._connection, self._channel, self._inbox = connection, channel, []

    def _on_message(self, message: Any) -> None:
        body = message.body
        body = body.encode() if isinstance(body, str) else bytes(body)
        info = message.delivery_info
        record = amqp_record(message.properties, body, info.get("redelivered", False))
        self._inbox.append((info["delivery_tag"], record, record_size(record)))

    def drain(self, wanted: int, wait_s: float, halt: threading.Event) -> list[Delivery]:
        """Messages delivered within ``wait_s``: returns at ``wanted``, at ``halt``, or once
        no further message follows the last within ``_QUIET_S``."""
        with self._lock:
            deadline = time.monotonic() + wait_s
            try:
                while len(self._inbox) < wanted and not halt.is_set():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    quiet = bool(self._inbox)
                    try:
                        self._connection.drain_events(
                            timeout=min(_QUIET_S if quiet else _SLICE_S, remaining)
                        )
                    except TimeoutError:
                        if quiet:
                            break
            except (*self._connection.connection_errors, *self._connection.channel_errors) as exc:
                raise AmqpSourceError(_describe(exc, self.queue)) from exc
            taken, self._inbox = self._inbox, []
            return taken

    def settle(self, tags: Sequence[int], *, ack: bool, requeue: bool = False) -> None:
        with self._lock:
            connection, channel = self._connection, self._channel
            try:
                for tag in tags:
                    if ack:
                        channel.basic_ack(tag)
                    else:
                        channel.basic_reject(tag, requeue)
            except (*connection.connection_errors, *connection.channel_errors) as exc:
                raise AmqpSourceError(_describe(exc, self.queue)) from exc

    def close(self) -> None:
        """Close the connection: RabbitMQ returns every unacknowledged message to the queue."""
        with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
            self._inbox = []
        if connection is not None:
            _release(connection)


def _release(connection: Any) -> None:
    """Close a kombu connection and, whatever happens on the way, its socket."""
    raw = connection._connection  # py-amqp's, while connected
    with contextlib.suppress(Exception):  # already gone: nothing left to say to RabbitMQ
        connection.release()
    if raw is not None:
        # A close interrupted by another frame (a consumer cancel notice when the queue is
        # deleted meanwhile) is swallowed by kombu with the socket still open.
        with contextlib.suppress(Exception):
            raw.collect()


def _describe(exc: BaseException, queue: str) -> str:
    if type(exc).__name__ == "NotFound":  # amqp.exceptions.NotFound: a 404 on the channel
        return f"Queue {queue} does not exist"
    return f"Connection error: {type(exc).__name__}: {exc}"


class AmqpPoller:
    """Consumes one queue for one mapping until :meth:`stop`."""

    def __init__(
        self, runtime: MappingRuntime, settings: PollerSettings, executor: Executor
    ) -> None:
        self.runtime = runtime
        self.mapping = runtime.mapping
        self.settings = settings
        self._executor = executor
        self.queue = (self.mapping.queues or [""])[0]
        self.url = source_url(self.mapping, settings.amqp_broker_urls)
        # The API's rendering of the source: an amqp:// password is masked there and here.
        self.arn = str(self.mapping.response()["EventSourceArn"])
        self._key = f"{self.queue}::{virtual_host(self.url or '')}"
        envelope = len(json.dumps(self._event([])).encode())
        self._limit_bytes = SYNC_PAYLOAD_LIMIT_BYTES - (envelope - _RECORDS_ENVELOPE)
        window = self.mapping.maximum_batching_window_in_seconds
        self.window_s = DEFAULT_WINDOW_S if window is None else float(window)
        prefetch = min(max(self.mapping.batch_size, 1), _MAX_PREFETCH)
        self._consumer = _Consumer(self.url, self.queue, prefetch) if self.url else None
        self._stopping = asyncio.Event()
        self._halt = threading.Event()  # the same signal, for the blocking side
        self.log = runtime.log.bind(source="rabbitmq", queue=self.queue)

    async def run(self) -> None:
        """Consume until stopped, reconnecting with back-off while RabbitMQ is away."""
        consumer = self._consumer
        if consumer is None:
            await self.runtime.report(
                f"PROBLEM: No URL for {self.arn}: map the broker ARN to an amqp:// URL "
                "in the amqp_broker_urls setting."
            )
            await self._stopping.wait()
            return
        backoff = self.settings.amqp_reconnect_backoff_s
        try:
            while not self._stopping.is_set():
                try:
                    await self._call(consumer.open)
                    self.log.info("amqp_consumer_opened")
                    backoff = self.settings.amqp_reconnect_backoff_s
                    await self._consume(consumer)
                except Exception as exc:  # loop boundary: report, back off, reconnect
                    problem = str(exc) if isinstance(exc, AmqpSourceError) else repr(exc)
                    self.log.warning("amqp_source_unavailable", error=problem)
                    with contextlib.suppress(Exception):  # Redis away too: log only
                        await self.runtime.report(f"PROBLEM: {problem}")
                await self._call(consumer.close)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.amqp_reconnect_max_s)
        finally:  # stopped, or cancelled by a stop that timed out: unacked messages go back
            self._halt.set()
            await asyncio.shield(self._call(consumer.close))

    async def stop(self) -> None:
        """Stop within a fraction of a second; a batch already invoked is settled first."""
        self._stopping.set()
        self._halt.set()

    async def _call(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    async def _consume(self, consumer: _Consumer) -> None:
        carry: list[Delivery] = []
        while not self._stopping.is_set():
            batch, carry = await self._collect(consumer, carry)
            if batch and not self._stopping.is_set():  # else: requeued when it closes
                await self._process(consumer, batch)

    async def _collect(
        self, consumer: _Consumer, carry: list[Delivery]
    ) -> tuple[list[Delivery], list[Delivery]]:
        """One batch (spec §8): ``BatchSize`` records, the window from the first record, or
        6 MB. Returns the batch and the deliveries held over for the next one."""
        buffer = BatchBuffer(self.mapping.batch_size, limit_bytes=self._limit_bytes)
        batch: list[Delivery] = []
        leftover: list[Delivery] = []

        def take(deliveries: list[Delivery]) -> None:
            for delivery in deliveries:
                _, record, size = delivery
                if not leftover and buffer.fits(size):
                    buffer.add(record, size)
                    batch.append(delivery)
                else:
                    leftover.append(delivery)

        take(carry)
        deadline = time.monotonic() + self.window_s if batch else None
        while not leftover and not buffer.full and not self._stopping.is_set():
            wait = _IDLE_WAIT_S if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            wanted = self.mapping.batch_size - len(buffer)
            deliveries = await self._call(partial(consumer.drain, wanted, wait, self._halt))
            if deliveries:
                take(await self._filter(consumer, deliveries))
            if batch and deadline is None:
                deadline = time.monotonic() + self.window_s  # the window starts now
        buffer.take()
        return batch, leftover

    async def _filter(self, consumer: _Consumer, deliveries: list[Delivery]) -> list[Delivery]:
        """Spec §10.5: messages no filter keeps are acknowledged now and never invoked."""
        keep = self.runtime.filter
        if keep.empty:
            kept, dropped = deliveries, []
        else:
            verdicts = await self._call(lambda: [keep.keep(d[1]) for d in deliveries])
            kept = [d for d, v in zip(deliveries, verdicts, strict=True) if v]
            dropped = [d for d, v in zip(deliveries, verdicts, strict=True) if not v]
        await self.runtime.count(polled=len(deliveries), filtered_out=len(dropped))
        if dropped:
            await self._call(partial(consumer.settle, [d[0] for d in dropped], ack=True))
            await self.runtime.count(acked=len(dropped))
        return kept

    async def _process(self, consumer: _Consumer, batch: list[Delivery]) -> None:
        tags = [tag for tag, _, _ in batch]
        result = await self._invoke([record for _, record, _ in batch])
        if result is None:
            return  # stopped while throttled: the messages go back when the channel closes
        if result.outcome == "success":
            await self._call(partial(consumer.settle, tags, ack=True))
            await self.runtime.count(acked=len(tags))
            await self.runtime.report(OK)
            return
        # Function error, timeout, missing function: reject without requeue, so the queue's
        # dead-letter exchange (or nothing) takes them; Sluice never invokes them again.
        requeue = self.settings.amqp_requeue_failed
        await self._call(partial(consumer.settle, tags, ack=False, requeue=requeue))
        await self.runtime.count(failed_records=len(tags), rejected=len(tags))
        self.log.info(
            "amqp_batch_rejected",
            records=len(tags),
            requeue=requeue,
            outcome=result.outcome,
            error=result.function_error or result.error_message,
        )
        await self.runtime.report(FUNCTION_CALL_FAILED)

    async def _invoke(self, records: list[dict[str, Any]]) -> InvokeResult | None:
        """Invoke; throttles are retried with back-off while the messages stay unacked.
        None when the poller stops meanwhile."""
        backoff = self.settings.throttle_backoff_s
        while True:
            result = await self._invoke_once(records)
            if result.outcome != "throttle":
                return result
            await self.runtime.count(throttled=1)
            await self._sleep(backoff)
            if self._stopping.is_set():
                return None
            backoff = min(backoff * 2, self.settings.throttle_backoff_max_s)

    async def _invoke_once(self, records: list[dict[str, Any]]) -> InvokeResult:
        payload = json.dumps(self._event(records))
        try:
            result = await self.runtime.broker.invoke(self.mapping.function_ref, payload)
        except ApiError as exc:  # a missing function or version: a pre-invocation error
            result = InvokeResult(outcome="system_error", error_message=exc.message)
        if result.outcome != "throttle":  # counted as MappingRuntime.invoke counts
            await self.runtime.count(
                invoked=int(result.executed),
                invoked_records=len(records) if result.executed else 0,
                failed=int(result.outcome != "success"),
            )
        return result

    def _event(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "eventSource": "aws:rmq",
            "eventSourceArn": self.arn,
            "rmqMessagesByQueue": {self._key: records},
        }

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
