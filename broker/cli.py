"""The ``sluice`` command: ``serve``, ``invoke`` and ``demo``. Signals are handled here
only: the first SIGTERM/SIGINT drains in-flight work, a second one exits at once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import broker.cli_dlq_replay  # noqa: F401  (registers `dlq replay` and `dlq history`)
from broker.cli_dlq import dlq_app
from broker.cli_esm import esm_app
from broker.cli_filter import filter_app
from broker.cli_options import ConfigFile, RedisUrl
from broker.cli_sqs import sqs_app
from broker.cli_status import STATUS_HELP, status
from broker.errors import ApiError, SluiceError
from broker.logsetup import configure_logging
from broker.settings import FunctionSpec, Settings

app = typer.Typer(
    name="sluice",
    help="Self-hosted AWS-Lambda-compatible async-invoke and event-source-mapping broker.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(filter_app, name="filter")
app.add_typer(esm_app, name="esm")
app.add_typer(dlq_app, name="dlq")
app.add_typer(sqs_app, name="sqs")
app.command("status", help=STATUS_HELP)(status)

Functions = Annotated[
    list[str] | None,
    typer.Option("--function", help="NAME=TARGET, repeatable (python:mod:func, http://...)"),
]


def _function_flags(values: list[str] | None) -> dict[str, FunctionSpec] | None:
    if not values:
        return None
    specs: dict[str, FunctionSpec] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise typer.BadParameter(
                f"expected NAME=TARGET, got {value!r}", param_hint="--function"
            )
        specs[name] = FunctionSpec(target=target)
    return specs


def _settings(config: Path | None, functions: list[str] | None, **flags: Any) -> Settings:
    settings = Settings.load(config, **flags)
    extra = _function_flags(functions)
    if extra:
        settings = settings.model_copy(update={"functions": {**settings.functions, **extra}})
    return settings


@app.command()
def serve(
    redis_url: RedisUrl = None,
    function: Functions = None,
    config: ConfigFile = None,
    retry_base_delay: Annotated[
        float | None, typer.Option(help="seconds; retry n waits base*n")
    ] = None,
    throttle_base_delay: Annotated[float | None, typer.Option(help="seconds")] = None,
    visibility_grace_s: Annotated[float | None, typer.Option(help="lease = timeout + this")] = None,
    delivery_lease_s: Annotated[float | None, typer.Option()] = None,
    region: Annotated[str | None, typer.Option()] = None,
    account_id: Annotated[str | None, typer.Option()] = None,
    key_prefix: Annotated[str | None, typer.Option()] = None,
    concurrency: Annotated[int | None, typer.Option(help="in-flight events per process")] = None,
    worker_processes: Annotated[int | None, typer.Option(help="python: workers; 0 = CPUs")] = None,
    strict: Annotated[
        bool | None, typer.Option("--strict", help="refuse non-durable Redis")
    ] = None,
    host: Annotated[str | None, typer.Option(help="API address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default 9070; 0 = any free)")] = None,
    drain_timeout_s: Annotated[float | None, typer.Option(help="SIGTERM waits this long")] = None,
) -> None:
    """Serve the Lambda API and run the dispatcher until SIGTERM (drains) or a second
    signal (exits at once)."""
    settings = _settings(
        config,
        function,
        redis_url=redis_url,
        host=host,
        port=port,
        drain_timeout_s=drain_timeout_s,
        retry_base_delay=retry_base_delay,
        throttle_base_delay=throttle_base_delay,
        visibility_grace_s=visibility_grace_s,
        delivery_lease_s=delivery_lease_s,
        region=region,
        account_id=account_id,
        key_prefix=key_prefix,
        concurrency=concurrency,
        worker_processes=worker_processes,
        strict=strict,
    )
    configure_logging(settings.log_format, settings.log_level, cache=True)
    if not settings.redis_url:
        typer.echo(
            "sluice serve needs --redis-url (the embedded Redis is for `sluice demo`)", err=True
        )
        raise typer.Exit(2)
    try:
        asyncio.run(_serve(settings))
    except SluiceError as exc:
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(1) from exc


async def _serve(settings: Settings) -> None:
    from broker.api.server import ApiServer
    from broker.core import Broker
    from broker.redis_client import connect
    from broker.replay_jobs import ReplayWorker

    client = connect(settings.redis_url)
    broker = Broker(settings, client)
    api = ApiServer(broker, settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(130)  # second signal: leave now; leases expire and are reclaimed
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    replays = ReplayWorker(settings)
    try:
        await broker.start(check_durability=True)
        replays.start()
        await api.start()
        ready = {"event": "ready", "pid": os.getpid(), "host": settings.host, "port": api.port}
        print(json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        await api.stop()  # stop taking requests first, then drain what was accepted
        await asyncio.to_thread(replays.stop, settings.drain_timeout_s)
        await broker.stop()
        await client.aclose()


@app.command()
def invoke(
    function_name: Annotated[str, typer.Argument(metavar="FUNCTION")],
    payload: Annotated[str, typer.Option(help="event JSON")] = "{}",
    async_: Annotated[bool, typer.Option("--async", help="store the event (Event invoke)")] = False,
    qualifier: Annotated[str | None, typer.Option()] = None,
    redis_url: RedisUrl = None,
    function: Functions = None,
    config: ConfigFile = None,
) -> None:
    """Invoke a function: synchronously in this process, or ``--async`` through the queue."""
    settings = _settings(config, function, redis_url=redis_url)
    configure_logging("console", "warning")
    if async_ and not settings.redis_url:
        typer.echo("--async needs --redis-url: the event must outlive this process", err=True)
        raise typer.Exit(2)
    try:
        code = asyncio.run(_invoke(settings, function_name, payload, qualifier, async_))
    except ApiError as exc:
        typer.echo(json.dumps({"__type": exc.code, **exc.body()}), err=True)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


async def _invoke(
    settings: Settings, function: str, payload: str, qualifier: str | None, is_async: bool
) -> int:
    from broker.core import Broker
    from broker.redis_client import connect

    client = connect(settings.redis_url)
    broker = Broker(settings, client, dispatch=False)
    try:
        await broker.start()
        if is_async:
            request_id = await broker.invoke_async(function, payload, qualifier)
            print(json.dumps({"StatusCode": 202, "RequestId": request_id}))
            return 0
        result = await broker.invoke(function, payload, qualifier)
        out: dict[str, Any] = {
            "StatusCode": result.status_code,
            "ExecutedVersion": result.executed_version,
        }
        if result.function_error:
            out["FunctionError"] = result.function_error
        print(json.dumps(out), file=sys.stderr)
        print(result.payload if result.payload is not None else result.error_message)
        return 0 if result.outcome == "success" else 1
    finally:
        await broker.stop()
        await client.aclose()


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="how many events to send")] = 200,
) -> None:
    """A guided run on the embedded Redis: no set-up, under a minute."""
    from broker.demo import run_demo

    configure_logging("console", "error")
    asyncio.run(run_demo(events))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
