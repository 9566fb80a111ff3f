"""Ollama's model-name rules, the one place sollol decides whether two names mean the same model.

Grammar `[host/][namespace/]model[:tag][@digest]`. The tag is what follows the last `:` after the last `/`
(so a registry port is not a tag); the defaults are registry.ollama.ai, library and latest; comparisons
ignore case. So `Tiny`, `tiny:latest`, `library/tiny` and `registry.ollama.ai/library/tiny:latest` are one
model, `tiny:7b` and `me/tiny` are others.

Two readings of a name: `normalize_model_name` never fails (backends report whatever they like, and every
name must be comparable), `parse_model_name` is strict (a name that is looked up on disk must be valid).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from sollol_cli.errors import UsageError

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[0-9]+)?")
_GRAMMAR = "use [host/][namespace/]model[:tag], e.g. llama3.2:1b or hf.co/org/repo:Q4_K_M"


def _split_tag(name: str) -> tuple[str, str | None]:
    """`(path, tag)`; the tag is None when the name has none (`tiny:` has an empty one)."""
    colon = name.rfind(":")
    return (name[:colon], name[colon + 1 :]) if colon > name.rfind("/") else (name, None)


@lru_cache(maxsize=4096)  # the router compares every backend's models with the request's on every request
def normalize_model_name(name: str) -> str:
    """One comparable string per model: `Tiny` -> `registry.ollama.ai/library/tiny:latest`."""
    name, at, digest = name.strip().lower().partition("@")
    base, tag = _split_tag(name)
    parts = base.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_HOST, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_HOST, *parts]
    return f"{'/'.join(parts)}:{tag or DEFAULT_TAG}{at}{digest}"


def same_model(a: str, b: str) -> bool:
    return normalize_model_name(a) == normalize_model_name(b)


def display_name(name: str) -> str:
    """Ollama always shows a tag: `tiny` -> `tiny:latest` (a registry port is not a tag)."""
    return name if _split_tag(name)[1] is not None else f"{name}:{DEFAULT_TAG}"


class InvalidModelName(UsageError):
    """Why: the name cannot be an Ollama model name, so no store lookup could find it."""


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def canonical(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def short(self) -> str:
        """The name as Ollama displays it: default host and namespace left out."""
        if self.host.lower() != DEFAULT_HOST:
            return self.canonical
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    @property
    def manifest_parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)


def parse_model_name(name: str) -> ModelName:
    """The parts of a valid name, case kept (a store lookup ignores case per part); raises `InvalidModelName`."""
    text = name.strip()
    scheme_end = text.find("://")
    if scheme_end >= 0:  # Ollama accepts https://host/ns/model and drops the scheme
        text = text[scheme_end + 3 :]
    text, given_tag = _split_tag(text)
    tag = DEFAULT_TAG if given_tag is None else given_tag
    parts = text.split("/")
    if len(parts) > 3:
        raise InvalidModelName(f"'{name}' has too many '/' parts for an Ollama model name", hint=_GRAMMAR)
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    for label, value, pattern in (
        ("host", host, _HOST),
        ("namespace", namespace, _PART),
        ("model", model, _PART),
        ("tag", tag, _PART),
    ):
        if not pattern.fullmatch(value):
            shown = f"'{value}'" if value else "empty"
            raise InvalidModelName(f"'{name}' is not a valid Ollama model name: the {label} is {shown}", hint=_GRAMMAR)
    return ModelName(host, namespace, model, tag)
