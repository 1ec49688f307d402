"""The only place that resolves concrete invokers and destinations for the core."""

from __future__ import annotations

from broker.destination import DestinationFactory
from broker.invokers.base import InvokerRegistry
from broker.invokers.http import HttpInvoker
from broker.invokers.lambda_ import LambdaInvoker
from broker.invokers.python import PythonInvoker


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
