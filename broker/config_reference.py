"""The configuration reference: every setting with its flag, environment variable, TOML key,
default and meaning, rendered from the settings model (:class:`broker.settings.Settings`) and
from the flags ``sluice serve`` really has, for the README's "Configuration" section.

    python -m broker.config_reference                      # print the section
    python -m broker.config_reference --write README.md    # rewrite it between the markers

``tests/test_config_reference.py`` fails when the README drifts from what this renders.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

import typer
from pydantic.fields import FieldInfo
from typer.core import TyperGroup, TyperOption

from broker.cli import app
from broker.settings import Settings, env_var, scalar_settings

__all__ = ["END", "REGENERATE", "START", "render", "replace_section", "serve_options"]

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
REGENERATE = "python -m broker.config_reference --write README.md"

# Table settings `serve` also fills from a flag of its own: setting -> the flag's parameter.
TABLE_FLAGS = {"functions": "function"}

PRECEDENCE = """\
Precedence: flags > environment (`SLUICE_<NAME>`) > the TOML file given with `--config` > \
defaults. Each setting is taken from the first of these that has it; a flag counts only when \
it is passed, so an unpassed flag never hides the environment or the file. `sluice serve` \
has a flag for every setting but the tables; the other commands read the same \
environment and file and take only the flags they need (such as `--redis-url`). In the \
environment, booleans are `true` or `false`; in the file, settings are top-level keys \
(`retry_base_delay = 60`)."""

TABLES = """\
`functions` and `amqp_broker_urls` are tables, given in the TOML file (a \
`[functions.NAME]` table per function, as below; an `[amqp_broker_urls]` table with quoted \
ARN keys) or in the environment as one JSON object \
(`SLUICE_FUNCTIONS='{"hello": {"target": "python:app:hello"}}'`); the environment's entries \
are merged into the file's, key by key. `--function NAME=TARGET` (repeatable) sets a \
function to that target with default timeout and memory, replacing one of the same name."""


def serve_options() -> dict[str, TyperOption]:
    """The options of ``sluice serve``, by parameter name, as the command itself has them."""
    group = cast(TyperGroup, typer.main.get_command(app))
    return {
        param.name: param
        for param in group.commands["serve"].params
        if isinstance(param, TyperOption) and param.name
    }


def render() -> str:
    """The reference as Markdown: the precedence, the table of settings, the tables' note."""
    options = serve_options()
    scalars = scalar_settings()
    rows = [
        "| setting (TOML key) | flag | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in Settings.model_fields.items():
        cells = [
            f"`{name}`",
            _flag(name, options) if name in scalars else _table_flag(name, options),
            f"`{env_var(name)}`" + ("" if name in scalars else " (JSON)"),
            _default(field),
            (field.description or "").replace("|", "\\|"),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n\n".join([PRECEDENCE, "\n".join(rows), TABLES])


def replace_section(text: str, section: str) -> str:
    """``text`` with what lies between the markers replaced by ``section``."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"the markers {START} and {END} are missing")
    return f"{head}{START}\n{section}\n{END}{tail}"


def _flag(name: str, options: dict[str, TyperOption]) -> str:
    option = options.get(name)
    if option is None:
        return "none"
    return " / ".join(f"`{flag}`" for flag in [*option.opts, *option.secondary_opts])


def _table_flag(name: str, options: dict[str, TyperOption]) -> str:
    option = options.get(TABLE_FLAGS.get(name, ""))
    if option is None:
        return "none (env JSON or TOML table)"
    shown = " ".join(filter(None, [option.opts[0], option.metavar]))
    return f"`{shown}` (repeatable, target only); or env JSON or TOML table"


def _default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if value == {}:
        return "empty"
    return f"`{json.dumps(value)}`"  # a TOML literal too, for these scalars


def main(argv: list[str] | None = None) -> None:
    """Print the reference, or with ``--write README`` rewrite that file's section."""
    parser = argparse.ArgumentParser(prog="python -m broker.config_reference")
    parser.add_argument("--write", type=Path, metavar="README", help="rewrite its section")
    args = parser.parse_args(argv)
    if args.write is None:
        print(render())
        return
    path: Path = args.write
    path.write_text(replace_section(path.read_text(), render()))


if __name__ == "__main__":
    main()
