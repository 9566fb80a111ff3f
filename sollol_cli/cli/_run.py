"""The one error boundary: run a command body, map exceptions to documented exit codes.

Exit codes: 0 ok, each exception's `exit_code` (errors.py, the one source; README lists them), 130 when
interrupted, and SollolError's (1) for anything unexpected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import typer

from sollol_cli.errors import SollolError

T = TypeVar("T")

EXIT_INTERRUPTED = 130


def run(body: Callable[[], T], *, verbose: int = 0) -> T:
    """Call `body`; on failure print one line (a traceback only with --verbose) and exit with its code."""
    from sollol_cli.ui import errors as ui_errors

    try:
        return body()
    except SollolError as error:
        if verbose > 1:
            ui_errors.print_internal_error(error, verbose=True)
        if not error.reported:  # a table of per-node results already said what failed
            ui_errors.print_error(error)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        ui_errors.print_interrupted()
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # the last line of defence: still no traceback unless asked
        ui_errors.print_internal_error(exc, verbose=verbose > 0)
        raise typer.Exit(SollolError.exit_code) from None


def run_async(make: Callable[[], Coroutine[Any, Any, T]], *, verbose: int = 0) -> T:
    """Exactly one event loop per command."""
    return run(lambda: asyncio.run(make()), verbose=verbose)
