"""The only place that resolves concrete invokers and destinations for the core.

Everything here that needs an optional dependency (boto3, kombu: see :mod:`broker.extras`)
resolves it on first use, so a broker that uses neither runs without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from broker.destination import DestinationFactory
from broker.errors import InvalidParameterValueError
from broker.extras import AWS, MissingExtraError, require
from broker.functions import FunctionStore
from broker.invokers.base import InvokerRegistry
from broker.invokers.http import HttpInvoker
from broker.invokers.lambda_ import LambdaInvoker
from broker.invokers.python import PythonInvoker
from broker.mappings import MappingConfig, SourceCheck, SourceKind
from broker.rereads import Reread, StreamRereader

if TYPE_CHECKING:
    from broker.core import Broker

# Sources whose existence is asked of AWS (through boto3) before a mapping is stored.
AWS_SOURCES = frozenset({SourceKind.SQS, SourceKind.KINESIS, SourceKind.DYNAMODB})


class PollerManagerLike(Protocol):
    async def start(self) -> None: ...
    async def stop(self, timeout_s: float = 30.0) -> None: ...


def default_invokers(
    worker_processes: int = 0, region: str = "us-east-1", *, http_error_bodies: bool = False
) -> InvokerRegistry:
    def http() -> HttpInvoker:
        return HttpInvoker(error_bodies=http_error_bodies)

    return InvokerRegistry(
        {
            "python": lambda: PythonInvoker(processes=worker_processes),
            "http": http,
            "https": http,
            "lambda": lambda: LambdaInvoker(region),
        }
    )


def default_destinations() -> dict[str, DestinationFactory]:
    import destinations  # resolved here, never by the core modules

    return dict(destinations.FACTORIES)


def default_source_check(region: str, store: FunctionStore) -> SourceCheck:
    """Event-source existence checks for AWS sources (the ``pollers`` package, boto3),
    resolved at the first AWS source; other sources are not checked and need no boto3.
    Without boto3 a mapping on an AWS source is refused with
    ``InvalidParameterValueException`` naming the extra (its poller could not run either)."""
    built: list[SourceCheck] = []  # the AwsSourceCheck, once an AWS source needed it

    async def function_timeout(name: str, qualifier: str | None) -> int:
        timeout_s = await store.timeout_s(name, qualifier)
        return 3 if timeout_s is None else timeout_s

    async def check(config: MappingConfig) -> None:
        if config.source_kind not in AWS_SOURCES:
            return
        if not built:
            try:
                require(*AWS, f"the event source {config.event_source_arn}")
            except MissingExtraError as exc:
                raise InvalidParameterValueError(str(exc)) from exc
            from pollers.source_checks import AwsSourceCheck  # resolved here, never by the core

            built.append(AwsSourceCheck(region, function_timeout))
        await built[0](config)

    return check


def default_stream_rereader(broker: Broker) -> StreamRereader:
    """Re-reads failed stream batches by sequence range (the ``pollers`` package), built at
    the first re-read: a replay of async events alone needs none of it."""
    return _LazyRereader(broker)


class _LazyRereader:
    """A :class:`~broker.rereads.StreamRereader` that imports ``pollers.stream_reread`` when
    the first range is re-read. Without boto3 a Kinesis or DynamoDB Streams range answers
    "cannot re-read" (naming the extra) and the replay sends the stored event, as for a
    range the stream no longer keeps; Redis streams need no extra."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._rereader: StreamRereader | None = None

    async def reread(self, source: Mapping[str, Any]) -> Reread:
        if self._rereader is None:
            from pollers.stream_reread import Rereader  # resolved here, never by the core

            self._rereader = Rereader(self._broker)
        return await self._rereader.reread(source)

    async def close(self) -> None:
        if self._rereader is not None:
            await self._rereader.close()
            self._rereader = None


def default_poller_manager(broker: Broker) -> PollerManagerLike:
    """The ``pollers`` package's manager for ``broker``, with its settings."""
    from pollers.core import PollerSettings  # resolved here, never by the core modules
    from pollers.manager import PollerManager

    settings = broker.settings
    return PollerManager(
        broker,
        PollerSettings(
            sqs_wait_time_s=settings.sqs_wait_time_s,
            sqs_default_concurrency=settings.sqs_default_concurrency,
            refresh_s=settings.poller_refresh_s,
            lease_ttl_s=settings.poller_lease_ttl_s,
            stream_read_block_s=settings.stream_read_block_s,
            stream_poll_interval_s=settings.stream_poll_interval_s,
            shard_list_interval_s=settings.stream_shard_list_interval_s,
            stream_retry_backoff_s=settings.stream_retry_backoff_s,
            stream_retry_backoff_max_s=settings.stream_retry_backoff_max_s,
            amqp_broker_urls=dict(settings.amqp_broker_urls),
            amqp_reconnect_max_s=settings.amqp_reconnect_max_s,
            amqp_requeue_failed=settings.amqp_requeue_failed,
        ),
    )
