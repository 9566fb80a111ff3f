"""Resolving Ollama model names to GGUF blobs in a real on-disk store holding the generated tiny model."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from sollol_cli.sharding import ollama_store
from sollol_cli.sharding.gguf_info import read_gguf_info
from sollol_cli.sharding.ollama_store import ModelResolutionError, list_store_models, resolve_model
from tests.harness.models import (
    MODEL_MEDIA_TYPE,
    TEMPLATE_MEDIA_TYPE,
    TENSOR_MEDIA_TYPE,
    OllamaStore,
    write_gguf,
)

pytestmark = pytest.mark.real


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resolves_the_default_namespace_name(ollama_store: OllamaStore, tiny_gguf: Path) -> None:
    resolved = resolve_model("tiny:latest", ollama_store.root)
    hexdigest = sha256_file(tiny_gguf)
    assert resolved.gguf_path == ollama_store.root / "blobs" / f"sha256-{hexdigest}"
    assert resolved.digest == f"sha256:{hexdigest}"
    assert resolved.size == tiny_gguf.stat().st_size == resolved.gguf_path.stat().st_size
    assert resolved.canonical == "registry.ollama.ai/library/tiny:latest"
    assert (resolved.name, resolved.store, resolved.projector_path) == ("tiny:latest", ollama_store.root, None)
    assert sha256_file(resolved.gguf_path) == hexdigest
    info = read_gguf_info(resolved.gguf_path)  # what the shard manager does next
    assert (info.architecture, info.block_count) == ("llama", 8)


@pytest.mark.parametrize("name", ["tiny", "library/tiny:latest", "registry.ollama.ai/library/tiny"])
def test_default_parts_may_be_left_out(ollama_store: OllamaStore, name: str) -> None:
    assert resolve_model(name, ollama_store.root).canonical == "registry.ollama.ai/library/tiny:latest"


def test_resolves_the_namespaced_tagged_name(ollama_store: OllamaStore) -> None:
    big = resolve_model("library/tiny-big:q8", ollama_store.root)
    assert big.canonical == "registry.ollama.ai/library/tiny-big:q8"
    assert big.gguf_path == resolve_model("tiny", ollama_store.root).gguf_path  # same bytes, one blob


@pytest.mark.parametrize("name", ["TINY:LATEST", "Library/Tiny-Big:Q8", "Registry.Ollama.AI/LIBRARY/tiny-big:q8"])
def test_lookup_ignores_case_per_part(ollama_store: OllamaStore, name: str) -> None:
    resolved = resolve_model(name, ollama_store.root)
    assert resolved.canonical in {"registry.ollama.ai/library/tiny:latest", "registry.ollama.ai/library/tiny-big:q8"}
    assert resolved.name == name


def test_store_spelling_wins_in_the_canonical_name(ollama_store: OllamaStore, tiny_gguf: Path) -> None:
    ollama_store.add_model(("hf.co", "SomeOrg", "Repo-GGUF", "Q4_K_M"), tiny_gguf)
    resolved = resolve_model("hf.co/someorg/repo-gguf:q4_k_m", ollama_store.root)
    assert resolved.canonical == "hf.co/SomeOrg/Repo-GGUF:Q4_K_M"


def test_host_with_a_port(ollama_store: OllamaStore, tiny_gguf: Path) -> None:
    ollama_store.add_model(("myreg:5000", "ns", "m", "tag"), tiny_gguf)
    assert resolve_model("myreg:5000/ns/m:tag", ollama_store.root).canonical == "myreg:5000/ns/m:tag"


def test_missing_model_says_where_it_looked(ollama_store: OllamaStore) -> None:
    with pytest.raises(ModelResolutionError) as caught:
        resolve_model("foo", ollama_store.root)
    assert caught.value.message == (
        f"model 'foo:latest' not found in the Ollama store at {ollama_store.root} "
        "(looked for manifests/registry.ollama.ai/library/foo/latest)"
    )
    assert caught.value.hint == "pull it with `ollama pull foo:latest` on the machine that owns the store"
    assert caught.value.exit_code == 1


def test_missing_model_suggests_close_names(ollama_store: OllamaStore) -> None:
    with pytest.raises(ModelResolutionError, match=re.escape("did you mean 'tiny:latest'?")):
        resolve_model("tinyy", ollama_store.root)


def test_missing_tag_of_a_present_model(ollama_store: OllamaStore) -> None:
    with pytest.raises(
        ModelResolutionError, match=re.escape("(looked for manifests/registry.ollama.ai/library/tiny/7b)")
    ):
        resolve_model("tiny:7b", ollama_store.root)


def test_manifest_without_model_layer(ollama_store: OllamaStore) -> None:
    template = {"mediaType": TEMPLATE_MEDIA_TYPE, **ollama_store.add_blob(b"{{ .Prompt }}")}
    ollama_store.add_manifest(("registry.ollama.ai", "library", "nomodel", "latest"), [template])
    with pytest.raises(
        ModelResolutionError,
        match=r"manifest of 'nomodel:latest' has no model layer \(application/vnd\.ollama\.image\.model\)",
    ):
        resolve_model("nomodel", ollama_store.root)


def test_manifest_that_is_not_json(ollama_store: OllamaStore) -> None:
    ollama_store.add_manifest(("registry.ollama.ai", "library", "broken", "latest"), [], raw="{oops")
    with pytest.raises(ModelResolutionError, match="the manifest of 'broken:latest' is not valid JSON"):
        resolve_model("broken", ollama_store.root)


def test_blob_that_is_not_gguf(ollama_store: OllamaStore) -> None:
    layer = {"mediaType": MODEL_MEDIA_TYPE, **ollama_store.add_blob(b"PK\x03\x04 a zip, not a model")}
    ollama_store.add_manifest(("registry.ollama.ai", "library", "zip", "latest"), [layer])
    with pytest.raises(
        ModelResolutionError,
        match=r"model 'zip:latest': .*sha256-[0-9a-f]{64} is not a GGUF file \(it starts with b'PK\\x03\\x04'",
    ):
        resolve_model("zip", ollama_store.root)


def test_blob_missing_from_the_store(ollama_store: OllamaStore) -> None:
    layer = {"mediaType": MODEL_MEDIA_TYPE, "digest": "sha256:" + "c" * 64, "size": 10}
    ollama_store.add_manifest(("registry.ollama.ai", "library", "gone", "latest"), [layer])
    with pytest.raises(ModelResolutionError, match="the blob sha256-c{64} of 'gone:latest' is missing from") as caught:
        resolve_model("gone", ollama_store.root)
    assert caught.value.hint == "pull the model again with `ollama pull gone:latest`"


def test_blob_of_the_wrong_size(ollama_store: OllamaStore, tiny_gguf: Path) -> None:
    layer = {"mediaType": MODEL_MEDIA_TYPE, **ollama_store.add_blob(tiny_gguf)}
    layer["size"] += 1
    ollama_store.add_manifest(("registry.ollama.ai", "library", "partial", "latest"), [layer])
    with pytest.raises(
        ModelResolutionError, match=f"is {layer['size'] - 1} bytes but its manifest says {layer['size']}"
    ):
        resolve_model("partial", ollama_store.root)


def test_unknown_architecture(ollama_store: OllamaStore, tmp_path: Path) -> None:
    odd = write_gguf(tmp_path / "odd.gguf", "notallama", block_count=2)
    ollama_store.add_model(("registry.ollama.ai", "library", "odd", "latest"), odd)
    with pytest.raises(
        ModelResolutionError, match="is a 'notallama' model, an architecture the pinned llama.cpp does not know"
    ):
        resolve_model("odd", ollama_store.root)
    # A caller that only wants the path can opt out of the check.
    assert resolve_model("odd", ollama_store.root, check_architecture=False).size == odd.stat().st_size


def test_tensor_media_type_is_refused(ollama_store: OllamaStore) -> None:
    tensors = [{"mediaType": TENSOR_MEDIA_TYPE, **ollama_store.add_blob(f"tensor {i}".encode())} for i in range(2)]
    ollama_store.add_manifest(("registry.ollama.ai", "library", "safetensors", "latest"), tensors)
    with pytest.raises(ModelResolutionError, match="not a single GGUF; llama.cpp cannot run it"):
        resolve_model("safetensors", ollama_store.root)


def test_projector_layer_is_reported(ollama_store: OllamaStore, tiny_gguf: Path, tmp_path: Path) -> None:
    projector = write_gguf(tmp_path / "mmproj.gguf", "clip")
    ollama_store.add_model(("registry.ollama.ai", "library", "vision", "latest"), tiny_gguf, projector=projector)
    resolved = resolve_model("vision", ollama_store.root)
    assert resolved.projector_path == ollama_store.root / "blobs" / f"sha256-{sha256_file(projector)}"
    assert resolved.gguf_path.name == f"sha256-{sha256_file(tiny_gguf)}"


def test_lists_models_as_ollama_names_them(ollama_store: OllamaStore, tiny_gguf: Path) -> None:
    ollama_store.add_model(("hf.co", "org", "repo", "Q4_K_M"), tiny_gguf)
    ollama_store.add_model(("registry.ollama.ai", "jmorgan", "m", "7b"), tiny_gguf)
    assert list_store_models(ollama_store.root) == [
        "hf.co/org/repo:Q4_K_M",
        "jmorgan/m:7b",
        "tiny-big:q8",
        "tiny:latest",
    ]
    assert list_store_models(ollama_store.root / "nowhere") == []


def test_store_from_ollama_models(ollama_store: OllamaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_store.root))
    monkeypatch.setenv("HOME", "/nonexistent-home")
    assert resolve_model("tiny").store == ollama_store.root


def test_store_in_the_home_directory(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = OllamaStore(tmp_path / "home" / ".ollama" / "models")
    store.add_model(("registry.ollama.ai", "library", "tiny", "latest"), tiny_gguf)
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_model("tiny").store == store.root
    # OLLAMA_MODELS pointing nowhere falls through to the next place, as "first that exists" says.
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "missing"))
    assert resolve_model("tiny").store == store.root


def test_explicit_store_must_exist(ollama_store: OllamaStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama_store.root))
    with pytest.raises(ModelResolutionError, match=f"the Ollama model store {tmp_path / 'nope'} does not exist"):
        resolve_model("tiny", tmp_path / "nope")


def test_no_store_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(ollama_store, "SYSTEM_STORE", tmp_path / "system")
    with pytest.raises(ModelResolutionError, match="no Ollama model store found") as caught:
        resolve_model("tiny")
    assert str(tmp_path / ".ollama" / "models") in caught.value.message
    assert caught.value.hint is not None and "OLLAMA_MODELS" in caught.value.hint
