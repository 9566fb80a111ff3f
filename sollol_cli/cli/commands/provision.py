"""`sollol up` and `sollol down`."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestArg, QuietFlag, VerboseOpt

NodeOpt = Annotated[list[str] | None, typer.Option("--node", "-n", help="Only these nodes (repeatable).")]
DryRunFlag = Annotated[bool, typer.Option("--dry-run", help="Print the plan per node; change nothing.")]


def up(
    manifest: ManifestArg = None,
    dry_run: DryRunFlag = False,
    node: NodeOpt = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds a started service has to answer.")] = 60.0,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Bring every node to the state the manifest describes (idempotent)."""
    _provision("up", manifest, dry_run, node, ready_timeout, json, quiet, verbose)


def down(
    manifest: ManifestArg = None,
    dry_run: DryRunFlag = False,
    node: NodeOpt = None,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Stop exactly what `up` started; leave everything else alone."""
    _provision("down", manifest, dry_run, node, 60.0, json, quiet, verbose)


def _provision(
    action: Literal["up", "down"],
    manifest: object,
    dry_run: bool,
    node: list[str] | None,
    ready_timeout: float,
    json: bool,
    quiet: bool,
    verbose: int,
) -> None:
    async def body() -> None:
        import functools
        from pathlib import Path

        from sollol_cli.errors import UsageError
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.manifest.summary import warnings
        from sollol_cli.provision.apply import Options
        from sollol_cli.provision.cluster import provision
        from sollol_cli.provision.report import outcome_data
        from sollol_cli.settings import load_settings
        from sollol_cli.sharding.lifecycle import stop_all
        from sollol_cli.ui import console, progress
        from sollol_cli.ui import provision as ui

        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest if isinstance(manifest, Path) else None, settings.manifest))
        unknown = [n for n in node or [] if n not in {x.name for x in loaded.cluster.nodes}]
        if unknown:
            raise UsageError(f"no node named {', '.join(unknown)} in {loaded.path}")
        for warning in warnings(loaded.cluster):
            console.warn(warning)
        options = Options(dry_run=dry_run, ready_timeout=ready_timeout)
        coordinators = functools.partial(stop_all, settings, loaded.cluster.name)
        with progress.step_display(f"sollol {action}", quiet=quiet or json or dry_run) as reporter:
            outcome = await provision(
                loaded, action, settings, reporter=reporter, options=options, only=node, stop_coordinators=coordinators
            )
        data = outcome_data(outcome)
        if json:
            console.print_json(data)
        elif dry_run:
            ui.print_plan(data)
        else:
            ui.print_outcome(data)
        if outcome.failure is not None:
            raise outcome.failure

    run_async(body, verbose=verbose)
