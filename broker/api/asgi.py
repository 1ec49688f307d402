"""Plain ASGI layers in front of FastAPI, for the hot path.

Starlette's ``BaseHTTPMiddleware`` and FastAPI's routing cost more than the whole of an
Event invoke's own work, so the request-id header and ``Invoke`` with
``X-Amz-Invocation-Type: Event`` are handled here; every other request (and the OpenAPI
document, which still describes Invoke) goes through FastAPI.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from broker.core import Broker
from broker.errors import ApiError, ServiceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations/?$")
_REQUEST_ID = b"x-amzn-requestid"


class RequestIdMiddleware:
    """Every response carries ``x-amzn-RequestId`` (a new one unless the route set it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(key.lower() == _REQUEST_ID for key, _ in headers):
                    headers.append((b"x-amzn-RequestId", str(uuid.uuid4()).encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class EventInvokeFastPath:
    """``POST .../invocations`` with ``X-Amz-Invocation-Type: Event``: store and answer 202,
    with the same validation and errors as the FastAPI route (both call the broker)."""

    def __init__(self, app: ASGIApp, broker: Broker) -> None:
        self.app = app
        self.broker = broker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _INVOKE.match(scope["path"])
        if match is None or not any(
            key == b"x-amz-invocation-type" and value == b"Event" for key, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        query = parse_qs(scope.get("query_string", b"").decode())
        qualifier = query.get("Qualifier", [None])[0]
        try:
            request_id = await self.broker.invoke_async(
                match.group("name"), b"".join(chunks), qualifier
            )
        except ApiError as exc:
            await _error(send, exc)
            return
        except Exception:  # the same answer the FastAPI handler gives
            await _error(send, ServiceError("Sluice hit an internal error; see its logs."))
            raise
        await _respond(
            send,
            202,
            [(b"x-amzn-RequestId", request_id.encode()), (b"content-length", b"0")],
            b"",
        )


async def _error(send: Send, exc: ApiError) -> None:
    body = json.dumps(exc.body()).encode()
    await _respond(
        send,
        exc.status,
        [
            (b"content-type", b"application/json"),
            (b"x-amzn-ErrorType", exc.code.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        body,
    )
