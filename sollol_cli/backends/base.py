"""The contract every serving backend meets, the data it reports, and the errors it raises.

Chat and generate always stream internally and yield Ollama-format chunks; a caller that was asked for
`"stream": false` collects them with `aggregate()`. Errors tell the caller whether a retry elsewhere is
safe: `BackendUnavailable` means nothing reached the backend's model (retry on another backend),
`UpstreamError` is the backend's own answer (forward it), `StreamBroken` came after bytes were sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from sollol_cli.errors import BackendError

BackendKindName = Literal["ollama", "llamacpp", "rpc"]
Chunk = dict[str, Any]


@dataclass(frozen=True)
class BackendRef:
    """Where a backend listens; `node` is the manifest node it runs on (None for unmanaged backends).
    `api_key` is sent as a bearer token (a coordinator sollol runs on a node requires one)."""

    name: str
    kind: BackendKindName
    host: str
    port: int
    node: str | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    @property
    def label(self) -> str:
        """How messages name the backend: `gpu1 (10.0.0.5:11434)`."""
        return f"{self.name} ({self.address})"


@dataclass(frozen=True)
class ModelEntry:
    """One model a backend can serve; fields it cannot know are None."""

    name: str
    size: int | None = None
    digest: str | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    context_length: int | None = None


@dataclass(frozen=True)
class BackendStatus:
    """What one probe saw. A probe never raises: an unreachable backend is `reachable=False` + `error`."""

    reachable: bool
    version: str | None = None
    models: list[ModelEntry] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    slots: int | None = None
    in_flight: int | None = None
    latency_ms: float | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        """Reachable and able to serve now (a llama-server still loading its model is reachable, not ready)."""
        return self.reachable and self.error is None


class BackendUnavailable(BackendError):
    """Why: the backend was not reached or gave no response; nothing was generated, so another backend may retry."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason


class StreamBroken(BackendError):
    """Why: the backend failed after the response started; part of the answer may already be with the client."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason


class UpstreamError(BackendError):
    """Why: the backend answered with an error status; `upstream_message` is its own (Ollama-style) message."""

    def __init__(self, backend: str, status: int, upstream_message: str, body: bytes = b"", kind: str = "") -> None:
        super().__init__(f"{backend}: HTTP {status}: {upstream_message}")
        self.backend = backend
        self.status = status
        self.upstream_message = upstream_message
        self.body = body  # raw body, so an OpenAI pass-through can forward the error unchanged
        self.kind = kind  # the error's `type` when the body has one (llama-server: `not_supported_error`)


class Unsupported(BackendError):
    """Why: this kind of backend cannot do the operation at all (e.g. pull on llama-server)."""


class ProbeTarget(Protocol):
    """Anything the health loop can probe (serving backends and rpc-server nodes)."""

    @property
    def ref(self) -> BackendRef: ...

    async def probe(self) -> BackendStatus: ...


class Backend(ProbeTarget, Protocol):
    """A backend that serves the Ollama API (natively or translated) and OpenAI pass-through."""

    def chat(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...

    def generate(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]: ...

    async def show(self, model: str) -> dict[str, Any]: ...

    async def tags(self) -> list[dict[str, Any]]: ...

    async def ps(self) -> list[dict[str, Any]]: ...

    def pull(self, body: dict[str, Any]) -> AsyncIterator[Chunk]: ...

    async def delete(self, model: str) -> None: ...

    async def copy(self, source: str, destination: str) -> None: ...

    def openai_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]: ...

    async def openai_json(self, path: str, body: dict[str, Any] | None = None) -> Any: ...


# Metric fields of a final chunk, copied as they are into the aggregated response.
_FINAL_FIELDS = (
    "done_reason",
    "context",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


def aggregate(chunks: Iterable[Chunk]) -> Chunk:
    """Build the single `"stream": false` Ollama response (chat or generate) from its streamed chunks."""
    text: list[str] = []
    thinking: list[str] = []
    tool_calls: list[Any] = []
    images: Any = None
    is_chat = False
    final: Chunk | None = None
    for chunk in chunks:
        message = chunk.get("message")
        if isinstance(message, dict):
            is_chat = True
            text.append(message.get("content") or "")
            thinking.append(message.get("thinking") or "")
            tool_calls.extend(message.get("tool_calls") or [])
            images = message.get("images") or images
        else:
            text.append(chunk.get("response") or "")
            thinking.append(chunk.get("thinking") or "")
        if chunk.get("done"):
            final = chunk
    if final is None:
        raise StreamBroken("backend", "the stream ended before its final chunk")
    out: Chunk = {"model": final.get("model", ""), "created_at": final.get("created_at", "")}
    if is_chat:
        msg: Chunk = {"role": "assistant", "content": "".join(text)}
        if any(thinking):
            msg["thinking"] = "".join(thinking)
        if tool_calls:
            msg["tool_calls"] = tool_calls
        if images:
            msg["images"] = images
        out["message"] = msg
    else:
        out["response"] = "".join(text)
        if any(thinking):
            out["thinking"] = "".join(thinking)
    out["done"] = True
    out.update({key: final[key] for key in _FINAL_FIELDS if key in final})
    return out


async def collect(chunks: AsyncIterator[Chunk]) -> Chunk:
    """`aggregate()` over a live stream."""
    return aggregate([chunk async for chunk in chunks])
