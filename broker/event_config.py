"""Validation of event-invoke configs and function dead-letter targets (spec §3, §4.4).

Input is AWS-shaped (``MaximumRetryAttempts``, ``DestinationConfig``...), as the API and the
library receive it; errors carry AWS's codes and texts.

Destination strings: AWS's pattern, Sluice's own strings (DESIGN: Contracts), and
``SCHEME:...`` for any scheme an embedder registered with the broker's destination registry
(``destination_schemes``, passed in by the caller; the built-in schemes keep their rules).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from typing import Any

from broker.errors import InvalidParameterValueError, ValidationError
from broker.models import DestinationConfig, DestinationSettings, EventInvokeConfig

AWS_DESTINATION_PATTERN = (
    r"^$|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:"
    r"([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
_AWS_DESTINATION = re.compile(AWS_DESTINATION_PATTERN)
# Sluice accepts these beyond AWS's pattern, on purpose (DESIGN: Contracts).
_SLUICE_DESTINATION = re.compile(r"^(https?://\S+|redis-stream:[^\s]+|amqp://\S+|rq:\S+)$")
_DLQ_PATTERN = r"(arn:(aws[a-zA-Z-]*)?:[a-z0-9-.]+:.*)|()"
# ``SCHEME:rest`` with an RFC 3986 scheme; the scheme decides which destination delivers.
_REGISTERED_DESTINATION = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):\S+$")
# Schemes whose strings have rules of their own (above, or AWS's services as ARNs): a
# registered factory for one of them serves it but cannot loosen its validation.
BUILTIN_DESTINATION_SCHEMES = frozenset(
    {"arn", "kafka", "http", "https", "redis-stream", "amqp", "amqps", "rq"}
    | {"sqs", "sns", "events", "lambda", "s3"}
)
_ARN_SERVICE = re.compile(r"^arn:aws[a-zA-Z0-9-]*:(?P<service>[a-zA-Z0-9-]+):")
_LAMBDA_NAME = re.compile(r"^arn:aws[a-zA-Z0-9-]*:lambda:[^:]*:[^:]*:function:(?P<name>[^:]+)")

ON_SUCCESS_SERVICES = {"sqs", "sns", "lambda", "events"}
ON_FAILURE_SERVICES = ON_SUCCESS_SERVICES | {"s3"}


def range_error(value: object, member: str, low: int, high: int) -> ValidationError | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return ValidationError(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            "constraint: Member must be an integer"
        )
    if value > high:
        bound = f"less than or equal to {high}"
    elif value < low:
        bound = f"greater than or equal to {low}"
    else:
        return None
    return ValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must have value {bound}"
    )


def is_registered_destination(value: str, destination_schemes: Collection[str]) -> bool:
    """Is ``value`` ``SCHEME:...`` for a registered scheme that is not a built-in one?"""
    match = _REGISTERED_DESTINATION.match(value)
    if match is None:
        return False
    scheme = match.group("scheme").lower()
    return scheme in destination_schemes and scheme not in BUILTIN_DESTINATION_SCHEMES


def _destination(
    config: dict[str, Any] | None, side: str, destination_schemes: Collection[str]
) -> str | None:
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValidationError(f"1 validation error detected: '{side}' must be an object")
    value = config.get("Destination")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 350:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'destinationConfig."
            f"{side[0].lower()}{side[1:]}.destination' failed to satisfy constraint: "
            "Member must have length less than or equal to 350"
        )
    if not (
        _AWS_DESTINATION.fullmatch(value)
        or _SLUICE_DESTINATION.match(value)
        or is_registered_destination(value, destination_schemes)
    ):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'destinationConfig."
            f"{side[0].lower()}{side[1:]}.destination' failed to satisfy constraint: Member must "
            f"satisfy regular expression pattern: {AWS_DESTINATION_PATTERN}"
        )
    return value


def _render(side: str, destination: str | None) -> str:
    return f"{side}(destination={destination})" if destination else "null"


def validate_event_invoke_config(
    body: dict[str, Any],
    *,
    function_name: str,
    function_exists: Callable[[str], bool],
    now: float,
    destination_schemes: Collection[str] = (),
) -> EventInvokeConfig:
    """Check a Put/Update body and build the config; raise AWS's error for the first fault.

    ``function_exists`` answers whether a Lambda destination names a known function;
    ``destination_schemes`` are the schemes the broker can deliver to (its registry's).
    """
    retries = body.get("MaximumRetryAttempts")
    max_age = body.get("MaximumEventAgeInSeconds")
    dest_body = body.get("DestinationConfig")
    if retries is None and max_age is None and dest_body is None:
        raise InvalidParameterValueError(
            "You must specify at least one of error handling or destination setting."
        )
    if retries is not None and (err := range_error(retries, "maximumRetryAttempts", 0, 2)):
        raise err
    if max_age is not None and (
        err := range_error(max_age, "maximumEventAgeInSeconds", 60, 21_600)
    ):
        raise err
    on_success = on_failure = None
    if dest_body is not None:
        if not isinstance(dest_body, dict):
            raise ValidationError(
                "1 validation error detected: DestinationConfig must be an object"
            )
        on_success = _destination(dest_body.get("OnSuccess"), "OnSuccess", destination_schemes)
        on_failure = _destination(dest_body.get("OnFailure"), "OnFailure", destination_schemes)
    for _side, destination, allowed in (
        ("OnSuccess", on_success, ON_SUCCESS_SERVICES),
        ("OnFailure", on_failure, ON_FAILURE_SERVICES),
    ):
        if destination is None:
            continue
        service = _ARN_SERVICE.match(destination)
        if service is None:
            continue  # a Sluice or registered destination string (http, redis-stream, ...)
        if service.group("service") not in allowed:
            raise InvalidParameterValueError(
                "The provided destination config DestinationConfig("
                f"onSuccess={_render('OnSuccess', on_success)}, "
                f"onFailure={_render('OnFailure', on_failure)}) is invalid."
            )
        lambda_name = _LAMBDA_NAME.match(destination)
        if service.group("service") == "lambda":
            if lambda_name is None or not function_exists(lambda_name.group("name")):
                raise InvalidParameterValueError(f"The destination ARN {destination} is invalid.")
            if lambda_name.group("name") == function_name:
                raise InvalidParameterValueError(
                    "You can't specify the function as a destination for itself."
                )
    return EventInvokeConfig(
        maximum_retry_attempts=retries,
        maximum_event_age_in_seconds=max_age,
        destination_config=DestinationConfig(
            on_success=DestinationSettings(destination=on_success),
            on_failure=DestinationSettings(destination=on_failure),
        ),
        last_modified=round(now, 3),
    )


def merge_update(existing: EventInvokeConfig, body: dict[str, Any]) -> dict[str, Any]:
    """The body an Update amounts to: supplied top-level settings over the existing ones.

    A supplied ``DestinationConfig`` replaces both sides (spec §4.3 (D))."""
    merged = existing.model_dump(by_alias=True, exclude={"last_modified"})
    merged = {k: v for k, v in merged.items() if v is not None}
    for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds", "DestinationConfig"):
        if key in body and body[key] is not None:
            merged[key] = body[key]
    return merged


def validate_dead_letter_target(
    target: str | None, destination_schemes: Collection[str] = ()
) -> str | None:
    """A function's ``DeadLetterConfig.TargetArn``: an ARN (SQS or SNS) or empty to remove.

    Sluice also accepts its own destination strings here (DESIGN: Contracts), and those of
    the registered ``destination_schemes``."""
    if target is None or target == "":
        return None
    if (
        re.fullmatch(_DLQ_PATTERN, target)
        or _SLUICE_DESTINATION.match(target)
        or is_registered_destination(target, destination_schemes)
    ):
        return target
    raise ValidationError(
        f"1 validation error detected: Value '{target}' at 'deadLetterConfig.targetArn' failed "
        f"to satisfy constraint: Member must satisfy regular expression pattern: {_DLQ_PATTERN}"
    )


def response_body(config: EventInvokeConfig, function_arn: str) -> dict[str, Any]:
    """The API shape: unset fields omitted; ``DestinationConfig`` always with both sides."""
    body: dict[str, Any] = {"LastModified": config.last_modified, "FunctionArn": function_arn}
    if config.maximum_retry_attempts is not None:
        body["MaximumRetryAttempts"] = config.maximum_retry_attempts
    if config.maximum_event_age_in_seconds is not None:
        body["MaximumEventAgeInSeconds"] = config.maximum_event_age_in_seconds
    body["DestinationConfig"] = config.destination_config.model_dump(
        by_alias=True, exclude_none=True
    )
    return body
