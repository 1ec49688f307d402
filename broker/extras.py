"""Optional dependencies: the core installs without boto3 and kombu; a feature that needs one
imports it on first use through :func:`require`, which names the extra to install.

=========  ========  ==================================================================
extra      brings    needed by
=========  ========  ==================================================================
``aws``    boto3     ``lambda:`` targets; SQS, SNS, EventBridge, Lambda and S3
                     destinations; SQS, Kinesis and DynamoDB Streams sources (their
                     pollers, their existence checks, re-reads); ``sluice sqs`` and
                     ``sluice dlq replay --from-sqs``
``amqp``   kombu     ``amqp(s)://`` destinations; RabbitMQ sources
=========  ========  ==================================================================

:class:`MissingExtraError` is an ``ImportError`` and stays one only at import-like places;
each caller turns it into the error its path already has, so the user sees the message
where they look: a destination's ``PermanentDeliveryError`` (the event is kept as a
dead letter), a mapping's ``InvalidParameterValueException``, an invoker's system error,
a CLI refusal.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["AMQP", "AWS", "MissingExtraError", "load", "require"]

DISTRIBUTION = "sluice-broker"
AWS = ("boto3", "aws")  # (module, extra) pairs for require(*AWS, feature)
AMQP = ("kombu", "amqp")


class MissingExtraError(ImportError):
    """``feature`` needs ``module``, which is not installed; the message says which extra
    brings it: ``<feature> needs boto3: pip install 'sluice-broker[aws]'``."""

    def __init__(self, module: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs {module}: pip install '{DISTRIBUTION}[{extra}]'", name=module
        )
        self.module = module
        self.extra = extra
        self.feature = feature


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (cached after the first time), or raise :class:`MissingExtraError`
    naming ``extra``. Any ``ImportError`` counts: boto3 without botocore cannot run either."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra, feature) from exc


def load(path: str, name: str, needs: tuple[str, str] | None, feature: str) -> Any:
    """``path.name``, imported on first use, after checking ``needs`` (module, extra): a
    missing extra is :class:`MissingExtraError` naming ``feature``."""
    if needs is not None:
        require(*needs, feature)
    return getattr(importlib.import_module(path), name)
