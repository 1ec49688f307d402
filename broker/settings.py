"""Process settings: flags > environment (``SLUICE_*``) > TOML file > defaults.

Built once by the entry point (or the embedding code) and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from broker import defaults


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
    model_config = SettingsConfigDict(env_prefix="SLUICE_", extra="forbid")

    redis_url: str | None = None  # None: the embedded in-process Redis (demo only)
    host: str = defaults.API_HOST
    port: int = defaults.API_PORT
    region: str = defaults.REGION
    account_id: str = defaults.ACCOUNT_ID
    key_prefix: str = defaults.KEY_PREFIX

    retry_base_delay: float = Field(default=defaults.RETRY_BASE_DELAY_S, ge=0)
    throttle_base_delay: float = Field(default=defaults.THROTTLE_BASE_DELAY_S, ge=0)
    throttle_max_delay: float = Field(default=defaults.THROTTLE_MAX_DELAY_S, ge=0)
    visibility_grace_s: float = Field(default=defaults.VISIBILITY_GRACE_S, gt=0)

    concurrency: int = Field(default=defaults.CONCURRENCY, ge=1)
    worker_processes: int = Field(default=defaults.WORKER_PROCESSES, ge=0)
    claim_batch: int = Field(default=defaults.CLAIM_BATCH, ge=1)
    poll_interval_s: float = Field(default=defaults.POLL_INTERVAL_S, gt=0)
    max_queue_depth: int = Field(default=defaults.MAX_QUEUE_DEPTH, ge=1)
    maxmemory_admission_ratio: float = Field(default=defaults.MAXMEMORY_ADMISSION_RATIO, gt=0, le=1)
    async_payload_limit_bytes: int = defaults.ASYNC_PAYLOAD_LIMIT_BYTES

    delivery_retries: int = Field(default=defaults.DELIVERY_RETRIES, ge=1)
    delivery_backoff_s: float = Field(default=0.5, ge=0)
    delivery_lease_s: float = Field(default=defaults.DELIVERY_LEASE_S, gt=0)
    dead_letter_max_age_s: float = Field(default=defaults.DEAD_LETTER_MAX_AGE_S, gt=0)
    dead_letter_max_count: int = Field(default=defaults.DEAD_LETTER_MAX_COUNT, ge=1)
    eventbridge_source: str = "lambda"  # `source` of EventBridge destination events
    rq_redis_url: str | None = None  # rq: destinations (default: Sluice's Redis)
    redis_stream_maxlen: int = Field(default=defaults.REDIS_STREAM_MAXLEN, ge=1)
    drain_timeout_s: float = Field(default=defaults.DRAIN_TIMEOUT_S, ge=0)

    check_event_sources: bool = True  # ask AWS that a mapping's queue or stream exists
    run_pollers: bool = True  # poll the event sources of enabled mappings (serve, dispatching)
    poller_refresh_s: float = Field(default=1.0, gt=0)  # how soon mapping changes apply
    poller_lease_ttl_s: float = Field(default=10.0, gt=0)  # a dead process's mappings move
    sqs_wait_time_s: int = Field(default=2, ge=0, le=20)  # long-poll wait per ReceiveMessage
    sqs_default_concurrency: int = Field(default=5, ge=1)  # without ScalingConfig
    stream_read_block_s: float = Field(default=1.0, gt=0)  # XREAD BLOCK of stream sources
    # Kinesis / DynamoDB Streams: how often each mapping's shards are listed again
    stream_shard_list_interval_s: float = Field(default=10.0, gt=0)
    # Kinesis / DynamoDB Streams: the pause after a GetRecords that found nothing
    stream_poll_interval_s: float = Field(default=0.25, gt=0)
    stream_retry_backoff_s: float = Field(default=1.0, ge=0)  # first retry of a failed batch
    stream_retry_backoff_max_s: float = Field(default=60.0, ge=0)  # retries double up to this
    amqp_broker_urls: dict[str, str] = Field(default_factory=dict)  # Amazon MQ ARN -> amqp URL
    amqp_reconnect_max_s: float = Field(default=5.0, gt=0)  # back-off cap while RabbitMQ is away
    amqp_requeue_failed: bool = False  # reject failed batches with requeue (x-delivery-limit)
    strict: bool = False
    log_format: str = "auto"  # auto (console on a TTY, else JSON) | json | console
    log_level: str = "info"
    functions: dict[str, FunctionSpec] = Field(default_factory=dict)

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
