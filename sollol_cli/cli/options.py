"""Option and argument aliases shared by the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ManifestArg = Annotated[
    Path | None,
    typer.Argument(
        help="Cluster manifest (default: ./cluster.yaml, then $SOLLOL_MANIFEST).",
        show_default=False,
        metavar="MANIFEST",
    ),
]
ManifestOpt = Annotated[
    Path | None,
    typer.Option(
        "--manifest",
        "-f",
        help="Cluster manifest (default: ./cluster.yaml, then $SOLLOL_MANIFEST).",
        show_default=False,
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail; twice shows tracebacks.")]
QuietFlag = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")]
