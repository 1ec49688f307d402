"""Event source mappings: request shapes, the stored model and per-source tables (spec §7.2).

Three models, one spelling each side (STYLE: AWS names at the edge, snake_case inside):

* :class:`MappingRequest` - a Create body, or an Update merged over the stored settings, in
  AWS's shape (aliases). Strict: ``"10"`` is not a BatchSize, ``1`` is not ``Enabled``.
* :class:`MappingConfig` - what validation produces: every setting with its per-source
  default applied (``broker.mappings.validate``).
* :class:`EventSourceMapping` - a config plus identity and state, as stored in Redis and as
  pollers read it.

:data:`SOURCE_TYPES` says which fields apply to which source type, with their defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from pydantic.alias_generators import to_pascal

from broker.arns import parse_function_name
from broker.errors import InvalidParameterValueError, ValidationError

SCHEMA_VERSION = 1

#: Every mapping's ``LastProcessingResult`` until a poller for its source type reports.
NO_POLLER_RESULT = "PROBLEM: no poller for this source type yet"
NO_RECORDS_RESULT = "No records processed"


class SourceKind(StrEnum):
    SQS = "sqs"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"
    RABBITMQ = "rabbitmq"  # an Amazon MQ broker ARN or an amqp:// URL, with Queues
    REDIS_STREAM = "redis-stream"  # redis-stream:NAME, a one-shard Kinesis-like stream


class State(StrEnum):
    CREATING = "Creating"
    ENABLING = "Enabling"
    ENABLED = "Enabled"
    DISABLING = "Disabling"
    DISABLED = "Disabled"
    UPDATING = "Updating"
    DELETING = "Deleting"


STEADY_STATES = frozenset({State.ENABLED, State.DISABLED})

# -- field tables ---------------------------------------------------------------------------

COMMON_FIELDS = frozenset(
    {"EventSourceArn", "FunctionName", "Enabled", "BatchSize", "FilterCriteria", "KMSKeyArn"}
    | {"MetricsConfig", "Tags"}
)
STREAM_FIELDS = frozenset(
    {"MaximumBatchingWindowInSeconds", "ParallelizationFactor", "StartingPosition"}
    | {"StartingPositionTimestamp", "DestinationConfig", "MaximumRecordAgeInSeconds"}
    | {"BisectBatchOnFunctionError", "MaximumRetryAttempts", "TumblingWindowInSeconds"}
    | {"FunctionResponseTypes"}
)
SQS_FIELDS = frozenset(
    {"MaximumBatchingWindowInSeconds", "FunctionResponseTypes", "ScalingConfig"}
    | {"ProvisionedPollerConfig"}
)
MQ_FIELDS = frozenset({"MaximumBatchingWindowInSeconds", "Queues", "SourceAccessConfigurations"})
#: Fields an Update cannot change (AWS's Update shape lacks them).
IMMUTABLE_FIELDS = frozenset(
    {"EventSourceArn", "StartingPosition", "StartingPositionTimestamp", "Queues", "Topics"}
    | {"SelfManagedEventSource", "Tags"}
)


@dataclass(frozen=True)
class SourceType:
    """What a source type accepts, and its defaults (spec §7.2)."""

    fields: frozenset[str]
    batch_size_default: int
    window_default_s: int | None  # None: 500 ms, and the field is absent from output
    reason: str  # StateTransitionReason after a user action
    starting_positions: tuple[str, ...] = ()  # empty: not a stream
    first_result: str | None = NO_RECORDS_RESULT  # AWS's LastProcessingResult before a poll
    batch_size_max: int = 10_000  # FIFO queues: 10, decided in validate

    @property
    def stream(self) -> bool:
        return bool(self.starting_positions)


_KINESIS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_STREAM = COMMON_FIELDS | STREAM_FIELDS
SOURCE_TYPES: dict[SourceKind, SourceType] = {
    SourceKind.SQS: SourceType(COMMON_FIELDS | SQS_FIELDS, 10, 0, "USER_INITIATED", (), None),
    SourceKind.KINESIS: SourceType(_STREAM, 100, 0, "User action", _KINESIS),
    SourceKind.DYNAMODB: SourceType(_STREAM, 100, 0, "User action", ("TRIM_HORIZON", "LATEST")),
    SourceKind.RABBITMQ: SourceType(COMMON_FIELDS | MQ_FIELDS, 100, None, "USER_INITIATED"),
    SourceKind.REDIS_STREAM: SourceType(_STREAM, 100, 0, "User action", _KINESIS),
}

ENUMS = {  # member -> AWS's rendering of its enum (ValidationException texts)
    "StartingPosition": "[LATEST, AT_TIMESTAMP, TRIM_HORIZON]",
    "FunctionResponseTypes": "[ReportBatchItemFailures]",
    "Metrics": "[EventCount, ErrorCount, KafkaMetrics]",
    "Type": "[BASIC_AUTH, VPC_SUBNET, VPC_SECURITY_GROUP, SASL_SCRAM_512_AUTH, "
    "SASL_SCRAM_256_AUTH, VIRTUAL_HOST, CLIENT_CERTIFICATE_TLS_AUTH, SERVER_ROOT_CA_CERTIFICATE]",
}
StartingPosition = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
AccessType = Literal[
    "BASIC_AUTH",
    "VPC_SUBNET",
    "VPC_SECURITY_GROUP",
    "SASL_SCRAM_512_AUTH",
    "SASL_SCRAM_256_AUTH",
    "VIRTUAL_HOST",
    "CLIENT_CERTIFICATE_TLS_AUTH",
    "SERVER_ROOT_CA_CERTIFICATE",
]

# -- nested shapes (shared by requests and the stored model) --------------------------------

_AWS = ConfigDict(strict=True, extra="forbid", populate_by_name=True, alias_generator=to_pascal)


class OnDestination(BaseModel):
    model_config = _AWS
    destination: str | None = Field(default=None, max_length=350)


class DestinationConfig(BaseModel):
    model_config = _AWS
    on_success: OnDestination | None = None
    on_failure: OnDestination | None = None


class Filter(BaseModel):
    model_config = _AWS
    pattern: Any = None  # a JSON text; checked by validate.validate_filter_pattern


class FilterCriteria(BaseModel):
    model_config = _AWS
    filters: list[Filter] | None = None


class MetricsConfig(BaseModel):
    model_config = _AWS
    metrics: list[Literal["EventCount", "ErrorCount", "KafkaMetrics"]] | None = Field(
        default=None, max_length=3
    )


class ScalingConfig(BaseModel):
    model_config = _AWS
    maximum_concurrency: int | None = Field(default=None, ge=2, le=1_000)


class ProvisionedPollerConfig(BaseModel):
    model_config = _AWS
    minimum_pollers: int | None = Field(default=None, ge=1, le=200)
    maximum_pollers: int | None = Field(default=None, ge=1, le=10_000)
    poller_group_name: str | None = Field(default=None, min_length=1, max_length=128)


class SourceAccessConfiguration(BaseModel):
    model_config = _AWS
    type: AccessType
    uri: str = Field(alias="URI", min_length=1, max_length=200)


# -- requests and the stored model ----------------------------------------------------------


class MappingRequest(BaseModel):
    """A CreateEventSourceMapping body (or an Update merged over the stored settings)."""

    model_config = _AWS

    event_source_arn: str | None = Field(default=None, max_length=10_000)
    function_name: str
    enabled: bool | None = None
    batch_size: int | None = Field(default=None, ge=1, le=10_000)
    maximum_batching_window_in_seconds: int | None = Field(default=None, ge=0, le=300)
    parallelization_factor: int | None = Field(default=None, ge=1, le=10)
    starting_position: StartingPosition | None = None
    starting_position_timestamp: float | None = None
    destination_config: DestinationConfig | None = None
    maximum_record_age_in_seconds: int | None = Field(default=None, ge=-1, le=604_800)
    bisect_batch_on_function_error: bool | None = None
    maximum_retry_attempts: int | None = Field(default=None, ge=-1, le=10_000)
    tumbling_window_in_seconds: int | None = Field(default=None, ge=0, le=900)
    function_response_types: list[Literal["ReportBatchItemFailures"]] | None = Field(
        default=None, max_length=1
    )
    filter_criteria: FilterCriteria | None = None
    kms_key_arn: str | None = Field(default=None, alias="KMSKeyArn", max_length=10_000)
    metrics_config: MetricsConfig | None = None
    scaling_config: ScalingConfig | None = None
    provisioned_poller_config: ProvisionedPollerConfig | None = None
    queues: list[str] | None = Field(default=None, min_length=1, max_length=1)
    source_access_configurations: list[SourceAccessConfiguration] | None = Field(
        default=None, max_length=23
    )
    tags: dict[str, str] | None = None
    # Kafka and DocumentDB only: known so that Sluice can refuse them by name.
    topics: list[str] | None = None
    self_managed_event_source: dict[str, Any] | None = None
    amazon_managed_kafka_event_source_config: dict[str, Any] | None = None
    self_managed_kafka_event_source_config: dict[str, Any] | None = None
    document_db_event_source_config: dict[str, Any] | None = Field(
        default=None, alias="DocumentDBEventSourceConfig"
    )
    logging_config: dict[str, Any] | None = None

    def given(self) -> set[str]:
        """AWS names of the fields the request sets (not null)."""
        return set(self.model_dump(by_alias=True, exclude_none=True))


REQUEST_FIELDS = frozenset(
    field.alias or name for name, field in MappingRequest.model_fields.items()
)


# -- request shape errors in AWS's words --------------------------------------------------


def _constraint_error(member: str, value: str, constraint: str) -> str:
    return f"Value {value} at '{member}' failed to satisfy constraint: {constraint}"


def invalid_value(member: str, value: Any, constraint: str) -> ValidationError:
    """AWS's ``ValidationException`` for one member."""
    text = _constraint_error(member, _render(value), constraint)
    return ValidationError(f"1 validation error detected: {text}")


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, list):
        return "'[" + ", ".join(str(v) for v in value) + "]'"
    return f"'{value}'"


def _member(loc: tuple[int | str, ...]) -> str:
    parts = [f"{p + 1}.member" if isinstance(p, int) else p[:1].lower() + p[1:] for p in loc]
    return ".".join(parts)


_TYPE_TEXTS = {
    "int_type": "Member must be an integer",
    "bool_type": "Member must be a boolean",
    "string_type": "Member must be a string",
    "float_type": "Member must be a number",
    "list_type": "Member must be a list",
    "dict_type": "Member must be an object",
    "model_type": "Member must be an object",
    "extra_forbidden": "Member must be one of this object's known parameters",
}


def _aws_text(exc: PydanticValidationError) -> str:
    """pydantic's errors in AWS's ``N validation error(s) detected: ...`` form."""
    texts = []
    for err in exc.errors():
        loc, ctx, kind = err["loc"], err.get("ctx", {}), err["type"]
        member = _member(loc)
        if kind == "missing":
            texts.append(_constraint_error(member, "null", "Member must not be null"))
            continue
        if kind in ("less_than_equal", "greater_than_equal"):
            bound = ctx.get("le", ctx.get("ge"))
            side = "less" if kind == "less_than_equal" else "greater"
            constraint = f"Member must have value {side} than or equal to {bound}"
        elif kind in ("string_too_long", "too_long"):
            constraint = f"Member must have length less than or equal to {ctx['max_length']}"
        elif kind in ("string_too_short", "too_short"):
            constraint = f"Member must have length greater than or equal to {ctx['min_length']}"
        elif kind == "literal_error":
            name = next(str(p) for p in reversed(loc) if isinstance(p, str))
            constraint = f"Member must satisfy enum value set: {ENUMS.get(name, ctx['expected'])}"
        else:
            constraint = _TYPE_TEXTS.get(kind, str(err["msg"]))
        texts.append(_constraint_error(member, _render(err["input"]), constraint))
    plural = "s" if len(texts) > 1 else ""
    return f"{len(texts)} validation error{plural} detected: " + "; ".join(texts)


def parse_request(body: Any, operation: str = "CreateEventSourceMapping") -> MappingRequest:
    """The request's shape: known fields, types, ranges and enums (``ValidationException``)."""
    if not isinstance(body, dict):
        raise ValidationError("1 validation error detected: the request body must be an object")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise InvalidParameterValueError(f"Unknown parameter {unknown[0]} for {operation}.")
    try:
        request = MappingRequest.model_validate({k: v for k, v in body.items() if v is not None})
    except PydanticValidationError as exc:
        raise ValidationError(_aws_text(exc)) from None
    parse_function_name(request.function_name)  # its own ValidationException texts
    return request


class MappingConfig(BaseModel):
    """A validated mapping's settings, defaults applied; ``None`` = does not apply."""

    model_config = ConfigDict(extra="forbid")

    event_source_arn: str
    source_kind: SourceKind
    fifo: bool = False
    function_name: str  # bare name; the qualifier is kept apart
    qualifier: str | None = None
    enabled: bool = True
    batch_size: int
    maximum_batching_window_in_seconds: int | None = None
    parallelization_factor: int | None = None
    starting_position: StartingPosition | None = None
    starting_position_timestamp: float | None = None
    on_failure_destination: str | None = None
    maximum_record_age_in_seconds: int | None = None
    bisect_batch_on_function_error: bool | None = None
    maximum_retry_attempts: int | None = None
    tumbling_window_in_seconds: int | None = None
    function_response_types: list[str] | None = None
    filter_patterns: list[str] = Field(default_factory=list)
    kms_key_arn: str | None = None
    metrics: list[str] = Field(default_factory=list)
    maximum_concurrency: int | None = None
    provisioned_poller_config: ProvisionedPollerConfig | None = None
    queues: list[str] | None = None
    source_access_configurations: list[SourceAccessConfiguration] | None = None
    tags: dict[str, str] = Field(default_factory=dict)  # set on create only; never echoed

    @property
    def function_ref(self) -> str:
        """``name`` or ``name:qualifier``, as a FunctionName would say it."""
        return f"{self.function_name}:{self.qualifier}" if self.qualifier else self.function_name

    def request_shape(self) -> dict[str, Any]:
        """These settings as an AWS request body: an Update is merged over this."""
        body: dict[str, Any] = {
            "EventSourceArn": self.event_source_arn,
            "FunctionName": self.function_ref,
            "Enabled": self.enabled,
        }
        body.update(_settings(self))
        if self.starting_position_timestamp is not None:
            body["StartingPositionTimestamp"] = self.starting_position_timestamp
        if self.kms_key_arn is not None:
            body["KMSKeyArn"] = self.kms_key_arn
        return body


# An amqp:// source's password never leaves Sluice in an answer (it is stored as given).
_PASSWORD = re.compile(r"^(amqps?://[^:/@]*:)[^@]*@")


class EventSourceMapping(MappingConfig):
    """A mapping as stored in Redis: its config, identity and state."""

    v: int = SCHEMA_VERSION
    uuid: str
    mapping_arn: str
    function_arn: str
    state: State
    state_transition_reason: str
    last_modified: float
    last_processing_result: str | None = None
    settles_at: float | None = None  # when a transitional state settles (epoch s)
    created_at: float

    def response(self, *, listing: bool = False) -> dict[str, Any]:
        """The EventSourceMappingConfiguration AWS returns (spec §7.2 examples).

        ``listing``: List hides filters encrypted with a KMS key (``"FilterCriteria": null``).
        """
        body: dict[str, Any] = {
            "UUID": self.uuid,
            "EventSourceMappingArn": self.mapping_arn,
            "EventSourceArn": _PASSWORD.sub(r"\1****@", self.event_source_arn),
            "FunctionArn": self.function_arn,
        }
        body.update(_settings(self))
        if self.starting_position_timestamp is not None:
            body["StartingPositionTimestamp"] = self.starting_position_timestamp
        if listing and self.kms_key_arn and self.filter_patterns:
            body["FilterCriteria"] = None
        if self.kms_key_arn is not None:
            body["KMSKeyArn"] = self.kms_key_arn
        body["LastModified"] = self.last_modified
        if self.last_processing_result is not None:
            body["LastProcessingResult"] = self.last_processing_result
        body["State"] = self.state.value
        body["StateTransitionReason"] = self.state_transition_reason
        return body


def _settings(config: MappingConfig) -> dict[str, Any]:
    """The per-source settings in AWS's shape and order; fields that do not apply omitted."""
    values: dict[str, Any] = {
        "BatchSize": config.batch_size,
        "MaximumBatchingWindowInSeconds": config.maximum_batching_window_in_seconds,
        "ParallelizationFactor": config.parallelization_factor,
        "StartingPosition": config.starting_position,
        "BisectBatchOnFunctionError": config.bisect_batch_on_function_error,
        "MaximumRecordAgeInSeconds": config.maximum_record_age_in_seconds,
        "MaximumRetryAttempts": config.maximum_retry_attempts,
        "TumblingWindowInSeconds": config.tumbling_window_in_seconds,
        "FunctionResponseTypes": config.function_response_types,
        "Queues": config.queues,
    }
    body = {k: v for k, v in values.items() if v is not None}
    if SOURCE_TYPES[config.source_kind].stream:
        target = config.on_failure_destination
        body["DestinationConfig"] = {"OnFailure": {"Destination": target} if target else {}}
    if config.source_access_configurations is not None:
        body["SourceAccessConfigurations"] = [
            sac.model_dump(by_alias=True) for sac in config.source_access_configurations
        ]
    if config.filter_patterns:
        body["FilterCriteria"] = {"Filters": [{"Pattern": p} for p in config.filter_patterns]}
    if config.metrics:
        body["MetricsConfig"] = {"Metrics": list(config.metrics)}
    if config.maximum_concurrency is not None:
        body["ScalingConfig"] = {"MaximumConcurrency": config.maximum_concurrency}
    if config.provisioned_poller_config is not None:
        body["ProvisionedPollerConfig"] = config.provisioned_poller_config.model_dump(
            by_alias=True, exclude_none=True
        )
    return body
