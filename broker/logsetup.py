"""structlog configuration, done once by the entry point: JSON lines in services, a console
renderer on a TTY; context (function, request id, attempt) bound through contextvars."""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured:
    a command run inside another program's captured stderr (typer's CliRunner) must not
    leave loggers writing to a stream closed since."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(fmt: str = "auto", level: str = "info", cache: bool = False) -> None:
    """Log lines to stderr. ``cache``: loggers keep this configuration once used (faster;
    for ``serve``, which configures once for its whole life). A one-shot command leaves it
    off, so whatever runs it in-process later (tests, an embedding program) configures
    logging afresh."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=cache,
    )
