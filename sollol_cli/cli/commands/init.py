"""`sollol init`: write a starter manifest, from flags or from a SynapticLlamas config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sollol_cli.cli._run import run
from sollol_cli.cli.options import JsonFlag, VerboseOpt


def init(
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A SynapticLlamas/SOLLOL config to convert (e.g. ~/.synapticllamas.json).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Manifest to write ('-' prints it on stdout).")] = Path(
        "cluster.yaml"
    ),
    rpc: Annotated[
        list[str] | None, typer.Option("--rpc", help="An rpc-server HOST[:PORT] (repeatable).", show_default=False)
    ] = None,
    ollama: Annotated[
        list[str] | None, typer.Option("--ollama", help="An Ollama HOST[:PORT] (repeatable).", show_default=False)
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="A model to serve (repeatable).", show_default=False)
    ] = None,
    mode: Annotated[
        str | None,
        typer.Option("--mode", help="auto, distribute or shard, for every model (models[].mode).", show_default=False),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Cluster name (name).")] = "cluster",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing manifest.")] = False,
    json: JsonFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Write a starter cluster manifest; asks nothing.

    With --from, converts SynapticLlamas' ~/.synapticllamas.json (and the ~/.synapticllamas_nodes.json
    beside it): rpc_backends become rpc backends, the model its models, and the two switches
    task_distribution_enabled / model_sharding_enabled each model's mode.
    """

    def body() -> None:
        import sys

        from sollol_cli.errors import UsageError
        from sollol_cli.manifest.init import read_synapticllamas, write_manifest
        from sollol_cli.manifest.models import ModelMode
        from sollol_cli.manifest.starter import Starter, with_flags
        from sollol_cli.ui import console
        from sollol_cli.ui import init as ui

        try:
            chosen = ModelMode(mode) if mode is not None else None
        except ValueError:
            raise UsageError(f"--mode '{mode}' is not one of auto, distribute, shard") from None
        if source is not None:
            starter, read = read_synapticllamas(source.expanduser(), name=name)
        else:
            starter, read = Starter(name=name), []
        starter = with_flags(starter, rpc=rpc or [], ollama=ollama or [], models=model or [], mode=chosen)
        written = write_manifest(starter, None if str(output) == "-" else output, force=force, read=read)
        if written.path is None:
            sys.stdout.write(written.text)
        elif json:
            console.print_json(ui.written_data(written))
        else:
            ui.print_written(written)

    run(body, verbose=verbose)
