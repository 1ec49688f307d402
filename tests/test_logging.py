"""Log lines are bound with function, request id and attempt, and carry no payloads."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from tests.conftest import BrokerFactory
from tests.helpers import wait_until

H = "python:tests.handlers.async_handlers"


async def test_failure_logs_are_bound_and_carry_no_payload(make_broker: BrokerFactory) -> None:
    broker = await make_broker()
    await broker.put_function("orders", f"{H}:fail")
    await broker.put_event_invoke_config("orders", {"MaximumRetryAttempts": 0})
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        request_id = await broker.invoke_async("orders", {"secret": "card-4242"})

        async def ended() -> bool:
            return any(e["event"] == "event_failed" for e in logs)

        await wait_until(ended)
    (failed,) = [e for e in logs if e["event"] == "event_failed"]
    assert failed["function"] == "orders" and failed["request_id"] == request_id
    assert failed["attempt"] == 1 and failed["condition"] == "RetriesExhausted"
    assert failed["log_level"] == "info"
    assert not any("card-4242" in str(e) for e in logs if e["log_level"] != "debug")
