"""compose.yaml: valid for docker-compose, a durable Redis, the sidecar's settings (env and
the mounted TOML) valid for ``Settings``, a stop grace period that covers the drain, every
service the README's Compose section names, and the example itself (function handler and
the setup script) run here against real servers, with no containers."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import fakeredis.aioredis
import httpx
import pytest

from broker.api.server import ApiServer
from broker.core import Broker
from broker.defaults import SHUTDOWN_CLEANUP_S
from broker.settings import Settings
from tests.helpers import until
from tests.servers import (
    Answer,
    LambdaHttpFunction,
    RedisServer,
    free_port,
    require_binary,
    start_redis,
    terminate,
)
from tests.test_container_entrypoint import (
    ROOT,
    compose_services,
    container_paths,
    dockerfile,
    image_environment,
    start_process,
)

COMPOSE = ROOT / "compose.yaml"
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "compose"
EXAMPLE_QUEUES = ("orders", "orders-dlq", "hello-results", "hello-failures")


def compose_env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose_services()[service].get("environment", {}).items()}


def sidecar_settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The sidecar's Settings as the container builds them: the image's ENV, compose's
    environment and the TOML compose mounts and passes with --config."""
    for key in list(os.environ):
        if key.startswith("SLUICE_"):
            monkeypatch.delenv(key)
    env = {**dockerfile().env, **compose_env("sluice")}
    for key, value in env.items():
        if key.startswith("SLUICE_"):
            monkeypatch.setenv(key, value)
    return Settings.load(mounted_config())


def mounted_config() -> Path:
    sidecar = compose_services()["sluice"]
    command = sidecar["command"]
    container_path = command[command.index("--config") + 1]
    host_path = container_paths(sidecar)[container_path]
    assert host_path.is_file(), f"{host_path} is mounted as {container_path}"
    return host_path


def seconds(duration: str) -> float:
    """A compose duration (``90s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def api_shutdown_s() -> float:
    """How long serve's API may take to stop (uvicorn's graceful shutdown)."""
    broker = Broker(Settings(), fakeredis.aioredis.FakeRedis())
    timeout = ApiServer(broker, "127.0.0.1", 0)._server.config.timeout_graceful_shutdown
    assert timeout is not None, "an API without a shutdown deadline has no drain budget"
    return float(timeout)


def readme_compose_section() -> str:
    match = re.search(r"^## Compose\n(.*?)(?=^## |\Z)", README.read_text(), re.S | re.M)
    assert match, "README.md has no '## Compose' section"
    return match.group(1)


def readme_table_services(section: str) -> list[str]:
    """First-column names of the section's services table (``| `name` | image | ...``)."""
    return re.findall(r"^\| `([\w-]+)` \|", section, re.M)


def readme_command_services(section: str) -> set[str]:
    """Services named by ``docker compose`` commands in the section: the first argument of
    ``exec`` and ``run`` (the rest is the command run inside), every argument of the
    others."""
    names: set[str] = set()
    for match in re.finditer(r"docker compose (\w+)((?: [\w./=-]+)*)", section):
        subcommand, words = match.group(1), match.group(2).split()
        arguments = [word for word in words if not word.startswith("-")]
        if subcommand in ("exec", "run"):
            names.update(arguments[:1])
        elif subcommand in ("logs", "restart", "stop", "start", "up", "ps", "pull", "build"):
            names.update(arguments)
    return names


class MotoProcess:
    """moto's server in a process of its own, so its queues are this test's alone."""

    def __init__(self) -> None:
        self.port = free_port()
        binary = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "MOTO_ACCOUNT_ID": "000000000000"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{self.url}/moto-api/", timeout=1)
                return
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("moto_server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        terminate(self.process)


@pytest.fixture
def moto_process() -> Iterator[MotoProcess]:
    moto = MotoProcess()
    moto.wait_ready()
    yield moto
    moto.stop()


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    server = start_redis("--appendonly", "yes", "--maxmemory-policy", "noeviction")
    yield server
    server.stop()


# -- the file ---------------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose() -> None:
    binary = require_binary("docker-compose")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_redis_keeps_aof_and_noeviction() -> None:
    redis = compose_services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_sidecar_waits_for_healthy_redis_and_sqs_and_publishes_the_api() -> None:
    sidecar = compose_services()["sluice"]
    assert sidecar["depends_on"]["redis"]["condition"] == "service_healthy"
    assert sidecar["depends_on"]["moto"]["condition"] == "service_healthy"
    assert sidecar["init"] is True
    assert "127.0.0.1:9070:9070" in sidecar["ports"]
    setup = compose_services()["setup"]
    assert setup["depends_on"]["sluice"]["condition"] == "service_healthy"


def test_sidecar_environment_keys_are_settings_fields() -> None:
    prefix = Settings.model_config["env_prefix"]
    fields = {f"{prefix}{name}".upper() for name in Settings.model_fields}
    env = {**dockerfile().env, **compose_env("sluice")}
    unknown = {key for key in env if key.startswith("SLUICE_")} - fields
    assert not unknown, f"not fields of broker.settings.Settings: {sorted(unknown)}"


def test_sidecar_environment_and_mounted_toml_build_valid_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = sidecar_settings(monkeypatch)
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.strict is True
    assert settings.host == "0.0.0.0"
    hello = settings.functions["hello"]
    target = urlsplit(hello.target)
    assert target.hostname in compose_services(), "the function's host is a compose service"
    assert (target.port, target.path) == (8080, "/2015-03-31/functions/function/invocations")
    assert hello.reserved_concurrency == 1  # the emulator runs one call at a time
    timeout = compose_env(target.hostname)["AWS_LAMBDA_FUNCTION_TIMEOUT"]
    assert int(timeout) == hello.timeout_s


def test_stop_grace_period_covers_the_drain_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM: requests in progress, a background replay, the pollers and the dispatcher
    (in-flight calls, then their deliveries) share one budget, drain_timeout_s
    (broker/cli.py ``_serve``), then stopping what did not finish takes at most
    ``SHUTDOWN_CLEANUP_S``."""
    drain_s = sidecar_settings(monkeypatch).drain_timeout_s
    budget_s = drain_s + SHUTDOWN_CLEANUP_S
    assert api_shutdown_s() <= drain_s  # the API's part comes out of the budget
    assert seconds(compose_services()["sluice"]["stop_grace_period"]) >= budget_s


def test_healthchecks_run_commands_their_images_have() -> None:
    services = compose_services()
    assert services["sluice"]["healthcheck"]["test"] == ["CMD", *dockerfile().healthcheck]
    for name in ("sluice", "moto"):
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], name  # both images are Python images
        compile(test[3], f"<{name} healthcheck>", "exec")
    assert services["setup"]["healthcheck"] == {"disable": True}


@pytest.mark.slow
def test_moto_healthcheck_passes_against_a_moto_server(moto_process: MotoProcess) -> None:
    code = compose_services()["moto"]["healthcheck"]["test"][3]
    assert "127.0.0.1:5001" in code
    code = code.replace("127.0.0.1:5001", f"127.0.0.1:{moto_process.port}")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=15, check=False
    )
    assert result.returncode == 0, result.stderr


# -- the README's Compose section ------------------------------------------------------------


def test_every_service_the_readme_names_exists_and_every_service_is_in_its_table() -> None:
    section = readme_compose_section()
    table = readme_table_services(section)
    assert table, "the Compose section has no services table"
    services = set(compose_services())
    assert set(table) == services
    assert readme_command_services(section) <= services


def test_every_localhost_port_the_readme_uses_is_published() -> None:
    published = {
        port.split(":")[-2]
        for service in compose_services().values()
        for port in service.get("ports", [])
    }
    used = set(re.findall(r"localhost:(\d+)", readme_compose_section()))
    assert used and used <= published


# -- the example, without containers ---------------------------------------------------------


def load_handler() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("compose_app", EXAMPLE / "function" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_handler_returns_plain_results() -> None:
    app = load_handler()
    context = types.SimpleNamespace(aws_request_id="req-1")
    assert app.handler({"name": "compose"}, context) == {"greeting": "hello, compose"}
    assert app.handler({}, context) == {"greeting": "hello, world"}
    with pytest.raises(RuntimeError, match="asked to fail"):
        app.handler({"fail": True}, context)
    records = [
        {"messageId": "m1", "body": '{"orderId": "A-1"}'},
        {"messageId": "m2", "body": "please fail"},
    ]
    result = app.handler({"Records": records}, context)
    assert result == {"batchItemFailures": [{"itemIdentifier": "m2"}]}
    json.dumps(result)  # what the emulator sends back must be JSON


def local_endpoints(env: dict[str, str], moto: MotoProcess, sluice_port: int) -> dict[str, str]:
    """compose's service URLs (``http://moto:5001``, ``http://sluice:9070``) pointed here."""
    local = {"moto": moto.url, "sluice": f"http://127.0.0.1:{sluice_port}"}
    for key, value in env.items():
        if key.startswith("AWS_ENDPOINT_URL"):
            env[key] = local[urlsplit(value).hostname or ""]
    return env


async def run_setup(env: dict[str, str]) -> dict[str, Any]:
    script = compose_services()["setup"]["entrypoint"]
    assert script[0] == "python"
    mounted = container_paths(compose_services()["setup"])[script[1]]
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(mounted)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.slow
async def test_example_setup_and_calls_work_against_sluice_and_moto(
    durable_redis: RedisServer, moto_process: MotoProcess, tmp_path: Path
) -> None:
    """compose's topology on loopback: serve as compose runs it (the TOML's function URL
    pointed at a Lambda Invoke server running the example handler and answering its errors
    as the Runtime Interface Emulator does), setup.py run twice (it must be re-runnable),
    then an Event invoke reaches the OnSuccess queue, one that raises reaches the OnFailure
    queue, and an SQS message reaches the function."""
    app = load_handler()

    def respond(event: dict[str, Any], headers: dict[str, str]) -> Answer:
        context = types.SimpleNamespace(aws_request_id=headers.get("x-sluice-request-id"))
        try:
            return 200, {}, json.dumps(app.handler(event, context)).encode()
        except Exception as exc:  # the emulator: 200, the error object, no error header
            error = {"errorMessage": str(exc), "errorType": type(exc).__name__}
            return 200, {}, json.dumps(error).encode()

    function = LambdaHttpFunction(respond).start()
    config = tmp_path / "sluice.toml"
    original = "http://function:8080/2015-03-31/functions/function/invocations"
    config.write_text(mounted_config().read_text().replace(original, function.url))
    port = free_port()
    env = image_environment(**compose_env("sluice"))
    env.update(SLUICE_REDIS_URL=durable_redis.url, SLUICE_HOST="127.0.0.1")
    env.update(SLUICE_RETRY_BASE_DELAY="0.05")  # AWS's minutes between retries, shortened
    env = local_endpoints(env, moto_process, port)
    command = ["--config", str(config), "--port", str(port)]
    serve = start_process([*dockerfile().entrypoint, *command], env, tmp_path)
    try:
        await serve.wait_ready()
        setup_env = local_endpoints(image_environment(**compose_env("setup")), moto_process, port)
        first = await run_setup(setup_env)
        second = await run_setup(setup_env)
        assert first == second
        assert set(first["queues"]) == set(EXAMPLE_QUEUES)
        assert first["queues"]["orders"] == "arn:aws:sqs:us-east-1:000000000000:orders"

        credentials = {
            "region_name": "us-east-1",
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", **credentials)
        sqs = boto3.client("sqs", endpoint_url=moto_process.url, **credentials)
        sent = lam.invoke(FunctionName="hello", InvocationType="Event", Payload=b'{"name": "t"}')
        assert sent["StatusCode"] == 202
        results_url = sqs.get_queue_url(QueueName="hello-results")["QueueUrl"]
        received: list[dict[str, Any]] = []

        def result_arrived() -> bool:
            reply = sqs.receive_message(QueueUrl=results_url, WaitTimeSeconds=0)
            received.extend(json.loads(m["Body"]) for m in reply.get("Messages", []))
            return bool(received)

        await until(lambda: asyncio.to_thread(result_arrived), timeout=30)
        assert received[0]["responsePayload"] == {"greeting": "hello, t"}

        lam.invoke(FunctionName="hello", InvocationType="Event", Payload=b'{"fail": true}')
        failures_url = sqs.get_queue_url(QueueName="hello-failures")["QueueUrl"]
        failed: list[dict[str, Any]] = []

        def failure_arrived() -> bool:
            reply = sqs.receive_message(QueueUrl=failures_url, WaitTimeSeconds=0)
            failed.extend(json.loads(m["Body"]) for m in reply.get("Messages", []))
            return bool(failed)

        await until(lambda: asyncio.to_thread(failure_arrived), timeout=30)
        assert failed[0]["requestContext"]["condition"] == "RetriesExhausted"
        assert failed[0]["requestContext"]["approximateInvokeCount"] == 3
        assert failed[0]["responsePayload"]["errorType"] == "RuntimeError"

        orders_url = sqs.get_queue_url(QueueName="orders")["QueueUrl"]
        sqs.send_message(QueueUrl=orders_url, MessageBody='{"orderId": "A-1"}')

        def polled() -> bool:
            return any("Records" in event for _, event, _ in function.calls)

        await until(polled, timeout=30)
        batch = next(event for _, event, _ in function.calls if "Records" in event)
        assert batch["Records"][0]["body"] == '{"orderId": "A-1"}'
    finally:
        serve.send_signal(signal.SIGTERM)
        code = await serve.wait_exit(60)
        serve.kill_group()
        function.stop()
    assert code == 0, serve.stderr_tail()
