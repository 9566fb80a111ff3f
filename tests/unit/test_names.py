"""Ollama's model-name rules as tables: one name module decides "same model" for every part of sollol."""

from __future__ import annotations

import re

import pytest

from sollol_cli.errors import UsageError
from sollol_cli.names import (
    InvalidModelName,
    ModelName,
    display_name,
    normalize_model_name,
    parse_model_name,
    same_model,
)

NAME_CASES = [
    ("bare", "tiny", "registry.ollama.ai/library/tiny:latest"),
    ("tag", "codellama:13b", "registry.ollama.ai/library/codellama:13b"),
    ("upper-case", "TinyLlama:Q4_K_M", "registry.ollama.ai/library/tinyllama:q4_k_m"),
    ("namespace", "jmorgan/tiny", "registry.ollama.ai/jmorgan/tiny:latest"),
    ("host", "hf.co/org/repo:Q4_K_M", "hf.co/org/repo:q4_k_m"),
    ("registry-port-is-not-a-tag", "localhost:5000/ns/m", "localhost:5000/ns/m:latest"),
    ("empty-tag", "tiny:", "registry.ollama.ai/library/tiny:latest"),
    ("spaces", "  tiny \n", "registry.ollama.ai/library/tiny:latest"),
    ("digest", "tiny@sha256:AB", "registry.ollama.ai/library/tiny:latest@sha256:ab"),
]


@pytest.mark.parametrize(("name", "expected"), [c[1:] for c in NAME_CASES], ids=[c[0] for c in NAME_CASES])
def test_normalize_model_name(name: str, expected: str) -> None:
    assert normalize_model_name(name) == expected


SAME_NAME_CASES = [
    ("latest-implied", "tiny", "tiny:latest", True),
    ("case-insensitive", "TINY", "tiny:LATEST", True),
    ("library-implied", "library/tiny", "tiny", True),
    ("full-form", "registry.ollama.ai/library/tiny:latest", "tiny", True),
    ("other-tag", "tiny:7b", "tiny", False),
    ("other-namespace", "me/tiny", "tiny", False),
    ("prefix-is-not-a-match", "tiny", "tinyllama", False),
    ("namespace-given-on-one-side", "library/tiny", "tiny:latest", True),  # a llama-server aliased `tiny`
    ("host-given-on-one-side", "registry.ollama.ai/library/tiny", "TINY", True),
    ("other-host", "hf.co/library/tiny", "tiny", False),
    ("digest-differs", "tiny@sha256:ab", "tiny", False),
    ("port-is-not-a-tag", "localhost:5000/ns/m", "localhost:5000/ns/m:latest", True),
]


@pytest.mark.parametrize(("a", "b", "same"), [c[1:] for c in SAME_NAME_CASES], ids=[c[0] for c in SAME_NAME_CASES])
def test_names_match_by_ollama_rules(a: str, b: str, same: bool) -> None:
    assert same_model(a, b) is same
    assert same_model(b, a) is same


DISPLAY_CASES = [
    ("bare-gets-latest", "tiny", "tiny:latest"),
    ("tag-kept", "tiny:7b", "tiny:7b"),
    ("case-kept", "Tiny", "Tiny:latest"),
    ("namespace-kept", "library/tiny", "library/tiny:latest"),
    ("registry-port-is-not-a-tag", "localhost:5000/ns/m", "localhost:5000/ns/m:latest"),
    ("port-and-tag", "localhost:5000/ns/m:v1", "localhost:5000/ns/m:v1"),
]


@pytest.mark.parametrize(("name", "shown"), [c[1:] for c in DISPLAY_CASES], ids=[c[0] for c in DISPLAY_CASES])
def test_display_name_always_shows_a_tag(name: str, shown: str) -> None:
    assert display_name(name) == shown


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
