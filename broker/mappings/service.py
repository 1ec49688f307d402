"""Event source mappings: Create, Get, Update, Delete and List (spec §7), stored in Redis.

Takes and returns AWS-shaped dicts; the HTTP routes wrap it. Pollers read typed
:class:`~broker.mappings.model.EventSourceMapping` objects (:meth:`MappingService.mapping`,
:meth:`MappingService.mappings`) and report back through :meth:`record_processing_result`
and :meth:`set_state`.

**States (spec §7.4).** Create, Update and Delete answer with the transitional state
(``Creating``, ``Enabling``, ``Disabling``, ``Updating``, ``Deleting``) and store the moment it
settles: ``now + transition_delay_s`` on the injected :class:`~broker.clock.Clock`. Every read
(Get, List, :meth:`mapping`, :meth:`mappings`, and each write) first settles whatever is due,
and :meth:`advance_states` does the same for a background loop. The default delay is 0: the
response shows the transitional state and the next read already shows the settled one, as
AWS's observable behaviour allows, so nothing (tests included) has to sleep. A positive delay
(spec §7.4 suggests about a second) lets clients watch the transitions; tests then advance a
``ManualClock`` instead of sleeping. ``Deleting`` settles by removing the mapping.

**Deviations from AWS, on purpose.**

* ``LastProcessingResult`` is ``PROBLEM: no poller for this source type yet`` on every mapping
  whose source type has no poller in this process (``polled_kinds``), SQS included, where AWS
  shows none: a mapping that is never polled must not look healthy. Once a poller exists, new
  mappings start with AWS's value (``No records processed``; none for SQS) until it reports.
* An Update that points a mapping at a function (and source) another mapping already pairs
  is refused with 409 as a Create would be; AWS only documents the Create case.
* ``KMSKeyArn`` is stored and echoed (List hides the filters as AWS does) but Sluice does not
  encrypt them; Redis is the trust boundary.
* Source existence (spec §7.3 rules 14-16) needs the source's client: pass ``source_check``.
"""

from __future__ import annotations

import base64
import builtins
import json
import uuid as uuid_module
from collections.abc import Awaitable, Callable, Collection
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from broker.arns import function_arn, parse_function_name
from broker.clock import Clock
from broker.errors import (
    ApiError,
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceNotFoundError,
    ServiceError,
)
from broker.functions import FunctionStore
from broker.keys import Keys
from broker.mappings.model import (
    NO_POLLER_RESULT,
    SOURCE_TYPES,
    STEADY_STATES,
    EventSourceMapping,
    MappingConfig,
    SourceKind,
    State,
    invalid_value,
)
from broker.mappings.validate import MAX_FILTERS_LIMIT, validate_create, validate_update
from broker.models import LATEST
from broker.redis_client import as_text

FunctionExists = Callable[[str], Awaitable[bool]]
SourceCheck = Callable[[MappingConfig], Awaitable[None]]
_Write = Callable[[Pipeline], None]

NOT_FOUND = "The resource you requested does not exist."
PAGE_LIMIT = 100  # List returns at most this many per page, whatever MaxItems says
_TRIES = 50  # optimistic-transaction attempts before giving up with a ServiceException


class ResourceInUseError(ApiError):
    """400 ResourceInUseException: the mapping is busy with another change (spec §7.3 #22)."""

    code = "ResourceInUseException"
    status = 400
    message_key = "Message"


def function_checker(store: FunctionStore) -> FunctionExists:
    """A ``function_exists`` for :class:`MappingService` backed by Sluice's function store:
    ``name`` or ``name:qualifier``, true when the function (and its version/alias) exists."""

    async def exists(reference: str) -> bool:
        name, _, qualifier = reference.partition(":")
        config = await store.get(name)
        return config is not None and config.resolve(qualifier or LATEST) is not None

    return exists


class MappingService:
    """The event-source-mapping configuration API over Redis (see the module docstring).

    ``function_exists`` is called with ``name`` or, when the caller qualified the function,
    ``name:qualifier`` (see :func:`function_checker`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        clock: Clock,
        *,
        region: str,
        account_id: str,
        function_exists: FunctionExists,
        transition_delay_s: float = 0.0,
        max_filters: int = 5,
        polled_kinds: frozenset[SourceKind] = frozenset(),
        source_check: SourceCheck | None = None,
        destination_schemes: Collection[str] = (),
    ) -> None:
        if not 1 <= max_filters <= MAX_FILTERS_LIMIT:
            raise ValueError(f"max_filters must be between 1 and {MAX_FILTERS_LIMIT}")
        self.client = client
        self.keys = keys
        self.clock = clock
        self.region = region
        self.account_id = account_id
        self.function_exists = function_exists
        self.transition_delay_s = transition_delay_s
        self.max_filters = max_filters
        self.polled_kinds = polled_kinds
        self.source_check = source_check
        # OnFailure may name these schemes beyond the built-in strings (a live view of the
        # broker's destination registry, so later registrations count).
        self.destination_schemes = destination_schemes

    # -- the API ------------------------------------------------------------------------------
    async def create(self, body: Any) -> dict[str, Any]:
        """CreateEventSourceMapping: the 202 body (``State`` ``Creating`` or ``Disabled``)."""
        now = self._now()
        config = validate_create(
            body,
            max_filters=self.max_filters,
            now=now,
            destination_schemes=self.destination_schemes,
        )
        await self._check_function(config)
        if self.source_check is not None:
            await self.source_check(config)
        await self.advance_states()  # a pair whose mapping finished deleting is free again
        source_type = SOURCE_TYPES[config.source_kind]
        new_uuid = str(uuid_module.uuid4())
        mapping = EventSourceMapping.model_validate(
            {
                **config.model_dump(),
                "uuid": new_uuid,
                "mapping_arn": f"arn:aws:lambda:{self.region}:{self.account_id}:"
                f"event-source-mapping:{new_uuid}",
                "function_arn": self._function_arn(config),
                "state": State.CREATING if config.enabled else State.DISABLED,
                "state_transition_reason": source_type.reason,
                "last_modified": now,
                "last_processing_result": (
                    source_type.first_result
                    if config.source_kind in self.polled_kinds
                    else NO_POLLER_RESULT
                ),
                "settles_at": now + self.transition_delay_s if config.enabled else None,
                "created_at": now,
            }
        )
        pair = self._pair(mapping)

        async def step(pipe: Pipeline) -> _Write:
            await self._refuse_duplicate(pipe, pair, mapping)
            return lambda p: self._put(p, mapping, pair_added=pair)

        await self._atomically(step)
        return mapping.response()

    async def get(self, uuid: str) -> dict[str, Any]:
        """GetEventSourceMapping (404 ``The resource you requested does not exist.``)."""
        return (await self.mapping(uuid)).response()

    async def update(self, uuid: str, body: Any) -> dict[str, Any]:
        """UpdateEventSourceMapping: merge, validate the result, answer with the new state."""
        await self._settle_if_due(uuid)
        result: list[EventSourceMapping] = []

        async def step(pipe: Pipeline) -> _Write:
            existing = await self._require(pipe, uuid)
            if existing.state in (State.CREATING, State.DELETING):
                raise ResourceInUseError(
                    "Cannot update the event source mapping because it is in use."
                )
            now = self._now()
            config = validate_update(
                existing,
                body,
                max_filters=self.max_filters,
                now=now,
                destination_schemes=self.destination_schemes,
            )
            if isinstance(body, dict) and body.get("FunctionName") is not None:
                await self._check_function(config)
            if config.enabled == existing.enabled:
                state = State.UPDATING
            else:
                state = State.ENABLING if config.enabled else State.DISABLING
            updated = EventSourceMapping.model_validate(
                {
                    **existing.model_dump(),
                    **config.model_dump(exclude={"tags"}),
                    "function_arn": self._function_arn(config),
                    "state": state,
                    "state_transition_reason": SOURCE_TYPES[config.source_kind].reason,
                    "last_modified": now,
                    "settles_at": now + self.transition_delay_s,
                }
            )
            old_pair, new_pair = self._pair(existing), self._pair(updated)
            if new_pair != old_pair:
                await self._refuse_duplicate(pipe, new_pair, updated)
            result.append(updated)

            def write(p: Pipeline) -> None:
                if new_pair != old_pair:
                    p.hdel(self.keys.mapping_pairs, old_pair)
                self._put(p, updated, pair_added=new_pair if new_pair != old_pair else None)

            return write

        await self._atomically(step)
        return result[-1].response()

    async def delete(self, uuid: str) -> dict[str, Any]:
        """DeleteEventSourceMapping: the 202 body with ``State`` ``Deleting``."""
        await self._settle_if_due(uuid)
        result: list[EventSourceMapping] = []

        async def step(pipe: Pipeline) -> _Write | None:
            existing = await self._require(pipe, uuid)
            if existing.state in (State.UPDATING, State.ENABLING, State.DISABLING):
                raise ResourceInUseError(
                    "Cannot delete the event source mapping because it is in use."
                )
            if existing.state is State.DELETING:
                result.append(existing)
                return None
            now = self._now()
            deleting = existing.model_copy(
                update={
                    "state": State.DELETING,
                    "state_transition_reason": SOURCE_TYPES[existing.source_kind].reason,
                    "last_modified": now,
                    "settles_at": now + self.transition_delay_s,
                }
            )
            result.append(deleting)
            return lambda p: self._put(p, deleting)

        await self._atomically(step)
        return result[-1].response()

    async def list(
        self,
        event_source_arn: str | None = None,
        function_name: str | None = None,
        marker: str | None = None,
        max_items: int | None = None,
    ) -> dict[str, Any]:
        """ListEventSourceMappings: filters, opaque ``Marker``, at most 100 per page (§7.5)."""
        if max_items is not None and (isinstance(max_items, bool) or not 1 <= max_items <= 10_000):
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            raise invalid_value("maxItems", max_items, f"Member must have value {bound}")
        mappings = await self.mappings()
        if event_source_arn is not None:
            mappings = [m for m in mappings if m.event_source_arn == event_source_arn]
        if function_name is not None:
            ref = parse_function_name(function_name)
            mappings = [
                m
                for m in mappings
                if m.function_name == ref.name
                and (ref.qualifier is None or m.qualifier == ref.qualifier)
            ]
        if marker is not None:
            after = self._decode_marker(marker)
            mappings = [m for m in mappings if (m.created_at, m.uuid) > after]
        page = mappings[: min(max_items or PAGE_LIMIT, PAGE_LIMIT)]
        body: dict[str, Any] = {"EventSourceMappings": [m.response(listing=True) for m in page]}
        if len(mappings) > len(page):
            last = page[-1]
            body["NextMarker"] = base64.urlsafe_b64encode(
                json.dumps([last.created_at, last.uuid]).encode()
            ).decode()
        return body

    # -- for pollers --------------------------------------------------------------------------
    async def mapping(self, uuid: str) -> EventSourceMapping:
        """One mapping, settled; ResourceNotFoundError when there is none."""
        await self._settle_if_due(uuid)
        found = await self._read(self.client, uuid)
        if found is None:
            raise ResourceNotFoundError(NOT_FOUND)
        return found

    async def mappings(self) -> builtins.list[EventSourceMapping]:
        """Every mapping, settled, oldest first."""
        await self.advance_states()
        raw = await self.client.hgetall(self.keys.mappings)
        found = [EventSourceMapping.model_validate_json(value) for value in raw.values()]
        return sorted(found, key=lambda m: (m.created_at, m.uuid))

    async def record_processing_result(self, uuid: str, text: str) -> bool:
        """Set ``LastProcessingResult`` (``OK``, ``PROBLEM: ...``); False if the mapping is gone.

        Does not touch ``LastModified``, which AWS moves only on updates and transitions."""
        found: list[bool] = []

        async def step(pipe: Pipeline) -> _Write | None:
            existing = await self._read(pipe, uuid)
            found.append(existing is not None)
            if existing is None or existing.last_processing_result == text:
                return None
            changed = existing.model_copy(update={"last_processing_result": text})
            return lambda p: self._put(p, changed)

        await self._atomically(step)
        return found[-1]

    async def set_state(self, uuid: str, state: State | str, reason: str) -> dict[str, Any]:
        """A poller's verdict: ``Enabled`` or ``Disabled`` with a ``StateTransitionReason``
        (e.g. ``EVENT_SOURCE_AUTHN_ERROR``). A mapping being deleted is left alone."""
        state = State(state)
        if state not in STEADY_STATES:
            raise ValueError(f"pollers set Enabled or Disabled, not {state.value}")
        result: list[EventSourceMapping] = []

        async def step(pipe: Pipeline) -> _Write | None:
            existing = await self._require(pipe, uuid)
            if existing.state is State.DELETING:
                result.append(existing)
                return None
            changed = existing.model_copy(
                update={
                    "state": state,
                    "enabled": state is State.ENABLED,
                    "state_transition_reason": reason,
                    "last_modified": self._now(),
                    "settles_at": None,
                }
            )
            result.append(changed)
            return lambda p: self._put(p, changed)

        await self._atomically(step)
        return result[-1].response()

    async def advance_states(self) -> int:
        """Settle every transitional state that is due; returns how many were settled."""
        due = await self.client.zrangebyscore(
            self.keys.mapping_transitions, "-inf", round(self._now() * 1000)
        )
        for raw in due:
            await self._settle(as_text(cast(bytes | str, raw)))
        return len(due)

    # -- internals ----------------------------------------------------------------------------
    def _now(self) -> float:
        return round(self.clock.now(), 3)

    def _function_arn(self, config: MappingConfig) -> str:
        return function_arn(self.region, self.account_id, config.function_name, config.qualifier)

    @staticmethod
    def _pair(mapping: EventSourceMapping) -> str:
        return json.dumps([mapping.event_source_arn, mapping.function_arn])

    async def _check_function(self, config: MappingConfig) -> None:
        if not await self.function_exists(config.function_ref):
            raise InvalidParameterValueError("Function does not exist")  # 400, not 404

    async def _read(
        self, reader: aioredis.Redis | Pipeline, uuid: str
    ) -> EventSourceMapping | None:
        raw = await reader.hget(self.keys.mappings, uuid)
        return None if raw is None else EventSourceMapping.model_validate_json(raw)

    async def _require(self, pipe: Pipeline, uuid: str) -> EventSourceMapping:
        found = await self._read(pipe, uuid)
        if found is None:
            raise ResourceNotFoundError(NOT_FOUND)
        return found

    async def _refuse_duplicate(
        self, pipe: Pipeline, pair: str, mapping: EventSourceMapping
    ) -> None:
        holder = await pipe.hget(self.keys.mapping_pairs, pair)
        if holder is None or as_text(holder) == mapping.uuid:
            return
        if await self._read(pipe, as_text(holder)) is None:
            return  # a stale index entry
        arn, name, other = mapping.event_source_arn, mapping.function_name, as_text(holder)
        if mapping.source_kind is SourceKind.SQS:
            message = f'An event source mapping with SQS arn (" {arn} ") and function (" {name} ")'
            message += " already exists."
        else:
            message = f'The event source arn (" {arn} ") and function (" {name} ") provided'
            message += " mapping already exists."
        raise ResourceConflictError(
            f"{message} Please update or delete the existing mapping with UUID {other}"
        )

    def _put(
        self, pipe: Pipeline, mapping: EventSourceMapping, pair_added: str | None = None
    ) -> None:
        pipe.hset(self.keys.mappings, mapping.uuid, mapping.model_dump_json())
        if pair_added is not None:
            pipe.hset(self.keys.mapping_pairs, pair_added, mapping.uuid)
        if mapping.settles_at is None:
            pipe.zrem(self.keys.mapping_transitions, mapping.uuid)
        else:
            pipe.zadd(
                self.keys.mapping_transitions, {mapping.uuid: round(mapping.settles_at * 1000)}
            )

    def _forget_transition(self, pipe: Pipeline, uuid: str) -> None:
        pipe.zrem(self.keys.mapping_transitions, uuid)

    async def _settle_if_due(self, uuid: str) -> None:
        score = await self.client.zscore(self.keys.mapping_transitions, uuid)
        if score is not None and score <= self._now() * 1000:
            await self._settle(uuid)

    async def _settle(self, uuid: str) -> None:
        """Move one mapping out of its transitional state, if due (``Deleting``: remove it)."""

        async def step(pipe: Pipeline) -> _Write | None:
            mapping = await self._read(pipe, uuid)
            if mapping is None:
                return lambda p: self._forget_transition(p, uuid)
            if mapping.settles_at is not None and mapping.settles_at > self._now():
                return None
            pair = self._pair(mapping)
            holder = await pipe.hget(self.keys.mapping_pairs, pair)
            if mapping.state is State.DELETING:

                def remove(p: Pipeline) -> None:
                    p.hdel(self.keys.mappings, uuid)
                    p.zrem(self.keys.mapping_transitions, uuid)
                    p.delete(
                        self.keys.mapping_stats(uuid),
                        self.keys.mapping_checkpoint(uuid),
                        self.keys.mapping_windows(uuid),
                    )
                    if holder is not None and as_text(holder) == uuid:
                        p.hdel(self.keys.mapping_pairs, pair)

                return remove
            steady = State.ENABLED if mapping.enabled else State.DISABLED
            settled = mapping.model_copy(
                update={
                    "state": steady,
                    "settles_at": None,
                    "last_modified": mapping.settles_at or mapping.last_modified,
                }
            )
            return lambda p: self._put(p, settled)

        await self._atomically(step)

    async def _atomically(self, step: Callable[[Pipeline], Awaitable[_Write | None]]) -> None:
        """Run ``step`` under WATCH of the ``{esm}`` keys; apply its writes in MULTI/EXEC and
        start again if another writer got there first. ``step`` may raise an ApiError."""
        watched = (self.keys.mappings, self.keys.mapping_pairs, self.keys.mapping_transitions)
        async with self.client.pipeline(transaction=True) as pipe:
            for _ in range(_TRIES):
                try:
                    await pipe.watch(*watched)
                    write = await step(pipe)
                    if write is None:
                        await pipe.reset()  # type: ignore[no-untyped-call]
                        return
                    pipe.multi()  # type: ignore[no-untyped-call]
                    write(pipe)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise ServiceError("Event source mappings are changing too often; try again.")

    @staticmethod
    def _decode_marker(marker: str) -> tuple[float, str]:
        try:
            created_at, uuid = json.loads(base64.urlsafe_b64decode(marker.encode()))
            return float(created_at), str(uuid)
        except (ValueError, TypeError) as exc:
            raise InvalidParameterValueError(
                f"Invalid Marker {marker}: pass the NextMarker of a previous "
                "ListEventSourceMappings response."
            ) from exc
