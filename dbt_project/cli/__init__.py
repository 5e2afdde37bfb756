"""The ``etl`` command."""

from __future__ import annotations

from dbt_project.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
