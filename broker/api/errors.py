"""AWS's REST-JSON error shape: ``x-amzn-ErrorType`` header and a JSON body, so that boto3
raises the same ``ClientError`` code and message it would against AWS."""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from broker.errors import ApiError, InvalidRequestContentError, ServiceError

log = structlog.get_logger("sluice.api")


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        status_code=exc.status, content=exc.body(), headers={"x-amzn-ErrorType": exc.code}
    )


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object ({} when empty); anything else is a clear 400."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestContentError(f"Could not parse request body into json: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequestContentError("Could not parse request body into json: not an object")
    return body


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        message = (
            f"1 validation error detected: Value '{first.get('input')}' at '{where}' failed to "
            f"satisfy constraint: {first.get('msg', 'invalid value')}"
        )
        return JSONResponse(
            status_code=400,
            content={"message": message},
            headers={"x-amzn-ErrorType": "ValidationException"},
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = "UnknownOperationException" if exc.status_code in (404, 405) else "ServiceException"
        return JSONResponse(
            status_code=exc.status_code,
            content={"message": str(exc.detail)},
            headers={"x-amzn-ErrorType": code},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_error", path=request.url.path)
        return error_response(ServiceError("Sluice hit an internal error; see its logs."))
