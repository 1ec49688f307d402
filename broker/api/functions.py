"""Functions, concurrency, versions, aliases and event-invoke configs (spec §3, §4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from broker.api import schemas
from broker.api.errors import json_body
from broker.core import Broker

# Query and path parameters keep AWS's names (FunctionName, Qualifier, MaxItems...).


def router(broker: Broker) -> APIRouter:
    api = APIRouter(tags=["functions"], responses=schemas.ERRORS)
    admin = broker.admin

    @api.get(
        "/2015-03-31/functions", response_model=schemas.Functions, response_model_exclude_unset=True
    )
    @api.get("/2015-03-31/functions/", include_in_schema=False)
    async def list_functions(Marker: str | None = None, MaxItems: int | None = None) -> Any:
        return await admin.list_functions(Marker, MaxItems)

    @api.get(
        "/2015-03-31/functions/{FunctionName}",
        response_model=schemas.FunctionDetail,
        response_model_exclude_unset=True,
    )
    async def get_function(FunctionName: str, Qualifier: str | None = None) -> Any:
        return await admin.get_function(FunctionName, Qualifier)

    @api.get(
        "/2015-03-31/functions/{FunctionName}/configuration",
        response_model=schemas.FunctionConfiguration,
        response_model_exclude_unset=True,
    )
    async def get_configuration(FunctionName: str, Qualifier: str | None = None) -> Any:
        return await admin.get_configuration(FunctionName, Qualifier)

    @api.put(
        "/2015-03-31/functions/{FunctionName}/configuration",
        response_model=schemas.FunctionConfiguration,
        response_model_exclude_unset=True,
    )
    async def update_configuration(FunctionName: str, request: Request) -> Any:
        return await admin.update_configuration(FunctionName, await json_body(request))

    @api.put(
        "/2017-10-31/functions/{FunctionName}/concurrency",
        response_model=schemas.ConcurrencyShape,
        response_model_exclude_unset=True,
    )
    async def put_concurrency(FunctionName: str, request: Request) -> Any:
        return await admin.put_concurrency(FunctionName, await json_body(request))

    @api.get(
        "/2019-09-30/functions/{FunctionName}/concurrency",
        response_model=schemas.ConcurrencyShape,
        response_model_exclude_unset=True,
    )
    async def get_concurrency(FunctionName: str) -> Any:
        return await admin.get_concurrency(FunctionName)

    @api.delete("/2017-10-31/functions/{FunctionName}/concurrency", status_code=204)
    async def delete_concurrency(FunctionName: str) -> Response:
        await admin.delete_concurrency(FunctionName)
        return Response(status_code=204)

    @api.post(
        "/2015-03-31/functions/{FunctionName}/versions",
        status_code=201,
        response_model=schemas.FunctionConfiguration,
        response_model_exclude_unset=True,
    )
    async def publish_version(FunctionName: str, request: Request) -> Any:
        return await admin.publish_version(FunctionName, await json_body(request))

    @api.get(
        "/2015-03-31/functions/{FunctionName}/versions",
        response_model=schemas.Versions,
        response_model_exclude_unset=True,
    )
    async def list_versions(
        FunctionName: str, Marker: str | None = None, MaxItems: int | None = None
    ) -> Any:
        return await admin.list_versions(FunctionName, Marker, MaxItems)

    @api.post(
        "/2015-03-31/functions/{FunctionName}/aliases",
        status_code=201,
        response_model=schemas.AliasConfiguration,
        response_model_exclude_unset=True,
    )
    async def create_alias(FunctionName: str, request: Request) -> Any:
        return await admin.create_alias(FunctionName, await json_body(request))

    @api.get(
        "/2015-03-31/functions/{FunctionName}/aliases",
        response_model=schemas.Aliases,
        response_model_exclude_unset=True,
    )
    async def list_aliases(
        FunctionName: str,
        FunctionVersion: str | None = None,
        Marker: str | None = None,
        MaxItems: int | None = None,
    ) -> Any:
        return await admin.list_aliases(FunctionName, FunctionVersion, Marker, MaxItems)

    @api.get(
        "/2015-03-31/functions/{FunctionName}/aliases/{Name}",
        response_model=schemas.AliasConfiguration,
        response_model_exclude_unset=True,
    )
    async def get_alias(FunctionName: str, Name: str) -> Any:
        return await admin.get_alias(FunctionName, Name)

    @api.put(
        "/2015-03-31/functions/{FunctionName}/aliases/{Name}",
        response_model=schemas.AliasConfiguration,
        response_model_exclude_unset=True,
    )
    async def update_alias(FunctionName: str, Name: str, request: Request) -> Any:
        return await admin.update_alias(FunctionName, Name, await json_body(request))

    @api.delete("/2015-03-31/functions/{FunctionName}/aliases/{Name}", status_code=204)
    async def delete_alias(FunctionName: str, Name: str) -> Response:
        await admin.delete_alias(FunctionName, Name)
        return Response(status_code=204)

    # -- event-invoke config -----------------------------------------------------------------
    eic = "/2019-09-25/functions/{FunctionName}/event-invoke-config"

    @api.put(eic, response_model=schemas.EventInvokeConfig, response_model_exclude_unset=True)
    async def put_eic(FunctionName: str, request: Request, Qualifier: str | None = None) -> Any:
        return await broker.put_event_invoke_config(
            FunctionName, await json_body(request), Qualifier
        )

    @api.post(eic, response_model=schemas.EventInvokeConfig, response_model_exclude_unset=True)
    async def update_eic(FunctionName: str, request: Request, Qualifier: str | None = None) -> Any:
        return await broker.update_event_invoke_config(
            FunctionName, await json_body(request), Qualifier
        )

    @api.get(eic, response_model=schemas.EventInvokeConfig, response_model_exclude_unset=True)
    async def get_eic(FunctionName: str, Qualifier: str | None = None) -> Any:
        return await broker.get_event_invoke_config(FunctionName, Qualifier)

    @api.delete(eic, status_code=204)
    async def delete_eic(FunctionName: str, Qualifier: str | None = None) -> Response:
        await broker.delete_event_invoke_config(FunctionName, Qualifier)
        return Response(status_code=204)

    @api.get(
        eic + "/list", response_model=schemas.EventInvokeConfigs, response_model_exclude_unset=True
    )
    async def list_eic(
        FunctionName: str, Marker: str | None = None, MaxItems: int | None = None
    ) -> Any:
        return await broker.list_event_invoke_configs(FunctionName, Marker, MaxItems)

    return api
