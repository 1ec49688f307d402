"""Checks that an AWS event source exists before a mapping is stored (spec §7.3 rules
14-16), through boto3 (any endpoint via ``AWS_ENDPOINT_URL[_SERVICE]``).

When AWS cannot be asked at all (no endpoint reachable, no credentials) the mapping is
accepted with a warning: that is "cannot check", not "does not exist", and the mapping's
poller reports the problem in ``LastProcessingResult``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from broker.errors import InvalidParameterValueError
from broker.mappings import MappingConfig, SourceKind

log = structlog.get_logger("sluice.source_checks")

FunctionTimeout = Callable[[str, str | None], Awaitable[int]]
_CONFIG = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1})


class AwsSourceCheck:
    """A ``source_check`` for :class:`~broker.mappings.MappingService`."""

    def __init__(self, region: str, function_timeout: FunctionTimeout) -> None:
        self.region = region
        self.function_timeout = function_timeout

    def _client(self, service: str) -> Any:
        return boto3.session.Session().client(service, region_name=self.region, config=_CONFIG)

    async def __call__(self, config: MappingConfig) -> None:
        arn = config.event_source_arn
        try:
            if config.source_kind == SourceKind.SQS:
                timeout_s = await self.function_timeout(config.function_name, config.qualifier)
                await asyncio.to_thread(self._check_queue, arn, timeout_s)
            elif config.source_kind == SourceKind.KINESIS and "/consumer/" not in arn:
                await asyncio.to_thread(self._check_kinesis, arn)
            elif config.source_kind == SourceKind.DYNAMODB:
                await asyncio.to_thread(self._check_dynamodb_stream, arn)
        except (BotoCoreError, ClientError) as exc:
            log.warning("event_source_not_checked", event_source_arn=arn, error=repr(exc))

    def _check_queue(self, arn: str, function_timeout_s: int) -> None:
        parts = arn.split(":")
        sqs = self._client("sqs")
        try:
            url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])["QueueUrl"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if "NonExistentQueue" not in code and code != "QueueDoesNotExist":
                raise
            raise InvalidParameterValueError(
                "Error occurred while ReceiveMessage. SQS Error Code: "
                "AWS.SimpleQueueService.NonExistentQueue. SQS Error Message: The specified "
                "queue does not exist."
            ) from exc
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
        visibility_s = int(attributes["Attributes"]["VisibilityTimeout"])
        if visibility_s < function_timeout_s:
            raise InvalidParameterValueError(
                f"Queue visibility timeout: {visibility_s} seconds is less than Function "
                f"timeout: {function_timeout_s} seconds"
            )

    def _check_kinesis(self, arn: str) -> None:
        self._check_stream(
            arn, lambda: self._client("kinesis").describe_stream_summary(StreamARN=arn)
        )

    def _check_dynamodb_stream(self, arn: str) -> None:
        self._check_stream(
            arn, lambda: self._client("dynamodbstreams").describe_stream(StreamArn=arn)
        )

    @staticmethod
    def _check_stream(arn: str, describe: Callable[[], object]) -> None:
        try:
            describe()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            raise InvalidParameterValueError(f"Stream not found: {arn}") from exc
