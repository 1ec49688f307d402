"""Destinations: one module per target kind, each delivering invocation records.

``FACTORIES`` maps a destination string's scheme to the factory the wiring registers; the
core (``broker``) never imports this package itself. Each factory imports its module when
the first destination of its kind is built, so a client library (boto3, kombu: the ``aws``
and ``amqp`` extras, see :mod:`broker.extras`) is needed only by those who use it. Without
it, building the destination raises :class:`~broker.errors.PermanentDeliveryError` naming
the extra: the delivery fails at once and its record is kept in the dead-letter store.

The classes are importable from here too (``from destinations import SqsDestination``),
also on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.destination import Destination, DestinationContext, DestinationFactory
from broker.errors import PermanentDeliveryError
from broker.extras import AMQP, AWS, MissingExtraError, load

if TYPE_CHECKING:
    from destinations.amqp import AmqpDestination
    from destinations.eventbridge import EventBridgeDestination
    from destinations.http import WebhookDestination
    from destinations.lambda_ import LambdaDestination
    from destinations.redis import RedisStreamDestination
    from destinations.rq import RqDestination
    from destinations.s3 import S3Destination
    from destinations.sns import SnsDestination
    from destinations.sqs import SqsDestination


@dataclass(frozen=True)
class LazyFactory:
    """A :data:`~broker.destination.DestinationFactory` for ``destinations.<module>.<name>``,
    imported at the first call; ``needs`` is the (module, extra) it requires, if any."""

    module: str
    name: str
    kind: str  # for the message: "the <kind> destination needs boto3: ..."
    needs: tuple[str, str] | None = None

    def load(self) -> DestinationFactory:
        """The destination class; :class:`~broker.extras.MissingExtraError` without its extra."""
        path, feature = f"destinations.{self.module}", f"the {self.kind} destination"
        factory: DestinationFactory = load(path, self.name, self.needs, feature)
        return factory

    def __call__(self, target: str, context: DestinationContext) -> Destination:
        try:
            factory = self.load()
        except MissingExtraError as exc:  # no retry can install it: dead-letter the record
            raise PermanentDeliveryError(str(exc)) from exc
        return factory(target, context)


_AMQP = LazyFactory("amqp", "AmqpDestination", "amqp", AMQP)
_HTTP = LazyFactory("http", "WebhookDestination", "webhook")
_LAZY: dict[str, LazyFactory] = {
    "amqp": _AMQP,
    "amqps": _AMQP,
    "events": LazyFactory("eventbridge", "EventBridgeDestination", "EventBridge", AWS),
    "http": _HTTP,
    "https": _HTTP,
    "lambda": LazyFactory("lambda_", "LambdaDestination", "Lambda", AWS),
    "redis-stream": LazyFactory("redis", "RedisStreamDestination", "redis-stream"),
    "rq": LazyFactory("rq", "RqDestination", "rq"),
    "s3": LazyFactory("s3", "S3Destination", "S3", AWS),
    "sns": LazyFactory("sns", "SnsDestination", "SNS", AWS),
    "sqs": LazyFactory("sqs", "SqsDestination", "SQS", AWS),
}
FACTORIES: dict[str, DestinationFactory] = dict(_LAZY)

__all__ = [
    "FACTORIES",
    "AmqpDestination",
    "EventBridgeDestination",
    "LambdaDestination",
    "LazyFactory",
    "RedisStreamDestination",
    "RqDestination",
    "S3Destination",
    "SnsDestination",
    "SqsDestination",
    "WebhookDestination",
]


def __getattr__(name: str) -> Any:
    """``destinations.SqsDestination`` and the others, imported on first use (PEP 562)."""
    for factory in _LAZY.values():
        if factory.name == name:
            return factory.load()  # MissingExtraError (an ImportError) without its extra
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
