"""The dispatcher: claims queued events, invokes functions, and settles what happened.

One asyncio loop per process. It claims only while it has free slots (backpressure), gives
each function a fair share of the free slots per round, starting from a rotating position
(so one backlog cannot starve the others), and never exceeds a function's reserved
concurrency across all processes (the claim script counts every process's leases). Results
are settled in batches; finished outcomes go to the deliverer.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import structlog

from broker.clock import Clock
from broker.decide import Decision, Finish, RetryPolicy, after_attempt, before_attempt
from broker.delivery import Deliverer
from broker.functions import FunctionCache, FunctionState
from broker.invokers.base import Invocation, InvokerRegistry
from broker.models import Envelope, InvokeResult
from broker.outcomes import attempt_counters, outcome_counters, settle_op, unreadable_op
from broker.queue import AsyncQueue, SettleOp

log = structlog.get_logger("sluice.dispatcher")


@dataclass(frozen=True)
class DispatchSettings:
    concurrency: int
    claim_batch: int
    poll_interval_s: float
    visibility_grace_s: float
    retry_base_delay_s: float
    throttle_base_delay_s: float
    throttle_max_delay_s: float
    dead_letter_max_age_s: float
    dead_letter_max_count: int
    delivery_lease_s: float


def _log_decision(decision: Decision, result: InvokeResult | None, now: float) -> None:
    """One line per attempt's outcome; payloads only at debug level."""
    outcome = result.outcome if result else None
    if isinstance(decision, Finish):
        if decision.condition == "Success":
            log.debug("event_succeeded", attempts=decision.envelope.executed_attempts)
        else:
            log.info(
                "event_failed",
                condition=decision.condition,
                attempts=decision.envelope.executed_attempts,
                outcome=outcome,
            )
    else:
        log.info("retry_scheduled", outcome=outcome, delay_s=round(decision.due_at - now, 3))
    if result is not None and result.outcome != "success":
        log.debug("attempt_response", payload=result.payload, message=result.error_message)


@dataclass
class _Done:
    function: str
    op: SettleOp
    counters: dict[str, int]
    token: str  # the lease token of the claim that took the event


class Dispatcher:
    def __init__(
        self,
        *,
        queue: AsyncQueue,
        functions: FunctionCache,
        invokers: InvokerRegistry,
        deliverer: Deliverer,
        clock: Clock,
        settings: DispatchSettings,
    ) -> None:
        self.queue = queue
        self.functions = functions
        self.invokers = invokers
        self.deliverer = deliverer
        self.clock = clock
        self.settings = settings
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claims = 0  # each claim's lease token is ``token:n``: a reclaimed event gets a
        # new token even in this process, so a late settle of an older run is refused
        self._running = 0  # events claimed and not yet settled
        # function -> request id -> lease token, for every event this process holds
        self._held: dict[str, dict[str, str]] = defaultdict(dict)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._done: list[_Done] = []
        self._done_event = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False  # no more claims
        self._closed = asyncio.Event()  # background loops finish their round and return
        self._rotation = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="sluice-claim"),
            asyncio.create_task(self._settle_loop(), name="sluice-settle"),
            asyncio.create_task(self._heartbeat_loop(), name="sluice-heartbeat"),
            asyncio.create_task(self._sweep_loop(), name="sluice-outbox-sweep"),
        ]

    def wake(self) -> None:
        """New work may be ready (called by the wake listener and local enqueues)."""
        self._wake.set()

    @property
    def running(self) -> int:
        return self._running

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop claiming; let in-flight calls finish for up to ``drain_timeout_s``; put the
        rest back at the front of their queues; deliver what finished; leave nothing held."""
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s  # calls, then deliveries (the outbox is durable)
        claim_loop = self._loops[0] if self._loops else None
        if claim_loop is not None:
            # Not cancelled: a claim cancelled mid-flight could lease events nobody runs.
            self._wake.set()
            self._slot_freed.set()
            await asyncio.gather(claim_loop, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=drain_timeout_s)
            if pending:
                # Stop the calls still running (python workers are killed, HTTP requests
                # dropped) before their events are given back, so that no other process
                # starts an event while its call here still runs.
                log.warning("drain_timeout", running=len(pending))
                await self.invokers.close()
                _, pending = await asyncio.wait(pending, timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # The loops are told to finish rather than cancelled: a cancellation landing inside a
        # Redis call can be swallowed by the client and leave the loop waiting forever.
        self._closed.set()
        self._done_event.set()
        await asyncio.gather(*self._loops[1:], return_exceptions=True)
        await self._settle_pending()
        await self.deliverer.drain(max(0.0, deadline - loop.time()))
        await self.deliverer.cancel()
        self._loops = []
        log.info("dispatcher_stopped", token=self.token)

    # -- claiming ----------------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        while not self._stopping:
            if self.settings.concurrency - self._running <= 0:
                self._slot_freed.clear()  # no await since the check: no wake-up can be lost
                await self._slot_freed.wait()
                continue
            self._wake.clear()  # cleared before claiming, so a wake during the round counts
            try:
                more, next_due = await self._claim_round()
            except Exception:
                log.exception("claim_failed")
                await asyncio.sleep(self.settings.poll_interval_s)
                continue
            if more or self._stopping:
                await asyncio.sleep(0)  # let settled work free slots before claiming again
                continue
            timeout = self.settings.poll_interval_s
            if next_due is not None:
                timeout = max(0.0, min(timeout, next_due - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim_round(self) -> tuple[bool, float | None]:
        """One pass over all functions; returns (more work is ready, next retry due)."""
        names = await self.functions.names()
        if not names:
            return False, None
        start = self._rotation % len(names)
        self._rotation += 1
        ordered = names[start:] + names[:start]
        more = False
        next_due: float | None = None
        for index, name in enumerate(ordered):
            free = self.settings.concurrency - self._running
            if free <= 0 or self._stopping:
                return True, next_due
            share = min(self.settings.claim_batch, math.ceil(free / (len(ordered) - index)))
            state = await self.functions.get(name)
            if state is None:
                continue
            lease_s = state.config.timeout_s + self.settings.visibility_grace_s
            self._claims += 1
            token = f"{self.token}:{self._claims}"
            claim = await self.queue.claim(name, self.clock.now(), share, lease_s, token)
            if claim.next_due is not None:
                next_due = claim.next_due if next_due is None else min(next_due, claim.next_due)
            # A function at its reserved concurrency has work but no room: polling it again
            # at once would spin; a settle here or the poll interval brings the next look.
            more = more or (claim.ready_left > 0 and not claim.capped)
            for request_id, raw in claim.events:
                self._running += 1
                self._held[name][request_id] = token
                task = asyncio.create_task(self._run(state, claim.reserved, request_id, raw, token))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return more, next_due

    # -- running one event -------------------------------------------------------------------
    def _policy(self, state: FunctionState, qualifier: str) -> RetryPolicy:
        eic = state.event_invoke_config(qualifier)
        s = self.settings
        return RetryPolicy(
            maximum_retry_attempts=eic.retries if eic else 2,
            maximum_event_age_s=eic.max_age_s if eic else 21_600,
            retry_base_delay_s=s.retry_base_delay_s,
            throttle_base_delay_s=s.throttle_base_delay_s,
            throttle_max_delay_s=s.throttle_max_delay_s,
        )

    async def _run(
        self, state: FunctionState, reserved: int | None, request_id: str, raw: str, token: str
    ) -> None:
        function = state.config.name
        # Each event runs in its own task, whose context is a copy: bindings stay with it.
        structlog.contextvars.bind_contextvars(function=function, request_id=request_id)
        try:
            envelope = Envelope.model_validate_json(raw)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            # Unreadable (corrupt, or written by an incompatible version): keep it in the
            # dead-letter store rather than reclaiming it forever.
            log.error("envelope_unreadable", error=str(exc))
            self._finished(
                function,
                unreadable_op(function, request_id, raw, str(exc), self.clock.now()),
                {"Unreadable": 1},
                token,
            )
            return
        try:
            structlog.contextvars.bind_contextvars(attempt=envelope.executed_attempts + 1)
            if envelope.replay_of is not None:
                structlog.contextvars.bind_contextvars(replay_of=envelope.replay_of)
            decision, result = await self._attempt(state, reserved, envelope)
            _log_decision(decision, result, self.clock.now())
            op = settle_op(state, decision, self.clock.now())
            counters = attempt_counters(result)
            for name, count in outcome_counters(decision).items():
                counters[name] = counters.get(name, 0) + count
        except asyncio.CancelledError:
            # Draining: give the event back, at the front, for another process or restart.
            self._finished(function, SettleOp("release", request_id), {}, token)
            raise
        except Exception:
            # Our own bug: keep the lease so the event is retried after the visibility
            # timeout instead of being lost.
            log.exception("dispatch_failed")
            self._release_slot(function, request_id, token)
            return
        self._finished(function, op, counters, token)

    def _finished(self, function: str, op: SettleOp, counters: dict[str, int], token: str) -> None:
        self._done.append(_Done(function, op, counters, token))
        self._done_event.set()

    async def _attempt(
        self, state: FunctionState, reserved: int | None, envelope: Envelope
    ) -> tuple[Decision, InvokeResult | None]:
        policy = self._policy(state, envelope.qualifier)
        early = before_attempt(envelope, policy, reserved, self.clock.now())
        if early is not None:
            return early, None
        config = state.config
        version = config.resolve(envelope.qualifier) or envelope.qualifier
        target, timeout_s, memory_mb = config.effective(version)
        invocation = Invocation(
            request_id=envelope.request_id,
            target=target,
            function_name=config.name,
            function_version=version,
            invoked_function_arn=envelope.function_arn,
            payload=envelope.payload,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
        try:
            result = await self.invokers.invoke(invocation)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an invoker bug or an unknown scheme: a system error
            log.warning("invoke_failed", error=repr(exc))
            result = InvokeResult(outcome="system_error", status_code=500, error_message=str(exc))
        decision = after_attempt(
            envelope, result, policy, self.clock.now(), jitter=random.uniform(-1.0, 1.0)
        )
        return decision, result

    # -- settling ----------------------------------------------------------------------------
    def _release_slot(self, function: str, request_id: str, token: str) -> None:
        held = self._held[function]
        if held.get(request_id) == token:  # not a newer claim of the same event
            del held[request_id]
        self._running -= 1
        self._slot_freed.set()
        self._wake.set()

    async def _settle_loop(self) -> None:
        while True:
            await self._done_event.wait()
            self._done_event.clear()
            try:
                await self._settle_pending()
            except Exception:
                log.exception("settle_failed")
                await self._pause(self.settings.poll_interval_s)
                self._done_event.set()
            if self._closed.is_set():
                return

    async def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the dispatcher is closing."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)
        return self._closed.is_set()

    async def _settle_pending(self) -> None:
        done, self._done = self._done, []
        if not done:
            return
        by_function: dict[str, list[_Done]] = defaultdict(list)
        for item in done:
            by_function[item.function].append(item)
        for function, items in by_function.items():
            try:
                applied = await self.queue.settle(
                    function,
                    self.clock.now(),
                    [(item.op, item.token, item.counters) for item in items],
                    dead_max_age_s=self.settings.dead_letter_max_age_s,
                    dead_max_count=self.settings.dead_letter_max_count,
                    outbox_lease_s=self.settings.delivery_lease_s,
                )
            except Exception:
                self._done.extend(items)  # try again; leases still protect the events
                raise
            outbox: list[tuple[str, dict[str, Any]]] = []
            for item, ok in zip(items, applied, strict=True):
                if not ok:
                    log.warning("lease_lost", function=function, request_id=item.op.request_id)
                elif item.op.entry is not None:
                    outbox.append((item.op.request_id, item.op.entry))
                self._release_slot(function, item.op.request_id, item.token)
            if outbox:
                self.deliverer.submit(function, outbox)

    # -- leases ------------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = max(0.05, self.settings.visibility_grace_s / 3)
        while not await self._pause(interval):
            for function, held in list(self._held.items()):
                if not held:
                    continue
                try:
                    state = await self.functions.get(function)
                    timeout_s = state.config.timeout_s if state else 900
                    expiry = self.clock.now() + timeout_s + self.settings.visibility_grace_s
                    await self.queue.extend(function, dict(held), expiry)
                except Exception:  # a Redis blip: try again next beat, leases have slack
                    log.exception("lease_extend_failed", function=function)

    async def _sweep_loop(self) -> None:
        interval = max(0.05, self.settings.delivery_lease_s / 3)
        trimmed_at = 0.0
        while not await self._pause(interval):
            try:
                await self.deliverer.renew()
                names = await self.functions.names()
                await self.deliverer.sweep(names)
                if self.clock.now() - trimmed_at >= 60.0:
                    trimmed_at = self.clock.now()
                    for name in names:
                        await self.queue.dead_trim(
                            name,
                            trimmed_at,
                            self.settings.dead_letter_max_age_s,
                            self.settings.dead_letter_max_count,
                        )
            except Exception:
                log.exception("outbox_sweep_failed")
