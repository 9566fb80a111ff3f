"""The command-line interface (the only package that imports typer). Commands stay thin: parse, call, render.

Command modules import only typer and this package at module level, so `sollol --help` stays instant;
everything heavy is imported inside the command bodies.
"""

from __future__ import annotations

import os
import sys

import typer

from sollol_cli.cli._run import EXIT_INTERRUPTED
from sollol_cli.cli.commands import (
    bench,
    completion,
    dashboard,
    demo,
    discover,
    init,
    llamacpp,
    logs,
    provision,
    run,
    schema,
    serve,
    status,
    validate,
)

app = typer.Typer(
    name="sollol",
    help="Make several machines with GPUs or big CPUs act as one LLM server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from sollol_cli import __version__

        typer.echo(f"sollol {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Make several machines with GPUs or big CPUs act as one LLM server."""


app.command("init")(init.init)
app.command("validate")(validate.validate)
app.command("up")(provision.up)
app.command("down")(provision.down)
app.command("logs")(logs.logs)
app.command("run")(run.run)
app.command("status")(status.status)
app.command("bench")(bench.bench)
app.command("serve")(serve.serve)
app.command("dashboard")(dashboard.dashboard)
app.command("discover")(discover.discover)
app.command("demo")(demo.demo)
app.command("schema")(schema.schema)
app.command("completion")(completion.completion)
app.add_typer(llamacpp.app, name="llama-cpp")


def main() -> None:
    if "_SOLLOL_COMPLETE" in os.environ:  # a completion script is asking; register typer's shell classes
        from typer._completion_classes import completion_init

        completion_init()
    try:
        app(prog_name="sollol")
    except KeyboardInterrupt:  # Ctrl-C outside a command body (e.g. during argument parsing)
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
