"""Ollama model manifests, parsed without touching a store (names: test_names.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sollol_cli.sharding.ollama_store import ModelResolutionError, parse_manifest, store_candidates

HEX_A = "a" * 64
HEX_B = "b" * 64


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
