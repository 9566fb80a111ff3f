"""Run the CLI in-process with separate stdout/stderr (typer's CliRunner)."""

from __future__ import annotations

from typer.testing import CliRunner, Result

from sollol_cli.cli import app


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input, catch_exceptions=False)
