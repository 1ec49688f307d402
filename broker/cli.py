"""The ``sluice`` command: ``serve``, ``invoke`` and ``demo``. Signals are handled here
only: the first SIGTERM/SIGINT drains in-flight work, a second one exits at once."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

import broker.cli_dlq_replay  # noqa: F401  (registers `dlq replay` and `dlq history`)
from broker.cli_dlq import dlq_app
from broker.cli_esm import esm_app
from broker.cli_filter import filter_app
from broker.cli_options import ConfigFile, RedisUrl, declare_parameters
from broker.cli_sqs import sqs_app
from broker.cli_status import STATUS_HELP, status
from broker.errors import ApiError, SluiceError
from broker.logsetup import configure_logging
from broker.settings import FunctionSpec, Settings, scalar_settings

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
    typer.Option(
        "--function",
        metavar="NAME=TARGET",
        help="a function to create or update; repeatable (python:mod:func, http://...)",
    ),
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
    """Settings from the flags given (None: not given), env and ``config``, plus each
    ``--function``; a value the model refuses, wherever it came from, is a usage error."""
    try:
        settings = Settings.load(config, **flags)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            typer.echo(
                f"sluice: setting {where}: {error['msg']} (got {error['input']!r})", err=True
            )
        raise typer.Exit(2) from exc
    except SettingsError as exc:  # a value that does not parse, such as bad JSON in env
        typer.echo(f"sluice: {exc}", err=True)
        raise typer.Exit(2) from exc
    extra = _function_flags(functions)
    if extra:
        settings = settings.model_copy(update={"functions": {**settings.functions, **extra}})
    return settings


# -- serve's flags: one per scalar setting, made from the settings model ----------------------
SETTINGS_PANEL = "Settings (each also SLUICE_<NAME> in the environment, or NAME in --config)"


def _setting_flag(name: str) -> str:
    """The flag of setting ``name`` on ``sluice serve``: ``--retry-base-delay``."""
    return "--" + name.replace("_", "-")


def _setting_option(name: str, kind: type[Any]) -> inspect.Parameter:
    field = Settings.model_fields[name]
    flag = _setting_flag(name)
    declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
    shown = str(field.default).lower() if kind is bool else field.default
    default = "" if field.default is None else f" (default {shown})"
    option = typer.Option(
        declaration,
        help=f"{field.description}{default}".replace("`", ""),
        show_default=False,
        rich_help_panel=SETTINGS_PANEL,
    )
    # Built at run time, so typed Any: the type is the field's, made optional because an
    # unpassed flag must stay None and leave the environment and TOML in force.
    annotation: Any = cast(Any, Annotated)[kind | None, option]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
    )


def setting_flags(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` a flag for every scalar setting; their values reach it in its
    ``**flags`` (None when not passed), ready for :meth:`Settings.load`."""
    own = [
        p
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    options = [_setting_option(name, kind) for name, kind in scalar_settings().items()]
    parameters = [*own, *options]
    declare_parameters(command, parameters)
    return command


@app.command()
@setting_flags
def serve(config: ConfigFile = None, function: Functions = None, **flags: Any) -> None:
    """Serve the Lambda API and run the dispatcher until SIGTERM (drains) or a second
    signal (exits at once)."""
    settings = _settings(config, function, **flags)
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
    from broker.api.server import API_SHUTDOWN_S, ApiServer
    from broker.core import Broker
    from broker.redis_client import connect
    from broker.replay_jobs import REPLAY_STOP_MIN_S, ReplayWorker

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
        # One drain budget for all of it: stop taking requests (those in progress may take a
        # part of it), then the background replay, then accepted work (pollers' batches,
        # in-flight events and their deliveries).
        deadline = loop.time() + settings.drain_timeout_s

        def left() -> float:
            return max(0.0, deadline - loop.time())

        await api.stop(min(left(), API_SHUTDOWN_S))
        await asyncio.to_thread(replays.stop, max(left(), REPLAY_STOP_MIN_S))
        await broker.stop(left())
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
