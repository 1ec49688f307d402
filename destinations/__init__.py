"""Destinations: one module per target kind, each delivering invocation records.

``FACTORIES`` maps a destination string's scheme to the factory the wiring registers; the
core (``broker``) never imports this package itself.
"""

from __future__ import annotations

from broker.destination import DestinationFactory
from destinations.amqp import AmqpDestination
from destinations.eventbridge import EventBridgeDestination
from destinations.http import WebhookDestination
from destinations.lambda_ import LambdaDestination
from destinations.redis import RedisStreamDestination
from destinations.rq import RqDestination
from destinations.s3 import S3Destination
from destinations.sns import SnsDestination
from destinations.sqs import SqsDestination

FACTORIES: dict[str, DestinationFactory] = {
    "amqp": AmqpDestination,
    "amqps": AmqpDestination,
    "events": EventBridgeDestination,
    "http": WebhookDestination,
    "https": WebhookDestination,
    "lambda": LambdaDestination,
    "redis-stream": RedisStreamDestination,
    "rq": RqDestination,
    "s3": S3Destination,
    "sns": SnsDestination,
    "sqs": SqsDestination,
}

__all__ = [
    "FACTORIES",
    "AmqpDestination",
    "EventBridgeDestination",
    "LambdaDestination",
    "RedisStreamDestination",
    "RqDestination",
    "S3Destination",
    "SnsDestination",
    "SqsDestination",
    "WebhookDestination",
]
