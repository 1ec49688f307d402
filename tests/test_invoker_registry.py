"""The invoker registry starts one invoker per scheme, however many calls race for it."""

from __future__ import annotations

import asyncio

from broker.invokers.base import Invocation, InvokerRegistry
from broker.models import InvokeResult


class CountingInvoker:
    started = 0
    closed = 0

    async def start(self) -> None:
        await asyncio.sleep(0.01)  # starting takes a while (a process pool does)
        CountingInvoker.started += 1

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        return InvokeResult(outcome="success", payload=invocation.payload)

    async def close(self) -> None:
        CountingInvoker.closed += 1


async def test_concurrent_first_calls_share_one_started_invoker() -> None:
    registry = InvokerRegistry({"python": CountingInvoker})
    call = Invocation("r", "python:m:f", "f", "$LATEST", "arn", "{}", 3, 128)
    results = await asyncio.gather(*(registry.invoke(call) for _ in range(50)))
    assert all(r.outcome == "success" for r in results)
    assert CountingInvoker.started == 1
    await registry.close()
    assert CountingInvoker.closed == 1
