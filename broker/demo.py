"""``sluice demo``: the broker end to end on the embedded Redis, with live progress."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.core import Broker
from broker.redis_client import connect
from broker.settings import Settings

FUNCTIONS: dict[str, dict[str, Any]] = {
    "thumbnail": {"target": "python:broker.demo_functions:thumbnail"},
    "flaky": {"target": "python:broker.demo_functions:flaky"},
    "broken": {"target": "python:broker.demo_functions:broken"},
    "slow": {"target": "python:broker.demo_functions:slow", "timeout_s": 1},
}
SUCCESS_STREAM = "demo-success"
FAILURE_STREAM = "demo-failure"


def _event(name: str, n: int) -> dict[str, Any]:
    events: dict[str, dict[str, Any]] = {
        "thumbnail": {"image": f"cat-{n}.png"},
        "flaky": {"amount": n},
        "broken": {"order": f"A-{n}"},
        "slow": {"n": n // 4},
    }
    return events[name]


async def _records(broker: Broker, stream: str) -> list[dict[str, Any]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await broker.redis.xrange(stream)  # type: ignore[assignment]
    return [json.loads(fields[b"record"]) for _, fields in entries]


async def _outcomes(broker: Broker) -> dict[str, Counter[str]]:
    """Per function: first-try successes, successes after retries, dead-lettered events."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for record in await _records(broker, SUCCESS_STREAM):
        name = record["requestContext"]["functionArn"].split(":")[6]
        count = record["requestContext"]["approximateInvokeCount"]
        table[name]["succeeded" if count == 1 else "retried"] += 1
    for record in await _records(broker, FAILURE_STREAM):
        name = record["requestContext"]["functionArn"].split(":")[6]
        table[name]["dead-lettered"] += 1
        table[name][record["requestContext"]["condition"]] += 1
    return table


async def run_demo(events: int = 200) -> None:
    console = Console()
    settings = Settings(
        retry_base_delay=1.0,  # AWS waits 60 s and 120 s; the demo waits 1 s and 2 s
        throttle_base_delay=0.2,
        visibility_grace_s=5.0,
        worker_processes=2,
        concurrency=32,
        delivery_backoff_s=0.1,
    )
    client = connect(None)
    console.print(
        "[bold]Sluice demo[/]: async invokes on the embedded Redis (in-process fakeredis). "
        "Retry delays are shortened to 1 s x n."
    )
    async with Broker(settings, client) as broker:
        for name, spec in FUNCTIONS.items():
            await broker.put_function(name, **spec)
            await broker.put_event_invoke_config(
                name,
                {
                    "MaximumRetryAttempts": 1 if name == "broken" else 2,
                    "DestinationConfig": {
                        "OnSuccess": {"Destination": f"redis-stream:{SUCCESS_STREAM}"},
                        "OnFailure": {"Destination": f"redis-stream:{FAILURE_STREAM}"},
                    },
                },
            )
        names = list(FUNCTIONS)
        started = time.monotonic()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            sent = progress.add_task("events stored (202)", total=events)
            done = progress.add_task("outcomes delivered", total=events)
            for n in range(events):
                name = names[n % len(names)]
                await broker.invoke_async(name, _event(name, n))
                progress.advance(sent)
            while True:
                finished = await client.xlen(SUCCESS_STREAM) + await client.xlen(FAILURE_STREAM)
                progress.update(done, completed=finished)
                if finished >= events or time.monotonic() - started > 55:
                    break
                await asyncio.sleep(0.2)
        outcomes = await _outcomes(broker)
        stats = {name: await broker.stats(name) for name in names}
        dead = {name: await broker.dead_letters.count(name) for name in names}
        errors = {
            name: {
                str(e["record"].get("responsePayload", {}).get("errorType"))
                for e in await broker.dead_letters.list(name, limit=1000)
            }
            for name in names
        }
    await client.aclose()

    elapsed = time.monotonic() - started
    table = Table(title=f"{events} async events, {elapsed:.1f} s")
    for column in ("function", "ok 1st try", "ok on retry", "dead-lettered", "runs", "why"):
        table.add_column(column, justify="left" if column in ("function", "why") else "right")
    for name in names:
        counts = outcomes.get(name, Counter())
        why = ", ".join(
            f"{c} x{counts[c]}" for c in ("RetriesExhausted", "EventAgeExceeded") if counts[c]
        )
        why += "".join(f" ({e})" for e in sorted(errors.get(name, set())))
        table.add_row(
            name,
            str(counts["succeeded"]),
            str(counts["retried"]),
            f"{counts['dead-lettered']} (store {dead[name]})",
            str(stats[name].get("Invocations", 0)),
            why or "-",
        )
    console.print(table)
    console.print(
        "Every event ended somewhere: success records in the stream "
        f"[cyan]{SUCCESS_STREAM}[/], failure records in [cyan]{FAILURE_STREAM}[/], and every "
        "failed event in Sluice's dead-letter store.\n"
        "[bold]Try next[/]:\n"
        "  redis-server --appendonly yes &\n"
        "  sluice serve --redis-url redis://127.0.0.1:6379/0 "
        "--function hello=python:broker.demo_functions:thumbnail\n"
        '  sluice invoke hello --payload \'{"image": "dog.png"}\' --async '
        "--redis-url redis://127.0.0.1:6379/0\n"
        "  sluice invoke flaky --payload '{}' --function flaky=python:broker.demo_functions:flaky"
    )
