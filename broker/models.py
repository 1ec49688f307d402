"""pydantic models shared across Sluice: functions, event envelopes and invoke results.

AWS field names stay AWS's at the API edge through aliases; inside, names are snake_case.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from broker import defaults

SCHEMA_VERSION = 1
LATEST = "$LATEST"
FUNCTION_NAME_RE = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")

Outcome = Literal["success", "function_error", "throttle", "system_error"]
Condition = Literal["Success", "RetriesExhausted", "EventAgeExceeded", "ZeroReservedConcurrency"]


class PublishedVersion(BaseModel):
    """What ``PublishVersion`` froze: later changes to ``$LATEST`` do not touch it."""

    model_config = ConfigDict(extra="forbid")

    target: str
    timeout_s: int
    memory_mb: int
    description: str = ""
    last_modified: float = 0.0


class FunctionConfig(BaseModel):
    """A function Sluice can call: its target and Lambda-like settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=FUNCTION_NAME_RE.pattern)
    target: str
    timeout_s: int = Field(default=defaults.FUNCTION_TIMEOUT_S, ge=1, le=900)
    memory_mb: int = Field(default=defaults.FUNCTION_MEMORY_MB, ge=128, le=10_240)
    reserved_concurrency: int | None = Field(default=None, ge=0)
    dead_letter_target: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)  # alias -> version
    # Versions named by configuration (TOML aliases) run the current configuration;
    # versions made by PublishVersion are frozen in ``published``.
    versions: list[str] = Field(default_factory=list)
    published: dict[str, PublishedVersion] = Field(default_factory=dict)
    description: str = ""
    last_modified: float = 0.0
    alias_descriptions: dict[str, str] = Field(default_factory=dict)

    def resolve(self, qualifier: str) -> str | None:
        """The version a qualifier runs (``$LATEST``, digits), or None if unknown."""
        if qualifier == LATEST:
            return LATEST
        if qualifier in self.aliases:
            return self.aliases[qualifier]
        if self.has_version(qualifier):
            return qualifier
        return None

    def has_version(self, version: str) -> bool:
        return (
            version == LATEST
            or version in self.published
            or version in self.versions
            or version in self.aliases.values()
        )

    def effective(self, version: str) -> tuple[str, int, int]:
        """(target, timeout_s, memory_mb) of a version."""
        frozen = self.published.get(version)
        if frozen is None:
            return self.target, self.timeout_s, self.memory_mb
        return frozen.target, frozen.timeout_s, frozen.memory_mb


class InvokeResult(BaseModel):
    """What one attempt produced. A function error is a result, not an exception."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    status_code: int = 200
    payload: str | None = None  # response body as text (the error object on errors)
    function_error: str | None = None  # X-Amz-Function-Error value, verbatim
    executed_version: str | None = None
    error_message: str = ""  # for rejections (throttle, system error): the reason
    retry_after_s: float | None = None

    @property
    def executed(self) -> bool:
        return self.outcome in ("success", "function_error")


class Envelope(BaseModel):
    """A queued asynchronous event with its retry state (spec §2.1)."""

    model_config = ConfigDict(extra="forbid")

    v: int = SCHEMA_VERSION
    request_id: str
    function: str
    qualifier: str = LATEST
    function_arn: str  # qualified ARN of what was invoked
    payload: str  # the event JSON text, as received
    enqueued_at: float  # epoch seconds; event age is measured from here
    executed_attempts: int = 0
    function_error_retries: int = 0
    consecutive_throttles: int = 0
    not_before: float = 0.0
    last_result: InvokeResult | None = None  # last attempt that ran the function
    last_rejection: InvokeResult | None = None  # last throttle or system error
    replay_of: str | None = None  # request id of the dead-letter entry this event replays


class DestinationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    destination: str | None = Field(default=None, alias="Destination")


class DestinationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    on_success: DestinationSettings = Field(default_factory=DestinationSettings, alias="OnSuccess")
    on_failure: DestinationSettings = Field(default_factory=DestinationSettings, alias="OnFailure")


class EventInvokeConfig(BaseModel):
    """Per-qualifier async settings. ``None`` means "not set": behaves as the default and is
    omitted from API responses (spec §4.2)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    maximum_retry_attempts: int | None = Field(default=None, alias="MaximumRetryAttempts")
    maximum_event_age_in_seconds: int | None = Field(default=None, alias="MaximumEventAgeInSeconds")
    destination_config: DestinationConfig = Field(
        default_factory=DestinationConfig, alias="DestinationConfig"
    )
    last_modified: float = Field(default=0.0, alias="LastModified")

    @property
    def retries(self) -> int:
        if self.maximum_retry_attempts is None:
            return defaults.MAXIMUM_RETRY_ATTEMPTS
        return self.maximum_retry_attempts

    @property
    def max_age_s(self) -> int:
        if self.maximum_event_age_in_seconds is None:
            return defaults.MAXIMUM_EVENT_AGE_S
        return self.maximum_event_age_in_seconds
