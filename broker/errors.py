"""Sluice's errors.

::

    SluiceError
    ├── ApiError                      AWS-shaped; carries code, HTTP status and message
    │   ├── ResourceNotFoundError     404 ResourceNotFoundException
    │   ├── ResourceConflictError     409 ResourceConflictException
    │   ├── InvalidParameterValueError 400 InvalidParameterValueException
    │   ├── ValidationError           400 ValidationException
    │   ├── InvalidRequestContentError 400 InvalidRequestContentException
    │   ├── RequestTooLargeError      413 RequestEntityTooLargeException
    │   ├── TooManyRequestsError      429 TooManyRequestsException (retriable)
    │   └── ServiceError              500 ServiceException (retriable)
    ├── ConfigError                   bad settings or TOML
    └── DeliveryError                 a destination could not take a record
        └── PermanentDeliveryError    ... and retrying cannot help

``retriable`` on each class tells retry code whether trying again may succeed.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SluiceError(Exception):
    retriable: ClassVar[bool] = False


class ApiError(SluiceError):
    """An error with AWS's shape: ``x-amzn-ErrorType`` = ``code`` and a JSON message."""

    code: ClassVar[str] = "ServiceException"
    status: ClassVar[int] = 500
    message_key: ClassVar[str] = "message"  # AWS spells it "Message" on some shapes

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"Type": "User", self.message_key: self.message, **self.extra}


class ResourceNotFoundError(ApiError):
    code = "ResourceNotFoundException"
    status = 404
    message_key = "Message"


class ResourceConflictError(ApiError):
    code = "ResourceConflictException"
    status = 409


class InvalidParameterValueError(ApiError):
    code = "InvalidParameterValueException"
    status = 400


class ValidationError(ApiError):
    code = "ValidationException"
    status = 400


class InvalidRequestContentError(ApiError):
    code = "InvalidRequestContentException"
    status = 400


class RequestTooLargeError(ApiError):
    code = "RequestEntityTooLargeException"
    status = 413


RATE_EXCEEDED = "Rate Exceeded."  # AWS's text for every throttle


class TooManyRequestsError(ApiError):
    code = "TooManyRequestsException"
    status = 429
    retriable = True


class ServiceError(ApiError):
    code = "ServiceException"
    status = 500
    message_key = "Message"
    retriable = True


class ConfigError(SluiceError):
    pass


class DeliveryError(SluiceError):
    retriable = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentDeliveryError(DeliveryError):
    retriable = False
