"""compose.yaml runs a durable Redis and the sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from broker.settings import Settings

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


def test_compose_runs_a_durable_redis_and_the_sidecar() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    redis_command = services["redis"]["command"]
    assert "--appendonly" in redis_command and "yes" in redis_command
    assert "noeviction" in redis_command
    sidecar = services["sluice"]
    assert sidecar["command"][:2] == ["sluice", "serve"]
    assert "--strict" in sidecar["command"]
    assert sidecar["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_functions_env_parses_as_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = yaml.safe_load(COMPOSE.read_text())["services"]["sluice"]["environment"]
    monkeypatch.setenv("SLUICE_FUNCTIONS", env["SLUICE_FUNCTIONS"])
    settings = Settings()
    assert (
        settings.functions["hello"].target == json.loads(env["SLUICE_FUNCTIONS"])["hello"]["target"]
    )
