"""The only place that resolves concrete invokers and destinations for the core."""

from __future__ import annotations

from broker.destination import DestinationFactory
from broker.invokers.base import InvokerRegistry
from broker.invokers.http import HttpInvoker
from broker.invokers.python import PythonInvoker


def default_invokers(worker_processes: int = 0) -> InvokerRegistry:
    return InvokerRegistry(
        {
            "python": lambda: PythonInvoker(processes=worker_processes),
            "http": HttpInvoker,
            "https": HttpInvoker,
        }
    )


def default_destinations() -> dict[str, DestinationFactory]:
    import destinations  # resolved here, never by the core modules

    return dict(destinations.FACTORIES)
