"""The Lambda-compatible HTTP API (FastAPI): boto3, the AWS CLI and SDKs work against it
with ``endpoint_url``. State lives in Redis, so any number of processes answer alike."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from broker.api import errors, functions, invoke, mappings
from broker.api.asgi import ASGIApp, EventInvokeFastPath, RequestIdMiddleware
from broker.core import Broker
from broker.metrics import CONTENT_TYPE_LATEST, Metrics
from broker.version import VERSION

READY_PING_TIMEOUT_S = 2.0  # /readyz answers 503 rather than hang on a Redis that hangs


def create_asgi(broker: Broker) -> ASGIApp:
    """The served application: the Event-invoke fast path and the request-id header in
    front of the FastAPI app."""
    return RequestIdMiddleware(EventInvokeFastPath(create_app(broker), broker))


def create_app(broker: Broker) -> FastAPI:
    app = FastAPI(
        title="Sluice",
        summary="AWS Lambda's Invoke, function, event-invoke-config and event-source-mapping "
        "APIs, self-hosted on Redis",
        version=VERSION,
    )
    errors.install(app)
    app.include_router(invoke.router(broker))
    app.include_router(functions.router(broker))
    app.include_router(mappings.router(broker))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        try:
            await broker.redis.ping()
        except Exception as exc:  # any failure to reach Redis means "not ready"
            return JSONResponse({"status": "unavailable", "error": repr(exc)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Ready for work: the broker is started and Redis answers PING in time."""
        if not broker._started:  # set by Broker.start, cleared by Broker.stop
            return JSONResponse(
                {"status": "unavailable", "reason": "broker not started"}, status_code=503
            )
        try:
            await asyncio.wait_for(broker.redis.ping(), READY_PING_TIMEOUT_S)
        except Exception as exc:  # any failure to reach Redis means "not ready"
            error = repr(exc)
            if isinstance(exc, TimeoutError):  # redis-py was still retrying its connection
                error = f"no answer to PING within {READY_PING_TIMEOUT_S} s"
            return JSONResponse(
                {"status": "unavailable", "reason": "redis unreachable", "error": error},
                status_code=503,
            )
        return JSONResponse({"status": "ok"})

    metrics = Metrics(broker)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def prometheus_metrics() -> Response:
        """Sluice's counters and queue gauges from Redis (see ``broker.metrics``)."""
        return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
