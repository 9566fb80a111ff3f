"""The one place that turns a backend reference into its serving client (by kind)."""

from __future__ import annotations

from sollol_cli.backends.base import Backend, BackendRef, Unsupported
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.backends.ollama import OllamaBackend


def backend_for(ref: BackendRef, *, alias: str | None = None, timeouts: Timeouts | None = None) -> Backend:
    """The serving client for `ref`; `alias` is a llama-server's configured model name."""
    limits = timeouts or Timeouts()
    if ref.kind == "ollama":
        return OllamaBackend(ref, limits)
    if ref.kind == "llamacpp":
        return LlamaServerBackend(ref, limits, alias=alias)
    raise Unsupported(f"{ref.label}: rpc-server nodes serve no HTTP API; requests go to a coordinator")
