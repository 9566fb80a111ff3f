"""`sollol discover [CIDR ...]`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sollol_cli.cli._run import run_async
from sollol_cli.cli.options import JsonFlag, ManifestOpt, QuietFlag, VerboseOpt

if TYPE_CHECKING:
    from sollol_cli.discovery.write import WriteResult
    from sollol_cli.manifest.loader import LoadedManifest


def discover(
    cidrs: Annotated[list[str] | None, typer.Argument(help="Subnets to scan (default: discovery.subnets).")] = None,
    ports: Annotated[
        str | None, typer.Option("--ports", help="Ports to probe (default: discovery.ports, else 11434,8080,50052).")
    ] = None,
    manifest: ManifestOpt = None,
    write: Annotated[bool, typer.Option("--write", help="Add the new backends to the manifest's backends.")] = False,
    local: Annotated[bool, typer.Option("--local", help="Scan this machine's own subnets (real netmasks).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Allow ranges larger than /16 and public ranges.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="Connects in flight at most.")] = 512,
    timeout: Annotated[float, typer.Option(min=0.05, max=30.0, help="Seconds to wait for each connect.")] = 0.5,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Find Ollama, llama-server and rpc-server backends on a subnet, and say what each one is.

    Refuses public ranges and ranges larger than a /16 unless --force (exit 2).
    """

    async def body() -> None:
        import asyncio

        from sollol_cli.discovery.run import discover as scan
        from sollol_cli.discovery.run import result_data
        from sollol_cli.discovery.targets import DEFAULT_PORTS, parse_networks, parse_ports
        from sollol_cli.discovery.write import host_names, resolve_names, update_manifest
        from sollol_cli.errors import UsageError
        from sollol_cli.manifest.loader import find_manifest, load_manifest
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console, progress
        from sollol_cli.ui import discover as ui

        loaded: LoadedManifest | None = None
        if write or manifest is not None or not (cidrs or local) or ports is None:
            try:
                loaded = load_manifest(find_manifest(manifest, load_settings().manifest))
            except UsageError:  # no manifest: fine unless one was asked for
                if write or manifest is not None:
                    raise
        if local:
            targets = _local_subnets()
        elif cidrs:
            targets = cidrs
        elif loaded is not None and loaded.cluster.discovery.subnets:
            targets = loaded.cluster.discovery.subnets
        else:
            raise UsageError(
                "nothing to scan: give a CIDR such as 192.168.1.0/24",
                hint="or set discovery.subnets in the manifest, or use --local for this machine's subnets",
            )
        networks = parse_networks(targets, force=force)
        wanted = parse_ports(ports) if ports else tuple(loaded.cluster.discovery.ports) if loaded else DEFAULT_PORTS
        # host names in the manifest resolve while the scan runs, so --write can tell they are already there
        names = asyncio.create_task(resolve_names(host_names(loaded.cluster) if write and loaded else []))
        with progress.step_display("sollol discover", quiet=quiet or json) as reporter:
            result = await scan(networks, wanted, concurrency=concurrency, timeout=timeout, reporter=reporter)
        aliases = await names
        written: WriteResult | None = None
        if write:
            assert loaded is not None  # --write loads the manifest or fails above
            written = update_manifest(loaded.path, result.found, aliases)
        if json:
            console.print_json(result_data(result, written.added if written else None))
        else:
            ui.print_found(result)
            if written is not None and loaded is not None:
                ui.print_written(written, loaded.path)

    run_async(body, verbose=verbose)


def _local_subnets() -> list[str]:
    import json as jsonlib
    import subprocess

    from sollol_cli.discovery.targets import local_networks
    from sollol_cli.errors import UsageError

    try:
        data = jsonlib.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, check=True).stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        raise UsageError("--local needs the `ip` command (iproute2) to read this machine's subnets") from None
    networks = local_networks(data)
    if not networks:
        raise UsageError("this machine has no subnet to scan besides loopback")
    return [str(n) for n in networks]
