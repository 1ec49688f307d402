"""The embedding API is explicit and pinned."""

from __future__ import annotations

from importlib.metadata import version

import broker


def test_public_names_are_pinned_and_sorted() -> None:
    assert broker.__all__ == sorted(broker.__all__)
    assert set(broker.__all__) == {
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
    }
    for name in broker.__all__:
        assert getattr(broker, name) is not None


def test_core_never_imports_concrete_destinations_or_pollers() -> None:
    import pathlib

    root = pathlib.Path(broker.__file__).parent
    for path in root.rglob("*.py"):
        if path.name == "wiring.py":
            continue  # the one place that resolves them
        text = path.read_text()
        assert "import destinations" not in text and "from destinations" not in text, path
        assert "from pollers" not in text, path


def test_version_is_the_installed_distributions() -> None:
    assert broker.__version__ == version("sluice-broker")
