"""``lambda:NAME_OR_ARN`` targets: boto3 Lambda ``Invoke`` (RequestResponse) against AWS or
any Lambda-compatible endpoint (``AWS_ENDPOINT_URL_LAMBDA`` or ``AWS_ENDPOINT_URL``, which
boto3 reads itself) — for example another ``sluice serve``.

boto3 blocks, so calls run in this invoker's own thread pool. Mapping: a response with
``FunctionError`` is a function error (value verbatim); ``TooManyRequestsException`` is a
throttle; any other error answer or a connection failure is a system error (not executed);
a read timeout past the function's timeout is ``Sandbox.Timedout``.

boto3 is the ``aws`` extra, imported at the first call: without it every call is a system
error whose message says what to install (as a call without credentials is one).
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from broker.extras import AWS, MissingExtraError, require
from broker.invokers.base import Invocation, timeout_result
from broker.models import InvokeResult

TIMEOUT_ALLOWANCE_S = 1.0
_local = threading.local()  # the request id of the call running on this thread


def _add_request_id(request: Any, **_: Any) -> None:
    request_id = getattr(_local, "request_id", None)
    if request_id:
        request.headers["X-Sluice-Request-Id"] = request_id


class LambdaInvoker:
    def __init__(self, region: str, threads: int = 32) -> None:
        self.region = region
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._clients: dict[int, Any] = {}  # one client per read timeout
        self._lock = threading.Lock()

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sluice-lambda")

    def _client(self, timeout_s: float) -> Any:
        key = int(timeout_s)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                import boto3  # the aws extra: invoke() checked it is there
                from botocore.config import Config

                config = Config(
                    read_timeout=timeout_s + TIMEOUT_ALLOWANCE_S,
                    connect_timeout=5,
                    retries={"max_attempts": 1, "mode": "standard"},  # Sluice retries
                    max_pool_connections=self.threads,
                )
                client = boto3.session.Session().client(
                    "lambda", region_name=self.region, config=config
                )
                client.meta.events.register("before-send.lambda.Invoke", _add_request_id)
                self._clients[key] = client
            return client

    def _call(self, invocation: Invocation) -> InvokeResult:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        _local.request_id = invocation.request_id
        try:
            response = self._client(invocation.timeout_s).invoke(
                FunctionName=invocation.target.split(":", 1)[1],
                InvocationType="RequestResponse",
                Payload=invocation.payload.encode(),
            )
        except ReadTimeoutError:
            return timeout_result(invocation)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
            message = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
            if error.get("Code") == "TooManyRequestsException" or status == 429:
                return InvokeResult(outcome="throttle", status_code=429, error_message=message)
            return InvokeResult(outcome="system_error", status_code=status, error_message=message)
        except BotoCoreError as exc:  # connection refused, no credentials...
            return InvokeResult(outcome="system_error", status_code=502, error_message=repr(exc))
        finally:
            _local.request_id = None
        body = response["Payload"].read().decode("utf-8", errors="replace")
        version = response.get("ExecutedVersion") or invocation.function_version
        if response.get("FunctionError"):
            return InvokeResult(
                outcome="function_error",
                status_code=int(response.get("StatusCode", 200)),
                function_error=response["FunctionError"],
                payload=body,
                executed_version=version,
            )
        return InvokeResult(
            outcome="success",
            status_code=int(response.get("StatusCode", 200)),
            payload=body,
            executed_version=version,
        )

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        try:
            require(*AWS, f"function target {invocation.target}")
        except MissingExtraError as exc:  # not executed, like a call without credentials
            return InvokeResult(outcome="system_error", status_code=500, error_message=str(exc))
        if self._pool is None:
            await self.start()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, invocation)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for client in self._clients.values():
            client.close()
        self._clients.clear()
