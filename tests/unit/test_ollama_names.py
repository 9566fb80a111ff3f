"""Ollama model names and manifests, parsed without touching a store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sollol_cli.errors import UsageError
from sollol_cli.sharding.ollama_store import (
    InvalidModelName,
    ModelName,
    ModelResolutionError,
    parse_manifest,
    parse_model_name,
    store_candidates,
)

HEX_A = "a" * 64
HEX_B = "b" * 64


@pytest.mark.parametrize(
    ("name", "host", "namespace", "model", "tag"),
    [
        ("tiny", "registry.ollama.ai", "library", "tiny", "latest"),
        ("tiny:latest", "registry.ollama.ai", "library", "tiny", "latest"),
        ("codellama:13b", "registry.ollama.ai", "library", "codellama", "13b"),
        ("llama3.2:1b-instruct-q4_K_M", "registry.ollama.ai", "library", "llama3.2", "1b-instruct-q4_K_M"),
        ("library/tiny-big:q8", "registry.ollama.ai", "library", "tiny-big", "q8"),
        ("jmorgan/mymodel", "registry.ollama.ai", "jmorgan", "mymodel", "latest"),
        ("hf.co/org/repo:Q4_K_M", "hf.co", "org", "repo", "Q4_K_M"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", "hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "latest"),
        ("myreg:5000/ns/m:tag", "myreg:5000", "ns", "m", "tag"),
        ("myreg:5000/ns/m", "myreg:5000", "ns", "m", "latest"),  # the port's ':' precedes the last '/'
        ("localhost:11434/team/model:v1.2", "localhost:11434", "team", "model", "v1.2"),
        ("https://registry.ollama.ai/library/tiny:latest", "registry.ollama.ai", "library", "tiny", "latest"),
        ("Tiny:Latest", "registry.ollama.ai", "library", "Tiny", "Latest"),  # case kept; lookup ignores it
        ("  tiny:latest \n", "registry.ollama.ai", "library", "tiny", "latest"),
    ],
)
def test_parse_model_name(name: str, host: str, namespace: str, model: str, tag: str) -> None:
    assert parse_model_name(name) == ModelName(host, namespace, model, tag)


@pytest.mark.parametrize(
    ("name", "canonical", "short"),
    [
        ("tiny", "registry.ollama.ai/library/tiny:latest", "tiny:latest"),
        ("jmorgan/m:7b", "registry.ollama.ai/jmorgan/m:7b", "jmorgan/m:7b"),
        ("hf.co/org/repo:Q4_K_M", "hf.co/org/repo:Q4_K_M", "hf.co/org/repo:Q4_K_M"),
        ("REGISTRY.OLLAMA.AI/Library/tiny", "REGISTRY.OLLAMA.AI/Library/tiny:latest", "tiny:latest"),
    ],
)
def test_canonical_and_short_forms(name: str, canonical: str, short: str) -> None:
    parsed = parse_model_name(name)
    assert (parsed.canonical, parsed.short) == (canonical, short)


def test_manifest_path_follows_the_name() -> None:
    assert parse_model_name("codellama:13b").manifest_parts == ("registry.ollama.ai", "library", "codellama", "13b")
    assert parse_model_name("hf.co/org/repo:Q4_K_M").manifest_parts == ("hf.co", "org", "repo", "Q4_K_M")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "the model is empty"),
        ("tiny:", "the tag is empty"),
        ("a/b/c/d", "too many '/' parts"),
        ("../../etc/passwd", "too many '/' parts"),
        ("../etc:x", "the namespace is '..'"),
        ("library/..:x", "the model is '..'"),
        ("ns/tiny:../x", "the namespace is 'tiny:..'"),  # a '/' after the ':' means there is no tag
        ("bad host/ns/m", "the host is 'bad host'"),
        ("tiny:la test", "the tag is 'la test'"),
        ("myreg:5000/m", "the namespace is 'myreg:5000'"),
        ("-tiny", "the model is '-tiny'"),
    ],
)
def test_invalid_names_are_usage_errors(name: str, message: str) -> None:
    with pytest.raises(InvalidModelName, match=re.escape(message)) as caught:
        parse_model_name(name)
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    assert "[host/][namespace/]model[:tag]" in str(caught.value)


def _layer(media_type: str, hexdigest: str = HEX_A, size: int = 10) -> dict[str, object]:
    return {"mediaType": media_type, "digest": f"sha256:{hexdigest}", "size": size}


MODEL = "application/vnd.ollama.image.model"
PROJECTOR = "application/vnd.ollama.image.projector"
TEMPLATE = "application/vnd.ollama.image.template"


def test_manifest_model_and_projector_layers() -> None:
    text = json.dumps(
        {"schemaVersion": 2, "layers": [_layer(TEMPLATE, HEX_B), _layer(MODEL), _layer(PROJECTOR, HEX_B, 3)]}
    )
    layers = parse_manifest(text, model="m:latest")
    assert layers.model.blob_name == f"sha256-{HEX_A}" and layers.model.size == 10
    assert layers.projector is not None and layers.projector.digest == f"sha256:{HEX_B}"


def test_manifest_uses_the_last_model_layer_like_ollama() -> None:
    layers = parse_manifest(json.dumps({"layers": [_layer(MODEL, HEX_A), _layer(MODEL, HEX_B)]}), model="m")
    assert layers.model.digest == f"sha256:{HEX_B}" and layers.projector is None


def test_manifest_digest_is_normalised_to_lower_case() -> None:
    layers = parse_manifest(json.dumps({"layers": [_layer(MODEL, "ABCDEF" + "0" * 58)]}), model="m")
    assert layers.model.blob_name == "sha256-abcdef" + "0" * 58


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"schemaVersion": 2}), "has no 'layers' list"),
        (json.dumps({"layers": [_layer(TEMPLATE)]}), r"has no model layer \(application/vnd.ollama.image.model\)"),
        (
            json.dumps({"layers": [_layer("application/vnd.ollama.image.tensor"), _layer(TEMPLATE)]}),
            "not a single GGUF; llama.cpp cannot run it",
        ),
        (json.dumps({"layers": [{"mediaType": MODEL, "digest": "sha256:../../x", "size": 1}]}), "sha256 digest"),
        (json.dumps({"layers": [{"mediaType": MODEL, "digest": "md5:" + HEX_A, "size": 1}]}), "sha256 digest"),
        (json.dumps({"layers": [_layer(MODEL, size=-1)]}), "invalid size: -1"),
        (json.dumps({"layers": ["x"]}), "not an object"),
    ],
)
def test_manifest_refusals(document: str, message: str) -> None:
    with pytest.raises(ModelResolutionError, match=message) as caught:
        parse_manifest(document, model="m:latest")
    assert caught.value.exit_code == 1


def test_store_candidates_order() -> None:
    home = Path("/home/u")
    default = [home / ".ollama/models", Path("/usr/share/ollama/.ollama/models")]
    assert store_candidates(None, {}, home) == default
    assert store_candidates(None, {"OLLAMA_MODELS": "/data/models"}, home) == [Path("/data/models"), *default]
    assert store_candidates(None, {"OLLAMA_MODELS": ""}, home) == default
    # An explicit store is the only candidate: silently using another store would serve another model.
    assert store_candidates(Path("/x"), {"OLLAMA_MODELS": "/data"}, home) == [Path("/x")]
