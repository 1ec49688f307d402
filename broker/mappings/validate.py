"""Validation of event-source-mapping Create and Update bodies (spec §7.2, §7.3, §10.3).

Pure functions: a body in, a :class:`~broker.mappings.model.MappingConfig` (defaults applied
per source type) or AWS's error out. Order, as spec §7.3 fixes it: request shape (types,
ranges, enums: ``ValidationException``) → rule 1 (``OnSuccess``) → rule 2 and the source
type → source-specific rules (4-12, 17). Function existence (13), source existence (14-16)
and duplicates (18-19) need I/O and are the service's.

Beyond AWS, on purpose (DESIGN: Contracts): ``redis-stream:NAME`` and ``amqp://...`` sources.
Kafka and DocumentDB sources are refused by name rather than accepted and never polled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from broker.arns import parse_function_name
from broker.errors import InvalidParameterValueError, ValidationError
from broker.event_config import AWS_DESTINATION_PATTERN, is_registered_destination
from broker.filters import compile_pattern
from broker.mappings.model import (
    IMMUTABLE_FIELDS,
    REQUEST_FIELDS,
    SOURCE_TYPES,
    MappingConfig,
    MappingRequest,
    SourceKind,
    invalid_value,
    parse_request,
)

EVENT_SOURCE_ARN_PATTERN = (
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
KMS_KEY_ARN_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()"
SUPPORTED_SOURCES = (
    "Supported event sources: Amazon SQS, Amazon Kinesis, Amazon DynamoDB Streams, RabbitMQ "
    "(an Amazon MQ broker ARN or an amqp:// URL, with Queues) and redis-stream:NAME."
)
KAFKA_REFUSED = (
    "Sluice does not support Kafka event sources (Amazon MSK or self-managed Apache Kafka). "
    + SUPPORTED_SOURCES
)
DOCUMENTDB_REFUSED = "Sluice does not support Amazon DocumentDB event sources. " + SUPPORTED_SOURCES
UNRECOGNIZED = "Unrecognized event source."
UNSUPPORTED_DESTINATION = (
    "Unsupported DestinationConfig parameter for given event source mapping type."
)
INVALID_PATTERN = "Invalid filter pattern definition."
MAX_FILTERS_LIMIT = 10  # AWS's quota can be raised to 10, no further (spec §10.1)

_SLUICE_DESTINATION = re.compile(r"^(https?://\S+|redis-stream:\S+|amqps?://\S+|rq:\S+)$")
# The data key whose pattern must be an object on streams (spec §10.4).
_DATA_KEYS = {
    SourceKind.KINESIS: "data",
    SourceKind.REDIS_STREAM: "data",
    SourceKind.DYNAMODB: "dynamodb",
}


class Source(NamedTuple):
    kind: SourceKind
    fifo: bool = False


def classify_source(request: MappingRequest) -> Source:
    """The source type an EventSourceArn names (rule 2); Kafka and DocumentDB refused."""
    arn = request.event_source_arn
    if request.self_managed_event_source is not None:
        raise InvalidParameterValueError(KAFKA_REFUSED)
    if arn is None:
        raise InvalidParameterValueError(UNRECOGNIZED)
    if arn.startswith("redis-stream:") and re.fullmatch(r"redis-stream:\S+", arn):
        return Source(SourceKind.REDIS_STREAM)
    if re.fullmatch(r"amqps?://\S+", arn) and urlsplit(arn).hostname:
        return Source(SourceKind.RABBITMQ)
    if not re.fullmatch(EVENT_SOURCE_ARN_PATTERN, arn):
        raise invalid_value(
            "eventSourceArn",
            arn,
            "Member must satisfy regular expression pattern: " + EVENT_SOURCE_ARN_PATTERN,
        )
    _, _, service, _, _, resource = arn.split(":", 5)
    if service == "sqs":
        return Source(SourceKind.SQS, fifo=resource.endswith(".fifo"))
    if service == "kinesis" and resource.startswith("stream/"):
        return Source(SourceKind.KINESIS)
    if service == "dynamodb" and re.fullmatch(r"table/[^/]+/stream/.+", resource):
        return Source(SourceKind.DYNAMODB)
    if service == "dynamodb":
        raise InvalidParameterValueError(f"Stream not found: {arn}")
    if service == "mq" and resource.startswith("broker:"):
        return Source(SourceKind.RABBITMQ)
    if service == "kafka":
        raise InvalidParameterValueError(KAFKA_REFUSED)
    if service == "rds":
        raise InvalidParameterValueError(DOCUMENTDB_REFUSED)
    raise InvalidParameterValueError(UNRECOGNIZED)


def _check_on_failure(destination: str | None, destination_schemes: Collection[str]) -> None:
    if not destination:
        return
    if not (re.fullmatch(AWS_DESTINATION_PATTERN, destination)):
        if not (
            _SLUICE_DESTINATION.match(destination)
            or is_registered_destination(destination, destination_schemes)
        ):
            raise invalid_value(
                "destinationConfig.onFailure.destination",
                destination,
                "Member must satisfy regular expression pattern: " + AWS_DESTINATION_PATTERN,
            )
        return
    parts = destination.split(":")
    if parts[0] != "arn" or parts[2] not in ("sqs", "sns", "s3") or destination.endswith(".fifo"):
        raise InvalidParameterValueError(
            f"Unsupported OnFailure destination {destination}: an event source mapping sends "
            "discarded batches to a standard SQS queue, a standard SNS topic, an S3 bucket, or "
            "a Sluice destination (http(s)://, redis-stream:, amqp://, rq:)."
        )


def _check_starting_position(request: MappingRequest, kind: SourceKind, now: float) -> None:
    arn, position = request.event_source_arn, request.starting_position
    if position is None:
        raise InvalidParameterValueError(
            "1 validation error detected: Value null at 'startingPosition' failed to satisfy "
            "constraint: Member must not be null."
        )
    if position not in SOURCE_TYPES[kind].starting_positions:
        raise InvalidParameterValueError(f"Unsupported starting position for arn type: {arn}")
    timestamp = request.starting_position_timestamp
    if position == "AT_TIMESTAMP" and timestamp is None:
        raise InvalidParameterValueError(
            "StartingPositionTimestamp is required when StartingPosition is AT_TIMESTAMP."
        )
    if position != "AT_TIMESTAMP" and timestamp is not None:
        raise InvalidParameterValueError(
            "StartingPositionTimestamp can only be used with StartingPosition AT_TIMESTAMP."
        )
    if timestamp is not None and timestamp > now:
        raise InvalidParameterValueError("StartingPositionTimestamp must not be in the future.")


def check_source_rules(
    request: MappingRequest,
    source: Source,
    *,
    max_filters: int,
    now: float,
    destination_schemes: Collection[str] = (),
) -> None:
    """Rules 4-12 and 17, and which fields apply to the source type at all.

    ``destination_schemes``: the schemes the broker can deliver to (its registry's)."""
    source_type = SOURCE_TYPES[source.kind]
    for name in sorted(request.given() - source_type.fields):
        if name == "DestinationConfig":  # rule 1 (D): OnFailure on SQS and MQ
            raise InvalidParameterValueError(UNSUPPORTED_DESTINATION)
        raise InvalidParameterValueError(
            f"Unsupported {name} parameter for given event source mapping type."
        )
    batch_size = request.batch_size or source_type.batch_size_default
    window = request.maximum_batching_window_in_seconds
    if source.fifo and batch_size > 10:
        raise InvalidParameterValueError("Maximum batch size must be between 1 and 10 inclusive")
    if source.fifo and window:
        raise InvalidParameterValueError("Batching window is not supported for FIFO queues")
    if source.kind is SourceKind.SQS and batch_size > 10 and not window:
        raise InvalidParameterValueError(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
            "greater than 10"
        )
    if batch_size > source_type.batch_size_max:
        raise InvalidParameterValueError(
            f"BatchSize {batch_size} exceeds the max of {source_type.batch_size_max}"
        )
    check_filters(request, source.kind, max_filters)
    if source_type.stream:
        _check_starting_position(request, source.kind, now)
        age = request.maximum_record_age_in_seconds
        if age is not None and 0 <= age <= 59:
            raise InvalidParameterValueError(
                "MaximumRecordAgeInSeconds must be -1 or between 60 and 604800"
            )
        if request.destination_config and request.destination_config.on_failure:
            _check_on_failure(
                request.destination_config.on_failure.destination, destination_schemes
            )
    _check_settings(request, source)


def _check_settings(request: MappingRequest, source: Source) -> None:
    metrics = (request.metrics_config.metrics or []) if request.metrics_config else []
    if {"ErrorCount", "KafkaMetrics"} & set(metrics):
        raise InvalidParameterValueError(
            "Metrics ErrorCount and KafkaMetrics apply to Kafka event sources only."
        )
    kms = request.kms_key_arn
    if kms and not re.fullmatch(KMS_KEY_ARN_PATTERN, kms):
        raise invalid_value(
            "kMSKeyArn",
            kms,
            "Member must satisfy regular expression pattern: " + KMS_KEY_ARN_PATTERN,
        )
    if source.kind is SourceKind.RABBITMQ:
        if request.queues is None:
            raise InvalidParameterValueError(
                "1 validation error detected: Value null at 'queues' failed to satisfy "
                "constraint: Member must not be null."
            )
        for access in request.source_access_configurations or []:
            if access.type not in ("BASIC_AUTH", "VIRTUAL_HOST"):
                raise InvalidParameterValueError(
                    f"Unsupported SourceAccessConfigurations type {access.type} for a RabbitMQ "
                    "event source: use BASIC_AUTH or VIRTUAL_HOST."
                )
    pollers = request.provisioned_poller_config
    if pollers is not None and pollers.poller_group_name is not None:
        raise InvalidParameterValueError(
            "Unsupported PollerGroupName parameter for given event source mapping type."
        )
    low, high = _pollers(request)
    if low is None or high is None:
        return
    if request.scaling_config and request.scaling_config.maximum_concurrency is not None:
        raise InvalidParameterValueError(
            "ScalingConfig and ProvisionedPollerConfig cannot be used together."
        )
    if low < 2 or high < 2:
        raise InvalidParameterValueError(
            "ProvisionedPollerConfig MinimumPollers and MaximumPollers must be at least 2 for "
            "Amazon SQS."
        )
    if low > high:
        raise InvalidParameterValueError("MinimumPollers must not be greater than MaximumPollers.")


def _pollers(request: MappingRequest) -> tuple[int | None, int | None]:
    """Provisioned mode's (minimum, maximum), defaults filled; (None, None) when off."""
    pollers = request.provisioned_poller_config
    if pollers is None or (pollers.minimum_pollers is None and pollers.maximum_pollers is None):
        return None, None
    return pollers.minimum_pollers or 2, pollers.maximum_pollers or 200


def check_filters(request: MappingRequest, kind: SourceKind, max_filters: int) -> list[str]:
    """Rules 11-12: every pattern valid (§10.3), at most ``max_filters`` of them."""
    criteria = request.filter_criteria
    filters = (criteria.filters or []) if criteria else []
    for index, item in enumerate(filters):
        pattern = item.pattern
        if isinstance(pattern, str) and len(pattern) > 4096:
            raise invalid_value(
                f"filterCriteria.filters.{index + 1}.member.pattern",
                pattern,
                "Member must have length less than or equal to 4096",
            )
        validate_filter_pattern(pattern, data_key=_DATA_KEYS.get(kind))
    if len(filters) > max_filters:
        raise InvalidParameterValueError(f"Number of filters exceeds the limit of {max_filters}")
    return [str(item.pattern) for item in filters]


# -- filter patterns (§10.3; matching is the filter engine's) --------------------------------

_STRING_OPS = frozenset({"prefix", "suffix", "equals-ignore-case", "wildcard"})
_OPERATORS = _STRING_OPS | {"anything-but", "numeric", "exists", "cidr"}


def validate_filter_pattern(pattern: object, data_key: str | None = None) -> None:
    """Raise ``Invalid filter pattern definition.`` unless ``pattern`` is a valid pattern
    (the filter engine's own compiler decides, so validation and matching agree).

    ``data_key`` (streams: ``data`` / ``dynamodb``) must hold an object when present (§10.4).
    """
    if not isinstance(pattern, str):
        raise InvalidParameterValueError(INVALID_PATTERN)
    compile_pattern(pattern)
    if data_key is not None:
        document = json.loads(pattern)
        if data_key in document and not isinstance(document[data_key], dict):
            raise InvalidParameterValueError(INVALID_PATTERN)


def validate_create(
    body: Any, *, max_filters: int, now: float, destination_schemes: Collection[str] = ()
) -> MappingConfig:
    """A CreateEventSourceMapping body → the config with per-source defaults (spec §7.2)."""
    request = parse_request(body)
    if request.destination_config and request.destination_config.on_success is not None:
        raise InvalidParameterValueError(UNSUPPORTED_DESTINATION)  # rule 1, checked first
    source = classify_source(request)
    check_source_rules(
        request,
        source,
        max_filters=max_filters,
        now=now,
        destination_schemes=destination_schemes,
    )
    return build_config(request, source, max_filters)


def validate_update(
    existing: MappingConfig,
    body: Any,
    *,
    max_filters: int,
    now: float,
    destination_schemes: Collection[str] = (),
) -> MappingConfig:
    """An UpdateEventSourceMapping body, merged over ``existing``, validated as a whole."""
    if not isinstance(body, dict):
        raise ValidationError("1 validation error detected: the request body must be an object")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
        raise InvalidParameterValueError(
            f"Unknown parameter {unknown[0]} for UpdateEventSourceMapping."
        )
    current = existing.request_shape()
    given = {k: v for k, v in body.items() if v is not None}
    for key in sorted(IMMUTABLE_FIELDS & set(given)):
        if key == "Tags" or given[key] != current.get(key):
            raise InvalidParameterValueError(
                f"{key} cannot be changed by UpdateEventSourceMapping."
            )
    if "SourceAccessConfigurations" in given:
        before = [a for a in current.get("SourceAccessConfigurations", []) if _vhost(a)]
        after = [a for a in given["SourceAccessConfigurations"] or [] if _vhost(a)]
        if before != after:
            raise InvalidParameterValueError("The VIRTUAL_HOST configuration cannot be updated.")
    return validate_create(
        {**current, **given},
        max_filters=max_filters,
        now=now,
        destination_schemes=destination_schemes,
    )


def _vhost(access: Any) -> bool:
    return isinstance(access, dict) and access.get("Type") == "VIRTUAL_HOST"


def build_config(request: MappingRequest, source: Source, max_filters: int) -> MappingConfig:
    """Apply the per-source defaults of spec §7.2 to a valid request."""
    source_type = SOURCE_TYPES[source.kind]
    ref = parse_function_name(request.function_name)
    stream = source_type.stream
    low, high = _pollers(request)
    destination = request.destination_config.on_failure if request.destination_config else None
    return MappingConfig.model_validate(
        {
            "event_source_arn": request.event_source_arn,
            "source_kind": source.kind,
            "fifo": source.fifo,
            "function_name": ref.name,
            "qualifier": ref.qualifier,
            "enabled": True if request.enabled is None else request.enabled,
            "batch_size": request.batch_size or source_type.batch_size_default,
            "maximum_batching_window_in_seconds": _or(
                request.maximum_batching_window_in_seconds, source_type.window_default_s
            ),
            "parallelization_factor": _or(request.parallelization_factor, 1, stream),
            "starting_position": request.starting_position,
            "starting_position_timestamp": request.starting_position_timestamp,
            "on_failure_destination": (destination.destination or None) if destination else None,
            "maximum_record_age_in_seconds": _or(request.maximum_record_age_in_seconds, -1, stream),
            "bisect_batch_on_function_error": _or(
                request.bisect_batch_on_function_error, False, stream
            ),
            "maximum_retry_attempts": _or(request.maximum_retry_attempts, -1, stream),
            "tumbling_window_in_seconds": _or(request.tumbling_window_in_seconds, 0, stream),
            "function_response_types": _or(
                request.function_response_types, [], source.kind is not SourceKind.RABBITMQ
            ),
            "filter_patterns": check_filters(request, source.kind, max_filters),
            "kms_key_arn": request.kms_key_arn or None,
            "metrics": (request.metrics_config.metrics or []) if request.metrics_config else [],
            "maximum_concurrency": (
                request.scaling_config.maximum_concurrency if request.scaling_config else None
            ),
            "provisioned_poller_config": (
                None if low is None else {"minimum_pollers": low, "maximum_pollers": high}
            ),
            "queues": request.queues,
            "source_access_configurations": request.source_access_configurations,
            "tags": request.tags or {},
        }
    )


def _or(value: Any, default: Any, applies: bool = True) -> Any:
    """``value``, else ``default`` where the field applies to the source type, else None."""
    if not applies:
        return None
    return default if value is None else value
