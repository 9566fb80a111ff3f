"""`sollol serve`."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import ManifestOpt, VerboseOpt


class LogFormatChoice(StrEnum):
    text = "text"
    json = "json"


def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (overrides gateway.host; default 127.0.0.1).", show_default=False),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port to listen on (overrides gateway.port; default 11434).", min=0, max=65535),
    ] = None,
    log_format: Annotated[
        LogFormatChoice, typer.Option("--log-format", help="Access log on stderr: one line per request.")
    ] = LogFormatChoice.text,
    grace: Annotated[
        float, typer.Option(help="Seconds in-flight requests may take to finish after SIGINT/SIGTERM.", min=0)
    ] = 30.0,
    manifest: ManifestOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Serve the cluster as one Ollama-, OpenAI- and Anthropic-compatible server, in the foreground."""

    async def body() -> None:
        from sollol_cli.gateway.auth import api_key_from_env
        from sollol_cli.gateway.server import Listening, ServeOptions, serve_until_signalled
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console

        settings = load_settings()
        cluster = load_manifest(find_manifest(manifest, settings.manifest)).cluster
        gateway = cluster.gateway
        options = ServeOptions(
            host=host or gateway.host,
            port=gateway.port if port is None else port,
            api_key=api_key_from_env(gateway.api_key_env),
            log=_stderr_line,
            log_format="json" if log_format is LogFormatChoice.json else "text",
            grace_s=grace,
            reporter=console.report_warnings,
        )

        def listening(event: Listening) -> None:
            parts = [f"{event.healthy}/{event.backends} backends up"] if event.backends or not event.rpc_servers else []
            if event.rpc_servers:
                parts.append(f"{event.rpc_up}/{event.rpc_servers} rpc-servers up")
            parts.append("API key required" if options.api_key else "no API key")
            console.info(f"sollol serve: {cluster.name} on {event.url} ({', '.join(parts)}); Ctrl-C to stop")
            if not options.api_key and not _loopback(options.host):
                console.warn(f"anyone who can reach {options.host} can use the cluster: set gateway.api_key_env")

        def stopping(in_flight: int) -> None:
            waiting = f", waiting up to {grace:g} s for {in_flight} in-flight requests" if in_flight else ""
            console.info(f"sollol serve: stopping{waiting}")

        await serve_until_signalled(cluster, settings, options, on_listening=listening, on_stopping=stopping)

    run_async(body, verbose=verbose)


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _stderr_line(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
