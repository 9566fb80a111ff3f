"""`sollol validate`: check a manifest and summarise it."""

from __future__ import annotations

from sollol_cli.cli._run import run
from sollol_cli.cli.options import JsonFlag, ManifestArg, VerboseOpt


def validate(manifest: ManifestArg = None, json: JsonFlag = False, verbose: VerboseOpt = 0) -> None:
    """Check a cluster manifest: every problem at once, as file:line:col."""

    def body() -> None:
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.manifest.summary import summary
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console, tables

        path = find_manifest(manifest, load_settings().manifest)
        loaded = load_manifest(path)
        data = summary(loaded.cluster, str(path))
        if json:
            console.print_json(data)
        else:
            tables.print_manifest_summary(data)

    run(body, verbose=verbose)
