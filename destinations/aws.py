"""What the AWS destinations share: a boto3 client per service (any endpoint through
``AWS_ENDPOINT_URL[_SERVICE]``, which boto3 reads itself), calls run in worker threads, and
AWS errors sorted into retriable and permanent ones."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from broker.destination import DestinationContext
from broker.errors import DeliveryError, PermanentDeliveryError

T = TypeVar("T")
_CONFIG = Config(
    connect_timeout=5,
    read_timeout=20,
    retries={"max_attempts": 1, "mode": "standard"},  # the deliverer retries
    max_pool_connections=32,
)
# Errors worth trying again: throttling and AWS-side failures.
_RETRIABLE = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "SlowDown",
    "KMSThrottlingException",
}


class AwsDestination:
    service: str = ""

    def __init__(self, target: str, context: DestinationContext) -> None:
        self.target = target
        self.region = target.split(":")[3] or context.region
        self.account_id = target.split(":")[4] or context.account_id
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = boto3.session.Session().client(
                    self.service, region_name=self.region, config=_CONFIG
                )
            return self._client

    async def call(self, work: Callable[[], T]) -> T:
        """Run a boto3 call in a thread, converting its errors to Sluice's."""
        try:
            return await asyncio.to_thread(work)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            message = f"{self.target}: {error.get('Code', 'Error')}: {error.get('Message', '')}"
            if error.get("Code") in _RETRIABLE or status >= 500 or status == 429:
                raise DeliveryError(message) from exc
            raise PermanentDeliveryError(message) from exc
        except BotoCoreError as exc:  # connection failures, timeouts
            raise DeliveryError(f"{self.target}: {exc!r}") from exc

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()


def dead_letter_attributes(request_id: str, error_code: int, message: str) -> dict[str, Any]:
    """The three DLQ message attributes of spec §6."""
    return {
        "RequestID": {"DataType": "String", "StringValue": request_id},
        "ErrorCode": {"DataType": "Number", "StringValue": str(error_code)},
        "ErrorMessage": {"DataType": "String", "StringValue": message or " "},
    }
