"""Prometheus metrics for ``/metrics``: Sluice's counters in Redis, under Prometheus names.

Every value is read from Redis at scrape time (the counters the queue scripts and pollers
already keep), so any ``sluice serve`` process reports the same, Redis-wide numbers: scrape
one process, or aggregate with ``max without (instance)``. :func:`read_snapshot` gathers
them asynchronously; :class:`Metrics` renders a snapshot through a ``CollectorRegistry`` of
its own (no global registry).

Function metrics carry the label ``function``; mapping metrics ``mapping`` (UUID),
``function`` and ``source`` (the ``EventSourceArn``, an ``amqp://`` password masked).

Stats fields are those of ``P:{fn}:stats`` (function rows) and ``P:{esm}:stats:UUID``
(``sluice_esm_*`` rows); see ``broker/keys.py``. "—" means a Sluice metric with no AWS twin.

==========================================  ===========================  ==========================
Prometheus name                             AWS metric                   stats field
==========================================  ===========================  ==========================
sluice_async_events_received_total          AsyncEventsReceived §2.6     AsyncEventsReceived
sluice_async_events_dropped_total           AsyncEventsDropped §2.6      AsyncEventsDropped
sluice_async_events_finished_total          — (AsyncEventsDropped by     Succeeded,
  {condition}                               cause, and Success)          RetriesExhausted,
                                                                         EventAgeExceeded,
                                                                         ZeroReservedConcurrency,
                                                                         Unreadable
sluice_async_events_retried_total           —                            Retried
sluice_async_events_reclaimed_total         —                            Reclaimed (expired leases)
sluice_async_invocations_total              Invocations §2.6 (async)     Invocations
sluice_async_invocation_errors_total        Errors §2.6 (async)          Errors
sluice_async_throttles_total                Throttles §2.6 (async)       Throttles
sluice_async_system_errors_total            —                            SystemErrors
sluice_dead_letter_errors_total             DeadLetterErrors §2.6        DeadLetterErrors
sluice_destination_delivery_failures_total  DestinationDeliveryFailures  DestinationDelivery
                                            §2.6 (async)                 Failures
sluice_queue_events{state} (gauge)          —                            ready, delayed, inflight,
                                                                         outbox (AsyncQueue.depth)
sluice_queue_next_event_age_seconds         nearest to AsyncEventAge     enqueued_at of the head
  (gauge)                                   §2.6                         of P:{fn}:ready; 0 if none
sluice_dead_letter_entries (gauge)          —                            ZCARD P:{fn}:dead
sluice_esm_polled_events_total              PolledEventCount §11.2       polled
sluice_esm_filtered_out_events_total        FilteredOutEventCount        filtered_out
sluice_esm_invoked_events_total             InvokedEventCount            invoked_records
sluice_esm_failed_invoke_events_total       FailedInvokeEventCount       failed_records
sluice_esm_deleted_events_total             DeletedEventCount (SQS)      deleted
sluice_esm_on_failure_events_total          — (DroppedEventCount +       on_failure_records
                                            OnFailureDestination
                                            DeliveredEventCount)
sluice_esm_dropped_events_total             DroppedEventCount            dropped (streams: no
                                                                         destination, or its
                                                                         delivery failed)
sluice_esm_on_failure_delivered_events      OnFailureDestination         on_failure_delivered
  _total                                    DeliveredEventCount
sluice_esm_on_failure_delivery_failures     DestinationDelivery          on_failure_delivery
  _total                                    Failures §11.1 (batches)     _failed
sluice_esm_invocations_total                —                            invoked
sluice_esm_failed_invocations_total         —                            failed
sluice_esm_throttles_total                  —                            throttled
sluice_esm_retried_batches_total            —                            retried (streams)
sluice_esm_bisected_batches_total           —                            bisected (streams)
sluice_esm_acked_events_total               —                            acked (AMQP)
sluice_esm_rejected_events_total            —                            rejected (AMQP)
sluice_esm_iterator_age_milliseconds        IteratorAge §11.1            iterator_age_ms:SHARD
  {shard} (gauge)
sluice_esm_info{state} (gauge, 1)           —                            the mapping's State
==========================================  ===========================  ==========================

Not counted yet (no value is exposed rather than a made-up one): ``AsyncEventAge`` as AWS
defines it (per attempt); ``Invocations``/``Errors``/``Throttles`` of synchronous invokes; Kafka's
``CommittedEventCount``, error counts and offset lags (no Kafka source).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from broker.clock import Clock
from broker.core import Broker
from broker.errors import ServiceError
from broker.functions import FunctionStore
from broker.keys import Keys
from broker.mappings import EventSourceMapping
from broker.redis_client import as_text

__all__ = [
    "CONTENT_TYPE_LATEST",
    "FunctionSample",
    "MappingSample",
    "Metrics",
    "RedisView",
    "Snapshot",
    "read_snapshot",
]

log = structlog.get_logger("sluice.metrics")

# (Prometheus name without ``_total``, field of ``P:{fn}:stats``, help)
FUNCTION_COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "sluice_async_events_received",
        "AsyncEventsReceived",
        "Events queued by asynchronous invokes, one per 202 (AWS AsyncEventsReceived).",
    ),
    (
        "sluice_async_events_dropped",
        "AsyncEventsDropped",
        "Events that ended without a successful execution: retries exhausted, too old, "
        "reserved concurrency 0 (AWS AsyncEventsDropped).",
    ),
    ("sluice_async_events_retried", "Retried", "Retries scheduled for asynchronous events."),
    (
        "sluice_async_events_reclaimed",
        "Reclaimed",
        "Claimed events whose lease expired and that were put back to run again.",
    ),
    (
        "sluice_async_invocations",
        "Invocations",
        "Asynchronous attempts that ran the function (AWS Invocations, async only).",
    ),
    (
        "sluice_async_invocation_errors",
        "Errors",
        "Asynchronous attempts that ended in a function error (AWS Errors, async only).",
    ),
    (
        "sluice_async_throttles",
        "Throttles",
        "Asynchronous attempts the function refused with 429 (AWS Throttles, async only).",
    ),
    (
        "sluice_async_system_errors",
        "SystemErrors",
        "Asynchronous attempts that could not reach the function (retried like throttles).",
    ),
    (
        "sluice_dead_letter_errors",
        "DeadLetterErrors",
        "Failed sends to the function's dead-letter queue (AWS DeadLetterErrors).",
    ),
    (
        "sluice_destination_delivery_failures",
        "DestinationDeliveryFailures",
        "Failed sends to an OnSuccess/OnFailure destination (AWS DestinationDeliveryFailures).",
    ),
)

# condition label -> field of ``P:{fn}:stats``
FINISHED_CONDITIONS: tuple[tuple[str, str], ...] = (
    ("Success", "Succeeded"),
    ("RetriesExhausted", "RetriesExhausted"),
    ("EventAgeExceeded", "EventAgeExceeded"),
    ("ZeroReservedConcurrency", "ZeroReservedConcurrency"),
    ("UnreadableEnvelope", "Unreadable"),
)

QUEUE_STATES = ("ready", "delayed", "inflight", "outbox")

# (Prometheus name without ``_total``, field of ``P:{esm}:stats:UUID``, help)
MAPPING_COUNTERS: tuple[tuple[str, str, str], ...] = (
    (
        "sluice_esm_polled_events",
        "polled",
        "Records read from the source (AWS PolledEventCount).",
    ),
    (
        "sluice_esm_filtered_out_events",
        "filtered_out",
        "Records no filter kept (AWS FilteredOutEventCount).",
    ),
    (
        "sluice_esm_invoked_events",
        "invoked_records",
        "Records that invoked the function; retries count again (AWS InvokedEventCount).",
    ),
    (
        "sluice_esm_failed_invoke_events",
        "failed_records",
        "Records in invocations that failed or reported item failures "
        "(AWS FailedInvokeEventCount).",
    ),
    (
        "sluice_esm_deleted_events",
        "deleted",
        "SQS messages deleted after processing (AWS DeletedEventCount).",
    ),
    (
        "sluice_esm_on_failure_events",
        "on_failure_records",
        "Stream records discarded (too old, retries exhausted, oversize) and handed to the "
        "on-failure path (AWS DroppedEventCount + OnFailureDestinationDeliveredEventCount).",
    ),
    (
        "sluice_esm_dropped_events",
        "dropped",
        "Stream records discarded with no on-failure destination, or whose delivery to it "
        "failed (AWS DroppedEventCount).",
    ),
    (
        "sluice_esm_on_failure_delivered_events",
        "on_failure_delivered",
        "Stream records whose on-failure record was delivered "
        "(AWS OnFailureDestinationDeliveredEventCount).",
    ),
    (
        "sluice_esm_on_failure_delivery_failures",
        "on_failure_delivery_failed",
        "Discarded batches whose on-failure record could not be delivered "
        "(AWS DestinationDeliveryFailures, per batch).",
    ),
    ("sluice_esm_invocations", "invoked", "Batches that ran the function."),
    ("sluice_esm_failed_invocations", "failed", "Batches whose invocation did not succeed."),
    ("sluice_esm_throttles", "throttled", "Batch invocations the function refused with 429."),
    ("sluice_esm_retried_batches", "retried", "Stream batches retried after a failure."),
    ("sluice_esm_bisected_batches", "bisected", "Stream batches split in two after a failure."),
    ("sluice_esm_acked_events", "acked", "AMQP messages acknowledged."),
    ("sluice_esm_rejected_events", "rejected", "AMQP messages rejected after a failure."),
)

ITERATOR_AGE_FIELD = "iterator_age_ms:"  # + shard id: a gauge in the mapping's stats hash


@dataclass(frozen=True)
class FunctionSample:
    """One function's counters and queue, as read at one scrape."""

    name: str
    counters: Mapping[str, int]
    queue: Mapping[str, int]  # QUEUE_STATES -> events
    dead_letters: int
    next_event_age_s: float  # 0 when nothing is ready


@dataclass(frozen=True)
class MappingSample:
    """One event source mapping's counters and gauges, as read at one scrape."""

    uuid: str
    function: str
    source: str  # EventSourceArn, password masked
    state: str
    counters: Mapping[str, int]
    iterator_age_ms: Mapping[str, int]  # shard id -> ms


@dataclass(frozen=True)
class Snapshot:
    functions: list[FunctionSample] = field(default_factory=list)
    mappings: list[MappingSample] = field(default_factory=list)


def _ints(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    return {as_text(k): int(v) for k, v in raw.items()}


@dataclass(frozen=True)
class RedisView:
    """What reading Sluice's state takes: the client, the keys and the clock (a running
    broker's, or a command's that never starts one)."""

    redis: aioredis.Redis
    keys: Keys
    clock: Clock

    @classmethod
    def of(cls, broker: Broker) -> RedisView:
        return cls(broker.redis, broker.keys, broker.clock)


async def read_snapshot(view: RedisView) -> Snapshot:
    """Everything ``/metrics`` shows, in a few pipelined round trips (read only)."""
    functions = await _read_functions(view)
    mappings = await _read_mappings(view)
    return Snapshot(functions, mappings)


async def _read_functions(broker: RedisView) -> list[FunctionSample]:
    names = await FunctionStore(broker.redis, broker.keys).names()
    if not names:
        return []
    keys = [broker.keys.for_function(name) for name in names]
    async with broker.redis.pipeline(transaction=False) as pipe:
        for fk in keys:
            # The same reads as AsyncQueue.depth, plus the stats and the ready head.
            pipe.hgetall(fk.stats)
            pipe.llen(fk.ready)
            pipe.zcard(fk.delayed)
            pipe.zcard(fk.inflight)
            pipe.hlen(fk.outbox)
            pipe.zcard(fk.dead)
            pipe.lindex(fk.ready, 0)
        raw = await pipe.execute()
    rows = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    heads = [(fk, row[6]) for fk, row in zip(keys, rows, strict=True) if row[6] is not None]
    enqueued: dict[str, float] = {}
    if heads:
        async with broker.redis.pipeline(transaction=False) as pipe:
            for fk, head in heads:
                pipe.hget(fk.events, head)
            envelopes = await pipe.execute()
        for (fk, _), envelope in zip(heads, envelopes, strict=True):
            at = _enqueued_at(envelope)
            if at is not None:
                enqueued[fk.ready] = at
    now = broker.clock.now()
    samples = []
    for name, fk, row in zip(names, keys, rows, strict=True):
        stats, ready, delayed, inflight, outbox, dead, _ = row
        at = enqueued.get(fk.ready)
        depth = (int(ready), int(delayed), int(inflight), int(outbox))
        samples.append(
            FunctionSample(
                name=name,
                counters=_ints(stats),
                queue=dict(zip(QUEUE_STATES, depth, strict=True)),
                dead_letters=int(dead),
                next_event_age_s=0.0 if at is None else max(0.0, now - at),
            )
        )
    return samples


def _enqueued_at(envelope: bytes | str | None) -> float | None:
    """The envelope's first-queued time; None if it is gone (claimed meanwhile) or unreadable."""
    if envelope is None:
        return None
    try:
        return float(json.loads(envelope)["enqueued_at"])
    except (ValueError, KeyError, TypeError):
        return None


async def _read_mappings(broker: RedisView) -> list[MappingSample]:
    # The stored documents as they are: a scrape must not settle transitional states.
    raw = await broker.redis.hgetall(broker.keys.mappings)
    mappings: list[EventSourceMapping] = []
    for uuid, document in raw.items():
        try:
            mappings.append(EventSourceMapping.model_validate_json(document))
        except ValueError as exc:  # pydantic's ValidationError: another version's document
            log.warning("metrics_mapping_unreadable", esm=as_text(uuid), error=str(exc))
    if not mappings:
        return []
    mappings.sort(key=lambda m: (m.created_at, m.uuid))
    async with broker.redis.pipeline(transaction=False) as pipe:
        for mapping in mappings:
            pipe.hgetall(broker.keys.mapping_stats(mapping.uuid))
        stats = await pipe.execute()
    samples = []
    for mapping, values in zip(mappings, stats, strict=True):
        fields = _ints(values)
        ages = {
            name.removeprefix(ITERATOR_AGE_FIELD): value
            for name, value in fields.items()
            if name.startswith(ITERATOR_AGE_FIELD)
        }
        samples.append(
            MappingSample(
                uuid=mapping.uuid,
                function=mapping.function_name,
                source=str(mapping.response(listing=True)["EventSourceArn"]),
                state=mapping.state.value,
                counters=fields,
                iterator_age_ms=ages,
            )
        )
    return samples


class SnapshotCollector(Collector):
    """Yields the metric families of the snapshot it was last given."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        yield from function_families(self.snapshot.functions)
        yield from mapping_families(self.snapshot.mappings)


def function_families(samples: list[FunctionSample]) -> Iterable[Metric]:
    label = ["function"]
    for name, stat, text in FUNCTION_COUNTERS:
        family = CounterMetricFamily(name, text, labels=label)
        for s in samples:
            family.add_metric([s.name], s.counters.get(stat, 0))
        yield family
    finished = CounterMetricFamily(
        "sluice_async_events_finished",
        "Asynchronous events that ended, by condition (Success or why it was dropped).",
        labels=["function", "condition"],
    )
    queue = GaugeMetricFamily(
        "sluice_queue_events",
        "Asynchronous events in the function's queue, by state.",
        labels=["function", "state"],
    )
    age = GaugeMetricFamily(
        "sluice_queue_next_event_age_seconds",
        "Age since first queued of the next ready event (head of the ready list); 0 if none.",
        labels=label,
    )
    dead = GaugeMetricFamily(
        "sluice_dead_letter_entries",
        "Entries in Sluice's dead-letter store for the function.",
        labels=label,
    )
    for s in samples:
        for condition, stat in FINISHED_CONDITIONS:
            finished.add_metric([s.name, condition], s.counters.get(stat, 0))
        for state in QUEUE_STATES:
            queue.add_metric([s.name, state], s.queue.get(state, 0))
        age.add_metric([s.name], s.next_event_age_s)
        dead.add_metric([s.name], s.dead_letters)
    yield from (finished, queue, age, dead)


def mapping_families(samples: list[MappingSample]) -> Iterable[Metric]:
    labels = ["mapping", "function", "source"]
    for name, stat, text in MAPPING_COUNTERS:
        family = CounterMetricFamily(name, text, labels=labels)
        for s in samples:
            family.add_metric([s.uuid, s.function, s.source], s.counters.get(stat, 0))
        yield family
    age = GaugeMetricFamily(
        "sluice_esm_iterator_age_milliseconds",
        "Age of the last record of the shard's last batch when it was sent (AWS IteratorAge).",
        labels=[*labels, "shard"],
    )
    info = GaugeMetricFamily(
        "sluice_esm_info",
        "1 per event source mapping, labelled with its State.",
        labels=[*labels, "state"],
    )
    for s in samples:
        for shard, ms in sorted(s.iterator_age_ms.items()):
            age.add_metric([s.uuid, s.function, s.source, shard], ms)
        info.add_metric([s.uuid, s.function, s.source, s.state], 1)
    yield from (age, info)


class Metrics:
    """One per API app: its own registry with one collector fed a fresh snapshot."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.registry = CollectorRegistry()
        self._collector = SnapshotCollector()
        self.registry.register(self._collector)

    async def render(self) -> bytes:
        """The exposition text of a snapshot read now; ``ServiceError`` when Redis fails."""
        try:
            snapshot = await read_snapshot(RedisView.of(self.broker))
        except RedisError as exc:
            raise ServiceError(f"Sluice could not read its metrics from Redis: {exc}") from exc
        # No await between setting and rendering: concurrent scrapes cannot mix snapshots.
        self._collector.snapshot = snapshot
        return generate_latest(self.registry)
