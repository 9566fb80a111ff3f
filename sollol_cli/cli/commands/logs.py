"""`sollol logs NODE [ROLE]`."""

from __future__ import annotations

from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestOpt, VerboseOpt


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
    json: JsonFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show the log of a service sollol started on a node, or of the llama.cpp build there."""

    async def body() -> None:
        import sys

        from sollol_cli.errors import UsageError
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.provision.logs import log_file, read_log
        from sollol_cli.settings import load_settings

        if json and follow:
            raise UsageError("--json prints the log's last lines once", hint="drop --follow or --json")
        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest, settings.manifest))
        chunks = read_log(loaded.cluster, settings, node, role, lines=lines, follow=follow)
        if json:
            from sollol_cli.ui import console

            found, path = log_file(loaded.cluster, node, role)
            text = "".join([chunk async for chunk in chunks])
            shown = role or found.roles[0]  # log_file took the node's only role
            console.print_json({"node": node, "role": shown, "path": path, "lines": text.splitlines()})
            return
        async for chunk in chunks:
            sys.stdout.write(chunk)
            sys.stdout.flush()

    run_async(body, verbose=verbose)
