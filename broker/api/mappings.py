"""Event source mappings: Create / Get / List / Update / Delete (spec §7)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from broker.api import schemas
from broker.api.errors import json_body
from broker.core import Broker

# Query and path parameters keep AWS's names.
BASE = "/2015-03-31/event-source-mappings"


def router(broker: Broker) -> APIRouter:
    api = APIRouter(tags=["event-source-mappings"], responses=schemas.ERRORS)
    service = broker.mappings

    @api.post(
        BASE,
        status_code=202,
        response_model=schemas.EventSourceMapping,
        response_model_exclude_unset=True,
    )
    @api.post(BASE + "/", status_code=202, include_in_schema=False)
    async def create(request: Request) -> JSONResponse:
        return JSONResponse(await service.create(await json_body(request)), status_code=202)

    @api.get(BASE, response_model=schemas.EventSourceMappings, response_model_exclude_unset=True)
    @api.get(BASE + "/", include_in_schema=False)
    async def list_mappings(
        EventSourceArn: str | None = None,
        FunctionName: str | None = None,
        Marker: str | None = None,
        MaxItems: int | None = None,
    ) -> Any:
        return await service.list(EventSourceArn, FunctionName, Marker, MaxItems)

    @api.get(
        BASE + "/{UUID}",
        response_model=schemas.EventSourceMapping,
        response_model_exclude_unset=True,
    )
    async def get(UUID: str) -> Any:
        return await service.get(UUID)

    @api.put(
        BASE + "/{UUID}",
        status_code=202,
        response_model=schemas.EventSourceMapping,
        response_model_exclude_unset=True,
    )
    async def update(UUID: str, request: Request) -> JSONResponse:
        body = await service.update(UUID, await json_body(request))
        return JSONResponse(body, status_code=202)

    @api.delete(
        BASE + "/{UUID}",
        status_code=202,
        response_model=schemas.EventSourceMapping,
        response_model_exclude_unset=True,
    )
    async def delete(UUID: str) -> JSONResponse:
        return JSONResponse(await service.delete(UUID), status_code=202)

    return api
