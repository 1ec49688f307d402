"""Sluice's version, single-sourced: ``pyproject.toml`` sets it, the installed distribution's
metadata carries it, and everything else (``broker.__version__``, the OpenAPI document)
reads it from here."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("sluice-broker")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
