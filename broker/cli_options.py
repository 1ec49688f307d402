"""Options every ``sluice`` command that talks to Redis shares, and the settings they make."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from broker.logsetup import configure_logging
from broker.settings import Settings

__all__ = ["ConfigFile", "KeyPrefix", "RedisUrl", "declare_parameters", "redis_settings"]

RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", envvar="SLUICE_REDIS_URL", help="redis://host:port/db")
]
KeyPrefix = Annotated[
    str | None,
    typer.Option("--key-prefix", envvar="SLUICE_KEY_PREFIX", help="Sluice's key prefix (sluice)"),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", exists=True, dir_okay=False, help="TOML settings")
]


def redis_settings(
    command: str, redis_url: str | None, key_prefix: str | None, config: Path | None
) -> Settings:
    """Settings from ``config`` and the flags; exits 2 when no Redis URL is given at all.
    Logging goes to stderr at warning: an ops command's stdout is its tables or JSON."""
    configure_logging("console", "warning")
    settings = Settings.load(config, redis_url=redis_url, key_prefix=key_prefix)
    if not settings.redis_url:
        typer.echo(f"sluice {command} needs --redis-url (or SLUICE_REDIS_URL)", err=True)
        raise typer.Exit(2)
    return settings


def declare_parameters(command: Callable[..., Any], parameters: list[inspect.Parameter]) -> None:
    """Make typer see ``parameters`` as ``command``'s (options built at run time, such as
    one per setting or the shared filters): typer reads the signature and annotations."""
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
