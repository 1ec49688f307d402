"""Delivers finished outcomes from the outbox to their destinations and DLQ.

An outbox entry is written atomically with the event's end (``settle.lua``) and leased to
the process that ended it; this module delivers it and removes it. A delivery that still
fails after ``delivery_retries`` attempts becomes a ``delivery_failed`` entry in the
dead-letter store, so nothing disappears. Entries whose lease expired (their process died)
are taken over by the sweep.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from broker.clock import Clock
from broker.dead_letters import dead_letter_entry
from broker.destination import Delivery, DestinationRegistry, redacted
from broker.errors import DeliveryError
from broker.queue import AsyncQueue, OutboxDone
from broker.records import iso_ms

log = structlog.get_logger("sluice.delivery")

MAX_BACKOFF_S = 30.0  # longest wait between two tries of one delivery


@dataclass(frozen=True)
class DeliveryPolicy:
    attempts: int
    backoff_s: float
    lease_s: float
    dead_max_age_s: float
    dead_max_count: int


def deliveries_of(entry: dict[str, Any]) -> list[Delivery]:
    return [
        Delivery(
            kind=target["kind"],
            target=target["target"],
            function=entry["function"],
            request_id=entry["request_id"],
            condition=entry["condition"],
            record=entry["record"],
            payload=entry["payload"],
            error_code=entry.get("error_code", 200),
            error_message=entry.get("error_message", ""),
            record_json=entry.get("record_json", ""),
        )
        for target in entry["targets"]
    ]


class Deliverer:
    def __init__(
        self,
        queue: AsyncQueue,
        registry: DestinationRegistry,
        clock: Clock,
        policy: DeliveryPolicy,
    ) -> None:
        self.queue = queue
        self.registry = registry
        self.clock = clock
        self.policy = policy
        self._tasks: set[asyncio.Task[None]] = set()
        self._active: dict[str, set[str]] = {}  # function -> outbox ids being delivered here

    def submit(self, function: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Deliver in the background; the outbox keeps the entries until done."""
        task = asyncio.create_task(self.deliver(function, entries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def cancel(self) -> None:
        """Stop deliveries still running; their outbox entries stay leased and another
        process (or this one after a restart) delivers them once the lease expires."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)

    async def renew(self) -> None:
        """Extend the delivery leases of what this process is delivering right now, so a
        slow destination does not make another sweep deliver the same entry again."""
        expiry = self.clock.now() + self.policy.lease_s
        for function, ids in list(self._active.items()):
            if ids:
                await self.queue.outbox_extend(function, list(ids), expiry)

    async def sweep(self, functions: list[str], max_entries: int = 500) -> int:
        """Take over outbox entries whose delivery lease expired; returns how many."""
        taken = 0
        for function in functions:
            entries = await self.queue.outbox_claim(
                function, self.clock.now(), self.policy.lease_s, max_entries
            )
            active = self._active.get(function, set())
            entries = [(oid, raw) for oid, raw in entries if oid not in active]
            if entries:
                log.info("outbox_reclaimed", function=function, count=len(entries))
                taken += len(entries)
                # In the background, like any delivery: a slow destination must not hold
                # up lease renewals of the sweep loop.
                self.submit(function, [(oid, json.loads(raw)) for oid, raw in entries])
        return taken

    async def deliver(self, function: str, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Deliver parsed outbox entries (id, entry), then remove them from the outbox."""
        active = self._active.setdefault(function, set())
        ids = {outbox_id for outbox_id, _ in entries}
        active |= ids
        try:
            await self._deliver(function, entries)
        finally:
            active -= ids

    async def _deliver(self, function: str, parsed: list[tuple[str, dict[str, Any]]]) -> None:
        by_target: dict[str, list[tuple[str, Delivery]]] = defaultdict(list)
        for outbox_id, entry in parsed:
            for delivery in deliveries_of(entry):
                by_target[delivery.target].append((outbox_id, delivery))
        failures: dict[str, list[tuple[Delivery, str]]] = defaultdict(list)
        results = await asyncio.gather(
            *(self._deliver_target(target, items) for target, items in by_target.items())
        )
        for failed in results:
            for outbox_id, delivery, error in failed:
                failures[outbox_id].append((delivery, error))
        done: list[OutboxDone] = []
        counters: dict[str, int] = defaultdict(int)
        now = self.clock.now()
        for outbox_id, entry in parsed:
            failed_here = failures.get(outbox_id, [])
            if not failed_here:
                done.append(OutboxDone(outbox_id))
                continue
            for index, (delivery, error) in enumerate(failed_here):
                counter = (
                    "DeadLetterErrors"
                    if delivery.kind == "dead_letter"
                    else ("DestinationDeliveryFailures")
                )
                counters[counter] += 1
                dead_id = (
                    f"{delivery.request_id}/delivery/{delivery.kind}/{redacted(delivery.target)}"
                )
                dead = dead_letter_entry(
                    kind="delivery_failed",
                    entry_id=dead_id,
                    function=function,
                    request_id=delivery.request_id,
                    condition=delivery.condition,
                    record=delivery.record,
                    payload=delivery.payload,
                    attempts=entry["record"]["requestContext"]["approximateInvokeCount"],
                    errors=[error],
                    at=iso_ms(now),
                    target=delivery.target,
                    delivery={
                        "kind": delivery.kind,
                        "errorCode": delivery.error_code,
                        "errorMessage": delivery.error_message,
                    },
                )
                # The outbox id is removed once, with the first dead-letter entry.
                done.append(OutboxDone(outbox_id if index == 0 else "", dead_id, dead))
        await self.queue.outbox_done(
            function,
            now,
            done,
            dict(counters),
            dead_max_age_s=self.policy.dead_max_age_s,
            dead_max_count=self.policy.dead_max_count,
        )

    async def redeliver(self, function: str, entries: list[dict[str, Any]]) -> list[str]:
        """Deliver ``delivery_failed`` dead-letter entries again (with the usual retries);
        returns the ids of those delivered. The caller removes them from the store."""
        delivered: list[str] = []
        for entry in entries:
            spec = entry.get("delivery", {})
            delivery = Delivery(
                kind=spec.get("kind", "record"),
                target=entry["target"],
                function=function,
                request_id=entry["requestId"],
                condition=entry["condition"],
                record=entry["record"],
                payload=entry["payload"],
                error_code=spec.get("errorCode", 200),
                error_message=spec.get("errorMessage", ""),
                source=entry.get("source"),  # stream entries: the mapping and shard (§9.2)
            )
            failed = await self._deliver_target(delivery.target, [(entry["id"], delivery)])
            if not failed:
                delivered.append(entry["id"])
            else:
                log.warning("redelivery_failed", entry=entry["id"], error=failed[0][2])
        return delivered

    async def _deliver_target(
        self, target: str, items: list[tuple[str, Delivery]]
    ) -> list[tuple[str, Delivery, str]]:
        """Deliver to one target, retrying transient failures (tenacity: exponential back-off
        with jitter, at most ``attempts`` tries, and at least any ``Retry-After``); returns
        what could not be delivered, with the error."""
        pending = items
        given_up: list[tuple[str, Delivery, str]] = []
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.policy.attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Again),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    errors = await self.registry.deliver_many(target, [d for _, d in pending])
                    again: list[tuple[tuple[str, Delivery], BaseException]] = []
                    for item, error in zip(pending, errors, strict=True):
                        if error is None:
                            continue
                        if getattr(error, "retriable", False):
                            again.append((item, error))
                        else:
                            given_up.append((item[0], item[1], repr(error)))
                    if again:
                        pending = [item for item, _ in again]
                        log.info(
                            "delivery_retry",
                            target=redacted(target),
                            count=len(again),
                            error=repr(again[0][1]),
                        )
                        raise _Again(again)
        except _Again as exc:
            given_up += [(item[0], item[1], repr(error)) for item, error in exc.failed]
        if given_up:
            log.warning(
                "delivery_given_up",
                target=redacted(target),
                count=len(given_up),
                error=given_up[0][2],
            )
        return given_up

    def _wait(self, state: RetryCallState) -> float:
        jittered = wait_exponential_jitter(
            multiplier=self.policy.backoff_s, max=MAX_BACKOFF_S, jitter=self.policy.backoff_s
        )(state)
        failure = state.outcome.exception() if state.outcome else None
        hints = [
            e.retry_after_s
            for _, e in getattr(failure, "failed", [])
            if isinstance(e, DeliveryError) and e.retry_after_s is not None
        ]
        return min(max([jittered, *hints]), MAX_BACKOFF_S)


class _Again(Exception):
    """Some deliveries of a round failed in a way worth trying again."""

    def __init__(self, failed: list[tuple[tuple[str, Delivery], BaseException]]) -> None:
        super().__init__(f"{len(failed)} deliveries to retry")
        self.failed = failed
