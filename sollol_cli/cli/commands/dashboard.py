"""`sollol dashboard`: the live web dashboard without the gateway (status only, no request traffic)."""

from __future__ import annotations

from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import ManifestOpt, VerboseOpt

DEFAULT_PORT = 8080


def dashboard(
    port: Annotated[
        int,
        typer.Option(envvar="SOLLOL_DASHBOARD_PORT", help="Port to listen on (0: any free one).", min=0, max=65535),
    ] = DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    manifest: ManifestOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Show the cluster live in a browser: backends, models, layer placement. `sollol serve` serves the same
    page at /ui/ on the gateway's port, with the request traffic too."""

    async def body() -> None:
        from sollol_cli.gateway.auth import api_key_from_env
        from sollol_cli.gateway.server import Listening, ServeOptions, serve_until_signalled
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console

        settings = load_settings()
        cluster = load_manifest(find_manifest(manifest, settings.manifest)).cluster
        options = ServeOptions(
            host=host,
            port=port,
            api_key=api_key_from_env(cluster.gateway.api_key_env),
            grace_s=1.0,
            reporter=console.report_warnings,
            api=False,
        )

        def listening(event: Listening) -> None:
            url = event.url + "/ui/"
            key = "API key required" if options.api_key else "no API key"
            console.info(f"sollol dashboard: {cluster.name} on {url} ({key}); Ctrl-C to stop")
            if open_browser:
                import webbrowser

                webbrowser.open(url)

        await serve_until_signalled(cluster, settings, options, on_listening=listening)

    run_async(body, verbose=verbose)
