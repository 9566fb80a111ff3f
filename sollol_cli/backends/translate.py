"""Pure translation between the Ollama API and llama-server's HTTP API (no I/O, table-testable).

Choices, and why:
- generate uses the native `/completion` (or `/infill` when a `suffix` is given): it reports `stop_type`
  and per-request `timings`, and takes the prompt exactly as given when `raw` is set. Without `raw`, the
  prompt (and `system`) is first rendered with the model's own chat template through `/apply-template`,
  which is what Ollama does with its template.
- chat uses `/v1/chat/completions`: llama-server applies the template itself and parses tool calls and
  reasoning into structured deltas, which map one-to-one onto Ollama chat chunks.
- Ollama options that llama-server only takes at start-up (`num_ctx`, `num_gpu`, `num_thread`, ...) are
  ignored per request, as Ollama itself ignores options it does not know.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Chunk = dict[str, Any]

# Ollama option -> llama-server request field (the same names work for /completion and /v1/chat/completions).
OPTION_FIELDS: dict[str, str] = {
    "num_predict": "n_predict",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "num_keep": "n_keep",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
}

# Fixed when llama-server starts (`-c`, `-ngl`, `-t`, ...): meaningless per request.
STARTUP_ONLY_OPTIONS = frozenset(
    {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock", "low_vram", "numa"}
)


def map_options(options: Any) -> dict[str, Any]:
    """Ollama `options` -> llama-server sampling fields; unknown and start-up-only options are dropped."""
    if not isinstance(options, dict):
        return {}
    out: dict[str, Any] = {}
    for name, value in options.items():
        target = OPTION_FIELDS.get(name)
        if target is None or value is None:
            continue
        if name == "stop" and isinstance(value, str):
            value = [value]
        if name == "num_predict" and isinstance(value, int) and value < 0:
            value = -1  # Ollama's -2 ("fill the context") has no llama-server equivalent beyond "no limit"
        out[target] = value
    return out


def format_fields(fmt: Any) -> dict[str, Any]:
    """Ollama `format` ("json" or a JSON schema) -> llama-server's grammar-constrained `json_schema`."""
    if fmt == "json":
        return {"json_schema": {}}
    if isinstance(fmt, dict):
        return {"json_schema": fmt}
    return {}


def think_fields(think: Any) -> dict[str, Any]:
    """Ollama `think` (bool or "low"/"medium"/"high") -> chat-template switches of llama-server."""
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    if isinstance(think, str) and think:
        return {"reasoning_effort": think}
    return {}


def template_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation a non-raw generate request stands for: optional system, then the prompt."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    messages.append({"role": "user", "content": body.get("prompt") or ""})
    return messages


def completion_request(body: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Ollama generate body + the final prompt text -> native `/completion` (or `/infill`) body."""
    request: dict[str, Any] = {"stream": True, **map_options(body.get("options")), **format_fields(body.get("format"))}
    if body.get("suffix"):
        request.update(input_prefix=prompt, input_suffix=body["suffix"], prompt="")
    else:
        request["prompt"] = prompt
    return request


def openai_messages(messages: Any) -> list[dict[str, Any]]:
    """Ollama chat messages -> OpenAI messages as llama-server parses them."""
    out: list[dict[str, Any]] = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        item: dict[str, Any] = {"role": message.get("role", "user")}
        text = message.get("content") or ""
        images = message.get("images") or []
        if images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            parts += [{"type": "image_url", "image_url": {"url": _data_url(image)}} for image in images]
            item["content"] = parts
        else:
            item["content"] = text
        if message.get("thinking"):
            item["reasoning_content"] = message["thinking"]
        if message.get("tool_calls"):
            item["tool_calls"] = [_openai_tool_call(call) for call in message["tool_calls"]]
        if message.get("tool_name"):
            item["name"] = message["tool_name"]
        if message.get("tool_call_id"):
            item["tool_call_id"] = message["tool_call_id"]
        out.append(item)
    return out


def _data_url(image: str) -> str:
    # Ollama sends bare base64; llama-server detects the image format from the bytes, not the mime type.
    return image if image.startswith("data:") else f"data:image/png;base64,{image}"


def _openai_tool_call(call: Any) -> dict[str, Any]:
    function = call.get("function", {}) if isinstance(call, dict) else {}
    out: dict[str, Any] = {
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": function.get("arguments", {})},
    }
    if isinstance(call, dict) and call.get("id"):
        out["id"] = call["id"]
    return out


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """Ollama chat body -> streaming `/v1/chat/completions` body (usage and timings in the last events)."""
    request: dict[str, Any] = {
        "messages": openai_messages(body.get("messages")),
        "stream": True,
        "stream_options": {"include_usage": True},
        **map_options(body.get("options")),
        **format_fields(body.get("format")),
        **think_fields(body.get("think")),
    }
    if body.get("model"):
        request["model"] = body["model"]
    if body.get("tools"):
        request["tools"] = body["tools"]
    return request


def now_rfc3339() -> str:
    """Ollama's `created_at`: RFC 3339, UTC, fractional seconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def ms_to_ns(ms: Any) -> int:
    return round(float(ms) * 1_000_000) if isinstance(ms, int | float) and math.isfinite(ms) else 0


def done_reason(*, stop_type: Any = None, finish_reason: Any = None) -> str:
    """`length` when generation hit the token limit, else `stop` (EOS, stop word, tool call)."""
    return "length" if stop_type == "limit" or finish_reason == "length" else "stop"


def final_metrics(timings: Any, usage: Any, total_ns: int) -> dict[str, int]:
    """Ollama metric fields from llama-server `timings` (and OpenAI `usage` as a fallback for counts).

    Zero values are omitted, as Ollama omits them.
    """
    timings = timings if isinstance(timings, dict) else {}
    usage = usage if isinstance(usage, dict) else {}
    prompt_n = timings.get("prompt_n", usage.get("prompt_tokens", 0))
    predicted_n = timings.get("predicted_n", usage.get("completion_tokens", 0))
    metrics = {
        "total_duration": total_ns,
        "prompt_eval_count": prompt_n if isinstance(prompt_n, int) else 0,
        "prompt_eval_duration": ms_to_ns(timings.get("prompt_ms")),
        "eval_count": predicted_n if isinstance(predicted_n, int) else 0,
        "eval_duration": ms_to_ns(timings.get("predicted_ms")),
    }
    return {key: value for key, value in metrics.items() if value > 0}


Clock = Callable[[], int]  # nanoseconds since the request started


@dataclass
class GenerateFraming:
    """Re-frames `/completion` SSE events as Ollama generate chunks, one event at a time."""

    model: str
    clock: Clock
    finished: bool = False

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        content = event.get("content") or ""
        if not event.get("stop"):
            return [self._chunk(response=content, done=False)] if content else []
        self.finished = True
        reason = done_reason(stop_type=event.get("stop_type"))
        final = self._chunk(response=content, done=True, done_reason=reason)
        final.update(final_metrics(event.get("timings"), None, self.clock()))
        return [final]

    def _chunk(self, **fields: Any) -> Chunk:
        return {"model": self.model, "created_at": now_rfc3339(), **fields}


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass
class ChatFraming:
    """Re-frames `/v1/chat/completions` SSE events as Ollama chat chunks.

    Content and thinking deltas go out as they arrive. Tool-call arguments arrive in pieces, so tool calls
    are sent whole (Ollama sends parsed argument objects) in one chunk just before the final chunk, which
    is built when the stream ends because `finish_reason`, `usage` and `timings` come in separate events.
    """

    model: str
    clock: Clock
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    tool_calls: dict[int, _ToolCallParts] = field(default_factory=dict)

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):
            self.timings = event["timings"]
        out: list[Chunk] = []
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = _dict(choice.get("delta"))
            content = delta.get("content") or ""
            thinking = delta.get("reasoning_content") or ""
            if content or thinking:
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if thinking:
                    message["thinking"] = thinking
                out.append(self._chunk(message=message, done=False))
            for call in delta.get("tool_calls") or []:
                self._add_tool_call_part(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def _add_tool_call_part(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        parts = self.tool_calls.setdefault(int(call.get("index", len(self.tool_calls))), _ToolCallParts())
        parts.id = call.get("id") or parts.id
        function = _dict(call.get("function"))
        parts.name += function.get("name") or ""
        parts.arguments += function.get("arguments") or ""

    @property
    def started_finishing(self) -> bool:
        return self.finish_reason is not None

    def finish(self) -> list[Chunk]:
        """The tool-call chunk (if any) and the final chunk; raises ValueError on unparsable tool arguments."""
        out: list[Chunk] = []
        if self.tool_calls:
            calls = [self._ollama_tool_call(i, parts) for i, parts in sorted(self.tool_calls.items())]
            out.append(self._chunk(message={"role": "assistant", "content": "", "tool_calls": calls}, done=False))
        final = self._chunk(
            message={"role": "assistant", "content": ""},
            done=True,
            done_reason=done_reason(finish_reason=self.finish_reason),
        )
        final.update(final_metrics(self.timings, self.usage, self.clock()))
        out.append(final)
        return out

    @staticmethod
    def _ollama_tool_call(index: int, parts: _ToolCallParts) -> dict[str, Any]:
        try:
            arguments = json.loads(parts.arguments) if parts.arguments.strip() else {}
        except ValueError:
            raise ValueError(f"tool call '{parts.name}' has arguments that are not JSON") from None
        call: dict[str, Any] = {"function": {"index": index, "name": parts.name, "arguments": arguments}}
        if parts.id:
            call["id"] = parts.id
        return call

    def _chunk(self, **fields: Any) -> Chunk:
        return {"model": self.model, "created_at": now_rfc3339(), **fields}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def embed_input(body: dict[str, Any]) -> list[str]:
    value = body.get("input", body.get("prompt", ""))
    return [value] if isinstance(value, str) else [str(v) for v in value] if isinstance(value, list) else []


def shorten(vector: list[float], dimensions: Any) -> list[float]:
    """Ollama `dimensions`: keep the first N values and re-normalize to unit length."""
    if not isinstance(dimensions, int) or dimensions <= 0 or dimensions >= len(vector):
        return vector
    cut = vector[:dimensions]
    norm = math.sqrt(sum(v * v for v in cut))
    return [v / norm for v in cut] if norm > 0 else cut


def embed_response(body: dict[str, Any], openai: Any, total_ns: int) -> dict[str, Any]:
    """OpenAI `/v1/embeddings` answer -> Ollama `/api/embed` answer."""
    data = openai.get("data") if isinstance(openai, dict) else None
    items = sorted((d for d in data or [] if isinstance(d, dict)), key=lambda d: d.get("index", 0))
    out: dict[str, Any] = {
        "model": body.get("model", ""),
        "embeddings": [shorten(list(d.get("embedding") or []), body.get("dimensions")) for d in items],
        "total_duration": total_ns,
    }
    usage = openai.get("usage") if isinstance(openai, dict) else None
    if isinstance(usage, dict) and usage.get("prompt_tokens"):
        out["prompt_eval_count"] = usage["prompt_tokens"]
    return out


def human_parameters(count: Any) -> str | None:
    """Ollama-style parameter size: 8030261312 -> "8.0B", 67000000 -> "67.00M"."""
    if not isinstance(count, int) or count <= 0:
        return None
    if count >= 1_000_000_000:
        return f"{count / 1e9:.1f}B"
    if count >= 1_000_000:
        return f"{count / 1e6:.2f}M"
    return f"{count / 1e3:.2f}K"
