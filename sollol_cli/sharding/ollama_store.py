"""Find the GGUF behind an Ollama model name in an Ollama model store on disk, so llama.cpp can shard it.

Store layout: `manifests/<host>/<namespace>/<model>/<tag>` (Docker v2 schema 2 JSON) and
`blobs/sha256-<hex>`. The weights are the layer of media type `application/vnd.ollama.image.model`.

Manifest parsing is pure (names are parsed by `sollol_cli.names`); the file system is touched only by the
store functions below it. `gguf` is imported only when a blob is checked, so listing a store stays light.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sollol_cli.errors import SollolError
from sollol_cli.names import ModelName, parse_model_name

# Where the Linux installer's `ollama` service user keeps its store.
SYSTEM_STORE = Path("/usr/share/ollama/.ollama/models")

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_TENSOR_PREFIX = "application/vnd.ollama.image.tensor"

_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")


class ModelResolutionError(SollolError):
    """Why: the store is missing, or the model in it is absent, incomplete or not a runnable single GGUF."""


# --- manifests (pure) ---


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # sha256:<hex>
    size: int

    @property
    def blob_name(self) -> str:
        return self.digest.replace(":", "-", 1)


@dataclass(frozen=True)
class ModelLayers:
    model: Layer
    projector: Layer | None


def parse_manifest(text: str | bytes, *, model: str) -> ModelLayers:
    """Pick the GGUF weights (and a vision projector) out of a manifest, refusing what llama.cpp cannot run."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelResolutionError(f"the manifest of '{model}' is not valid JSON ({exc})") from None
    raw_layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(raw_layers, list):
        raise ModelResolutionError(f"the manifest of '{model}' has no 'layers' list")
    layers = [_layer(raw, model) for raw in raw_layers]
    weights = [layer for layer in layers if layer.media_type == MEDIA_MODEL]
    if not weights:
        if any(layer.media_type.startswith(MEDIA_TENSOR_PREFIX) for layer in layers):
            raise ModelResolutionError(
                f"'{model}' is stored as separate tensors ({MEDIA_TENSOR_PREFIX}), not a single GGUF; "
                "llama.cpp cannot run it",
                hint="shard a GGUF build of the model, or serve this one with Ollama (mode: distribute)",
            )
        raise ModelResolutionError(f"the manifest of '{model}' has no model layer ({MEDIA_MODEL})")
    projectors = [layer for layer in layers if layer.media_type == MEDIA_PROJECTOR]
    # Ollama itself uses the last model layer when a manifest lists several.
    return ModelLayers(model=weights[-1], projector=projectors[0] if projectors else None)


def _layer(raw: Any, model: str) -> Layer:
    if not isinstance(raw, dict):
        raise ModelResolutionError(f"the manifest of '{model}' has a layer that is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ModelResolutionError(f"the manifest of '{model}' has a layer without a mediaType or sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ModelResolutionError(f"the manifest of '{model}' has a layer with an invalid size: {size!r}")
    return Layer(media_type, digest.lower(), size)


def store_candidates(explicit: Path | None, env: Mapping[str, str], home: Path) -> list[Path]:
    """Where to look for the store, in order: the given path alone, else Ollama's own defaults."""
    if explicit is not None:
        return [explicit.expanduser()]
    candidates = [Path(env["OLLAMA_MODELS"]).expanduser()] if env.get("OLLAMA_MODELS") else []
    return [*candidates, home / ".ollama" / "models", SYSTEM_STORE]


# --- the store on disk ---


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # as asked for
    canonical: str  # host/namespace/model:tag
    gguf_path: Path
    digest: str  # sha256:<hex> of the weights
    size: int
    projector_path: Path | None
    store: Path


def find_store(explicit: Path | None = None, *, env: Mapping[str, str] | None = None) -> Path:
    candidates = store_candidates(explicit, os.environ if env is None else env, Path.home())
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if explicit is not None:
        raise ModelResolutionError(f"the Ollama model store {explicit} does not exist or is not a directory")
    raise ModelResolutionError(
        f"no Ollama model store found (looked in {', '.join(map(str, candidates))})",
        hint="set OLLAMA_MODELS, or give the model's 'store' (or 'gguf') in the manifest",
    )


def resolve_model(
    name: str, store: Path | None = None, *, env: Mapping[str, str] | None = None, check_architecture: bool = True
) -> ResolvedModel:
    """The GGUF blob of Ollama model `name`, checked: present, complete, GGUF, an architecture llama.cpp knows."""
    parsed = parse_model_name(name)
    root = find_store(store, env=env)
    relative = Path("manifests", *parsed.manifest_parts)
    manifest = _find_case_insensitive(root, relative.parts)
    if manifest is None or not manifest.is_file():
        # A high cutoff: the shared ":latest" alone makes unrelated names look 67% alike.
        suggestions = difflib.get_close_matches(parsed.short, list_store_models(root), n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(repr(s) for s in suggestions)}?" if suggestions else None
        raise ModelResolutionError(
            f"model '{parsed.short}' not found in the Ollama store at {root} (looked for {relative})",
            hint=hint or f"pull it with `ollama pull {parsed.short}` on the machine that owns the store",
        )
    try:
        text = manifest.read_bytes()
    except OSError as exc:
        raise ModelResolutionError(f"cannot read {manifest}: {exc.strerror or exc}") from None
    on_disk = ModelName(*manifest.relative_to(root / "manifests").parts)  # the store's spelling
    layers = parse_manifest(text, model=parsed.short)
    gguf_path = _blob(root, layers.model, parsed.short)
    if check_architecture:
        _check_runnable(gguf_path, parsed.short)
    projector = _blob(root, layers.projector, parsed.short) if layers.projector else None
    return ResolvedModel(
        name=name,
        canonical=on_disk.canonical,
        gguf_path=gguf_path,
        digest=layers.model.digest,
        size=layers.model.size,
        projector_path=projector,
        store=root,
    )


def list_store_models(store: Path) -> list[str]:
    """Every model with a manifest in the store, as Ollama shows names (`model:tag`, `ns/model:tag`, ...)."""
    root = store / "manifests"
    if not root.is_dir():
        return []
    names = []
    for path in root.glob("*/*/*/*"):
        if path.is_file():
            host, namespace, model, tag = path.relative_to(root).parts
            names.append(ModelName(host, namespace, model, tag).short)
    return sorted(names)


def _find_case_insensitive(root: Path, parts: Sequence[str]) -> Path | None:
    """Follow `parts` below `root` matching each directory entry case-insensitively, as Ollama does."""
    current = root
    for part in parts:
        exact = current / part
        if exact.exists():
            current = exact
            continue
        try:
            matches = sorted(entry for entry in os.listdir(current) if entry.casefold() == part.casefold())
        except OSError:
            return None
        if not matches:
            return None
        if len(matches) > 1:
            raise ModelResolutionError(
                f"{current} holds several entries that differ only in case from '{part}': {', '.join(matches)}"
            )
        current = current / matches[0]
    return current


def _blob(root: Path, layer: Layer, model: str) -> Path:
    path = root / "blobs" / layer.blob_name
    try:
        size = path.stat().st_size
    except OSError:
        raise ModelResolutionError(
            f"the blob {layer.blob_name} of '{model}' is missing from {root / 'blobs'}",
            hint=f"pull the model again with `ollama pull {model}`",
        ) from None
    if size != layer.size:
        raise ModelResolutionError(
            f"the blob {layer.blob_name} of '{model}' is {size} bytes but its manifest says {layer.size}",
            hint=f"the download is incomplete or damaged; pull it again with `ollama pull {model}`",
        )
    return path


def _check_runnable(path: Path, model: str) -> None:
    from sollol_cli.sharding.gguf_info import GgufError, check_architecture, read_metadata

    try:
        meta = read_metadata(path)
        arch = meta.get("general.architecture")
        if not isinstance(arch, str):
            raise GgufError(f"{path} has no general.architecture in its metadata")
        check_architecture(arch, path)
    except GgufError as exc:
        raise ModelResolutionError(f"model '{model}': {exc.message}", hint=exc.hint) from None
