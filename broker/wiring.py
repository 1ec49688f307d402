"""The only place that resolves concrete invokers and destinations for the core."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from broker.destination import DestinationFactory
from broker.functions import FunctionStore
from broker.invokers.base import InvokerRegistry
from broker.invokers.http import HttpInvoker
from broker.invokers.lambda_ import LambdaInvoker
from broker.invokers.python import PythonInvoker
from broker.mappings import SourceCheck

if TYPE_CHECKING:
    from broker.core import Broker
    from broker.rereads import StreamRereader


class PollerManagerLike(Protocol):
    async def start(self) -> None: ...
    async def stop(self, timeout_s: float = 30.0) -> None: ...


def default_invokers(worker_processes: int = 0, region: str = "us-east-1") -> InvokerRegistry:
    return InvokerRegistry(
        {
            "python": lambda: PythonInvoker(processes=worker_processes),
            "http": HttpInvoker,
            "https": HttpInvoker,
            "lambda": lambda: LambdaInvoker(region),
        }
    )


def default_destinations() -> dict[str, DestinationFactory]:
    import destinations  # resolved here, never by the core modules

    return dict(destinations.FACTORIES)


def default_source_check(region: str, store: FunctionStore) -> SourceCheck:
    """Event-source existence checks for AWS sources (the ``pollers`` package, boto3)."""
    from pollers.source_checks import AwsSourceCheck  # resolved here, never by the core

    async def function_timeout(name: str, qualifier: str | None) -> int:
        timeout_s = await store.timeout_s(name, qualifier)
        return 3 if timeout_s is None else timeout_s

    return AwsSourceCheck(region, function_timeout)


def default_stream_rereader(broker: Broker) -> StreamRereader:
    """Re-reads failed stream batches by sequence range (the ``pollers`` package, boto3)."""
    from pollers.stream_reread import Rereader  # resolved here, never by the core modules

    return Rereader(broker)


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
