"""`sollol run MODEL [PROMPT]`."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestOpt, VerboseOpt


def run(
    model: Annotated[str, typer.Argument(help="Model name, e.g. codellama:13b.")],
    prompt: Annotated[
        str | None, typer.Argument(help="The prompt; '-' or omitted reads stdin when it is a pipe.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0 = greedy).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    num_ctx: Annotated[int | None, typer.Option("--num-ctx", help="Context size in tokens.")] = None,
    num_predict: Annotated[int | None, typer.Option("--num-predict", help="Tokens to generate at most.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="'json' for a JSON answer.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Chat API; the prompt may be a JSON list of messages.")] = False,
    json: JsonFlag = False,
    manifest: ManifestOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Answer a prompt through the cluster's router, streaming tokens as they arrive."""
    if format is not None and format != "json":
        raise typer.BadParameter("only 'json' is supported", param_hint="--format")

    async def body() -> None:
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.runtime.prompt import PromptOptions
        from sollol_cli.runtime.session import open_cluster
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import run as ui

        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest, settings.manifest))
        options = PromptOptions(system, temperature, seed, num_ctx, num_predict, format)
        text = prompt
        if text in (None, "-") and not sys.stdin.isatty():
            text = sys.stdin.read()
        async with open_cluster(loaded.cluster, settings, reporter=ui.runtime_reporter(verbose=verbose)) as rt:
            if text is None or text == "-":
                await ui.interactive_chat(rt.dispatcher, model, options, verbose=verbose)
                return
            await ui.one_shot(rt.dispatcher, model, text, options, chat=chat, as_json=json, verbose=verbose)

    run_async(body, verbose=verbose)
