"""Response shapes for the OpenAPI document, so clients and schemathesis can check answers.

They describe what Sluice sends (AWS's field names); ``extra="allow"`` keeps fields AWS may
add in future from breaking a response.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")


class AwsError(_Shape):
    """Every error: ``x-amzn-ErrorType`` names the code; the body carries the message."""

    Type: str | None = None
    message: str | None = None
    Message: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": AwsError, "description": description}
    for status, description in (
        (400, "invalid parameter, validation or request content"),
        (404, "function, version, alias, config or mapping not found"),
        (409, "resource conflict"),
        (413, "payload too large"),
        (429, "too many requests"),
        (500, "service exception"),
    )
}


class DeadLetterShape(_Shape):
    TargetArn: str | None = None


class FunctionConfiguration(_Shape):
    FunctionName: str
    FunctionArn: str
    Handler: str
    Timeout: int
    MemorySize: int
    Version: str
    LastModified: str
    State: str
    DeadLetterConfig: DeadLetterShape | None = None


class Functions(_Shape):
    Functions: list[FunctionConfiguration]
    NextMarker: str | None = None


class Versions(_Shape):
    Versions: list[FunctionConfiguration]
    NextMarker: str | None = None


class ConcurrencyShape(_Shape):
    ReservedConcurrentExecutions: int | None = None


class FunctionDetail(_Shape):
    Configuration: FunctionConfiguration
    Code: dict[str, str]
    Concurrency: ConcurrencyShape | None = None


class AliasConfiguration(_Shape):
    AliasArn: str
    Name: str
    FunctionVersion: str
    Description: str
    RevisionId: str


class Aliases(_Shape):
    Aliases: list[AliasConfiguration]
    NextMarker: str | None = None


class DestinationShape(_Shape):
    Destination: str | None = None


class Destinations(_Shape):
    OnSuccess: DestinationShape | None = None
    OnFailure: DestinationShape | None = None


class EventInvokeConfig(_Shape):
    LastModified: float
    FunctionArn: str
    MaximumRetryAttempts: int | None = None
    MaximumEventAgeInSeconds: int | None = None
    DestinationConfig: Destinations


class EventInvokeConfigs(_Shape):
    FunctionEventInvokeConfigs: list[EventInvokeConfig]
    NextMarker: str | None = None


class EventSourceMapping(_Shape):
    UUID: str
    EventSourceMappingArn: str
    FunctionArn: str
    State: str
    LastModified: float


class EventSourceMappings(_Shape):
    EventSourceMappings: list[EventSourceMapping]
    NextMarker: str | None = None
