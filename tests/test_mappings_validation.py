"""Event-source-mapping validation, table-driven: spec §7.3 rules and texts, §10.3 patterns,
and Sluice's refusal of Kafka and DocumentDB sources."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from broker import ManualClock
from broker.errors import ApiError, InvalidParameterValueError, ValidationError
from broker.mappings import MappingService, validate_filter_pattern
from broker.mappings.validate import KAFKA_REFUSED, validate_create
from tests.test_mappings import make_service

R, A = "us-east-1", "000000000000"
SQS = f"arn:aws:sqs:{R}:{A}:orders-in"
FIFO = f"arn:aws:sqs:{R}:{A}:orders-in.fifo"
KINESIS = f"arn:aws:kinesis:{R}:{A}:stream/clicks"
CONSUMER = f"arn:aws:kinesis:{R}:{A}:stream/clicks/consumer/c1:1741083072"
DDB = f"arn:aws:dynamodb:{R}:{A}:table/t/stream/2025-01-01T00:00:00.000"
MQ = f"arn:aws:mq:{R}:{A}:broker:jobs:b-0a1b2c3d"
MSK = f"arn:aws:kafka:{R}:{A}:cluster/payments/0a1b2c3d-4e5f-6789-abcd-ef0123456789-1"
DOCDB = f"arn:aws:rds:{R}:{A}:cluster:docs"
NOW = 1_741_083_072.0
IPV, VE = InvalidParameterValueError, ValidationError

UNSUPPORTED_DEST = "Unsupported DestinationConfig parameter for given event source mapping type."
INVALID_PATTERN = "Invalid filter pattern definition."


def sqs(**fields: Any) -> dict[str, Any]:
    return {"EventSourceArn": SQS, "FunctionName": "orders", **fields}


def kinesis(**fields: Any) -> dict[str, Any]:
    return {"EventSourceArn": KINESIS, "FunctionName": "orders", "StartingPosition": "LATEST"} | (
        fields
    )


def filters(*patterns: Any) -> dict[str, Any]:
    return {"FilterCriteria": {"Filters": [{"Pattern": p} for p in patterns]}}


def range_text(member: str, value: Any, bound: str) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must have value {bound}"
    )


REJECTED: list[tuple[str, dict[str, Any], type[ApiError], str]] = [
    # rule 1: OnSuccess, any source, checked before anything else
    (
        "on-success-kinesis",
        kinesis(DestinationConfig={"OnSuccess": {"Destination": SQS}}),
        IPV,
        UNSUPPORTED_DEST,
    ),
    (
        "on-success-before-source",
        {"FunctionName": "orders", "DestinationConfig": {"OnSuccess": {"Destination": SQS}}},
        IPV,
        UNSUPPORTED_DEST,
    ),
    (
        "on-failure-sqs",
        sqs(DestinationConfig={"OnFailure": {"Destination": SQS}}),
        IPV,
        UNSUPPORTED_DEST,
    ),
    # rule 2
    ("no-source", {"FunctionName": "orders"}, IPV, "Unrecognized event source."),
    (
        "unknown-service",
        sqs(EventSourceArn=f"arn:aws:sns:{R}:{A}:t"),
        IPV,
        "Unrecognized event source.",
    ),
    # Kafka and DocumentDB are refused by name
    ("msk", {"EventSourceArn": MSK, "FunctionName": "orders", "Topics": ["t"]}, IPV, KAFKA_REFUSED),
    (
        "self-managed-kafka",
        {
            "FunctionName": "orders",
            "Topics": ["t"],
            "SelfManagedEventSource": {"Endpoints": {"KAFKA_BOOTSTRAP_SERVERS": ["k:9092"]}},
        },
        IPV,
        KAFKA_REFUSED,
    ),
    # rule 4, 5, 6
    (
        "kinesis-no-starting-position",
        {"EventSourceArn": KINESIS, "FunctionName": "orders"},
        IPV,
        "1 validation error detected: Value null at 'startingPosition' failed to satisfy "
        "constraint: Member must not be null.",
    ),
    (
        "ddb-no-starting-position",
        {"EventSourceArn": DDB, "FunctionName": "orders"},
        IPV,
        "1 validation error detected: Value null at 'startingPosition' failed to satisfy "
        "constraint: Member must not be null.",
    ),
    (
        "starting-position-enum",
        kinesis(StartingPosition="OLDEST"),
        VE,
        "1 validation error detected: Value 'OLDEST' at 'startingPosition' failed to satisfy "
        "constraint: Member must satisfy enum value set: [LATEST, AT_TIMESTAMP, TRIM_HORIZON]",
    ),
    (
        "ddb-at-timestamp",
        {
            "EventSourceArn": DDB,
            "FunctionName": "orders",
            "StartingPosition": "AT_TIMESTAMP",
            "StartingPositionTimestamp": NOW - 60,
        },
        IPV,
        f"Unsupported starting position for arn type: {DDB}",
    ),
    (
        "at-timestamp-without-timestamp",
        kinesis(StartingPosition="AT_TIMESTAMP"),
        IPV,
        "StartingPositionTimestamp is required when StartingPosition is AT_TIMESTAMP.",
    ),
    (
        "timestamp-in-future",
        kinesis(StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=NOW + 60),
        IPV,
        "StartingPositionTimestamp must not be in the future.",
    ),
    # rules 7, 8, 9, 10
    (
        "sqs-batch-11-window-0",
        sqs(BatchSize=11),
        IPV,
        "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
        "greater than 10",
    ),
    (
        "sqs-batch-11-window-explicit-0",
        sqs(BatchSize=11, MaximumBatchingWindowInSeconds=0),
        IPV,
        "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
        "greater than 10",
    ),
    (
        "fifo-batch-11",
        sqs(EventSourceArn=FIFO, BatchSize=11),
        IPV,
        "Maximum batch size must be between 1 and 10 inclusive",
    ),
    (
        "fifo-window",
        sqs(EventSourceArn=FIFO, MaximumBatchingWindowInSeconds=5),
        IPV,
        "Batching window is not supported for FIFO queues",
    ),
    (
        "batch-size-max",
        sqs(BatchSize=10_001),
        VE,
        range_text("batchSize", 10001, "less than or equal to 10000"),
    ),
    # rules 11, 12
    ("pattern-not-json", sqs(**filters("not json")), IPV, INVALID_PATTERN),
    ("pattern-leaf-not-array", sqs(**filters('{"a": 1}')), IPV, INVALID_PATTERN),
    ("pattern-missing", sqs(FilterCriteria={"Filters": [{}]}), IPV, INVALID_PATTERN),
    (
        "pattern-not-string",
        sqs(FilterCriteria={"Filters": [{"Pattern": {"a": ["b"]}}]}),
        IPV,
        INVALID_PATTERN,
    ),
    ("kinesis-data-not-object", kinesis(**filters('{"data": ["x"]}')), IPV, INVALID_PATTERN),
    (
        "six-filters",
        sqs(**filters(*['{"a": ["b"]}'] * 6)),
        IPV,
        "Number of filters exceeds the limit of 5",
    ),
    (
        "pattern-too-long",
        sqs(**filters('{"a": ["' + "x" * 4090 + '"]}')),
        VE,
        '1 validation error detected: Value \'{"a": ["'
        + "x" * 4090
        + "\"]}' at 'filterCriteria.filters.1.member.pattern' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096",
    ),
    # rule 17 and rule 23 (ranges, enums)
    (
        "record-age-30",
        kinesis(MaximumRecordAgeInSeconds=30),
        IPV,
        "MaximumRecordAgeInSeconds must be -1 or between 60 and 604800",
    ),
    (
        "record-age-0",
        kinesis(MaximumRecordAgeInSeconds=0),
        IPV,
        "MaximumRecordAgeInSeconds must be -1 or between 60 and 604800",
    ),
    (
        "record-age-too-big",
        kinesis(MaximumRecordAgeInSeconds=604_801),
        VE,
        range_text("maximumRecordAgeInSeconds", 604801, "less than or equal to 604800"),
    ),
    (
        "retries-below",
        kinesis(MaximumRetryAttempts=-2),
        VE,
        range_text("maximumRetryAttempts", -2, "greater than or equal to -1"),
    ),
    (
        "window-301",
        sqs(MaximumBatchingWindowInSeconds=301),
        VE,
        range_text("maximumBatchingWindowInSeconds", 301, "less than or equal to 300"),
    ),
    (
        "parallelization-11",
        kinesis(ParallelizationFactor=11),
        VE,
        range_text("parallelizationFactor", 11, "less than or equal to 10"),
    ),
    (
        "tumbling-901",
        kinesis(TumblingWindowInSeconds=901),
        VE,
        range_text("tumblingWindowInSeconds", 901, "less than or equal to 900"),
    ),
    (
        "batch-size-0",
        sqs(BatchSize=0),
        VE,
        range_text("batchSize", 0, "greater than or equal to 1"),
    ),
    (
        "scaling-1",
        sqs(ScalingConfig={"MaximumConcurrency": 1}),
        VE,
        range_text("scalingConfig.maximumConcurrency", 1, "greater than or equal to 2"),
    ),
    (
        "response-types-enum",
        sqs(FunctionResponseTypes=["Partial"]),
        VE,
        "1 validation error detected: Value 'Partial' at 'functionResponseTypes.1.member' failed "
        "to satisfy constraint: Member must satisfy enum value set: [ReportBatchItemFailures]",
    ),
    (
        "batch-size-string",
        sqs(BatchSize="10"),
        VE,
        "1 validation error detected: Value '10' at 'batchSize' failed to satisfy constraint: "
        "Member must be an integer",
    ),
    (
        "function-name-missing",
        {"EventSourceArn": SQS},
        VE,
        "1 validation error detected: Value null at 'functionName' failed to satisfy "
        "constraint: Member must not be null",
    ),
    (
        "bad-arn",
        sqs(EventSourceArn="sqs:orders"),
        VE,
        "1 validation error detected: Value 'sqs:orders' at 'eventSourceArn' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)",
    ),
    # fields that do not apply to the source type
    (
        "sqs-starting-position",
        sqs(StartingPosition="LATEST"),
        IPV,
        "Unsupported StartingPosition parameter for given event source mapping type.",
    ),
    (
        "sqs-bisect",
        sqs(BisectBatchOnFunctionError=True),
        IPV,
        "Unsupported BisectBatchOnFunctionError parameter for given event source mapping type.",
    ),
    (
        "kinesis-scaling",
        kinesis(ScalingConfig={"MaximumConcurrency": 5}),
        IPV,
        "Unsupported ScalingConfig parameter for given event source mapping type.",
    ),
    (
        "sqs-queues",
        sqs(Queues=["q"]),
        IPV,
        "Unsupported Queues parameter for given event source mapping type.",
    ),
    (
        "sqs-topics",
        sqs(Topics=["t"]),
        IPV,
        "Unsupported Topics parameter for given event source mapping type.",
    ),
    (
        "mq-response-types",
        {
            "EventSourceArn": MQ,
            "FunctionName": "orders",
            "Queues": ["q"],
            "FunctionResponseTypes": [],
        },
        IPV,
        "Unsupported FunctionResponseTypes parameter for given event source mapping type.",
    ),
    (
        "mq-destination",
        {
            "EventSourceArn": MQ,
            "FunctionName": "orders",
            "Queues": ["q"],
            "DestinationConfig": {"OnFailure": {}},
        },
        IPV,
        UNSUPPORTED_DEST,
    ),
    ("unknown-field", sqs(Bogus=1), IPV, "Unknown parameter Bogus for CreateEventSourceMapping."),
    # MQ
    (
        "mq-no-queues",
        {"EventSourceArn": MQ, "FunctionName": "orders"},
        IPV,
        "1 validation error detected: Value null at 'queues' failed to satisfy constraint: "
        "Member must not be null.",
    ),
    (
        "mq-two-queues",
        {"EventSourceArn": MQ, "FunctionName": "orders", "Queues": ["a", "b"]},
        VE,
        "1 validation error detected: Value '[a, b]' at 'queues' failed to satisfy constraint: "
        "Member must have length less than or equal to 1",
    ),
    # settings
    (
        "kafka-metrics",
        sqs(MetricsConfig={"Metrics": ["ErrorCount"]}),
        IPV,
        "Metrics ErrorCount and KafkaMetrics apply to Kafka event sources only.",
    ),
    (
        "scaling-and-provisioned",
        sqs(ScalingConfig={"MaximumConcurrency": 5}, ProvisionedPollerConfig={"MinimumPollers": 3}),
        IPV,
        "ScalingConfig and ProvisionedPollerConfig cannot be used together.",
    ),
]

REJECTED_CONTAINS: list[tuple[str, dict[str, Any], type[ApiError], str]] = [
    (
        "docdb",
        {"EventSourceArn": DOCDB, "FunctionName": "orders"},
        IPV,
        "does not support Amazon DocumentDB",
    ),
    (
        "msk-message-lists-sources",
        {"EventSourceArn": MSK, "FunctionName": "orders"},
        IPV,
        "redis-stream:NAME",
    ),
    (
        "on-failure-lambda",
        kinesis(
            DestinationConfig={"OnFailure": {"Destination": f"arn:aws:lambda:{R}:{A}:function:x"}}
        ),
        IPV,
        "Unsupported OnFailure destination",
    ),
    (
        "on-failure-fifo",
        kinesis(DestinationConfig={"OnFailure": {"Destination": FIFO}}),
        IPV,
        "Unsupported OnFailure destination",
    ),
    (
        "on-failure-garbage",
        kinesis(DestinationConfig={"OnFailure": {"Destination": "nowhere"}}),
        VE,
        "destinationConfig.onFailure.destination",
    ),
    (
        "table-without-stream",
        {
            "EventSourceArn": f"arn:aws:dynamodb:{R}:{A}:table/t",
            "FunctionName": "orders",
            "StartingPosition": "LATEST",
        },
        IPV,
        "Stream not found: arn:aws:dynamodb",
    ),
    (
        "mq-kafka-access",
        {
            "EventSourceArn": MQ,
            "FunctionName": "orders",
            "Queues": ["q"],
            "SourceAccessConfigurations": [{"Type": "SASL_SCRAM_512_AUTH", "URI": "x"}],
        },
        IPV,
        "Unsupported SourceAccessConfigurations type SASL_SCRAM_512_AUTH",
    ),
    (
        "amqp-without-host",
        {"EventSourceArn": "amqp:///vhost", "FunctionName": "orders", "Queues": ["q"]},
        VE,
        "eventSourceArn",
    ),
    ("pollers-below-2", sqs(ProvisionedPollerConfig={"MinimumPollers": 1}), IPV, "at least 2"),
    (
        "pollers-min-above-max",
        sqs(ProvisionedPollerConfig={"MinimumPollers": 50, "MaximumPollers": 10}),
        IPV,
        "MinimumPollers must not be greater",
    ),
    (
        "poller-group",
        sqs(ProvisionedPollerConfig={"PollerGroupName": "g"}),
        IPV,
        "Unsupported PollerGroupName",
    ),
    ("kms-pattern", sqs(KMSKeyArn="key-1"), VE, "at 'kMSKeyArn'"),
    ("function-name-pattern", sqs(FunctionName="bad name!"), VE, "at 'functionName'"),
    ("two-errors", sqs(BatchSize=0, ParallelizationFactor=0), VE, "2 validation errors detected: "),
]


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [pytest.param(b, e, m, id=i) for i, b, e, m in REJECTED],
)
def test_create_is_rejected_with_aws_error_and_text(
    body: dict[str, Any], error: type[ApiError], message: str
) -> None:
    with pytest.raises(ApiError) as err:
        validate_create(body, max_filters=5, now=NOW)
    assert type(err.value) is error
    assert err.value.message == message


@pytest.mark.parametrize(
    ("body", "error", "fragment"),
    [pytest.param(b, e, m, id=i) for i, b, e, m in REJECTED_CONTAINS],
)
def test_create_is_rejected_with_a_clear_message(
    body: dict[str, Any], error: type[ApiError], fragment: str
) -> None:
    with pytest.raises(ApiError) as err:
        validate_create(body, max_filters=5, now=NOW)
    assert type(err.value) is error
    assert fragment in err.value.message


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("sqs-batch-11-window-1", sqs(BatchSize=11, MaximumBatchingWindowInSeconds=1)),
    ("sqs-batch-10000", sqs(BatchSize=10_000, MaximumBatchingWindowInSeconds=300)),
    ("kinesis-batch-100-window-0", kinesis(BatchSize=100, MaximumBatchingWindowInSeconds=0)),
    (
        "fifo-batch-10-window-0",
        sqs(EventSourceArn=FIFO, BatchSize=10, MaximumBatchingWindowInSeconds=0),
    ),
    ("record-age-minus-1", kinesis(MaximumRecordAgeInSeconds=-1)),
    ("record-age-60", kinesis(MaximumRecordAgeInSeconds=60)),
    ("record-age-max", kinesis(MaximumRecordAgeInSeconds=604_800)),
    ("five-filters", sqs(**filters(*['{"a": ["b"]}'] * 5))),
    ("empty-filters", sqs(FilterCriteria={"Filters": []})),
    ("kinesis-consumer", kinesis(EventSourceArn=CONSUMER)),
    (
        "kinesis-at-timestamp",
        kinesis(StartingPosition="AT_TIMESTAMP", StartingPositionTimestamp=NOW - 1),
    ),
    (
        "redis-stream-at-timestamp",
        kinesis(
            EventSourceArn="redis-stream:s",
            StartingPosition="AT_TIMESTAMP",
            StartingPositionTimestamp=NOW,
        ),
    ),
    (
        "ddb-full",
        {
            "EventSourceArn": DDB,
            "FunctionName": "orders",
            "StartingPosition": "TRIM_HORIZON",
            "ParallelizationFactor": 10,
            "TumblingWindowInSeconds": 900,
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": 10_000,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            **filters('{"dynamodb": {"Keys": {"id": {"S": ["1"]}}}}', '{"eventName": ["INSERT"]}'),
        },
    ),
    (
        "on-failure-sns",
        kinesis(DestinationConfig={"OnFailure": {"Destination": f"arn:aws:sns:{R}:{A}:t"}}),
    ),
    (
        "on-failure-s3",
        kinesis(DestinationConfig={"OnFailure": {"Destination": "arn:aws:s3:::bucket"}}),
    ),
    (
        "on-failure-sluice-http",
        kinesis(DestinationConfig={"OnFailure": {"Destination": "https://hooks.example/x"}}),
    ),
    ("on-failure-empty", kinesis(DestinationConfig={"OnFailure": {"Destination": ""}})),
    (
        "sqs-sluice-settings",
        sqs(
            ScalingConfig={"MaximumConcurrency": 2},
            MetricsConfig={"Metrics": ["EventCount"]},
            FunctionResponseTypes=["ReportBatchItemFailures"],
            Tags={"team": "a"},
        ),
    ),
    ("sqs-provisioned", sqs(ProvisionedPollerConfig={"MinimumPollers": 2, "MaximumPollers": 2})),
    (
        "amqps-url",
        {
            "EventSourceArn": "amqps://u:p@rabbit.internal:5671/jobs?heartbeat=30",
            "FunctionName": "orders",
            "Queues": ["render"],
            "BatchSize": 10_000,
            "MaximumBatchingWindowInSeconds": 300,
        },
    ),
    ("nulls-are-absent", sqs(BatchSize=None, Enabled=None, FilterCriteria=None)),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in ACCEPTED])
def test_create_is_accepted(body: dict[str, Any]) -> None:
    validate_create(body, max_filters=5, now=NOW)


def test_filter_quota_follows_the_setting() -> None:
    body = sqs(**filters(*['{"a": ["b"]}'] * 7))
    validate_create(body, max_filters=10, now=NOW)
    with pytest.raises(IPV, match=r"^Number of filters exceeds the limit of 6$"):
        validate_create(body, max_filters=6, now=NOW)


def test_defaults_are_echoed_back_for_provisioned_pollers_and_mq_window() -> None:
    config = validate_create(
        sqs(ProvisionedPollerConfig={"MinimumPollers": 5}), max_filters=5, now=NOW
    )
    assert config.provisioned_poller_config is not None
    assert config.provisioned_poller_config.maximum_pollers == 200
    mq = validate_create(
        {"EventSourceArn": MQ, "FunctionName": "orders", "Queues": ["q"]}, max_filters=5, now=NOW
    )
    assert mq.maximum_batching_window_in_seconds is None  # 500 ms, absent from output


# -- order of checks through the service (items 41, 42) ---------------------------------------


@pytest.fixture
def service(redis_client: aioredis.Redis, clock: ManualClock) -> MappingService:
    return make_service(redis_client, clock)[0]


async def test_on_success_is_refused_even_when_the_function_does_not_exist(
    service: MappingService,
) -> None:
    with pytest.raises(IPV, match=f"^{re.escape(UNSUPPORTED_DEST)}$"):
        await service.create(kinesis(FunctionName="nope", DestinationConfig={"OnSuccess": {}}))


async def test_source_rules_come_before_function_existence(service: MappingService) -> None:
    with pytest.raises(IPV, match=r"^Unrecognized event source.$"):
        await service.create({"FunctionName": "nope"})
    with pytest.raises(IPV, match="Maximum batch size must be between 1 and 10"):
        await service.create(sqs(EventSourceArn=FIFO, FunctionName="nope", BatchSize=11))
    with pytest.raises(IPV, match=r"^Function does not exist$"):
        await service.create(sqs(FunctionName="nope"))


# -- filter patterns (§10.3) --------------------------------------------------------------------

VALID_PATTERNS = [
    {},
    {"body": {"kind": ["refund"], "amount": [{"numeric": [">=", 100]}]}},
    {"body": {"$or": [{"region": [{"prefix": "eu-"}]}, {"vip": [True]}]}},
    {"a": [None, "", 300, 3.5, False]},
    {"a": [{"suffix": ".png"}, {"equals-ignore-case": "X"}, {"wildcard": r"a*z\*\\"}]},
    {"a": [{"anything-but": "x"}, {"anything-but": 5}, {"anything-but": ["x", "y"]}]},
    {"a": [{"anything-but": [1, 2]}, {"anything-but": {"prefix": "tmp-"}}]},
    {"a": [{"exists": False}], "b": [{"exists": True}]},
    {"a": [{"numeric": [">", 0, "<=", 5]}], "b": [{"numeric": ["=", -5e9]}]},
    {"a": [{"cidr": "10.0.0.0/24"}, {"cidr": "2001:db8::/32"}]},
    {"a": {"b": {"c": ["d"]}}},
]
INVALID_PATTERNS: list[Any] = [
    "not json",
    "[1, 2]",
    '"text"',
    {"a": 1},
    {"a": "b"},
    {"a": []},
    {"a": [[1]]},
    {"a": [{}]},
    {"a": [{"prefix": "x", "suffix": "y"}]},
    {"a": [{"unknown-op": "x"}]},
    {"a": [{"prefix": 5}]},
    {"a": [{"exists": "yes"}]},
    {"a": [{"numeric": ["==", 5]}]},
    {"a": [{"numeric": [">", 5, "<"]}]},
    {"a": [{"numeric": ["<", 5, ">", 1]}]},
    {"a": [{"numeric": [">", 5, "<", 1]}]},
    {"a": [{"numeric": [">", "5"]}]},
    {"a": [{"numeric": ["=", 6e9]}]},
    {"a": [{"numeric": ["=", 1.1234567]}]},
    {"a": [{"anything-but": ["x", 1]}]},
    {"a": [{"anything-but": []}]},
    {"a": [{"anything-but": {"numeric": [">", 1]}}]},
    {"a": [{"anything-but": True}]},
    {"a": [{"wildcard": "a**"}]},
    {"a": [{"wildcard": r"a\b"}]},
    {"a": [{"cidr": "not-a-network"}]},
    {"$or": [{"a": ["b"]}]},
    {"$or": {"a": ["b"]}},
    {"$or": [{"a": ["b"]}, "c"]},
    "NaN",
    '{"a": [NaN]}',
    None,
    5,
]


@pytest.mark.parametrize("pattern", VALID_PATTERNS, ids=[json.dumps(p) for p in VALID_PATTERNS])
def test_valid_filter_patterns(pattern: dict[str, Any]) -> None:
    validate_filter_pattern(json.dumps(pattern))


@pytest.mark.parametrize("pattern", INVALID_PATTERNS, ids=[repr(p) for p in INVALID_PATTERNS])
def test_invalid_filter_patterns(pattern: Any) -> None:
    text = json.dumps(pattern) if isinstance(pattern, dict) else pattern
    with pytest.raises(IPV) as err:
        validate_filter_pattern(text)
    assert err.value.message == INVALID_PATTERN


def test_stream_data_key_must_hold_an_object() -> None:
    validate_filter_pattern('{"data": {"page": ["/home"]}}', data_key="data")
    validate_filter_pattern('{"body": ["x"]}', data_key=None)
    with pytest.raises(IPV):
        validate_filter_pattern('{"dynamodb": ["x"]}', data_key="dynamodb")
