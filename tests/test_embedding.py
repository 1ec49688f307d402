"""Embedders plug in their own invokers and destinations next to the built-in ones; the
runnable example (``examples/embed_emulator.py``) works and leaves nothing behind."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import (
    Broker,
    CallableInvoker,
    Delivery,
    DestinationContext,
    Invocation,
    InvokeResult,
    InvokerRegistry,
    ManualClock,
    callable_invoker,
)
from tests.conftest import settings_for_tests
from tests.helpers import until, wait_until
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "embed_emulator.py"


class UppercaseInvoker:
    """An emulator's own way of running functions: a class with the Invoker protocol."""

    async def start(self) -> None:
        return None

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        event = json.loads(invocation.payload)
        return InvokeResult(
            outcome="success",
            payload=json.dumps({"shout": str(event["word"]).upper()}),
            executed_version=invocation.function_version,
        )

    async def close(self) -> None:
        return None


class ListDestination:
    """An emulator's own destination kind, with the batch method."""

    def __init__(self, received: list[Delivery]) -> None:
        self.received = received

    async def deliver(self, delivery: Delivery) -> None:
        self.received.append(delivery)

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        self.received.extend(deliveries)
        return [None for _ in deliveries]

    async def close(self) -> None:
        return None


async def test_custom_invoker_and_destination_schemes_are_used(
    redis_client: aioredis.Redis, clock: ManualClock
) -> None:
    received: list[Delivery] = []

    def factory(target: str, context: DestinationContext) -> ListDestination:
        return ListDestination(received)

    async with Broker(
        settings_for_tests(),
        redis_client,
        clock=clock,
        invokers=InvokerRegistry({"shout": UppercaseInvoker}),
        destinations={"list": factory},
    ) as broker:
        await broker.put_function("echo", "shout:anything")
        await broker.put_event_invoke_config(
            "echo", {"DestinationConfig": {"OnSuccess": {"Destination": "list:inbox"}}}
        )
        request_id = await broker.invoke_async("echo", {"word": "hi"})
        await until(lambda: any(d.request_id == request_id for d in received))
    (delivery,) = received
    assert delivery.target == "list:inbox"
    assert delivery.record["responsePayload"] == {"shout": "HI"}
    assert delivery.record["requestContext"]["condition"] == "Success"


async def test_extra_schemes_are_added_to_the_builtin_ones(redis_client: aioredis.Redis) -> None:
    broker = Broker(
        settings_for_tests(),
        redis_client,
        extra_invokers={"Emu": callable_invoker(lambda event, context: event)},
        extra_destinations={"emu": lambda target, _: ListDestination([])},
        dispatch=False,
    )
    for target in ("emu:f", "python:m:f", "http://x", "https://x", "lambda:f"):
        assert broker.invokers.supports(target), target
    assert {"emu", "redis-stream", "sqs", "https", "rq"} <= set(broker.destinations.schemes)


# -- callable_invoker: Lambda's result and error shapes ---------------------------------------
def invocation(target: str, payload: Any = None, *, timeout_s: float = 3.0) -> Invocation:
    return Invocation(
        request_id="req-1",
        target=target,
        function_name="fn",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:fn",
        payload=payload if isinstance(payload, str) else json.dumps(payload),
        timeout_s=timeout_s,
        memory_mb=256,
    )


def context_of(event: Any, context: Any) -> dict[str, Any]:
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 3000,
        "thread": threading.current_thread().name,
    }


async def async_context_of(event: Any, context: Any) -> dict[str, Any]:
    return context_of(event, context)


def broken(event: Any, context: Any) -> None:
    raise ValueError("no such order")


async def async_broken(event: Any, context: Any) -> None:
    raise LookupError("gone")


async def sleepy(event: Any, context: Any) -> None:
    await asyncio.sleep(60)


def sleepy_sync(event: Any, context: Any) -> None:
    time.sleep(0.5)


HANDLERS = {
    "context": context_of,
    "async-context": async_context_of,
    "broken": broken,
    "async-broken": async_broken,
    "sleepy": sleepy,
    "sleepy-sync": sleepy_sync,
    "unmarshallable": lambda event, context: {1, 2},
}


def error_of(result: InvokeResult) -> dict[str, Any]:
    assert result.outcome == "function_error" and result.function_error == "Unhandled"
    assert result.payload is not None
    error: dict[str, Any] = json.loads(result.payload)
    assert set(error) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    return error


@pytest.mark.parametrize(
    ("name", "thread"), [("context", "sluice-callable-invoker"), ("async-context", "MainThread")]
)
async def test_callable_handler_gets_event_and_lambda_context(name: str, thread: str) -> None:
    invoker = CallableInvoker(HANDLERS)
    result = await invoker.invoke(invocation(f"emu:{name}", {"n": 1}))
    await invoker.close()
    assert result.outcome == "success" and result.executed_version == "$LATEST"
    assert json.loads(result.payload or "") == {
        "event": {"n": 1},
        "request_id": "req-1",
        "function_name": "fn",
        "arn": "arn:aws:lambda:us-east-1:000000000000:function:fn",
        "memory": 256,
        "remaining_ok": True,
        "thread": thread,  # plain handlers in a thread of their own, async ones on the loop
    }


@pytest.mark.parametrize(
    ("name", "error_type", "message", "frame"),
    [
        ("broken", "ValueError", "no such order", "in broken"),
        ("async-broken", "LookupError", "gone", "in async_broken"),
    ],
)
async def test_callable_handler_exception_is_a_lambda_function_error(
    name: str, error_type: str, message: str, frame: str
) -> None:
    result = await CallableInvoker(HANDLERS).invoke(invocation(f"emu:{name}", {}))
    error = error_of(result)
    assert (error["errorType"], error["errorMessage"], error["requestId"]) == (
        error_type,
        message,
        "req-1",
    )
    assert len(error["stackTrace"]) == 1 and frame in error["stackTrace"][0]  # the handler's


@pytest.mark.parametrize(
    ("target", "payload", "error_type"),
    [
        ("emu:missing", "{}", "Runtime.HandlerNotFound"),
        ("emu:context", "{not json", "Runtime.UnmarshalError"),
        ("emu:unmarshallable", "{}", "Runtime.MarshalError"),
    ],
)
async def test_callable_invoker_runtime_errors_have_lambda_types(
    target: str, payload: str, error_type: str
) -> None:
    result = await CallableInvoker(HANDLERS).invoke(invocation(target, payload))
    assert error_of(result)["errorType"] == error_type


@pytest.mark.parametrize("name", ["sleepy", "sleepy-sync"])
async def test_callable_handler_past_its_timeout_is_sandbox_timedout(name: str) -> None:
    invoker = CallableInvoker(HANDLERS)
    result = await invoker.invoke(invocation(f"emu:{name}", {}, timeout_s=0.05))
    error = error_of(result)
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"] == "RequestId: req-1 Error: Task timed out after 0.05 seconds"
    await invoker.close()  # waits for the overrunning sync handler's thread
    assert not [t for t in threading.enumerate() if t.name == "sluice-callable-invoker"]


async def test_one_callable_serves_every_target_of_its_scheme() -> None:
    factory = callable_invoker(lambda event, context: context.function_name)
    result = await factory().invoke(invocation("emu:whatever", {}))
    assert result.payload == '"fn"'


# -- the runnable example ------------------------------------------------------------------------
def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embed_emulator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def named_clients(client: aioredis.Redis, name: str) -> int:
    """Connections to the server that named themselves ``name`` (CLIENT SETNAME)."""
    return sum(1 for c in await client.client_list() if c.get("name") == name)


def assert_example_outcomes(inbox: dict[str, list[dict[str, Any]]]) -> None:
    """1 success and 2 failure records, in AWS's shapes, reached the emu: destination."""
    (success,) = inbox["succeeded"]
    assert success["requestContext"]["condition"] == "Success"
    assert success["requestPayload"] == {"name": "world"}
    assert success["responsePayload"]["greeting"] == "hello world"
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    (async_failure,) = [r for r in inbox["failed"] if "requestPayload" in r]
    (stream_failure,) = [r for r in inbox["failed"] if "RedisStreamBatchInfo" in r]
    assert async_failure["requestContext"]["condition"] == "RetriesExhausted"
    assert async_failure["requestContext"]["functionArn"].endswith(":function:greet:$LATEST")
    assert async_failure["responseContext"]["functionError"] == "Unhandled"
    assert async_failure["responsePayload"]["errorType"] == "ValueError"
    assert async_failure["responsePayload"]["errorMessage"] == "nobody asked to fail"
    assert async_failure["responsePayload"]["stackTrace"]
    assert stream_failure["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert stream_failure["responseContext"]["functionError"] == "Unhandled"
    batch = stream_failure["RedisStreamBatchInfo"]
    assert batch["batchSize"] == 1 and batch["streamArn"] == "redis-stream:orders"


async def test_example_runs_in_process_and_leaves_nothing_behind(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    example = load_example()
    name = "embed-example"
    threads_before = set(threading.enumerate())

    run = asyncio.create_task(example.main(f"{redis_server.url}?client_name={name}"))
    seen = 0  # the example's connections while it runs: they can be told apart

    async def seen_or_done() -> bool:
        nonlocal seen
        seen = max(seen, await named_clients(redis_client, name))
        return seen > 0 or run.done()

    await wait_until(seen_or_done, timeout_s=30)
    inbox = await asyncio.wait_for(run, timeout=60)
    assert seen > 0

    assert_example_outcomes(inbox)
    assert [t for t in threading.enumerate() if t not in threads_before] == []
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert await named_clients(redis_client, name) == 0


@pytest.mark.slow
def test_example_runs_as_a_program_on_the_embedded_redis() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60
    lines = done.stdout.splitlines()
    assert any(line.startswith("emu:succeeded Success") for line in lines), done.stdout
    assert any(line.startswith("emu:failed RetriesExhausted") for line in lines)
    assert any(line.startswith("emu:failed RetryAttemptsExhausted") for line in lines)
    assert '"greeting": "hello later"' in done.stdout  # the SyncBroker half
    assert "Traceback" not in done.stderr
