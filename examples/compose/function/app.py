"""The example function of ``compose.yaml``: a plain Lambda handler, run by the AWS Lambda
Python base image (its Runtime Interface Emulator serves the Lambda Invoke API on port 8080).

Sluice calls it two ways: an event sent with ``Invoke`` (``InvocationType=Event``), and
batches from the ``orders`` SQS queue through an event source mapping with
``ReportBatchItemFailures``. Every event and record is printed, so
``docker compose logs function`` shows what ran.

An event with ``"fail": true`` raises. The Runtime Interface Emulator answers that with
HTTP 200 and the error object but no ``X-Amz-Function-Error`` header; compose.yaml sets
``SLUICE_HTTP_ERROR_BODIES`` so that Sluice still sees a function error (retries, then the
OnFailure destination ``hello-failures``). An SQS record whose body contains ``"fail"`` is
reported in ``batchItemFailures`` and stays in the queue until its redrive policy moves it
to ``orders-dlq``.
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
    if isinstance(event, dict) and event.get("fail") is True:
        raise RuntimeError("asked to fail")
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
