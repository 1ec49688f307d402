"""The Lambda-compatible HTTP API (FastAPI): boto3, the AWS CLI and SDKs work against it
with ``endpoint_url``. State lives in Redis, so any number of processes answer alike."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from broker.api import errors, functions, invoke, mappings
from broker.api.asgi import ASGIApp, EventInvokeFastPath, RequestIdMiddleware
from broker.core import Broker


def create_asgi(broker: Broker) -> ASGIApp:
    """The served application: the Event-invoke fast path and the request-id header in
    front of the FastAPI app."""
    return RequestIdMiddleware(EventInvokeFastPath(create_app(broker), broker))


def create_app(broker: Broker) -> FastAPI:
    app = FastAPI(
        title="Sluice",
        summary="AWS Lambda's Invoke, function, event-invoke-config and event-source-mapping "
        "APIs, self-hosted on Redis",
        version="0.1.0",
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

    return app
