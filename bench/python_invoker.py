"""Throughput of PythonInvoker: no-op calls per second through 2 worker processes.

Run from the repository root: ``python bench/python_invoker.py``. Prints, asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from broker.invokers.base import Invocation
from broker.invokers.python import PythonInvoker

TARGET = "python:tests.handlers.python_invoker_handlers:noop"
PROCESSES = 2
CALLS = 20_000
ROUNDS = 3


def invocation() -> Invocation:
    return Invocation(
        request_id=str(uuid.uuid4()),
        target=TARGET,
        function_name="noop",
        function_version="$LATEST",
        invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:noop",
        payload=json.dumps({}),
        timeout_s=3.0,
        memory_mb=128,
    )


async def main() -> None:
    invoker = PythonInvoker(processes=PROCESSES)
    await invoker.start()
    try:
        await asyncio.gather(*(invoker.invoke(invocation()) for _ in range(1_000)))  # warm up
        for _ in range(ROUNDS):
            calls = [invocation() for _ in range(CALLS)]
            started = time.perf_counter()
            results = await asyncio.gather(*(invoker.invoke(call) for call in calls))
            elapsed = time.perf_counter() - started
            ok = sum(result.outcome == "success" for result in results)
            print(f"{CALLS / elapsed:,.0f} invocations/s ({ok} ok, {elapsed:.2f} s)")
    finally:
        await invoker.close()


if __name__ == "__main__":
    asyncio.run(main())
