"""The demo as a library call: binaries, demo model, `up` of the localhost cluster, two prompts, `down`.

It renders its own copy of the packaged localhost manifest (cache paths and free ports filled in) into
the state directory, so it works whatever SOLLOL_CACHE_DIR is and whatever already listens on 8080.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import SollolError
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings

PROMPT = "Explain in one sentence why a cluster of small machines can run a large language model."
DEFAULT_CACHE = "~/.cache/sollol"
DEFAULT_PORTS = (50052, 50053, 8080)


@dataclass
class PromptResult:
    model: str
    mode: str
    answer: str
    tokens: int | None
    tokens_per_s: float | None
    ttft_s: float | None
    narrative: list[events.Event] = field(default_factory=list)  # what the coordinator did


@dataclass
class DemoResult:
    manifest: Path
    model: Path
    demo_model: bool  # sollol's random-weight model (answers are gibberish by design)
    binaries: str
    results: list[PromptResult]
    kept: bool


def template() -> str:
    return resources.files("sollol_cli.demo").joinpath("localhost.yaml").read_text()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def render_manifest(cache_dir: Path, *, ports: dict[int, int] | None = None) -> str:
    """The packaged manifest with this installation's cache dir and, where a default port is taken, another."""
    text = template().replace(DEFAULT_CACHE, str(cache_dir))
    for default, chosen in (ports or {}).items():
        text = text.replace(f"port: {default}", f"port: {chosen}")
    return text


def choose_ports() -> dict[int, int]:
    return {port: port if _port_free(port) else _free_port() for port in DEFAULT_PORTS}


def demo_model(settings: Settings, given: Path | None, reporter: events.Reporter) -> tuple[Path, bool]:
    """`cache/models/demo.gguf` -> the user's GGUF, or sollol's tiny random-weight model (generated once)."""
    if given is not None:
        source = given.expanduser().resolve()
        if not source.is_file():
            raise SollolError(
                f"--model {given}: no such file", hint="give a GGUF file, e.g. a blob from your Ollama store"
            )
        from sollol_cli.sharding.gguf_info import read_gguf_info

        read_gguf_info(source)  # refuses non-GGUF files and unknown architectures with a clear message
        is_demo = False
    else:
        from sollol_cli.llamacpp.tinymodel import ensure_tiny_model

        source = ensure_tiny_model(settings.cache_dir, "tiny", reporter=reporter)
        is_demo = True
    link = settings.cache_dir / "models" / "demo.gguf"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == source:
            return source, is_demo
        link.unlink()
    os.symlink(source, link)
    return source, is_demo


async def run_demo(
    settings: Settings,
    *,
    keep: bool = False,
    model: Path | None = None,
    reporter: events.Reporter = events.ignore,
    max_tokens: int = 48,
) -> DemoResult:
    from sollol_cli.llamacpp.build import build, resolve_binaries
    from sollol_cli.manifest.loader import load_manifest
    from sollol_cli.provision.apply import Options
    from sollol_cli.provision.cluster import provision
    from sollol_cli.sharding.lifecycle import stop_all

    binaries = resolve_binaries(settings) or build(settings.cache_dir, reporter=reporter)
    path, is_demo = demo_model(settings, model, reporter)
    manifest = settings.state_dir / "demo" / "localhost.yaml"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(render_manifest(settings.cache_dir, ports=choose_ports()))
    loaded = load_manifest(manifest)

    outcome = await provision(loaded, "up", settings, reporter=reporter, options=Options(ready_timeout=120))
    coordinators = functools.partial(stop_all, settings, loaded.cluster.name)
    failures = [f"{n.node}: {n.error}" for n in outcome.nodes if n.error]
    if failures:
        await provision(loaded, "down", settings, reporter=reporter, stop_coordinators=coordinators)
        raise SollolError("the localhost cluster did not come up: " + "; ".join(failures))
    results: list[PromptResult] = []
    try:
        results = await _prompts(loaded.cluster, settings, reporter, max_tokens)
    finally:
        if not keep:
            await provision(loaded, "down", settings, reporter=reporter, stop_coordinators=coordinators)
    return DemoResult(manifest, path, is_demo, str(binaries.rpc_server.parent), results, keep)


async def _prompts(
    cluster: Cluster, settings: Settings, reporter: events.Reporter, max_tokens: int
) -> list[PromptResult]:
    from sollol_cli.runtime.dispatch import Trace
    from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
    from sollol_cli.runtime.session import open_cluster

    options = PromptOptions(temperature=0.0, seed=1, num_predict=max_tokens)
    out: list[PromptResult] = []
    async with open_cluster(cluster, settings, reporter=reporter) as runtime:
        for model in ("demo-sharded", "demo"):
            reporter(events.StepStarted("demo", "prompt", model))
            trace = Trace(model)
            pieces: list[str] = []
            final = await answer(
                runtime.dispatcher, "generate", generate_request(model, PROMPT, options), trace, pieces.append
            )
            tokens = final.get("eval_count")
            out.append(
                PromptResult(
                    model,
                    trace.mode,
                    "".join(pieces),
                    tokens if isinstance(tokens, int) else None,
                    trace.tokens_per_s,
                    trace.ttft_s,
                    list(trace.events),
                )  # fmt: skip
            )
            reporter(events.StepDone("demo", "prompt", model))
    return out
