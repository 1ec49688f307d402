"""The configuration reference and the settings behind it: the README's section is what the
model renders, every setting has a description, a ``serve`` flag (tables: env and TOML) and an
env var, and each of those really sets it, with flags > env > TOML.

The flag, env and TOML tests run the real ``sluice serve`` command line up to the settings it
builds (:func:`broker.cli._settings`), then stop before anything is served.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_origin

import pytest
import typer
from typer.testing import CliRunner

from broker import cli
from broker.config_reference import (
    END,
    REGENERATE,
    START,
    main,
    render,
    replace_section,
    serve_options,
)
from broker.settings import Settings, env_var, scalar_settings

README = Path(__file__).resolve().parents[1] / "README.md"
SCALARS = scalar_settings()
TABLES = [n for n, f in Settings.model_fields.items() if get_origin(f.annotation) is dict]

# Every flag `serve` had before its flags came from the model; scripts and tests pass them.
FLAGS_BEFORE = [
    "--redis-url",
    "--function",
    "--config",
    "--retry-base-delay",
    "--throttle-base-delay",
    "--visibility-grace-s",
    "--delivery-lease-s",
    "--region",
    "--account-id",
    "--key-prefix",
    "--concurrency",
    "--worker-processes",
    "--strict",
    "--host",
    "--port",
    "--drain-timeout-s",
]


@pytest.fixture(autouse=True)
def no_sluice_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's own SLUICE_* settings must not leak into what is tested."""
    for name in list(os.environ):
        if name.startswith("SLUICE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def serve_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run ``sluice serve ARGS`` and return the settings it built, without serving."""
    built: list[Settings] = []
    real = cli._settings

    def capture(*args: Any, **kwargs: Any) -> Settings:
        built.append(real(*args, **kwargs))
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "_settings", capture)

    def run(*args: str) -> Settings:
        result = CliRunner().invoke(cli.app, ["serve", *args])
        assert result.exit_code == 0, result.output
        return built.pop()

    yield run


def values(name: str) -> tuple[Any, Any]:
    """Two valid values of setting ``name``: the first is not its default, the second is not
    the first."""
    kind, default = SCALARS[name], Settings.model_fields[name].default
    picked: tuple[Any, Any]
    if kind is bool:
        picked = (not default, default)
    elif kind is int:
        picked = (7, 11)  # within every int setting's bounds (sqs_wait_time_s: 0-20)
    elif kind is float:
        picked = (0.375, 0.625)  # within every float setting's bounds (a ratio: 0-1)
    else:
        picked = (f"{name}-a", f"{name}-b")
    assert picked[0] != default and picked[0] != picked[1]
    return picked


def flag_args(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag[2:]}"]
    return [flag, str(value)]


def env_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def toml_file(tmp_path: Path, name: str, value: Any) -> str:
    path = tmp_path / "sluice.toml"
    path.write_text(f"{name} = {json.dumps(value)}\n")  # JSON scalars are TOML literals
    return str(path)


# -- the README ---------------------------------------------------------------------------------
def test_readme_configuration_section_is_what_the_model_renders() -> None:
    text = README.read_text()
    assert START in text and END in text, f"README.md lost its markers {START} / {END}"
    section = text.split(START, 1)[1].split(END, 1)[0].strip("\n")
    assert section == render(), f"README.md's configuration reference is stale: run {REGENERATE}"


def test_write_replaces_only_the_marked_section(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Configuration\n\n{START}\nold table\n{END}\n\nkept\n")
    main(["--write", str(readme)])
    assert readme.read_text() == (
        f"# Title\n\n## Configuration\n\n{START}\n{render()}\n{END}\n\nkept\n"
    )


def test_replace_section_refuses_text_without_markers() -> None:
    with pytest.raises(ValueError, match="markers"):
        replace_section("# no markers here\n", "table")


# -- every setting is documented and reachable --------------------------------------------------
@pytest.mark.parametrize("name", Settings.model_fields)
def test_every_setting_has_a_description_an_env_var_and_a_reference_row(name: str) -> None:
    description = Settings.model_fields[name].description
    assert description and description.strip() == description
    assert env_var(name) == f"SLUICE_{name.upper()}"
    assert f"| `{name}` |" in render() and f"`{env_var(name)}`" in render()


def test_every_setting_but_the_tables_has_one_value() -> None:
    assert sorted(TABLES) == ["amqp_broker_urls", "functions"]
    assert set(SCALARS) == set(Settings.model_fields) - set(TABLES)


@pytest.mark.parametrize("name", SCALARS)
def test_every_scalar_setting_has_a_serve_flag_named_after_it(name: str) -> None:
    option = serve_options()[name]
    flag = "--" + name.replace("_", "-")
    assert option.opts == [flag]
    assert option.secondary_opts == ([f"--no-{flag[2:]}"] if SCALARS[name] is bool else [])
    description = Settings.model_fields[name].description or ""
    assert (option.help or "").startswith(description.replace("`", ""))


@pytest.mark.parametrize("name", TABLES)
def test_table_settings_say_they_come_from_env_json_or_toml(name: str) -> None:
    row = next(line for line in render().splitlines() if line.startswith(f"| `{name}` |"))
    assert "env JSON" in row and "TOML table" in row


@pytest.mark.parametrize("flag", FLAGS_BEFORE)
def test_serve_keeps_every_flag_it_had(flag: str) -> None:
    flags = {f for option in serve_options().values() for f in option.opts}
    assert flag in flags


# -- each way of giving a setting sets it ---------------------------------------------------------
def test_serve_without_flags_leaves_every_setting_at_its_default(serve_settings: Any) -> None:
    assert serve_settings() == Settings()


@pytest.mark.parametrize("name", SCALARS)
def test_flag_sets_the_setting(name: str, serve_settings: Any) -> None:
    value, _ = values(name)
    assert getattr(serve_settings(*flag_args(name, value)), name) == value


@pytest.mark.parametrize("name", SCALARS)
def test_env_var_sets_the_setting(
    name: str, serve_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    value, _ = values(name)
    monkeypatch.setenv(env_var(name), env_value(value))
    assert getattr(serve_settings(), name) == value


@pytest.mark.parametrize("name", SCALARS)
def test_toml_key_sets_the_setting(name: str, serve_settings: Any, tmp_path: Path) -> None:
    value, _ = values(name)
    assert getattr(serve_settings("--config", toml_file(tmp_path, name, value)), name) == value


@pytest.mark.parametrize("name", SCALARS)
def test_flag_beats_env_and_env_beats_toml(
    name: str, serve_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = values(name)
    config = ["--config", toml_file(tmp_path, name, first)]
    monkeypatch.setenv(env_var(name), env_value(second))
    assert getattr(serve_settings(*config), name) == second
    assert getattr(serve_settings(*config, *flag_args(name, first)), name) == first


def test_table_settings_come_from_env_json_and_toml_merged(
    serve_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "sluice.toml"
    config.write_text(
        '[functions.orders]\ntarget = "python:app:orders"\ntimeout_s = 9\n'
        '[amqp_broker_urls]\n"arn:aws:mq:us-east-1:000000000000:broker:a" = "amqp://a"\n'
    )
    monkeypatch.setenv("SLUICE_FUNCTIONS", '{"orders": {"target": "python:env:orders"}}')
    monkeypatch.setenv("SLUICE_AMQP_BROKER_URLS", '{"arn:b": "amqp://b"}')
    settings = serve_settings("--config", str(config), "--function", "clicks=http://x/invoke")
    assert settings.functions["orders"].target == "python:env:orders"
    assert settings.functions["orders"].timeout_s == 9  # the file's, under env's target
    assert settings.functions["clicks"].target == "http://x/invoke"
    assert settings.amqp_broker_urls == {
        "arn:aws:mq:us-east-1:000000000000:broker:a": "amqp://a",
        "arn:b": "amqp://b",
    }


def test_a_value_the_model_refuses_is_a_usage_error_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_SQS_WAIT_TIME_S", "21")
    result = CliRunner().invoke(cli.app, ["serve", "--concurrency", "0"])
    assert result.exit_code == 2
    assert "setting concurrency:" in result.output
    assert "setting sqs_wait_time_s:" in result.output


def test_a_table_that_does_not_parse_is_a_usage_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLUICE_FUNCTIONS", "{not json")
    result = CliRunner().invoke(cli.app, ["serve"])
    assert result.exit_code == 2
    assert '"functions"' in result.output
