"""Sluice: a self-hosted, AWS-Lambda-compatible async-invoke and event-source-mapping broker
on Redis. ``Broker`` is the embeddable API (``SyncBroker`` runs one for code that is not
asyncio; ``callable_invoker`` turns a Python callable into a function); see the README's
"Library API" and ``examples/embed_emulator.py``."""

from __future__ import annotations

from broker.clock import Clock, ManualClock, RedisClock, SystemClock
from broker.core import Broker
from broker.dead_letters import DeadLetterStore
from broker.decide import Finish, Retry, RetryPolicy, after_attempt, before_attempt
from broker.destination import (
    Delivery,
    Destination,
    DestinationContext,
    DestinationFactory,
    DestinationRegistry,
)
from broker.errors import (
    ApiError,
    ConfigError,
    DeliveryError,
    InvalidParameterValueError,
    InvalidRequestContentError,
    PermanentDeliveryError,
    RequestTooLargeError,
    ResourceConflictError,
    ResourceNotFoundError,
    ServiceError,
    SluiceError,
    TooManyRequestsError,
    ValidationError,
)
from broker.invokers.base import Invocation, Invoker, InvokerFactory, InvokerRegistry
from broker.invokers.callable import CallableInvoker, callable_invoker
from broker.models import Envelope, EventInvokeConfig, FunctionConfig, InvokeResult
from broker.settings import FunctionSpec, Settings
from broker.sync import SyncBroker
from broker.version import VERSION as __version__

__all__ = [
    "ApiError",
    "Broker",
    "CallableInvoker",
    "Clock",
    "ConfigError",
    "DeadLetterStore",
    "Delivery",
    "DeliveryError",
    "Destination",
    "DestinationContext",
    "DestinationFactory",
    "DestinationRegistry",
    "Envelope",
    "EventInvokeConfig",
    "Finish",
    "FunctionConfig",
    "FunctionSpec",
    "InvalidParameterValueError",
    "InvalidRequestContentError",
    "Invocation",
    "InvokeResult",
    "Invoker",
    "InvokerFactory",
    "InvokerRegistry",
    "ManualClock",
    "PermanentDeliveryError",
    "RedisClock",
    "RequestTooLargeError",
    "ResourceConflictError",
    "ResourceNotFoundError",
    "Retry",
    "RetryPolicy",
    "ServiceError",
    "Settings",
    "SluiceError",
    "SyncBroker",
    "SystemClock",
    "TooManyRequestsError",
    "ValidationError",
    "__version__",
    "after_attempt",
    "before_attempt",
    "callable_invoker",
]
