"""The API's answers, shaped like the official `ollama` Python client's (`ollama._types`): the same field
names and types, read as attributes (`response.message.content`) or as keys (`response["message"]["content"]`),
so a program written against `ollama.Client` reads sollol's answers unchanged.

Unknown fields are kept (a newer Ollama node may send more than this module knows). Each generation answer
also says which backend served it, under `sollol` (None on the chunks of a stream before the last).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SubscriptableModel(BaseModel):
    """A pydantic model that also reads like a dict, as the `ollama` client's responses do."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def __getitem__(self, key: str) -> Any:
        if key in self:
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        if key in self.model_fields_set or key in (self.model_extra or {}):
            return True
        field = type(self).model_fields.get(key)
        return field is not None and field.default is not None

    def get(self, key: str, default: Any = None) -> Any:
        """The field's value, or `default` when it is absent."""
        try:
            return self[key]
        except KeyError:
            return default


class Served(SubscriptableModel):
    """Where sollol sent a request: the backend that answered (`None` before one did), `distribute` or
    `shard`, why, the errors of backends tried before it, and the seconds it waited in the queue."""

    backend: str | None = None
    mode: str = "distribute"
    reason: str = ""
    attempts: list[str] = Field(default_factory=list)
    queued_s: float = 0.0


class BaseGenerateResponse(SubscriptableModel):
    """Fields every generation answer has; the counts and durations (nanoseconds) come with `done`."""

    model: str | None = None
    created_at: str | None = None
    done: bool | None = None
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    sollol: Served | None = None


class ToolCallFunction(SubscriptableModel):
    """The function a tool call names, with its arguments."""

    name: str
    arguments: Mapping[str, Any]


class ToolCall(SubscriptableModel):
    """A tool call the model asks for."""

    function: ToolCallFunction


class Message(SubscriptableModel):
    """A chat message; in a streamed answer each chunk's `content` is a fragment."""

    role: str
    content: str | None = None
    thinking: str | None = None
    images: Sequence[str] | None = None
    tool_name: str | None = None
    tool_calls: Sequence[ToolCall] | None = None


class ChatResponse(BaseGenerateResponse):
    """The answer of `chat` (one chunk of it when streaming)."""

    message: Message


class GenerateResponse(BaseGenerateResponse):
    """The answer of `generate` (one chunk of it when streaming)."""

    response: str | None = None
    thinking: str | None = None
    context: Sequence[int] | None = None


class EmbedResponse(BaseGenerateResponse):
    """The answer of `embed`: one vector per input."""

    embeddings: Sequence[Sequence[float]]


class ModelDetails(SubscriptableModel):
    """A model's format, family, size and quantization."""

    parent_model: str | None = None
    format: str | None = None
    family: str | None = None
    families: Sequence[str] | None = None
    parameter_size: str | None = None
    quantization_level: str | None = None


class ListResponse(SubscriptableModel):
    """The answer of `list`: every model some backend of the cluster has (or a sharded model's file)."""

    class Model(SubscriptableModel):
        """One model: its name (`model`), file size and digest."""

        model: str | None = None
        modified_at: datetime | None = None
        digest: str | None = None
        size: int | None = None
        details: ModelDetails | None = None

    models: Sequence[Model]


class ProcessResponse(SubscriptableModel):
    """The answer of `ps`: what is loaded where; each entry names its backend under `sollol`."""

    class Model(SubscriptableModel):
        """One loaded model; `sollol` names its backend (`backend`, `kind`, `address`)."""

        model: str | None = None
        name: str | None = None
        digest: str | None = None
        expires_at: datetime | None = None
        size: int | None = None
        size_vram: int | None = None
        details: ModelDetails | None = None
        context_length: int | None = None
        sollol: dict[str, Any] | None = None

    models: Sequence[Model]


class ShowResponse(SubscriptableModel):
    """The answer of `show`: a model's details, template and metadata."""

    modified_at: datetime | None = None
    template: str | None = None
    modelfile: str | None = None
    license: str | None = None
    details: ModelDetails | None = None
    modelinfo: Mapping[str, Any] | None = Field(default=None, alias="model_info")
    parameters: str | None = None
    capabilities: list[str] | None = None


class RpcDevice(SubscriptableModel):
    """One device an rpc-server serves: `kind` is "gpu" (layers in its own memory) or "cpu" (the machine's
    RAM); `name` is the manifest's (`rpc.device`), None when it names none; `label` keys it in placements."""

    index: int
    label: str
    name: str | None = None
    kind: str
    free_bytes: int
    total_bytes: int


class BackendRow(SubscriptableModel):
    """One backend as `sollol status` shows it. `reachable` is "yes", "no", "loading" or "busy" (an
    rpc-server a coordinator holds); `rpc_devices` lists an rpc-server's devices."""

    name: str
    node: str | None = None
    kind: str
    address: str
    managed: bool
    reachable: str
    version: str | None = None
    models: list[str] = Field(default_factory=list)
    loaded: list[str] = Field(default_factory=list)
    slots: int | None = None
    in_flight: int | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None
    rpc_devices: list[RpcDevice] = Field(default_factory=list)
    error: str | None = None


class ClusterStatus(SubscriptableModel):
    """The answer of `status()`: every backend from the API's own health loop, and the load now."""

    cluster: str
    backends: list[BackendRow]
    reachable: int
    total: int
    in_flight: int
    queue_depth: int
    loaded: list[ProcessResponse.Model]
