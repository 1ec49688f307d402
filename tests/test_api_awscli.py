"""The AWS CLI works against `sluice serve` unchanged (only ``--endpoint-url``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.api_fixtures import Api, MakeFunction

AWS = str(Path(sys.executable).with_name("aws"))


def aws(api: Api, *args: str, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }
    return subprocess.run(
        [AWS, "--endpoint-url", api.endpoint_url, "--output", "json", "lambda", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd=tmp,
    )


async def test_cli_event_invoke_and_configuration(
    api: Api, make_function: MakeFunction, tmp_path: Path
) -> None:
    name = await make_function()
    out = tmp_path / "out.json"
    done = aws(
        api,
        "invoke",
        "--function-name",
        name,
        "--invocation-type",
        "Event",
        "--payload",
        '{"from": "cli"}',
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 202
    done = aws(api, "invoke", "--function-name", name, "--payload", '{"a": 1}', str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == {"accepted": True, "echo": {"a": 1}}
    config: dict[str, Any] = json.loads(
        aws(api, "get-function-configuration", "--function-name", name).stdout
    )
    assert config["FunctionName"] == name and config["Timeout"] == 3


async def test_cli_reports_aws_errors(api: Api, make_function: MakeFunction) -> None:
    name = await make_function()
    done = aws(api, "put-function-event-invoke-config", "--function-name", name)
    assert done.returncode != 0
    assert "InvalidParameterValueException" in done.stderr
    assert "You must specify at least one of error handling or destination setting." in (
        done.stderr
    )
    done = aws(api, "get-function", "--function-name", "ghost")
    assert done.returncode != 0 and "ResourceNotFoundException" in done.stderr
