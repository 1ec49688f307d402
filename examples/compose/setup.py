"""One-shot set-up of compose.yaml's example, run by the ``setup`` service once Sluice and
moto are healthy; safe to run again (every step is an upsert).

- SQS queues on moto: ``orders`` (the event source; a record failing 3 receives moves to
  ``orders-dlq``), ``hello-results`` and ``hello-failures`` (the async destinations).
- Through Sluice's Lambda API: an SQS event source mapping ``orders`` -> ``hello`` with
  ``ReportBatchItemFailures``, and an event-invoke config for ``hello`` whose OnSuccess and
  OnFailure destinations are the two queues.

The function ``hello`` itself comes from ``sluice.toml`` (Sluice has no ``CreateFunction``).
Endpoints come from boto3's own variables: ``AWS_ENDPOINT_URL`` (moto) and
``AWS_ENDPOINT_URL_LAMBDA`` (Sluice).
"""

from __future__ import annotations

import json
from typing import Any

import boto3

FUNCTION = "hello"
SOURCE_QUEUE = "orders"
SOURCE_DLQ = "orders-dlq"
RESULTS_QUEUE = "hello-results"
FAILURES_QUEUE = "hello-failures"
MAX_RECEIVE_COUNT = 3  # receives before moto moves a message to orders-dlq
VISIBILITY_TIMEOUT_S = 60  # AWS asks for at least the function timeout (sluice.toml: 10 s)


def queue_arn(sqs: Any, name: str, attributes: dict[str, str] | None = None) -> str:
    """Create queue ``name`` (or find it, when it exists with these attributes)."""
    url = sqs.create_queue(QueueName=name, Attributes=attributes or {})["QueueUrl"]
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(found["Attributes"]["QueueArn"])


def create_queues(sqs: Any) -> dict[str, str]:
    dlq = queue_arn(sqs, SOURCE_DLQ)
    redrive = {"deadLetterTargetArn": dlq, "maxReceiveCount": str(MAX_RECEIVE_COUNT)}
    source = queue_arn(
        sqs,
        SOURCE_QUEUE,
        {"VisibilityTimeout": str(VISIBILITY_TIMEOUT_S), "RedrivePolicy": json.dumps(redrive)},
    )
    return {
        SOURCE_QUEUE: source,
        SOURCE_DLQ: dlq,
        RESULTS_QUEUE: queue_arn(sqs, RESULTS_QUEUE),
        FAILURES_QUEUE: queue_arn(sqs, FAILURES_QUEUE),
    }


def ensure_mapping(lam: Any, source_arn: str) -> str:
    """The SQS mapping's UUID, creating the mapping unless one exists."""
    found = lam.list_event_source_mappings(FunctionName=FUNCTION, EventSourceArn=source_arn)
    if found["EventSourceMappings"]:
        return str(found["EventSourceMappings"][0]["UUID"])
    created = lam.create_event_source_mapping(
        FunctionName=FUNCTION,
        EventSourceArn=source_arn,
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        # AWS's least; the function runs one batch at a time anyway (reserved_concurrency 1)
        ScalingConfig={"MaximumConcurrency": 2},
    )
    return str(created["UUID"])


def main() -> None:
    sqs = boto3.client("sqs")
    lam = boto3.client("lambda")
    target = lam.get_function(FunctionName=FUNCTION)["Configuration"]["FunctionArn"]
    arns = create_queues(sqs)
    mapping = ensure_mapping(lam, arns[SOURCE_QUEUE])
    lam.put_function_event_invoke_config(
        FunctionName=FUNCTION,
        MaximumRetryAttempts=2,
        DestinationConfig={
            "OnSuccess": {"Destination": arns[RESULTS_QUEUE]},
            "OnFailure": {"Destination": arns[FAILURES_QUEUE]},
        },
    )
    summary = {"function": target, "mapping": mapping, "queues": arns}
    print(json.dumps({"event": "setup_done", **summary}), flush=True)


if __name__ == "__main__":
    main()
