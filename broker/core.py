"""``Broker``: the embeddable API. Built from settings and a Redis client; an async context
manager that starts the dispatcher, deliverer and wake listener and stops them cleanly.

    async with Broker(settings, redis_client) as broker:
        await broker.put_function("orders", "python:app.handlers:orders")
        request_id = await broker.invoke_async("orders", {"id": 1})

Embedders add their own invoker and destination schemes to the built-in ones
(``extra_invokers``, ``extra_destinations``), or replace them (``invokers``,
``destinations``); :meth:`Broker.from_settings` also opens (and, on stop, closes) the Redis
client named by ``settings.redis_url``. ``broker.sync.SyncBroker`` runs one for code that is
not asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from broker.arns import function_arn, parse_function_name, qualified_arn
from broker.batcher import EnqueueBatcher
from broker.clock import Clock, RedisClock
from broker.dead_letters import DeadLetterStore
from broker.delivery import Deliverer, DeliveryPolicy
from broker.destination import DestinationContext, DestinationFactory, DestinationRegistry
from broker.dispatcher import Dispatcher, DispatchSettings
from broker.errors import (
    RATE_EXCEEDED,
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
)
from broker.event_config import (
    merge_update,
    range_error,
    response_body,
    validate_dead_letter_target,
    validate_event_invoke_config,
)
from broker.function_admin import FunctionAdmin, paginate
from broker.functions import FunctionCache, FunctionStore
from broker.guards import MemoryAdmission, check_redis_durability
from broker.invokers.base import Invocation, InvokerFactory, InvokerRegistry
from broker.keys import Keys
from broker.mappings import MappingService, function_checker
from broker.models import LATEST, Envelope, FunctionConfig, InvokeResult
from broker.payloads import SYNC_PAYLOAD_LIMIT_BYTES, Payload, payload_text
from broker.queue import AsyncQueue
from broker.redis_client import connect
from broker.settings import FunctionSpec, Settings
from broker.wiring import (
    PollerManagerLike,
    default_destinations,
    default_invokers,
    default_poller_manager,
    default_source_check,
)

log = structlog.get_logger("sluice.broker")


class Broker:
    """Sluice in one object: functions, event-invoke configs, event source mappings,
    invoking, and (once started) the dispatcher, deliverer and pollers."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        *,
        clock: Clock | None = None,
        invokers: InvokerRegistry | None = None,
        destinations: Mapping[str, DestinationFactory] | None = None,
        extra_invokers: Mapping[str, InvokerFactory] | None = None,
        extra_destinations: Mapping[str, DestinationFactory] | None = None,
        dispatch: bool = True,
    ) -> None:
        """``redis`` stays the caller's (``stop`` leaves it open). ``invokers`` and
        ``destinations`` replace the built-in schemes; ``extra_invokers`` and
        ``extra_destinations`` are added to them (or to the given ones), a scheme given twice
        served by the extra. Registered destination schemes are valid in DestinationConfig,
        DeadLetterConfig and mapping OnFailure strings (``SCHEME:...``).
        ``dispatch=False`` gives a producer-only broker (API front ends, tests)."""
        self.settings = settings
        self.redis = redis
        self._owns_redis = False  # set by from_settings: stop() closes the client then
        self.clock: Clock = clock or RedisClock()
        self.keys = Keys(settings.key_prefix)
        self.queue = AsyncQueue(redis, self.keys)
        self.store = FunctionStore(redis, self.keys)
        self.functions = FunctionCache(self.store)
        self.dead_letters = DeadLetterStore(redis, self.keys)
        self.invokers = invokers or default_invokers(
            settings.worker_processes,
            settings.region,
            http_error_bodies=settings.http_error_bodies,
        )
        for scheme, invoker_factory in (extra_invokers or {}).items():
            self.invokers.register(scheme.lower(), invoker_factory)
        self.destinations = DestinationRegistry(
            DestinationContext(
                redis=redis,
                region=settings.region,
                account_id=settings.account_id,
                options={
                    "redis_stream_maxlen": settings.redis_stream_maxlen,
                    "rq_redis_url": settings.rq_redis_url or settings.redis_url,
                    "eventbridge_source": settings.eventbridge_source,
                },
                local_invoke=self._local_invoke,
            ),
            {
                **(destinations if destinations is not None else default_destinations()),
                **(extra_destinations or {}),
            },
        )
        self.admin = FunctionAdmin(
            self.store,
            self.functions,
            self.clock,
            region=settings.region,
            account_id=settings.account_id,
            destination_schemes=self.destinations.schemes,
        )
        self.mappings = MappingService(
            redis,
            self.keys,
            self.clock,
            region=settings.region,
            account_id=settings.account_id,
            function_exists=function_checker(self.store),
            source_check=default_source_check(settings.region, self.store)
            if settings.check_event_sources
            else None,
            destination_schemes=self.destinations.schemes,
        )
        self.admission = MemoryAdmission(redis, settings.maxmemory_admission_ratio)
        self.deliverer = Deliverer(
            self.queue,
            self.destinations,
            self.clock,
            DeliveryPolicy(
                attempts=settings.delivery_retries,
                backoff_s=settings.delivery_backoff_s,
                lease_s=settings.delivery_lease_s,
                dead_max_age_s=settings.dead_letter_max_age_s,
                dead_max_count=settings.dead_letter_max_count,
            ),
        )
        self.dispatcher = Dispatcher(
            queue=self.queue,
            functions=self.functions,
            invokers=self.invokers,
            deliverer=self.deliverer,
            clock=self.clock,
            settings=DispatchSettings(
                concurrency=settings.concurrency,
                claim_batch=settings.claim_batch,
                poll_interval_s=settings.poll_interval_s,
                visibility_grace_s=settings.visibility_grace_s,
                retry_base_delay_s=settings.retry_base_delay,
                throttle_base_delay_s=settings.throttle_base_delay,
                throttle_max_delay_s=settings.throttle_max_delay,
                dead_letter_max_age_s=settings.dead_letter_max_age_s,
                dead_letter_max_count=settings.dead_letter_max_count,
                delivery_lease_s=settings.delivery_lease_s,
            ),
        )
        self._dispatch = dispatch
        self.pollers: PollerManagerLike | None = None
        self._batcher = EnqueueBatcher(self._store)
        self._background: list[asyncio.Task[None]] = []
        self._started = False

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        invokers: InvokerRegistry | None = None,
        destinations: Mapping[str, DestinationFactory] | None = None,
        extra_invokers: Mapping[str, InvokerFactory] | None = None,
        extra_destinations: Mapping[str, DestinationFactory] | None = None,
        dispatch: bool = True,
    ) -> Broker:
        """A broker on its own Redis client for ``settings.redis_url`` (``None``: the embedded
        in-process Redis, which lives and dies with this process), closed with its
        connections by :meth:`stop`. The other arguments are the constructor's."""
        broker = cls(
            settings,
            connect(settings.redis_url),
            clock=clock,
            invokers=invokers,
            destinations=destinations,
            extra_invokers=extra_invokers,
            extra_destinations=extra_destinations,
            dispatch=dispatch,
        )
        broker._owns_redis = True
        return broker

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self, *, check_durability: bool = False) -> None:
        """Apply the settings' functions and start the dispatcher, deliverer, wake listener
        and pollers; a start that fails part way stops what it started, then raises."""
        if isinstance(self.clock, RedisClock):
            await self.clock.calibrate(self.redis)
        if check_durability:
            await check_redis_durability(self.redis, strict=self.settings.strict)
        for name, spec in self.settings.functions.items():
            await self._apply_spec(name, spec)
        self._started = True
        try:
            if self._dispatch:
                await self.dispatcher.start()
                self._background.append(asyncio.create_task(self._listen_for_wakes()))
                if self.settings.run_pollers:
                    self.pollers = default_poller_manager(self)
                    await self.pollers.start()
            if isinstance(self.clock, RedisClock):
                self._background.append(asyncio.create_task(self._calibrate_clock()))
        except BaseException:
            await self._halt(0.0)
            raise
        log.info("broker_started", dispatch=self._dispatch, token=self.dispatcher.token)

    async def stop(self, drain_timeout_s: float | None = None) -> None:
        """Drain in-flight work (SIGTERM semantics), release leases, close everything (and
        the Redis client, when :meth:`from_settings` opened it). Safe to call twice."""
        try:
            if self._started:
                await self._halt(drain_timeout_s)
        finally:
            if self._owns_redis:  # closing twice is harmless; a restart reconnects
                await self.redis.aclose(close_connection_pool=True)

    async def _halt(self, drain_timeout_s: float | None) -> None:
        self._started = False
        timeout = self.settings.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # one budget: pollers first, then the dispatcher
        if self.pollers is not None:
            await self.pollers.stop(timeout)  # their batches in hand finish first
            self.pollers = None
        if self._dispatch:
            await self.dispatcher.stop(max(0.0, deadline - loop.time()))
        for task in self._background:
            task.cancel()
        if self._background:
            _, stuck = await asyncio.wait(self._background, timeout=5.0)
            for task in stuck:  # a cancellation swallowed inside a client call
                log.warning("background_task_stuck", task=task.get_name())
        self._background = []
        await self.invokers.close()
        await self.destinations.close()

    async def _listen_for_wakes(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.keys.wake)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.dispatcher.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis restarting: polling still finds work meanwhile
                log.warning("wake_listener_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    async def _calibrate_clock(self) -> None:
        assert isinstance(self.clock, RedisClock)
        while True:
            await asyncio.sleep(30.0)
            with contextlib.suppress(RedisError):
                await self.clock.calibrate(self.redis)

    # -- functions ---------------------------------------------------------------------------
    async def put_function(
        self,
        name: str,
        target: str,
        *,
        timeout_s: int = 3,
        memory_mb: int = 128,
        reserved_concurrency: int | None = None,
        dead_letter_target: str | None = None,
        aliases: dict[str, str] | None = None,
        versions: list[str] | None = None,
    ) -> FunctionConfig:
        """Create or replace a function (the TOML ``[functions.NAME]`` shape)."""
        config = FunctionConfig(
            name=name,
            target=target,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            reserved_concurrency=reserved_concurrency,
            dead_letter_target=validate_dead_letter_target(
                dead_letter_target, self.destinations.schemes
            ),
            aliases=aliases or {},
            versions=sorted(set(versions or []) | set((aliases or {}).values())),
            last_modified=self.clock.now(),
        )
        await self.store.put(config)
        self.functions.invalidate(name)
        return config

    async def _local_invoke(self, function_arn: str, payload: str) -> str:
        """Lambda destinations that name one of this Sluice's functions land here."""
        if not function_arn.startswith(
            f"arn:aws:lambda:{self.settings.region}:{self.settings.account_id}:"
        ):
            raise ResourceNotFoundError(f"Function not found: {function_arn}")
        return await self.invoke_async(function_arn, payload)

    async def _apply_spec(self, name: str, spec: FunctionSpec) -> None:
        """Insert a function from settings, or update only the fields the settings give:
        versions, aliases and concurrency changed through the API survive a restart."""
        existing = await self.store.get(name)
        if existing is None:
            await self.put_function(name, **spec.model_dump())
            return
        given = spec.model_dump(include=spec.model_fields_set | {"target"})
        if "dead_letter_target" in given:
            given["dead_letter_target"] = validate_dead_letter_target(
                given["dead_letter_target"], self.destinations.schemes
            )
        if "aliases" in given:
            given["aliases"] = {**existing.aliases, **given["aliases"]}
        await self.store.put(existing.model_copy(update=given))
        self.functions.invalidate(name)

    async def get_function(self, function: str) -> FunctionConfig:
        config, _ = await self.admin.load(function)
        return config

    async def list_functions(self) -> list[FunctionConfig]:
        configs = [await self.store.get(name) for name in await self.store.names()]
        return [c for c in configs if c is not None]

    async def delete_function(self, function: str) -> None:
        """Delete a function; refused while it still has queued, in-flight or undelivered
        events, so that nothing accepted is dropped silently."""
        config = await self.get_function(function)
        depth = await self.queue.depth(config.name)
        waiting = {k: v for k, v in depth.items() if k != "dead" and v}
        if waiting:
            raise ResourceConflictError(
                f"Function {config.name} still has events "
                + ", ".join(f"{k} {v}" for k, v in sorted(waiting.items()))
                + "; wait for them to finish before deleting it."
            )
        await self.store.delete(config.name)
        self.functions.invalidate(config.name)

    async def put_function_concurrency(self, function: str, reserved: int | None) -> None:
        """Reserved concurrency, enforced across every process; None removes it."""
        if reserved is None:
            await self.admin.delete_concurrency(function)
        else:
            await self.admin.put_concurrency(function, {"ReservedConcurrentExecutions": reserved})

    # -- event-invoke config -----------------------------------------------------------------
    def _arn(self, name: str, qualifier: str | None) -> str:
        return qualified_arn(self.settings.region, self.settings.account_id, name, qualifier)

    async def _eic_target(self, function: str, qualifier: str | None) -> tuple[str, str]:
        ref = parse_function_name(function, qualifier)
        config = await self.store.get(ref.name)
        qualifier = ref.qualifier or LATEST
        if config is None or config.resolve(qualifier) is None:
            raise ResourceNotFoundError("The function doesn't exist.")
        return ref.name, qualifier

    async def put_event_invoke_config(
        self, function: str, body: dict[str, Any], qualifier: str | None = None
    ) -> dict[str, Any]:
        """PutFunctionEventInvokeConfig: replaces the qualifier's whole config. ``body`` is
        AWS-shaped (``MaximumRetryAttempts``, ``MaximumEventAgeInSeconds``,
        ``DestinationConfig``). Returns the API response body."""
        name, qualifier = await self._eic_target(function, qualifier)
        names = set(await self.store.names())
        config = validate_event_invoke_config(
            body,
            function_name=name,
            function_exists=names.__contains__,
            now=self.clock.now(),
            destination_schemes=self.destinations.schemes,
        )
        await self.store.put_event_invoke_config(name, qualifier, config)
        self.functions.invalidate(name)
        return response_body(config, self._arn(name, qualifier))

    async def update_event_invoke_config(
        self, function: str, body: dict[str, Any], qualifier: str | None = None
    ) -> dict[str, Any]:
        """UpdateFunctionEventInvokeConfig: merges the supplied top-level settings."""
        name, qualifier = await self._eic_target(function, qualifier)
        state = await self.store.state(name)
        existing = state.event_invoke_config(qualifier) if state else None
        if existing is None:
            raise ResourceNotFoundError(
                f"The function {self._arn(name, qualifier)} doesn't have an EventInvokeConfig"
            )
        if not any(
            body.get(k) is not None
            for k in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig")
        ):
            raise InvalidParameterValueError(
                "You must specify at least one of error handling or destination setting."
            )
        return await self.put_event_invoke_config(name, merge_update(existing, body), qualifier)

    async def get_event_invoke_config(
        self, function: str, qualifier: str | None = None
    ) -> dict[str, Any]:
        ref = parse_function_name(function, qualifier)
        qualifier = ref.qualifier or LATEST
        state = await self.store.state(ref.name)
        config = state.event_invoke_config(qualifier) if state else None
        if config is None:
            raise ResourceNotFoundError(
                f"The function {self._arn(ref.name, qualifier)} doesn't have an EventInvokeConfig"
            )
        return response_body(config, self._arn(ref.name, qualifier))

    async def delete_event_invoke_config(self, function: str, qualifier: str | None = None) -> None:
        ref = parse_function_name(function, qualifier)
        qualifier = ref.qualifier or LATEST
        if not await self.store.delete_event_invoke_config(ref.name, qualifier):
            raise ResourceNotFoundError(
                f"The function {self._arn(ref.name, qualifier)} doesn't have an EventInvokeConfig"
            )
        self.functions.invalidate(ref.name)

    async def list_event_invoke_configs(
        self, function: str, marker: str | None = None, max_items: int | None = None
    ) -> dict[str, Any]:
        """ListFunctionEventInvokeConfigs: ``$LATEST`` first, then by qualifier; paged."""
        ref = parse_function_name(function)
        state = await self.store.state(ref.name)
        if state is None:
            raise ResourceNotFoundError("The function doesn't exist.")
        qualifiers = sorted(state.event_invoke_configs, key=lambda q: (q != LATEST, q))
        if max_items is not None and (err := range_error(max_items, "maxItems", 1, 50)):
            raise err
        chosen, next_marker = paginate(qualifiers, marker, max_items)
        body: dict[str, Any] = {
            "FunctionEventInvokeConfigs": [
                response_body(state.event_invoke_configs[q], self._arn(ref.name, q)) for q in chosen
            ]
        }
        if next_marker:
            body["NextMarker"] = next_marker
        return body

    # -- event source mappings (AWS shapes; the whole service is ``self.mappings``) -----------
    async def create_event_source_mapping(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateEventSourceMapping: ``body`` as AWS takes it (``FunctionName``,
        ``EventSourceArn``, ``StartingPosition``, ``DestinationConfig``...); returns AWS's
        response body, whose ``UUID`` names the mapping."""
        return await self.mappings.create(body)

    async def get_event_source_mapping(self, uuid: str) -> dict[str, Any]:
        return await self.mappings.get(uuid)

    async def update_event_source_mapping(self, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self.mappings.update(uuid, body)

    async def delete_event_source_mapping(self, uuid: str) -> dict[str, Any]:
        """DeleteEventSourceMapping: answers ``State`` ``Deleting``; its poller stops within
        ``poller_refresh_s``."""
        return await self.mappings.delete(uuid)

    # -- invoking ----------------------------------------------------------------------------
    async def _resolve(self, function: str, qualifier: str | None) -> tuple[FunctionConfig, str]:
        ref = parse_function_name(function, qualifier)
        state = await self.functions.get(ref.name)
        qualifier = ref.qualifier or LATEST
        if state is None or state.config.resolve(qualifier) is None:
            unqualified = function_arn(
                self.settings.region, self.settings.account_id, ref.name, ref.qualifier
            )
            raise ResourceNotFoundError(f"Function not found: {unqualified}")
        return state.config, qualifier

    async def invoke_async(
        self, function: str, payload: Payload, qualifier: str | None = None
    ) -> str:
        """``InvocationType=Event``: validate, store durably, return the request id.

        Concurrent calls for one function are stored together in one round trip; each
        returns only once its own event is stored."""
        config, qualifier = await self._resolve(function, qualifier)
        ((request_id, envelope),) = self._envelopes(config, qualifier, [payload])
        await self._batcher.submit(config.name, (request_id, envelope))
        return request_id

    async def _store(self, function: str, events: list[tuple[str, str]]) -> None:
        await self.admission.check()
        await self.queue.enqueue(function, events, self.settings.max_queue_depth)
        if self._dispatch:
            self.dispatcher.wake()

    async def invoke_async_many(
        self, function: str, payloads: Iterable[Payload], qualifier: str | None = None
    ) -> list[str]:
        """Store many events for one function in one round trip (all or none)."""
        config, qualifier = await self._resolve(function, qualifier)
        events = self._envelopes(config, qualifier, payloads)
        if events:
            await self._store(config.name, events)
        return [request_id for request_id, _ in events]

    def _envelopes(
        self, config: FunctionConfig, qualifier: str, payloads: Iterable[Payload]
    ) -> list[tuple[str, str]]:
        """Validated events as (request id, envelope JSON), ready to store."""
        limit = self.settings.async_payload_limit_bytes
        now = self.clock.now()
        arn = self._arn(config.name, qualifier)

        def too_large(size: int) -> str:
            return (
                f"{size} byte payload is too large for the Event invocation type "
                f"(limit {limit} bytes)"
            )

        events: list[tuple[str, str]] = []
        for payload in payloads:
            text = payload_text(payload, too_large, limit)
            request_id = str(uuid.uuid4())
            envelope = Envelope(
                request_id=request_id,
                function=config.name,
                qualifier=qualifier,
                function_arn=arn,
                payload=text,
                enqueued_at=now,
                not_before=now,
            )
            events.append((request_id, envelope.model_dump_json(exclude_defaults=True)))
        return events

    async def invoke(
        self,
        function: str,
        payload: Payload,
        qualifier: str | None = None,
        *,
        request_id: str | None = None,
    ) -> InvokeResult:
        """``InvocationType=RequestResponse``: run the function now through its invoker."""
        qualifier_given = qualifier
        config, qualifier = await self._resolve(function, qualifier)
        text = payload_text(
            payload,
            lambda _: (
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT_BYTES} bytes for the "
                "InvokeFunction operation"
            ),
            SYNC_PAYLOAD_LIMIT_BYTES,
        )
        version = config.resolve(qualifier) or LATEST
        target, timeout_s, memory_mb = config.effective(version)
        invocation = Invocation(
            request_id=request_id or str(uuid.uuid4()),
            target=target,
            function_name=config.name,
            function_version=version,
            invoked_function_arn=function_arn(  # as the caller named it
                self.settings.region,
                self.settings.account_id,
                config.name,
                parse_function_name(function, qualifier_given).qualifier,
            ),
            payload=text,
            timeout_s=timeout_s,
            memory_mb=memory_mb,
        )
        if config.reserved_concurrency is None:  # nothing to count against: no round trips
            return await self.invokers.invoke(invocation)
        # Synchronous calls count against reserved concurrency, as the async queue's do.
        now = self.clock.now()
        expiry = now + timeout_s + self.settings.visibility_grace_s
        slot = invocation.request_id
        if not await self.queue.take_slot(config.name, slot, now, expiry):
            return InvokeResult(outcome="throttle", status_code=429, error_message=RATE_EXCEEDED)
        try:
            return await self.invokers.invoke(invocation)
        finally:
            try:
                await self.queue.free_slot(config.name, slot)
            except Exception as exc:  # the slot expires on its own; the result stands
                log.warning("slot_release_failed", function=config.name, error=repr(exc))

    async def resolve(self, function: str, qualifier: str | None = None) -> tuple[str, str]:
        """(function name, qualifier) of an existing function and version or alias; raises
        ``ResourceNotFoundError`` like Invoke does."""
        config, qualifier = await self._resolve(function, qualifier)
        return config.name, qualifier

    async def redeliver(self, function: str, entry_ids: Iterable[str] | None = None) -> int:
        """Deliver ``delivery_failed`` dead-letter entries again (all of the function's, or
        the given ids); each one delivered leaves the store. Returns how many were."""
        name = parse_function_name(function).name
        wanted = set(entry_ids) if entry_ids is not None else None
        total = await self.dead_letters.count(name)
        entries = [
            e
            for e in await self.dead_letters.list(name, limit=max(total, 1))
            if e["kind"] == "delivery_failed" and (wanted is None or e["id"] in wanted)
        ]
        delivered = await self.deliverer.redeliver(name, entries)
        for entry_id in delivered:
            await self.dead_letters.delete(name, entry_id)
        return len(delivered)

    # -- inspection --------------------------------------------------------------------------
    async def queue_depth(self, function: str) -> dict[str, int]:
        return await self.queue.depth(parse_function_name(function).name)

    async def stats(self, function: str) -> dict[str, int]:
        raw = await self.redis.hgetall(self.keys.for_function(function).stats)
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
