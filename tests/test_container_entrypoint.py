"""The image's entry point, run here without Docker: the Dockerfile's ENTRYPOINT (plus
compose's command and environment) started with this environment's ``sluice``, against a
redis-server as durable as compose's; ``/healthz`` answers, the image's HEALTHCHECK
command passes, and SIGTERM drains to exit 0.

What cannot run without an engine (the build, the base image, the uid) is checked
statically: a slim base, a fixed non-root uid, no pip cache, the ``aws`` and ``amqp``
extras, exec-form ENTRYPOINT, and a ``.dockerignore`` that keeps out what COPY never needs.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import wait_until
from tests.process_helpers import ServeProcess
from tests.servers import RedisServer, free_port, start_redis

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
IMAGE_VENV_BIN = "/opt/venv/bin"  # where the image's venv puts `sluice` and `python`
DRAIN_EXIT_TIMEOUT_S = 30.0  # an idle serve drains in well under a second


@dataclass
class Dockerfile:
    """What the image runs (the final stage's ENV, ENTRYPOINT, HEALTHCHECK, USER, EXPOSE,
    STOPSIGNAL) and what every stage builds from (FROM images, RUN lines, COPY sources)."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    user: str = ""
    expose: list[str] = field(default_factory=list)
    stop_signal: str = ""
    base_images: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    copy_sources: list[str] = field(default_factory=list)


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        keyword, _, rest = (logical + stripped).partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def _expand(value: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from earlier ENV lines; others (the base image's ``$PATH``)
    stay as written."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), value)


def parse_dockerfile(text: str) -> Dockerfile:
    parsed = Dockerfile()
    for keyword, rest in _instructions(text):
        if keyword == "FROM":  # a new stage: the runtime settings start again
            parsed = Dockerfile(
                base_images=[*parsed.base_images, rest.split()[0]],
                runs=parsed.runs,
                copy_sources=parsed.copy_sources,
            )
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                parsed.env[key] = _expand(value, parsed.env)
        elif keyword == "ENTRYPOINT":
            parsed.entrypoint = json.loads(rest)  # exec form, or this fails
        elif keyword == "HEALTHCHECK":
            parsed.healthcheck = json.loads(rest.partition("CMD ")[2])
        elif keyword == "USER":
            parsed.user = rest
        elif keyword == "EXPOSE":
            parsed.expose = rest.split()
        elif keyword == "STOPSIGNAL":
            parsed.stop_signal = rest
        elif keyword == "RUN":
            parsed.runs.append(rest)
        elif keyword == "COPY" and "--from=" not in rest:  # from the build context
            parsed.copy_sources.extend(shlex.split(rest)[:-1])
    return parsed


def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def container_paths(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    mounts: dict[str, Path] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def local_path_env() -> str:
    """PATH with this environment's scripts (``sluice``, ``python``) where the image's venv
    puts them, in front."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def resolve(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with its program found on ``env``'s PATH, as the container would."""
    program = shutil.which(argv[0], path=env["PATH"])
    assert program is not None, f"{argv[0]} is not on PATH"
    return [program, *argv[1:]]


def image_environment(**overrides: str) -> dict[str, str]:
    """The Dockerfile's ENV on top of this process's environment (minus any SLUICE_*
    setting of the caller), with the local scripts on PATH, then ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env.update({k: v for k, v in dockerfile().env.items() if k != "PATH"})
    env["PATH"] = local_path_env()
    env.update(overrides)
    return env


def start_process(argv: list[str], env: dict[str, str], log_dir: Path) -> ServeProcess:
    stdout_path, stderr_path = log_dir / "serve.out", log_dir / "serve.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            resolve(argv, env),
            cwd=log_dir,  # not the repository: the installed package must do
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return ServeProcess(process, stdout_path, stderr_path)


def run_healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, with ``SLUICE_PORT`` saying where serve is."""
    env = image_environment(SLUICE_PORT=str(port))
    return subprocess.run(
        resolve(dockerfile().healthcheck, env),
        env=env,
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )


async def healthz_status(port: int) -> int | None:
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return response.status_code


@pytest.fixture(scope="module")
def durable_redis() -> Iterator[RedisServer]:
    """A redis-server configured like compose's: AOF on, no eviction (so --strict passes)."""
    server = start_redis(
        "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction"
    )
    yield server
    server.stop()


@pytest.fixture
def started() -> Iterator[list[ServeProcess]]:
    processes: list[ServeProcess] = []
    yield processes
    for serve in processes:
        serve.kill_group()
        if serve.process.poll() is None:
            serve.process.wait(10)


# -- the Dockerfile, statically --------------------------------------------------------------


def test_dockerfile_builds_a_small_image_with_both_extras() -> None:
    image = dockerfile()
    assert all(base.endswith(("-slim", "-slim-bookworm")) for base in image.base_images)
    installs = [run for run in image.runs if "pip install" in run]
    assert installs and all("--no-cache-dir" in run for run in installs)
    assert any(".[aws,amqp]" in run for run in installs)


def test_dockerfile_runs_serve_as_a_fixed_non_root_uid() -> None:
    image = dockerfile()
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit() and int(uid) > 0, "a numeric uid lets runAsNonRoot verify it"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    assert image.entrypoint == ["sluice", "serve"]  # exec form: SIGTERM reaches serve
    assert image.stop_signal == "SIGTERM"
    assert image.env["SLUICE_HOST"] == "0.0.0.0"
    assert image.expose == ["9070"]
    assert image.env["PATH"].startswith(f"{IMAGE_VENV_BIN}:")


def test_dockerfile_healthcheck_asks_healthz_without_curl() -> None:
    command = dockerfile().healthcheck
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")  # a syntax error would only show in Docker


def test_dockerignore_keeps_out_the_venv_tests_and_history_but_not_the_sources() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)

    for path in (".venv", ".git", "tests", "bench"):
        assert ignored(path), path
    sources = dockerfile().copy_sources
    assert {"pyproject.toml", "README.md", "broker", "pollers", "destinations"} <= set(sources)
    for path in sources:
        assert not ignored(path), f"COPY {path} would find nothing"


# -- the entry point, running ----------------------------------------------------------------


@pytest.mark.slow
async def test_entrypoint_serves_healthz_passes_healthcheck_and_drains_on_sigterm(
    durable_redis: RedisServer, started: list[ServeProcess], tmp_path: Path
) -> None:
    port = free_port()
    env = image_environment(SLUICE_REDIS_URL=durable_redis.url, SLUICE_HOST="127.0.0.1")
    serve = start_process([*dockerfile().entrypoint, "--port", str(port)], env, tmp_path)
    started.append(serve)
    await serve.wait_ready()

    async def healthy() -> bool:
        return await healthz_status(port) == 200

    await wait_until(healthy, timeout_s=10)
    check = await asyncio.to_thread(run_healthcheck, port)
    assert check.returncode == 0, check.stderr

    serve.send_signal(signal.SIGTERM)
    assert await serve.wait_exit(DRAIN_EXIT_TIMEOUT_S) == 0, serve.stderr_tail()
    after = await asyncio.to_thread(run_healthcheck, port)
    assert after.returncode != 0, "the healthcheck must fail when nothing answers"


@pytest.mark.slow
async def test_entrypoint_runs_as_compose_configures_it(
    durable_redis: RedisServer, started: list[ServeProcess], tmp_path: Path
) -> None:
    """compose's command (the mounted TOML) and environment (--strict included), with only
    the Redis URL and the address changed: serve starts, registers the TOML's function and
    drains on SIGTERM."""
    sidecar = compose_services()["sluice"]
    mounts = container_paths(sidecar)
    command = [str(mounts.get(arg, arg)) for arg in sidecar["command"]]
    port = free_port()
    env = image_environment(
        **{k: str(v) for k, v in sidecar["environment"].items()},
    )
    env.update(SLUICE_REDIS_URL=durable_redis.url, SLUICE_HOST="127.0.0.1")
    serve = start_process([*dockerfile().entrypoint, *command, "--port", str(port)], env, tmp_path)
    started.append(serve)
    await serve.wait_ready()

    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"http://127.0.0.1:{port}/2015-03-31/functions/hello/configuration"
        )
    assert response.status_code == 200, response.text
    assert response.json()["Timeout"] == 10

    serve.send_signal(signal.SIGTERM)
    assert await serve.wait_exit(DRAIN_EXIT_TIMEOUT_S) == 0, serve.stderr_tail()
