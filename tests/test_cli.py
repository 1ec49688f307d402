"""The ``sluice`` command line: invoke, serve's start-up guards, settings precedence, demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from broker.errors import ConfigError
from broker.guards import check_redis_durability
from broker.settings import Settings
from tests.servers import RedisServer

REPO = Path(__file__).resolve().parents[1]
OK = "python:tests.handlers.async_handlers:ok"
FAIL = "python:tests.handlers.async_handlers:fail"


def sluice(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_invoke_runs_the_function_in_process_and_prints_its_result() -> None:
    done = sluice("invoke", "hello", "--function", f"hello={OK}", "--payload", '{"a": 1}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"accepted": True, "echo": {"a": 1}}
    assert json.loads(done.stderr.strip().splitlines()[-1])["StatusCode"] == 200


def test_invoke_reports_a_function_error_with_exit_status_one() -> None:
    done = sluice("invoke", "boom", "--function", f"boom={FAIL}")
    assert done.returncode == 1
    assert json.loads(done.stdout)["errorMessage"] == "stock service unavailable"
    assert json.loads(done.stderr.strip().splitlines()[-1])["FunctionError"] == "Unhandled"


def test_invoke_of_an_unknown_function_prints_an_aws_error() -> None:
    done = sluice("invoke", "ghost")
    assert done.returncode == 1
    error = json.loads(done.stderr.strip().splitlines()[-1])
    assert error["__type"] == "ResourceNotFoundException"


def test_async_invoke_needs_a_real_redis() -> None:
    done = sluice("invoke", "hello", "--async", "--function", f"hello={OK}")
    assert done.returncode == 2


async def test_async_invoke_stores_the_event(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    done = sluice(
        "invoke",
        "hello",
        "--async",
        "--redis-url",
        redis_server.url,
        "--function",
        f"hello={OK}",
        "--payload",
        '{"a": 2}',
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["StatusCode"] == 202
    assert await redis_client.lrange("sluice:{hello}:ready", 0, -1) == [
        answer["RequestId"].encode()
    ]


def test_serve_strict_refuses_redis_without_aof(redis_server: RedisServer) -> None:
    done = sluice("serve", "--redis-url", redis_server.url, "--strict", timeout=30)
    assert done.returncode == 1
    assert "AOF" in done.stderr


async def test_durability_guard_names_each_problem(redis_client: aioredis.Redis) -> None:
    problems = await check_redis_durability(redis_client, strict=False)
    assert any("AOF" in p for p in problems)
    await redis_client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigError, match="allkeys-lru"):
            await check_redis_durability(redis_client, strict=True)
        await redis_client.config_set("appendonly", "yes")
        await redis_client.config_set("maxmemory-policy", "noeviction")
        assert await check_redis_durability(redis_client, strict=True) == []
    finally:
        await redis_client.config_set("appendonly", "no")
        await redis_client.config_set("maxmemory-policy", "noeviction")


def test_settings_precedence_is_flags_env_toml_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text(
        'retry_base_delay = 5\nregion = "eu-west-1"\nconcurrency = 7\n'
        '[functions.orders]\ntarget = "python:app:orders"\ntimeout_s = 10\n'
        '[functions.orders.aliases]\nlive = "2"\n'
    )
    monkeypatch.setenv("SLUICE_REGION", "eu-central-1")
    monkeypatch.setenv("SLUICE_CONCURRENCY", "9")
    settings = Settings.load(config, concurrency=11, throttle_base_delay=None)
    assert settings.concurrency == 11  # flag
    assert settings.region == "eu-central-1"  # env over TOML
    assert settings.retry_base_delay == 5  # TOML over default
    assert settings.throttle_base_delay == 1.0  # default
    assert settings.functions["orders"].timeout_s == 10
    assert settings.functions["orders"].aliases == {"live": "2"}


def test_demo_runs_on_the_embedded_redis_and_prints_outcomes() -> None:
    done = sluice("demo", "--events", "16", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dead-lettered" in done.stdout and "thumbnail" in done.stdout
    assert "16/16" in done.stdout


async def test_restart_keeps_what_the_api_changed(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    from broker import Broker, FunctionSpec

    settings = Settings(
        key_prefix="restart",
        functions={"orders": FunctionSpec(target=OK, timeout_s=5)},
    )
    first = Broker(settings, redis_client, dispatch=False)
    await first.start()
    await first.admin.publish_version("orders", {})
    await first.put_function_concurrency("orders", 4)
    await first.stop()
    changed = settings.model_copy(
        update={"functions": {"orders": FunctionSpec(target=FAIL, timeout_s=6)}}
    )
    second = Broker(changed, redis_client, dispatch=False)
    await second.start()
    config = await second.get_function("orders")
    await second.stop()
    assert (config.target, config.timeout_s) == (FAIL, 6)  # the settings' fields apply
    assert "1" in config.published and config.reserved_concurrency == 4  # the rest survives
