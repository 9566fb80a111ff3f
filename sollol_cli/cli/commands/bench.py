"""`sollol bench`."""

from __future__ import annotations

from typing import Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestOpt, QuietFlag, VerboseOpt


def bench(
    models: Annotated[list[str] | None, typer.Argument(help="Models to measure (default: the manifest's).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests at once.")] = 4,
    requests: Annotated[int, typer.Option("--requests", "-n", min=1, help="Requests one at a time first.")] = 3,
    tokens: Annotated[int, typer.Option("--tokens", "-t", min=1, help="Tokens each request generates.")] = 64,
    gateway: Annotated[
        bool, typer.Option("--gateway/--no-gateway", help="Also measure what `sollol serve` adds to a request.")
    ] = True,
    manifest: ManifestOpt = None,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Time to first token and tokens/s of every backend for each model, alone and at once; saved for later."""

    async def body() -> None:
        from sollol_cli.gateway.added_latency import GATEWAY_PAIRS, added_latency_data, measure_added_latency
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.runtime.bench import BenchOptions
        from sollol_cli.runtime.bench import bench as measure
        from sollol_cli.runtime.bench_results import compare, comparisons_data, rows_data, save_results
        from sollol_cli.runtime.session import open_cluster
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import bench as ui
        from sollol_cli.ui import console, progress

        settings = load_settings()
        loaded = load_manifest(find_manifest(manifest, settings.manifest))
        options = BenchOptions(concurrency=concurrency, requests=requests, tokens=tokens)
        with progress.step_display("sollol bench", quiet=quiet or json) as reporter:
            async with open_cluster(loaded.cluster, settings, reporter=reporter) as runtime:
                rows = await measure(runtime, models or [], options, reporter=reporter)
                measured_models = list(dict.fromkeys(r.model for r in rows))
                added = (
                    await measure_added_latency(runtime, measured_models, GATEWAY_PAIRS, reporter=reporter)
                    if gateway
                    else []
                )
        await save_results(settings.state_dir, loaded.cluster.name, rows)
        comparisons = compare(rows)
        if json:
            console.print_json(
                {
                    "cluster": loaded.cluster.name,
                    "concurrency": concurrency,
                    "rows": rows_data(rows),
                    "sharding": comparisons_data(comparisons),
                    "gateway": added_latency_data(added),
                }
            )
        else:
            ui.print_bench(rows, concurrency, comparisons, added)

    run_async(body, verbose=verbose)
