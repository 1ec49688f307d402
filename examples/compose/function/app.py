"""The example function of ``compose.yaml``: a plain Lambda handler, run by the AWS Lambda
Python base image (its Runtime Interface Emulator serves the Lambda Invoke API on port 8080).

Sluice calls it two ways: an event sent with ``Invoke`` (``InvocationType=Event``), and
batches from the ``orders`` SQS queue through an event source mapping with
``ReportBatchItemFailures``. Every event and record is printed, so
``docker compose logs function`` shows what ran.

The Runtime Interface Emulator answers a handler's exception with HTTP 200 and no
``X-Amz-Function-Error`` header, so a raised error would look like a success to Sluice (and
to any other Lambda Invoke client). This handler therefore never raises: an SQS record whose
body contains ``"fail"`` is reported in ``batchItemFailures``, which the emulator passes
through untouched, and stays in the queue until its redrive policy moves it to
``orders-dlq``.
"""

from __future__ import annotations

import json
from typing import Any


def handler(event: Any, context: Any) -> dict[str, Any]:
    request_id = getattr(context, "aws_request_id", None)
    records = event.get("Records") if isinstance(event, dict) else None
    if isinstance(records, list):
        return _sqs_batch(records, request_id)
    print(json.dumps({"function": "hello", "request_id": request_id, "event": event}))
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"greeting": f"hello, {name}"}


def _sqs_batch(records: list[dict[str, Any]], request_id: str | None) -> dict[str, Any]:
    failures = []
    for record in records:
        body = record.get("body", "")
        failed = "fail" in body
        print(
            json.dumps(
                {
                    "function": "hello",
                    "request_id": request_id,
                    "messageId": record.get("messageId"),
                    "body": body,
                    "failed": failed,
                }
            )
        )
        if failed:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
