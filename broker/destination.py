"""The destination protocol and registry: the core's only view of where outcomes go.

Concrete destinations live in the ``destinations`` package; the core never imports them.
A registry maps a destination string's scheme (``sqs``, ``http``, ``redis-stream``...) to a
factory, and builds one destination per distinct string, on first use.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, KeysView, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from broker.errors import DeliveryError, PermanentDeliveryError

_ARN = re.compile(r"^arn:aws[a-zA-Z0-9-]*:(?P<service>[a-zA-Z0-9-]+):")


@dataclass(frozen=True)
class Delivery:
    """One thing to deliver: an invocation record, or a dead-letter message (spec §6)."""

    kind: Literal["record", "dead_letter"]
    target: str
    function: str
    request_id: str
    condition: str
    record: dict[str, Any]  # the invocation record (spec §5.2)
    payload: str  # the original event JSON (the body of a dead-letter message)
    error_code: int = 200
    error_message: str = ""
    record_json: str = ""  # ``record`` already serialised, when at hand
    # Where an event-source-mapping record comes from (``eventSourceArn``, ``mappingUuid``,
    # ``shardId``, ``startSequenceNumber``, ``endSequenceNumber``); None for async records.
    source: Mapping[str, str] | None = None

    def record_text(self) -> str:
        return self.record_json or json.dumps(self.record)


class Destination(Protocol):
    """Delivers to one destination string; raises ``DeliveryError`` (``retriable`` says
    whether trying again may help)."""

    async def deliver(self, delivery: Delivery) -> None: ...

    async def close(self) -> None: ...


class BatchDestination(Destination, Protocol):
    """A destination that sends many deliveries in one round trip; returns one error or None
    per delivery, in order."""

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]: ...


@dataclass(frozen=True)
class DestinationContext:
    """What destinations may use: Sluice's Redis and settings values they need."""

    redis: aioredis.Redis
    region: str
    account_id: str
    options: dict[str, Any]
    # Stores an async event for a function this Sluice knows: (function ARN, payload JSON)
    # -> request id; raises ResourceNotFoundError for a function it does not know.
    local_invoke: Callable[[str, str], Awaitable[str]] | None = None


DestinationFactory = Callable[[str, DestinationContext], Destination]


def redacted(target: str) -> str:
    """``target`` fit to show: a URL's password (``amqp://user:secret@host``) becomes
    ``***``. For logs, ids and tables; the stored target keeps it, for redelivery."""
    if "://" not in target or "@" not in target.split("://", 1)[1].split("/", 1)[0]:
        return target
    try:
        parts = urlsplit(target)
    except ValueError:
        return target
    if parts.password is None:
        return target
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scheme_of(target: str) -> str:
    """``arn:aws:sqs:...`` -> ``sqs``; ``https://...`` -> ``https``; ``redis-stream:x`` ->
    ``redis-stream``."""
    match = _ARN.match(target)
    if match:
        return match.group("service")
    return target.split(":", 1)[0].lower()


class DestinationRegistry:
    """Scheme -> factory; one destination built per distinct destination string."""

    def __init__(
        self,
        context: DestinationContext,
        factories: Mapping[str, DestinationFactory] | None = None,
    ) -> None:
        self.context = context
        self._factories: dict[str, DestinationFactory] = {}
        self._built: dict[str, Destination] = {}
        for scheme, factory in (factories or {}).items():
            self.register(scheme, factory)

    def register(self, scheme: str, factory: DestinationFactory) -> None:
        """Serve ``scheme`` (case-insensitive, as :func:`scheme_of` reads it) with ``factory``,
        replacing any factory it had."""
        self._factories[scheme.lower()] = factory

    @property
    def schemes(self) -> KeysView[str]:
        """The registered schemes: a live view, so validation sees later registrations."""
        return self._factories.keys()

    def get(self, target: str) -> Destination:
        destination = self._built.get(target)
        if destination is None:
            factory = self._factories.get(scheme_of(target))
            if factory is None:
                raise PermanentDeliveryError(
                    f"no destination module for {scheme_of(target)!r} in this build ({target})"
                )
            destination = factory(target, self.context)
            self._built[target] = destination
        return destination

    async def deliver_many(
        self, target: str, deliveries: Sequence[Delivery]
    ) -> list[BaseException | None]:
        """Deliver to one target; batch when the destination can, else concurrently."""
        try:
            destination = self.get(target)
        except PermanentDeliveryError as exc:
            return [exc for _ in deliveries]
        except Exception as exc:  # a destination's constructor failed: not ours to crash on
            error = PermanentDeliveryError(f"cannot build destination {target}: {exc!r}")
            return [error for _ in deliveries]
        batch = getattr(destination, "deliver_many", None)
        if batch is not None:
            try:
                results: list[BaseException | None] = await batch(deliveries)
            except Exception as exc:  # a plug-in raised instead of returning errors
                return [DeliveryError(f"{target}: {exc!r}") for _ in deliveries]
            return results
        outcomes = await asyncio.gather(
            *(destination.deliver(d) for d in deliveries), return_exceptions=True
        )
        return [o if isinstance(o, BaseException) else None for o in outcomes]

    async def close(self) -> None:
        built, self._built = self._built, {}
        for destination in built.values():
            await destination.close()
