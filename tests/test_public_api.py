"""The embedding API is explicit and pinned."""

from __future__ import annotations

import broker


def test_public_names_are_pinned_and_sorted() -> None:
    assert broker.__all__ == sorted(broker.__all__)
    assert set(broker.__all__) == {
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
