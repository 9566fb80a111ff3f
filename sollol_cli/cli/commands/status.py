"""`sollol status`."""

from __future__ import annotations

from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestOpt, VerboseOpt


def status(
    manifest: ManifestOpt = None,
    json: JsonFlag = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.", min=0.2)] = 2.0,
    verbose: VerboseOpt = 0,
) -> None:
    """Every node and backend at a glance: reachable, versions, models, load, memory."""

    async def body() -> None:
        import asyncio
        import time

        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.runtime.session import open_cluster
        from sollol_cli.runtime.status import cluster_status, status_failure
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console
        from sollol_cli.ui import status as ui

        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest, settings.manifest))
        cluster = loaded.cluster
        async with open_cluster(cluster, settings, reporter=console.report_warnings) as runtime:
            data = await cluster_status(runtime, time.time())
            if json:
                console.print_json(data)
            elif not watch:
                ui.print_status(data)
            else:
                with ui.live_status(data) as update:
                    while True:
                        await asyncio.sleep(interval)
                        await runtime.monitor.probe_all()
                        data = await cluster_status(runtime, time.time())
                        update(data)
        failure = status_failure(data)
        if failure is not None:
            raise failure

    run_async(body, verbose=verbose)
