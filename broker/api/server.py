"""Runs the API with uvicorn inside the caller's event loop, without touching signals
(the CLI entry point owns them)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Generator

import uvicorn

from broker.api import create_asgi
from broker.core import Broker


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


API_SHUTDOWN_S = 10  # requests in progress at shutdown get at most this long


class ApiServer:
    def __init__(self, broker: Broker, host: str, port: int) -> None:
        config = uvicorn.Config(
            create_asgi(broker),
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=API_SHUTDOWN_S,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error, for example
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1]) if sockets else self._server.config.port

    async def stop(self, timeout_s: float = API_SHUTDOWN_S) -> None:
        """Stop taking requests; requests in progress get up to ``timeout_s`` to finish."""
        self._server.config.timeout_graceful_shutdown = max(0, math.ceil(timeout_s))
        self._server.should_exit = True
        if self._task is not None:
            await self._task
            self._task = None
