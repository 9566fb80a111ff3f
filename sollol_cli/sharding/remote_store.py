"""A model whose Ollama store is on a node (`models[].store_node`): resolve it there over SSH, then either
copy the GGUF to the controller (cached by digest, so it is copied once) or, when the coordinator runs on
that same node, use the blob where it is and read only its metadata."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from pathlib import Path

from sollol_cli import events
from sollol_cli.llamacpp.build import sha256_file
from sollol_cli.names import parse_model_name
from sollol_cli.sharding.gguf_info import GgufError, GgufInfo, HeaderTruncated, info_from_head
from sollol_cli.sharding.ollama_store import ModelResolutionError, parse_manifest
from sollol_cli.ssh.runner import CommandRunner

STORE_CANDIDATES = ('"$OLLAMA_MODELS"', '"$HOME"/.ollama/models', "/usr/share/ollama/.ollama/models")


def blob_cache(cache_dir: Path) -> Path:
    return cache_dir / "models" / "blobs"


def _store_script(store: str | None) -> str:
    candidates = [shlex.quote(store)] if store else list(STORE_CANDIDATES)
    checks = " ".join(candidates)
    return f'for d in {checks}; do if [ -n "$d" ] && [ -d "$d/manifests" ]; then echo "$d"; exit 0; fi; done; exit 1'


def match_manifest(paths: list[str], store: str, name: str) -> str | None:
    """Ollama compares each path part case-insensitively: pick the manifest file that matches `name`."""
    wanted = [part.lower() for part in parse_model_name(name).manifest_parts]
    prefix = store.rstrip("/") + "/manifests/"
    for path in paths:
        if path.startswith(prefix) and [p.lower() for p in path[len(prefix) :].split("/")] == wanted:
            return path
    return None


@dataclass(frozen=True)
class RemoteBlob:
    """A model's GGUF in a node's Ollama store."""

    path: str
    digest: str  # hex sha256
    size: int


async def locate_model(runner: CommandRunner, node: str, name: str, store: str | None) -> RemoteBlob:
    found = await runner.run(_store_script(store), timeout=30)
    if found.exit_status != 0 or not found.stdout.strip():
        where = store or "$OLLAMA_MODELS, ~/.ollama/models or /usr/share/ollama/.ollama/models"
        raise ModelResolutionError(f"no Ollama model store on node {node} (looked in {where})")
    root = found.stdout.strip().splitlines()[0]
    listing = await runner.run(f"find {shlex.quote(root)}/manifests -mindepth 4 -maxdepth 4 -type f", timeout=30)
    manifest = match_manifest(listing.stdout.splitlines(), root, name)
    if manifest is None:
        raise ModelResolutionError(f"model '{name}' not found in the Ollama store on node {node} ({root})")
    layers = parse_manifest(await runner.read_file(manifest), model=name)
    return RemoteBlob(f"{root}/blobs/{layers.model.blob_name}", layers.model.digest.split(":", 1)[1], layers.model.size)


async def remote_info(runner: CommandRunner, node: str, blob: RemoteBlob) -> GgufInfo:
    """The GGUF facts from the start of the blob, reading more only when the metadata is longer."""
    limit = 4 * 2**20
    while True:
        head = await runner.read_file(blob.path, limit=limit)
        try:
            return info_from_head(head, Path(f"{node}:{blob.path}"), blob.size)
        except HeaderTruncated:
            if len(head) < limit:  # the file ended early: it is shorter than its manifest says
                raise GgufError(f"{node}:{blob.path} ends inside its metadata (damaged or still downloading)") from None
            limit *= 4


async def fetch_model(
    runner: CommandRunner, node: str, name: str, store: str | None, cache_dir: Path, reporter: events.Reporter
) -> Path:
    blob = await locate_model(runner, node, name, store)
    digest = blob.digest
    target = blob_cache(cache_dir) / f"sha256-{digest}.gguf"
    if target.is_file() and target.stat().st_size == blob.size:
        return target  # verified when it was copied
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".part")
    await runner.get_file(blob.path, part, reporter=reporter)
    if await asyncio.to_thread(sha256_file, part) != digest:
        part.unlink(missing_ok=True)
        raise ModelResolutionError(f"the copy of '{name}' from node {node} does not match its digest sha256:{digest}")
    part.replace(target)
    return target
