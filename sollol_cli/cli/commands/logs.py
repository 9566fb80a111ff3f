"""`sollol logs NODE [ROLE]`."""

from __future__ import annotations

from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import ManifestOpt, VerboseOpt


def logs(
    node: Annotated[str, typer.Argument(help="Node name from the manifest.")],
    role: Annotated[
        str | None,
        typer.Argument(
            help="rpc, ollama, llamacpp, build (the llama.cpp build on the node, `llama_cpp.build: node`), or "
            "coordinator[:MODEL] (a sharded model's coordinator on the node); needed when a node runs several."
        ),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end to show first.")] = 50,
    manifest: ManifestOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Show the log of a service sollol started on a node."""

    async def body() -> None:
        import sys

        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.provision.logs import read_log
        from sollol_cli.settings import load_settings

        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest, settings.manifest))
        async for chunk in read_log(loaded.cluster, settings, node, role, lines=lines, follow=follow):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    run_async(body, verbose=verbose)
