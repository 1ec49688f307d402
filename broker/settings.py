"""Process settings: flags > environment (``SLUICE_*``) > TOML file > defaults.

Built once by the entry point (or the embedding code) and passed down; nothing else reads
the environment. The model is the one description of every setting: ``sluice serve`` makes
its flags from it (:mod:`broker.cli`) and the README's reference is rendered from it
(:mod:`broker.config_reference`).
"""

from __future__ import annotations

from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from broker import defaults

ENV_PREFIX = "SLUICE_"
SCALAR_TYPES = (bool, int, float, str)  # a setting of one of these is one value, not a table


class FunctionSpec(BaseModel):
    """``[functions.NAME]`` in TOML; ``--function NAME=TARGET`` on the command line."""

    model_config = ConfigDict(extra="forbid")

    target: str
    timeout_s: int = defaults.FUNCTION_TIMEOUT_S
    memory_mb: int = defaults.FUNCTION_MEMORY_MB
    reserved_concurrency: int | None = None
    dead_letter_target: str | None = None
    aliases: dict[str, str] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Everything a Sluice process is told. Each field is a setting with one name everywhere:
    the TOML key, ``SLUICE_<NAME>`` in the environment and ``--name-with-dashes`` on
    ``sluice serve``; its ``description`` is the help text and the README's reference."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="Redis URL (`redis://host:port/db`); unset means the embedded in-process "
        "Redis, for `sluice demo` only",
    )
    host: str = Field(default=defaults.API_HOST, description="address the API listens on")
    port: int = Field(
        default=defaults.API_PORT,
        description="port of the Lambda-compatible API; 0 picks a free one",
    )
    region: str = Field(default=defaults.REGION, description="AWS region used in ARNs")
    account_id: str = Field(default=defaults.ACCOUNT_ID, description="account id used in ARNs")
    key_prefix: str = Field(
        default=defaults.KEY_PREFIX,
        description="prefix of every Redis key (keys carry a `{function}` hash tag, so Redis "
        "Cluster works)",
    )

    retry_base_delay: float = Field(
        default=defaults.RETRY_BASE_DELAY_S,
        ge=0,
        description="seconds; function-error retry n waits n times this (AWS: 60 s, 120 s)",
    )
    throttle_base_delay: float = Field(
        default=defaults.THROTTLE_BASE_DELAY_S,
        ge=0,
        description="seconds; throttles and system errors back off from this, doubling "
        "(±10 % jitter) up to `throttle_max_delay`",
    )
    throttle_max_delay: float = Field(
        default=defaults.THROTTLE_MAX_DELAY_S,
        ge=0,
        description="seconds; the cap of the throttle and system-error back-off",
    )
    visibility_grace_s: float = Field(
        default=defaults.VISIBILITY_GRACE_S,
        gt=0,
        description="an in-flight event's lease is the function timeout + this, extended while "
        "it runs",
    )

    concurrency: int = Field(
        default=defaults.CONCURRENCY,
        ge=1,
        description="events one process holds at once; at the limit it claims no more "
        "(backpressure)",
    )
    worker_processes: int = Field(
        default=defaults.WORKER_PROCESSES,
        ge=0,
        description="processes running `python:` handlers; 0 means one per CPU",
    )
    http_error_bodies: bool = Field(
        default=False,
        description="`http(s)://` targets: a 2xx answer without `X-Amz-Function-Error` whose "
        "body is a Lambda error object, or `Task timed out after N seconds`, is a function "
        "error; for the Runtime Interface Emulator, which sends no error header",
    )
    claim_batch: int = Field(
        default=defaults.CLAIM_BATCH,
        ge=1,
        description="most events one claim takes from one function",
    )
    poll_interval_s: float = Field(
        default=defaults.POLL_INTERVAL_S,
        gt=0,
        description="idle re-check of delayed retries and of other processes' work",
    )
    max_queue_depth: int = Field(
        default=defaults.MAX_QUEUE_DEPTH,
        ge=1,
        description="queued events per function; past it an Event invoke answers "
        "`TooManyRequestsException`",
    )
    maxmemory_admission_ratio: float = Field(
        default=defaults.MAXMEMORY_ADMISSION_RATIO,
        gt=0,
        le=1,
        description="refuse new events when Redis `used_memory` passes this share of `maxmemory`",
    )
    async_payload_limit_bytes: int = Field(
        default=defaults.ASYNC_PAYLOAD_LIMIT_BYTES,
        description="largest Event invoke payload (262144 emulates AWS before Oct 2025)",
    )

    delivery_retries: int = Field(
        default=defaults.DELIVERY_RETRIES,
        ge=1,
        description="attempts of one destination delivery before it is dead-lettered",
    )
    delivery_backoff_s: float = Field(
        default=0.5,
        ge=0,
        description="first wait between a delivery's attempts; doubles, with jitter, up to 30 s",
    )
    delivery_lease_s: float = Field(
        default=defaults.DELIVERY_LEASE_S,
        gt=0,
        description="an outcome a process has not delivered after this long (it died) is taken "
        "over by another",
    )
    dead_letter_max_age_s: float = Field(
        default=defaults.DEAD_LETTER_MAX_AGE_S,
        gt=0,
        description="how long Sluice's dead-letter store keeps an entry (1209600 s: 14 days)",
    )
    dead_letter_max_count: int = Field(
        default=defaults.DEAD_LETTER_MAX_COUNT,
        ge=1,
        description="the most entries Sluice's dead-letter store keeps per function",
    )
    eventbridge_source: str = Field(
        default="lambda",
        description="`source` of events sent to EventBridge destinations (AWS's guide now "
        "says `aws.lambda`)",
    )
    rq_redis_url: str | None = Field(
        default=None,
        description="where `rq:` destinations enqueue; unset means Sluice's Redis (rq's keys "
        "have no hash tags: give it a plain Redis under Cluster)",
    )
    redis_stream_maxlen: int = Field(
        default=defaults.REDIS_STREAM_MAXLEN,
        ge=1,
        description="approximate `MAXLEN` of `redis-stream:` destinations",
    )
    drain_timeout_s: float = Field(
        default=defaults.DRAIN_TIMEOUT_S,
        ge=0,
        description=(
            "SIGTERM's one drain budget: requests in progress, a background replay, pollers' "
            "batches, in-flight events and their deliveries"
        ),
    )

    check_event_sources: bool = Field(
        default=True,
        description="on CreateEventSourceMapping, ask AWS (boto3, `AWS_ENDPOINT_URL`) that the "
        "SQS queue or Kinesis / DynamoDB stream exists and that a queue's visibility timeout "
        "covers the function timeout; if AWS cannot be reached the mapping is accepted with "
        "a warning",
    )
    run_pollers: bool = Field(
        default=True,
        description="poll the event sources of enabled mappings (in a dispatching broker: "
        "`serve`, the embedded library)",
    )
    poller_refresh_s: float = Field(
        default=1.0,
        gt=0,
        description="how often each process looks for created, changed, disabled and deleted "
        "mappings, and renews its leases",
    )
    poller_lease_ttl_s: float = Field(
        default=10.0,
        gt=0,
        description="how long a dead process keeps its mappings before another takes them",
    )
    sqs_wait_time_s: int = Field(
        default=2,
        ge=0,
        le=20,
        description="long-poll wait per SQS `ReceiveMessage`, 0 to 20 (AWS: 20; shorter keeps "
        "disable, delete and shutdown prompt)",
    )
    sqs_default_concurrency: int = Field(
        default=5,
        ge=1,
        description="receive-invoke loops per SQS mapping without "
        "`ScalingConfig.MaximumConcurrency`",
    )
    stream_read_block_s: float = Field(
        default=1.0,
        gt=0,
        description="longest `XREAD BLOCK` of a `redis-stream:` source (a stop is noticed "
        "between reads)",
    )
    stream_shard_list_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="Kinesis / DynamoDB Streams: how often each mapping's shards are listed "
        "again (at once when a shard ends); a listing slower than half a lease is abandoned "
        "for the last one",
    )
    stream_poll_interval_s: float = Field(
        default=0.25,
        gt=0,
        description="Kinesis / DynamoDB Streams: the pause after a GetRecords that found "
        "nothing (AWS polls DynamoDB about 4 times a second)",
    )
    stream_retry_backoff_s: float = Field(
        default=1.0,
        ge=0,
        description="wait before the first retry of a failed stream batch; it doubles with "
        "each retry (AWS: 1 s)",
    )
    stream_retry_backoff_max_s: float = Field(
        default=60.0,
        ge=0,
        description="the cap of the stream batch retry wait (AWS: 60 s)",
    )
    amqp_broker_urls: dict[str, str] = Field(
        default_factory=dict,
        description="Amazon MQ broker ARN -> `amqp(s)://user:pass@host:port/vhost`, for "
        "RabbitMQ mappings whose source is an ARN; a mapping whose ARN is missing here "
        "reports `PROBLEM: No URL for …` and does not poll",
    )
    amqp_reconnect_max_s: float = Field(
        default=5.0,
        gt=0,
        description="while RabbitMQ is unreachable (or the queue missing) a RabbitMQ poller "
        "retries from 0.5 s, doubling up to this",
    )
    amqp_requeue_failed: bool = Field(
        default=False,
        description="reject failed RabbitMQ batches with requeue, so a quorum queue's "
        "`x-delivery-limit` retries and dead-letters them (otherwise: without requeue, "
        "straight to the dead-letter exchange)",
    )
    strict: bool = Field(
        default=False,
        description="refuse to start on a Redis without AOF or with an evicting "
        "`maxmemory-policy` (otherwise: warn)",
    )
    log_format: str = Field(
        default="auto",
        description="`auto` (console on a terminal, else JSON), `json` or `console`",
    )
    log_level: str = Field(default="info", description="`debug`, `info`, `warning` or `error`")
    functions: dict[str, FunctionSpec] = Field(
        default_factory=dict,
        description="functions to create or update at start-up, by name: `target`, "
        "`timeout_s`, `memory_mb`, `reserved_concurrency`, `dead_letter_target`, `aliases`",
    )

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Settings:
        """Settings from flags (non-None keyword arguments), env, then ``config_file``."""
        given = {k: v for k, v in flags.items() if v is not None}
        if config_file is None:
            return cls(**given)
        toml_cls = type(
            "TomlSettings",
            (cls,),
            {"model_config": SettingsConfigDict(**{**cls.model_config, "toml_file": config_file})},
        )
        settings: Settings = toml_cls(**given)
        return settings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def env_var(name: str) -> str:
    """The environment variable of setting ``name``: ``SLUICE_RETRY_BASE_DELAY``."""
    return f"{ENV_PREFIX}{name.upper()}"


def scalar_settings() -> dict[str, type[Any]]:
    """Each setting that holds one value, with its type (``str`` for ``str | None``); the
    others are tables (``functions``, ``amqp_broker_urls``), given in TOML or as JSON."""
    scalars: dict[str, type[Any]] = {}
    for name, field in Settings.model_fields.items():
        kind = _without_none(field.annotation)
        if kind in SCALAR_TYPES:
            scalars[name] = kind
    return scalars


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        kinds = [arg for arg in get_args(annotation) if arg is not NoneType]
        if len(kinds) == 1:
            return kinds[0]
    return annotation
