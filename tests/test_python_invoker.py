"""PythonInvoker: results, Lambda's error shapes, timeouts, crashes, chunking and close."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker.invokers.base import Invocation
from broker.invokers.python import PythonInvoker
from broker.models import InvokeResult

HANDLERS = "python:tests.handlers.python_invoker_handlers"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:fn"


def make_invocation(
    func: str, event: Any = None, *, timeout_s: float = 3.0, target: str | None = None
) -> Invocation:
    return Invocation(
        request_id=str(uuid.uuid4()),
        target=target or f"{HANDLERS}:{func}",
        function_name="fn",
        function_version="$LATEST",
        invoked_function_arn=ARN,
        payload=json.dumps(event if event is not None else {}),
        timeout_s=timeout_s,
        memory_mb=256,
    )


def error_of(result: InvokeResult) -> dict[str, Any]:
    assert result.outcome == "function_error"
    assert result.function_error == "Unhandled"
    assert result.status_code == 200
    assert result.executed_version == "$LATEST"
    assert result.payload is not None
    error: dict[str, Any] = json.loads(result.payload)
    return error


@pytest.fixture
async def invoker() -> AsyncIterator[PythonInvoker]:
    inv = PythonInvoker(processes=2)
    await inv.start()
    yield inv
    await inv.close()


@pytest.fixture
async def single() -> AsyncIterator[PythonInvoker]:
    """One worker, so a batch of calls made together is one chunk."""
    inv = PythonInvoker(processes=1)
    await inv.start()
    yield inv
    await inv.close()


async def test_success_returns_json_and_context_fields(invoker: PythonInvoker) -> None:
    call = make_invocation("context_fields")
    result = await invoker.invoke(call)
    assert result.outcome == "success"
    assert result.status_code == 200
    assert result.executed_version == "$LATEST"
    assert result.function_error is None
    assert result.payload is not None
    fields = json.loads(result.payload)
    assert fields["aws_request_id"] == call.request_id
    assert fields["function_name"] == "fn"
    assert fields["function_version"] == "$LATEST"
    assert fields["invoked_function_arn"] == ARN
    assert fields["memory_limit_in_mb"] == 256
    assert fields["log_group_name"] == "/aws/lambda/fn"
    assert "[$LATEST]" in fields["log_stream_name"]
    assert 0 < fields["remaining_ms"] <= 3000


async def test_none_return_is_null(invoker: PythonInvoker) -> None:
    result = await invoker.invoke(make_invocation("noop"))
    assert (result.outcome, result.payload) == ("success", "null")


async def test_exception_becomes_lambda_error_object(invoker: PythonInvoker) -> None:
    call = make_invocation("fail", {"value": 7})
    error = error_of(await invoker.invoke(call))
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad value 7"
    assert error["requestId"] == call.request_id
    stack = error["stackTrace"]
    assert isinstance(stack, list)
    assert all(isinstance(line, str) for line in stack)
    assert len(stack) == 2  # fail() and _check(); the worker's own frame is left out
    assert "in fail" in stack[0]
    assert "in _check" in stack[1]
    assert "_worker.py" not in "".join(stack)


async def test_timeout_kills_worker_and_next_call_runs(single: PythonInvoker) -> None:
    before = await single.invoke(make_invocation("whoami"))
    call = make_invocation("sleep", {"seconds": 30}, timeout_s=0.3)
    error = error_of(await single.invoke(call))
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"] == (
        f"RequestId: {call.request_id} Error: Task timed out after 0.30 seconds"
    )
    after = await single.invoke(make_invocation("whoami"))
    assert after.outcome == "success"
    assert before.payload is not None and after.payload is not None
    assert json.loads(after.payload)["pid"] != json.loads(before.payload)["pid"]


async def test_exit_is_runtime_exit_error_and_worker_respawns(single: PythonInvoker) -> None:
    call = make_invocation("exit_now", {"code": 3})
    error = error_of(await single.invoke(call))
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == (
        f"RequestId: {call.request_id} Error: Runtime exited with error: exit status 3"
    )
    assert (await single.invoke(make_invocation("echo", {"a": 1}))).payload == '{"a": 1}'


async def test_import_error(invoker: PythonInvoker) -> None:
    call = make_invocation("", target="python:tests.handlers.missing_module:handler")
    error = error_of(await invoker.invoke(call))
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == (
        "Unable to import module 'tests.handlers.missing_module': "
        "No module named 'tests.handlers.missing_module'"
    )
    assert error["requestId"] == call.request_id


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            f"{HANDLERS}:missing",
            "Handler 'missing' missing on module 'tests.handlers.python_invoker_handlers'",
        ),
        (
            f"{HANDLERS}:not_callable",
            "Handler 'not_callable' missing on module 'tests.handlers.python_invoker_handlers'",
        ),
        ("python:no_function_here", None),
    ],
)
async def test_handler_not_found(invoker: PythonInvoker, target: str, message: str | None) -> None:
    error = error_of(await invoker.invoke(make_invocation("", target=target)))
    assert error["errorType"] == "Runtime.HandlerNotFound"
    if message is not None:
        assert error["errorMessage"] == message


async def test_unserializable_return_is_marshal_error(invoker: PythonInvoker) -> None:
    error = error_of(await invoker.invoke(make_invocation("unmarshalable")))
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable"
    )


async def test_many_concurrent_calls_get_their_own_results(invoker: PythonInvoker) -> None:
    calls = [
        make_invocation("fail", {"value": n}) if n % 10 == 0 else make_invocation("echo", {"n": n})
        for n in range(2000)
    ]
    results = await asyncio.gather(*(invoker.invoke(call) for call in calls))
    for n, (call, result) in enumerate(zip(calls, results, strict=True)):
        if n % 10 == 0:
            error = error_of(result)
            assert (error["requestId"], error["errorMessage"]) == (
                call.request_id,
                f"bad value {n}",
            )
        else:
            assert (result.outcome, result.payload) == ("success", json.dumps({"n": n}))
    assert (invoker.pending, invoker.busy) == (0, 0)


async def test_timeout_mid_chunk_requeues_the_rest(single: PythonInvoker) -> None:
    calls = [make_invocation("whoami", {"n": n}) for n in range(10)]
    calls[4] = make_invocation("sleep", {"seconds": 30}, timeout_s=0.3)
    results = await asyncio.gather(*(single.invoke(call) for call in calls))
    assert error_of(results[4])["errorType"] == "Sandbox.Timedout"
    bodies = [json.loads(r.payload or "") for i, r in enumerate(results) if i != 4]
    assert [body["event"]["n"] for body in bodies] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    first_pids = {body["pid"] for body in bodies[:4]}
    later_pids = {body["pid"] for body in bodies[4:]}
    assert len(first_pids) == len(later_pids) == 1
    assert first_pids != later_pids  # the unstarted calls ran in the replacement worker


async def test_exit_mid_chunk_requeues_the_rest(single: PythonInvoker) -> None:
    calls = [make_invocation("echo", {"n": n}) for n in range(6)]
    calls[2] = make_invocation("exit_now", {"code": 9})
    results = await asyncio.gather(*(single.invoke(call) for call in calls))
    assert error_of(results[2])["errorMessage"].endswith("exit status 9")
    for n in (0, 1, 3, 4, 5):
        assert results[n].payload == json.dumps({"n": n})


async def test_cancelled_call_does_not_disturb_others(single: PythonInvoker) -> None:
    slow = asyncio.ensure_future(single.invoke(make_invocation("sleep", {"seconds": 0.2})))
    queued = asyncio.ensure_future(single.invoke(make_invocation("echo", {"q": 1})))
    dropped = asyncio.ensure_future(single.invoke(make_invocation("echo", {"q": 2})))
    await asyncio.sleep(0)  # let the three calls queue
    dropped.cancel()
    assert (await slow).outcome == "success"
    assert (await queued).payload == '{"q": 1}'
    with pytest.raises(asyncio.CancelledError):
        await dropped


async def test_close_fails_queued_calls_and_leaves_no_processes() -> None:
    threads_before = threading.active_count()
    inv = PythonInvoker(processes=1, close_grace_s=0.1)
    await inv.start()
    running = asyncio.ensure_future(inv.invoke(make_invocation("sleep", {"seconds": 30})))
    await asyncio.sleep(0)  # queued
    await asyncio.sleep(0)  # dispatched
    queued = [asyncio.ensure_future(inv.invoke(make_invocation("noop"))) for _ in range(3)]
    await asyncio.sleep(0)
    assert (inv.busy, inv.pending) == (1, 3)
    await inv.close()  # fails the queued calls, kills the busy worker after the grace
    for result in await asyncio.gather(running, *queued):
        assert (result.outcome, result.status_code) == ("system_error", 500)
        assert result.error_message == "invoker closed"
    after = await inv.invoke(make_invocation("noop"))
    assert after.error_message == "invoker closed"
    assert multiprocessing.active_children() == []
    assert threading.active_count() == threads_before


async def test_close_lets_running_chunk_finish_within_grace() -> None:
    inv = PythonInvoker(processes=1, close_grace_s=5.0)
    await inv.start()
    calls = [asyncio.ensure_future(inv.invoke(make_invocation("echo", {"n": n}))) for n in range(3)]
    await asyncio.sleep(0)  # queued
    await asyncio.sleep(0)  # dispatched as one chunk
    await inv.close()
    results = await asyncio.gather(*calls)
    assert [r.payload for r in results] == [json.dumps({"n": n}) for n in range(3)]
    assert multiprocessing.active_children() == []


async def test_failed_restart_is_retried_with_backoff(
    single: PythonInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("broker.invokers.python.RESPAWN_RETRY_S", 0.01)
    start_process = single._start_process
    attempts: list[str] = []

    def flaky_start(name: str) -> Any:
        attempts.append(name)
        if len(attempts) <= 2:
            raise OSError("no processes for you")
        return start_process(name)

    monkeypatch.setattr(single, "_start_process", flaky_start)
    assert error_of(await single.invoke(make_invocation("exit_now")))["errorType"] == (
        "Runtime.ExitError"
    )
    assert (await single.invoke(make_invocation("echo", {"b": 1}))).payload == '{"b": 1}'
    assert len(attempts) == 3


async def test_start_fails_when_a_worker_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    inv = PythonInvoker(processes=2)

    def broken_start(name: str) -> Any:
        raise OSError("fork failed")

    monkeypatch.setattr(inv, "_start_process", broken_start)
    with pytest.raises(OSError, match="fork failed"):
        await inv.start()
    assert multiprocessing.active_children() == []
    assert (await inv.invoke(make_invocation("noop"))).error_message == "invoker closed"
