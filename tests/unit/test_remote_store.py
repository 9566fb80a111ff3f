"""Matching a model name to a manifest path listed on a node (pure)."""

from __future__ import annotations

import pytest

from sollol_cli.sharding.remote_store import match_manifest

STORE = "/home/u/.ollama/models"
LISTING = [
    f"{STORE}/manifests/registry.ollama.ai/library/Tiny/latest",
    f"{STORE}/manifests/registry.ollama.ai/library/tiny-big/q8",
    f"{STORE}/manifests/hf.co/Org/Repo/Q4_K_M",
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiny", LISTING[0]),
        ("TINY:latest", LISTING[0]),
        ("library/tiny-big:q8", LISTING[1]),
        ("hf.co/org/repo:q4_k_m", LISTING[2]),
        ("tiny-big", None),
        ("other", None),
    ],
)
def test_match_manifest(name: str, expected: str | None) -> None:
    assert match_manifest(LISTING, STORE, name) == expected
