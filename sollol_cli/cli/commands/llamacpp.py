"""`sollol llama-cpp build|path`: the static rpc-server and llama-server binaries sollol copies to nodes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sollol_cli.cli._run import run
from sollol_cli.cli.options import JsonFlag, QuietFlag, VerboseOpt

if TYPE_CHECKING:
    from sollol_cli.llamacpp.build import LlamaCppBinaries

app = typer.Typer(
    help="Build and locate the llama.cpp binaries sollol uses.",
    no_args_is_help=True,
)

BINARY_NAMES = ("rpc-server", "llama-server")
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="cpu: static, runs anywhere. vulkan: GPUs through the node's Vulkan driver (building needs glslc; "
        "newer Vulkan headers are fetched if the system's are too old).",
    ),
]


def _print_paths(binaries: LlamaCppBinaries, name: str | None = None) -> None:
    paths = {"rpc-server": binaries.rpc_server, "llama-server": binaries.llama_server}
    if name is not None:
        typer.echo(str(paths[name]))
        return
    for label, path in paths.items():
        typer.echo(f"{label:<13}{path}")


@app.command("build")
def build(
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", min=1, help="Parallel compile jobs.", show_default="CPU count")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild from scratch even if a cached build exists.")] = False,
    backend: BackendOpt = "cpu",
    vulkan_include: Annotated[
        Path | None,
        typer.Option(
            "--vulkan-include",
            help="Include dir of Vulkan headers >= 1.3.261 to build with (--backend vulkan).",
            show_default="the system's if new enough, else Debian trixie's libvulkan-dev, unpacked in the cache",
        ),
    ] = None,
    json: JsonFlag = False,
    quiet: QuietFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Build rpc-server and llama-server from the pinned llama.cpp (cpu ~4 min, vulkan ~13 min on 2 cores), or
    reuse the cache (one per backend)."""

    def body() -> None:
        from sollol_cli.llamacpp.build import build as build_binaries
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console
        from sollol_cli.ui.progress import step_display

        settings = load_settings()
        with step_display("llama.cpp build", quiet=quiet) as reporter:
            binaries = build_binaries(
                settings.cache_dir, reporter=reporter, jobs=jobs, force=force, backend=backend,
                vulkan_include=vulkan_include,
            )  # fmt: skip
        if json:
            console.print_json(binaries.to_json())
        else:
            _print_paths(binaries)

    run(body, verbose=verbose)


@app.command("path")
def path(
    name: Annotated[
        str | None,
        typer.Argument(help="Print only this binary's path: rpc-server or llama-server.", show_default=False),
    ] = None,
    backend: BackendOpt = "cpu",
    json: JsonFlag = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Where the binaries sollol uses are ($SOLLOL_RPC_SERVER_PATH / $SOLLOL_LLAMA_SERVER_PATH win over the build)."""

    def body() -> None:
        from sollol_cli.errors import SollolError, UsageError
        from sollol_cli.llamacpp.build import cmake_options, find_build, install_dir, resolve_binaries
        from sollol_cli.settings import load_settings
        from sollol_cli.ui import console

        if name is not None and name not in BINARY_NAMES:
            raise UsageError(f"unknown binary '{name}'", hint="use rpc-server or llama-server")
        cmake_options(backend)  # refuses a backend sollol does not build
        settings = load_settings()
        # the environment's overrides name the binaries sollol uses, which are the CPU build's
        binaries = resolve_binaries(settings) if backend == "cpu" else find_build(settings.cache_dir, backend)
        if binaries is None:
            which = "" if backend == "cpu" else f" ({backend})"
            raise SollolError(
                f"llama.cpp{which} is not built yet (nothing usable in {install_dir(settings.cache_dir, backend)})",
                hint="run `sollol llama-cpp build" + ("`" if backend == "cpu" else f" --backend {backend}`"),
            )
        if json:
            console.print_json(binaries.to_json())
        else:
            _print_paths(binaries, name)

    run(body, verbose=verbose)
