"""Sluice: a self-hosted, AWS-Lambda-compatible async-invoke and event-source-mapping broker
on Redis. ``Broker`` is the embeddable API; see the README for a tour."""

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
from broker.invokers.base import Invocation, Invoker, InvokerRegistry
from broker.models import Envelope, EventInvokeConfig, FunctionConfig, InvokeResult
from broker.settings import FunctionSpec, Settings

__all__ = [
    "ApiError",
    "Broker",
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
    "SystemClock",
    "TooManyRequestsError",
    "ValidationError",
    "after_attempt",
    "before_attempt",
]
