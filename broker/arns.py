"""Function names, partial and full ARNs, and qualifiers (spec §1.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.errors import InvalidParameterValueError, ValidationError
from broker.models import LATEST

_FULL = re.compile(
    r"^arn:aws[a-zA-Z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:"
    r"(?P<name>[a-zA-Z0-9-_]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$"
)
_PARTIAL = re.compile(
    r"^(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9-_]+)"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$"
)
_NAME = re.compile(r"^(?P<name>[a-zA-Z0-9-_]{1,64})(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9-_]+))?$")
QUALIFIER_RE = re.compile(r"^(\$LATEST|[a-zA-Z0-9-_]{1,128})$")


def execution_role_arn(account_id: str) -> str:
    """The execution role every function reports (GetFunction's ``Role``, Kinesis records'
    ``invokeIdentityArn``): Sluice runs functions with no IAM role of their own."""
    return f"arn:aws:iam::{account_id}:role/sluice"


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None


def parse_function_name(value: str, qualifier: str | None = None) -> FunctionRef:
    """Split a name, ``name:qualifier``, partial or full ARN; reconcile with ``Qualifier``."""
    if not 1 <= len(value) <= 256:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy "
            "constraint: Member must have length less than or equal to 256"
        )
    match = _FULL.match(value) or _PARTIAL.match(value) or _NAME.match(value)
    if match is None:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?"
            r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
        )
    embedded = match.group("qualifier")
    if qualifier is not None and not QUALIFIER_RE.match(qualifier):
        raise ValidationError(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy "
            r"constraint: Member must satisfy regular expression pattern: "
            r"(|[a-zA-Z0-9$_-]+)"
        )
    if embedded and qualifier and embedded != qualifier:
        raise InvalidParameterValueError(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(name=match.group("name"), qualifier=embedded or qualifier)


def function_arn(region: str, account_id: str, name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{region}:{account_id}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def qualified_arn(region: str, account_id: str, name: str, qualifier: str | None) -> str:
    return function_arn(region, account_id, name, qualifier or LATEST)
