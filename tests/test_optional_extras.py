"""The core runs without the ``aws`` and ``amqp`` extras (boto3, kombu), and each feature that
needs one says which to install (broker/extras.py).

"Without" is real: the subprocesses run with a ``sitecustomize`` on ``PYTHONPATH`` whose
import hook refuses boto3, botocore, s3transfer and kombu, as if they were not installed
(the python invoker's worker processes inherit it). One broker run (:func:`scenario`, this
module run as a script) exercises the features and reports what it saw; each test below
asserts one behaviour of that report.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakeredis import FakeAsyncRedis as FakeRedis

import destinations
from broker import Broker, Settings
from broker.api import create_app
from broker.extras import MissingExtraError, require
from broker.mappings import SourceKind
from broker.version import VERSION
from pollers.manager import load_poller
from tests.servers import RedisServer

REPO = Path(__file__).resolve().parent.parent
BLOCKED = ("boto3", "botocore", "s3transfer", "kombu")
SITECUSTOMIZE = f"""\
import sys

class _NotInstalled:
    # Refuses the optional dependencies, as if they were not installed.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""
HANDLER = "python:broker.demo_functions:thumbnail"
SQS_ARN = "arn:aws:sqs:us-east-1:000000000000:orders"
AMQP_URL = "amqp://guest:guest@127.0.0.1:1/"  # never reached: kombu is missing first
AWS_HINT = "pip install 'sluice-broker[aws]'"
AMQP_HINT = "pip install 'sluice-broker[amqp]'"


def without_extras(tmp_path: Path) -> dict[str, str]:
    """The environment of a process for which the extras are not installed."""
    hook = tmp_path / "without-extras"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": str(hook)}


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", code], env)


SLUICE = str(Path(sys.executable).with_name("sluice"))
LOADED = f"import sys; print(sorted(m for m in sys.modules if m.partition('.')[0] in {BLOCKED!r}))"


# -- in this process (the extras installed) -----------------------------------------------------


def test_require_names_the_extra_to_install() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("sluice_no_such_module", "aws", "the frobnicator")
    assert str(caught.value) == (
        "the frobnicator needs sluice_no_such_module: pip install 'sluice-broker[aws]'"
    )
    assert isinstance(caught.value, ImportError) and caught.value.extra == "aws"


@pytest.mark.parametrize("scheme", sorted(destinations.FACTORIES))
def test_every_destination_scheme_names_an_importable_class(scheme: str) -> None:
    factory = destinations.FACTORIES[scheme]
    assert isinstance(factory, destinations.LazyFactory)
    cls = factory.load()
    assert getattr(destinations, cls.__name__) is cls  # from destinations import SqsDestination


@pytest.mark.parametrize("kind", list(SourceKind))
def test_every_source_kind_names_an_importable_poller(kind: SourceKind) -> None:
    assert callable(load_poller(kind))


async def test_the_version_is_pyprojects_and_the_openapi_documents() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert declared == VERSION  # differs? the install is stale: pip install -e '.[test]'
    client = FakeRedis()
    app = create_app(Broker(Settings(), client, dispatch=False))
    assert app.openapi()["info"]["version"] == VERSION
    await client.aclose()


# -- imports and the command line -------------------------------------------------------------


def test_the_hook_makes_boto3_and_kombu_look_uninstalled(tmp_path: Path) -> None:
    done = python("import boto3", without_extras(tmp_path))
    assert done.returncode == 1 and "No module named 'boto3'" in done.stderr
    done = python("import kombu", without_extras(tmp_path))
    assert done.returncode == 1 and "No module named 'kombu'" in done.stderr


@pytest.mark.parametrize(
    "modules",
    ["broker", "broker.cli", "broker.api.server", "destinations", "pollers.manager"],
)
def test_core_modules_import_without_the_extras(tmp_path: Path, modules: str) -> None:
    done = python(f"import {modules}; {LOADED}", without_extras(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_import_broker_does_not_load_boto3_or_kombu_when_installed() -> None:
    """The lazy imports hold in a full install too: a module-level ``import boto3`` that
    creeps back into the core fails here, not only for users without the extra."""
    done = python(f"import broker, broker.cli, broker.api.server; {LOADED}", dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["sqs", "--help"]])
def test_sluice_help_runs_without_the_extras(tmp_path: Path, args: list[str]) -> None:
    done = run([SLUICE, *args], without_extras(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "Usage" in done.stdout


def test_sqs_redrive_without_boto3_is_refused_naming_the_extra(tmp_path: Path) -> None:
    done = run([SLUICE, "sqs", "redrive", SQS_ARN, "--yes"], without_extras(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"sluice sqs: Amazon SQS access needs boto3: {AWS_HINT}"


@pytest.mark.slow
def test_sluice_demo_runs_without_the_extras(tmp_path: Path) -> None:
    done = run([SLUICE, "demo", "--events", "4"], without_extras(tmp_path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "4/4" in done.stdout


# -- a broker on a real Redis ------------------------------------------------------------------


async def _wait(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async def poll() -> None:
        while not await predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout_s)


async def scenario(redis_url: str) -> dict[str, Any]:
    """Run a broker with the features that need no extra and those that do; report what
    each did. Runs in a process without the extras (see the module docstring)."""
    from broker import ApiError
    from broker.wiring import default_stream_rereader

    client = aioredis.Redis.from_url(redis_url)
    settings = Settings(
        redis_url=redis_url,
        key_prefix=f"x{uuid.uuid4().hex[:6]}",
        worker_processes=1,
        poll_interval_s=0.05,
        delivery_backoff_s=0.01,
        poller_refresh_s=0.1,
        drain_timeout_s=5.0,
    )
    report: dict[str, Any] = {}
    broker = Broker(settings, client)
    await broker.start()
    try:
        destinations = {"ok": "redis-stream:extras-ok", "sqs": SQS_ARN, "amqp": AMQP_URL}
        for name, destination in destinations.items():
            await broker.put_function(name, HANDLER)
            config = {"DestinationConfig": {"OnSuccess": {"Destination": destination}}}
            await broker.put_event_invoke_config(name, config)
            await broker.invoke_async(name, {"image": f"{name}.png"})

        await _wait(lambda: _has_entries(client, "extras-ok"))
        (entry,) = await client.xrange("extras-ok")
        report["ok_record"] = json.loads(entry[1][b"record"])
        for name in ("sqs", "amqp"):
            await _wait(lambda name=name: _has_dead_letters(broker, name))
            report[f"{name}_dead_letters"] = await broker.dead_letters.list(name)

        await broker.put_function("remote", "lambda:remote")
        result = await broker.invoke("remote", {})
        report["lambda_result"] = result.model_dump()

        try:
            await broker.create_event_source_mapping(
                {"EventSourceArn": SQS_ARN, "FunctionName": "ok"}
            )
        except ApiError as exc:
            report["sqs_mapping_error"] = {"code": exc.code, "message": exc.message}

        stream = await broker.create_event_source_mapping(
            {
                "EventSourceArn": "redis-stream:clicks",
                "FunctionName": "ok",
                "StartingPosition": "TRIM_HORIZON",
            }
        )
        click = (await client.xadd("clicks", {"data": json.dumps({"click": 1})})).decode()
        report["stream_mapping"] = await _settled(broker, stream["UUID"], "OK")

        rabbit = await broker.create_event_source_mapping(
            {"EventSourceArn": AMQP_URL, "FunctionName": "ok", "Queues": ["orders"]}
        )
        report["rabbitmq_mapping"] = await _settled(broker, rabbit["UUID"], "PROBLEM: the")

        rereader = default_stream_rereader(broker)
        found = await rereader.reread(
            {
                "eventSourceArn": "redis-stream:clicks",
                "mappingUuid": stream["UUID"],
                "shardId": "shardId-000000000000",
                "startSequenceNumber": click,
                "endSequenceNumber": click,
            }
        )
        kinesis = await rereader.reread(
            {
                "eventSourceArn": "arn:aws:kinesis:us-east-1:000000000000:stream/clicks",
                "mappingUuid": stream["UUID"],  # the ARN kind is looked at first
                "shardId": "shardId-000000000000",
                "startSequenceNumber": "1",
                "endSequenceNumber": "1",
            }
        )
        await rereader.close()
        report["reread"] = {
            "redis": [r["redisStream"]["entryId"] for r in found.records or []],
            "kinesis": {"records": kinesis.records, "reason": kinesis.reason},
        }
    finally:
        await broker.stop()
        report["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        await client.aclose()
    return report


async def _has_entries(client: aioredis.Redis, stream: str) -> bool:
    return int(await client.xlen(stream)) > 0


async def _has_dead_letters(broker: Any, function: str) -> bool:
    return int(await broker.dead_letters.count(function)) > 0


async def _settled(broker: Any, uuid: str, prefix: str) -> dict[str, Any]:
    """The mapping, once its LastProcessingResult starts with ``prefix``."""

    async def result_is() -> bool:
        got = await broker.get_event_source_mapping(uuid)
        return str(got.get("LastProcessingResult", "")).startswith(prefix)

    await _wait(result_is)
    mapping: dict[str, Any] = await broker.get_event_source_mapping(uuid)
    return mapping


@pytest.fixture(scope="module")
def report(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env = without_extras(tmp_path_factory.mktemp("extras"))
    code = (
        "import asyncio, json, sys; from tests.test_optional_extras import scenario; "
        "print(json.dumps(asyncio.run(scenario(sys.argv[1]))))"
    )
    done = run([sys.executable, "-c", code, redis_server.url], env, timeout=90)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_broker_without_the_extras_never_imports_them(report: dict[str, Any]) -> None:
    assert report["loaded"] == []


def test_a_python_function_delivers_to_a_redis_stream_without_the_extras(
    report: dict[str, Any],
) -> None:
    record = report["ok_record"]
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"]["image"] == "ok.png"


def test_an_sqs_destination_without_boto3_dead_letters_the_record_naming_the_extra(
    report: dict[str, Any],
) -> None:
    (entry,) = report["sqs_dead_letters"]
    assert entry["kind"] == "delivery_failed" and entry["target"] == SQS_ARN
    assert f"the SQS destination needs boto3: {AWS_HINT}" in entry["errors"][-1]
    assert json.loads(entry["payload"]) == {"image": "sqs.png"}  # the event is kept


def test_an_amqp_destination_without_kombu_dead_letters_the_record_naming_the_extra(
    report: dict[str, Any],
) -> None:
    (entry,) = report["amqp_dead_letters"]
    assert entry["kind"] == "delivery_failed"
    assert f"the amqp destination needs kombu: {AMQP_HINT}" in entry["errors"][-1]


def test_a_lambda_target_without_boto3_is_a_system_error_naming_the_extra(
    report: dict[str, Any],
) -> None:
    result = report["lambda_result"]
    assert result["outcome"] == "system_error"
    assert result["error_message"] == f"function target lambda:remote needs boto3: {AWS_HINT}"


def test_an_sqs_mapping_without_boto3_is_refused_naming_the_extra(report: dict[str, Any]) -> None:
    assert report["sqs_mapping_error"] == {
        "code": "InvalidParameterValueException",
        "message": f"the event source {SQS_ARN} needs boto3: {AWS_HINT}",
    }


def test_a_redis_stream_mapping_is_polled_without_the_extras(report: dict[str, Any]) -> None:
    assert report["stream_mapping"]["LastProcessingResult"] == "OK"


def test_a_redis_stream_reread_needs_no_extra_and_a_kinesis_one_names_it(
    report: dict[str, Any],
) -> None:
    assert len(report["reread"]["redis"]) == 1
    assert report["reread"]["kinesis"] == {
        "records": None,
        "reason": f"re-reading a Kinesis or DynamoDB Streams batch needs boto3: {AWS_HINT}",
    }


def test_a_rabbitmq_mapping_without_kombu_says_so_in_its_last_processing_result(
    report: dict[str, Any],
) -> None:
    assert report["rabbitmq_mapping"]["LastProcessingResult"] == (
        f"PROBLEM: the rabbitmq event source poller needs kombu: {AMQP_HINT}"
    )
