"""A destination URL's password stays out of logs, dead-letter ids and ``sluice dlq``'s
tables, and stays in the stored entry (a redelivery needs it)."""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog
from typer.testing import CliRunner

from broker.cli import app
from broker.destination import redacted
from tests.conftest import BrokerFactory
from tests.helpers import until
from tests.servers import RedisServer, free_port

H = "python:tests.handlers.async_handlers"


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("amqp://sluice:s3cret@mq:5672/vhost?x=1", "amqp://sluice:***@mq:5672/vhost?x=1"),
        ("https://u:p@hooks.example/x", "https://u:***@hooks.example/x"),
        ("amqp://user@mq/", "amqp://user@mq/"),  # no password
        ("https://hooks.example/a@b", "https://hooks.example/a@b"),  # @ in the path
        ("arn:aws:sqs:us-east-1:000000000000:q", "arn:aws:sqs:us-east-1:000000000000:q"),
        ("redis-stream:out", "redis-stream:out"),
    ],
)
def test_redacted_hides_only_a_urls_password(target: str, shown: str) -> None:
    assert redacted(target) == shown


async def test_a_failed_delivery_keeps_its_password_out_of_sight(
    make_broker: BrokerFactory, redis_server: RedisServer
) -> None:
    broker = await make_broker(delivery_retries=1)
    hook = f"http://ops:s3cret@127.0.0.1:{free_port()}/down"
    await broker.put_function("notify", f"{H}:ok")
    await broker.put_event_invoke_config(
        "notify", {"DestinationConfig": {"OnSuccess": {"Destination": hook}}}
    )
    with structlog.testing.capture_logs() as logs:
        await broker.invoke_async("notify", {"n": 1})

        async def dead() -> bool:
            return await broker.dead_letters.count("notify") == 1

        await until(dead, timeout=20)
    assert "s3cret" not in json.dumps(logs, default=str)
    assert any(log["event"] == "delivery_given_up" for log in logs)
    (entry,) = await broker.dead_letters.list("notify")
    assert entry["target"] == hook  # kept whole: a redelivery needs it
    assert "s3cret" not in entry["id"]

    argv = ["dlq", "list", "--json", "--redis-url", redis_server.url]
    argv += ["--key-prefix", broker.settings.key_prefix]
    listed = await asyncio.to_thread(CliRunner().invoke, app, argv)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["target"] == hook.replace("s3cret", "***")
    replay = ["dlq", "replay", "--all", "--dry-run", *argv[3:]]
    plan = await asyncio.to_thread(CliRunner().invoke, app, replay, env={"COLUMNS": "300"})
    assert "s3cret" not in plan.stdout and "ops:***@" in plan.stdout
