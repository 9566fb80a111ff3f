"""`sollol demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, QuietFlag, VerboseOpt


def demo(
    keep: Annotated[bool, typer.Option("--keep", help="Leave the localhost cluster running afterwards.")] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="A GGUF to use instead of the tiny random-weight demo model.")
    ] = None,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """See sollol work on this machine: a sharded and a distributed prompt, then everything stopped."""

    async def body() -> None:
        from dataclasses import asdict

        from sollol_cli.demo.run import run_demo
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console, progress
        from sollol_cli.ui import demo as ui

        with progress.step_display("sollol demo", quiet=quiet or json) as reporter:
            result = await run_demo(load_settings(), keep=keep, model=model, reporter=reporter)
        if json:
            console.print_json({**asdict(result), "manifest": str(result.manifest), "model": str(result.model)})
        else:
            ui.print_demo(result)

    run_async(body, verbose=verbose)
