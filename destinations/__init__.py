"""Destinations: one module per target kind, each delivering invocation records.

``FACTORIES`` maps a destination string's scheme to the factory the wiring registers; the
core (``broker``) never imports this package itself.
"""

from __future__ import annotations

from broker.destination import DestinationFactory
from destinations.http import WebhookDestination
from destinations.redis import RedisStreamDestination

FACTORIES: dict[str, DestinationFactory] = {
    "http": WebhookDestination,
    "https": WebhookDestination,
    "redis-stream": RedisStreamDestination,
}

__all__ = ["FACTORIES", "RedisStreamDestination", "WebhookDestination"]
