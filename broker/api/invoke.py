"""``Invoke``: Event (stored, 202), RequestResponse (run now), DryRun (204) — spec §1."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from broker.api import schemas
from broker.core import Broker
from broker.errors import RATE_EXCEEDED, ServiceError, TooManyRequestsError, ValidationError

INVOCATION_TYPES = ("Event", "RequestResponse", "DryRun")


def router(broker: Broker) -> APIRouter:
    api = APIRouter(tags=["invoke"], responses=schemas.ERRORS)

    @api.post("/2015-03-31/functions/{FunctionName}/invocations", status_code=200)
    async def invoke(FunctionName: str, request: Request, Qualifier: str | None = None) -> Response:
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind not in INVOCATION_TYPES:
            raise ValidationError(
                f"1 validation error detected: Value '{kind}' at 'invocationType' failed to "
                "satisfy constraint: Member must satisfy enum value set: "
                "[Event, RequestResponse, DryRun]"
            )
        payload = await request.body()
        if kind == "Event":
            request_id = await broker.invoke_async(FunctionName, payload, Qualifier)
            return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
        if kind == "DryRun":
            await broker.resolve(FunctionName, Qualifier)
            return Response(status_code=204)
        request_id = str(uuid.uuid4())
        result = await broker.invoke(FunctionName, payload, Qualifier, request_id=request_id)
        if result.outcome == "throttle":
            raise TooManyRequestsError(RATE_EXCEEDED)
        if result.outcome == "system_error":
            raise ServiceError(result.error_message or "the function could not be invoked")
        headers = {
            "x-amzn-RequestId": request_id,
            "X-Amz-Executed-Version": result.executed_version or "$LATEST",
        }
        if result.function_error:
            headers["X-Amz-Function-Error"] = result.function_error
        return Response(
            content=(result.payload or "").encode(),
            status_code=200,
            media_type="application/json",
            headers=headers,
        )

    return api
