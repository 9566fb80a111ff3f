"""Real model files for tests: the generated tiny GGUFs (cached once per machine) and Ollama model stores laid
out on disk exactly as Ollama keeps them (manifests + content-addressed blobs with real sha256 digests)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from sollol_cli.llamacpp.tinymodel import ensure_tiny_model
from sollol_cli.settings import Settings

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA_TYPE = "application/vnd.ollama.image.template"
PROJECTOR_MEDIA_TYPE = "application/vnd.ollama.image.projector"
TENSOR_MEDIA_TYPE = "application/vnd.ollama.image.tensor"


def cache_dir() -> Path:
    return Settings().cache_dir


@pytest.fixture(scope="session")
def tiny_gguf() -> Path:
    """The ~49 MB tiny llama model (generated on first use per machine, then read from the cache)."""
    return ensure_tiny_model(cache_dir(), "tiny")


@pytest.fixture(scope="session")
def chat_gguf() -> Path:
    """tiny with a realistic ChatML tokenizer (the markers as control tokens): for structured outputs."""
    return ensure_tiny_model(cache_dir(), "chat")


@pytest.fixture(scope="session")
def tiny_big_gguf() -> Path:
    """The ~543 MB model for "too big for one node" cases; generated only when a test asks for it."""
    return ensure_tiny_model(cache_dir(), "big")


def write_gguf(path: Path, architecture: str = "llama", *, tokens: Sequence[str] = (), **metadata: int | str) -> Path:
    """A small metadata-only GGUF (one 4-element tensor), e.g. of an architecture llama.cpp does not know.
    `metadata` keys are relative to the architecture (`block_count=2` -> `<arch>.block_count`)."""
    writer = gguf.GGUFWriter(path, architecture)
    if tokens:
        writer.add_token_list(list(tokens))
    for key, value in metadata.items():
        full_key = f"{architecture}.{key.replace('__', '.')}"
        if isinstance(value, str):
            writer.add_string(full_key, value)
        else:
            writer.add_uint32(full_key, value)
    writer.add_tensor("token_embd.weight", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


_digests: dict[tuple[str, int, int], str] = {}


def _sha256_of(path: Path) -> str:
    """sha256 hex of a file, remembered per (path, size, mtime): the tiny GGUF is hashed once a session."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _digests[key] = digest.hexdigest()
    return _digests[key]


@dataclass
class OllamaStore:
    """An Ollama model store under `root`; add blobs and manifests the way `ollama pull` writes them."""

    root: Path

    def __post_init__(self) -> None:
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "manifests").mkdir(parents=True, exist_ok=True)

    def add_blob(self, content: bytes | Path) -> dict[str, Any]:
        """Store content under its real digest; return the layer fields `digest` and `size`.
        A file is hard-linked when the file system allows it (the GGUFs are large), else copied."""
        if isinstance(content, Path):
            hexdigest = _sha256_of(content)
            target = self.root / "blobs" / f"sha256-{hexdigest}"
            if not target.exists():
                try:
                    os.link(content, target)
                except OSError:
                    shutil.copyfile(content, target)
            return {"digest": f"sha256:{hexdigest}", "size": content.stat().st_size}
        hexdigest = hashlib.sha256(content).hexdigest()
        (self.root / "blobs" / f"sha256-{hexdigest}").write_bytes(content)
        return {"digest": f"sha256:{hexdigest}", "size": len(content)}

    def add_manifest(self, path_parts: Sequence[str], layers: list[dict[str, Any]], *, raw: str | None = None) -> Path:
        """Write `manifests/<host>/<namespace>/<model>/<tag>` with a real config blob and `layers`
        (dicts with mediaType, digest, size) as given, so error cases can be built; `raw` replaces the JSON."""
        config = self.add_blob(json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, **config},
            "layers": layers,
        }
        path = self.root / "manifests" / Path(*path_parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(raw if raw is not None else json.dumps(document))
        return path

    def add_model(
        self,
        name: tuple[str, str, str, str],
        gguf_file: Path,
        *,
        media_type: str = MODEL_MEDIA_TYPE,
        projector: bytes | Path | None = None,
    ) -> dict[str, Any]:
        """A complete model: the weights blob, a chat template layer and optionally a projector."""
        weights = {"mediaType": media_type, **self.add_blob(gguf_file)}
        layers = [weights, {"mediaType": TEMPLATE_MEDIA_TYPE, **self.add_blob(b"{{ .Prompt }}")}]
        if projector is not None:
            layers.append({"mediaType": PROJECTOR_MEDIA_TYPE, **self.add_blob(projector)})
        self.add_manifest(name, layers)
        return weights


@pytest.fixture
def ollama_store(tmp_path: Path, tiny_gguf: Path) -> OllamaStore:
    """A store holding the tiny model as `tiny:latest` and `library/tiny-big:q8` (the same bytes, one blob)."""
    store = OllamaStore(tmp_path / "ollama" / "models")
    store.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    store.add_model(("registry.ollama.ai", "library", "tiny-big", "q8"), tiny_gguf)
    return store
