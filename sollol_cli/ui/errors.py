"""How failures look: one line `error: ...`, manifest problems one per line as `file:line:col: path: msg`."""

from __future__ import annotations

import traceback

from rich.markup import escape

from sollol_cli.errors import ManifestError, SollolError
from sollol_cli.ui.console import err


def print_error(error: SollolError) -> None:
    if isinstance(error, ManifestError):
        for problem in error.problems:
            err().print(escape(str(problem)), highlight=False)
        count = len(error.problems)
        noun = "problem" if count == 1 else "problems"
        err().print(f"[red]error:[/] invalid manifest: {count} {noun}", highlight=False)
        return
    err().print(f"[red]error:[/] {escape(str(error))}", highlight=False)


def print_internal_error(exc: BaseException, *, verbose: bool) -> None:
    if verbose:
        err().print(escape("".join(traceback.format_exception(exc))), highlight=False)
    err().print(
        f"[red]error:[/] internal error: {escape(type(exc).__name__)}: {escape(str(exc))}"
        + ("" if verbose else " (run again with --verbose for the traceback)"),
        highlight=False,
    )


def print_interrupted() -> None:
    err().print("[yellow]interrupted[/]", highlight=False)
