"""The client compatibility matrix: for every client, call and backend, the outcome sollol promises.

This table is the data; `tests/compat/test_compat.py` runs each cell (a ✅ cell must work, a ❌ cell must fail
exactly as documented, so either way a change shows up) and `scripts/generate.py` renders it into README.
A ❌ always says why, and the reason is never sollol's: it is the client's (a missing feature, a library
that cannot send the call) or the backend's. A call a client has no API for is not a cell ("—").
"""

from __future__ import annotations

from dataclasses import dataclass

BACKENDS: dict[str, str] = {
    "ollama": "Ollama",
    "llama": "llama-server",
    "sharded": "sharded model",
}

# Column order is also run order: within one client, `ps` runs before `unload`.
CALLS: dict[str, str] = {
    "chat": "chat",
    "chat_stream": "chat stream",
    "generate": "generate",
    "generate_stream": "generate stream",
    "tools": "tools",
    "options": "options",
    "structured": "structured output",
    "list": "list models",
    "show": "show",
    "ps": "ps",
    "embed": "embed",
    "embed_legacy": "/api/embeddings",
    "pull": "pull",
    "unload": "unload",
    "responses": "/v1/responses",
    "messages": "/v1/messages",
}

# What each column sends, by API family (README shows this under the table).
CALL_NOTES: dict[str, str] = {
    "chat": "`/api/chat` or `/v1/chat/completions`, whichever API the client speaks",
    "generate": "`/api/generate` or `/v1/completions` (LlamaIndex's `complete` sends `/api/chat`; LiteLLM's "
    "`ollama/` sends every completion, chat or not, to `/api/generate`)",
    "tools": "a chat request with a function tool (LiteLLM's `ollama/` asks for JSON on `/api/generate` instead)",
    "options": "sampling options (`num_predict`/`max_tokens`, `temperature`, `seed`) that the answer honours",
    "structured": "`format` (a JSON schema) on `/api/chat`, or `response_format` on `/v1/chat/completions`",
    "list": "`/api/tags` or `/v1/models` (Open WebUI: `/api/version`, `/api/tags`, `/api/ps`, `/v1/models`)",
    "show": "`/api/show` or `/v1/models/{model}`",
    "embed": "`/api/embed` or `/v1/embeddings`",
    "pull": "`/api/pull` with the progress stream (Ollama backends only)",
    "unload": "an empty prompt with `keep_alive: 0` (what `ollama stop` sends): `done_reason` `unload`",
    "responses": "OpenAI Responses API, streaming and not",
    "messages": "Anthropic Messages API, streaming and not",
}

# Calls that only make sense on some backends (pulling is Ollama's).
ONLY_ON: dict[str, tuple[str, ...]] = {"pull": ("ollama",)}

CLIENTS: dict[str, str] = {
    "ollama-python": "`ollama` (Python)",
    "ollama-js": "`ollama` (JS)",
    "openai-python": "`openai` (Python)",
    "openai-js": "`openai` (JS)",
    "langchain-ollama": "LangChain `ChatOllama`, `OllamaLLM`, `OllamaEmbeddings`",
    "langchain-openai": "LangChain `ChatOpenAI`, `OpenAIEmbeddings`",
    "llamaindex-ollama": "LlamaIndex `Ollama`, `OllamaEmbedding`",
    "litellm-ollama": "LiteLLM `ollama/`",
    "litellm-ollama-chat": "LiteLLM `ollama_chat/`",
    "litellm-openai": "LiteLLM `openai/`",
    "anthropic": "`anthropic` (Python)",
    "curl": "curl",
    "open-webui": "Open WebUI (start-up and chat)",
}

_OLLAMA_NATIVE = ("chat", "chat_stream", "generate", "generate_stream", "tools", "options", "structured", "list")
_OPENAI = ("chat", "chat_stream", "generate", "generate_stream", "tools", "options", "structured", "list", "show")

# The calls each client has an API for.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "ollama-python": (*_OLLAMA_NATIVE, "show", "ps", "embed", "embed_legacy", "pull", "unload"),
    "ollama-js": (*_OLLAMA_NATIVE, "show", "ps", "embed", "embed_legacy", "pull", "unload"),
    "openai-python": (*_OPENAI, "embed", "responses"),
    "openai-js": (*_OPENAI, "embed", "responses"),
    "langchain-ollama": ("chat", "chat_stream", "generate", "generate_stream", "tools", "options", "structured", "embed"),
    "langchain-openai": ("chat", "chat_stream", "tools", "options", "structured", "embed", "responses"),
    "llamaindex-ollama": ("chat", "chat_stream", "generate", "generate_stream", "tools", "options", "structured", "embed"),
    "litellm-ollama": ("generate", "generate_stream", "tools", "options", "embed"),
    "litellm-ollama-chat": ("chat", "chat_stream", "tools", "options"),
    "litellm-openai": ("chat", "chat_stream", "tools", "options", "embed"),
    "anthropic": ("messages",),
    "curl": (
        "chat", "chat_stream", "generate", "generate_stream", "list", "show", "ps", "embed", "embed_legacy",
        "pull", "unload", "responses", "messages",
    ),
    "open-webui": ("list", "chat_stream"),
}  # fmt: skip


@dataclass(frozen=True)
class Fails:
    """A documented failure: `reason` (shown in README) and `match`, a regex the error text must match."""

    reason: str
    match: str


Outcome = Fails | None  # None = ✅

# ❌ cells: (client, call, backend) -> why. Backend "*" = on every backend.
_NO_UNLOAD = Fails(
    "a llama-server node loads its one model when it starts and has no way to unload it (sollol does not stop "
    "a node's service for a request): the answer says `done_reason` `load`, truthfully, and `ps` still lists it",
    r"'done_reason': 'load'",
)
FAILURES: dict[tuple[str, str, str], Fails] = {
    ("ollama-python", "unload", "llama"): _NO_UNLOAD,
    ("ollama-js", "unload", "llama"): _NO_UNLOAD,
    ("curl", "unload", "llama"): _NO_UNLOAD,
}


def cells() -> list[tuple[str, str, str]]:
    """Every (client, call, backend) cell, in run order: backend by backend, client by client, call by call."""
    out = []
    for backend in BACKENDS:
        for client, calls in SUPPORTED.items():
            for call in CALLS:
                if call in calls and backend in ONLY_ON.get(call, (backend,)):
                    out.append((client, call, backend))
    return out


def expected(client: str, call: str, backend: str) -> Outcome:
    return FAILURES.get((client, call, backend)) or FAILURES.get((client, call, "*"))


def render_markdown() -> str:
    """The README table: one row per client, one column per call; ✅ = works on every backend it applies to."""
    header = ["client", *CALLS.values()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes: list[str] = []
    for client, label in CLIENTS.items():
        row = [label]
        for call in CALLS:
            if call not in SUPPORTED[client]:
                row.append("—")
                continue
            backends = [b for b in BACKENDS if b in ONLY_ON.get(call, (b,))]
            failing = [(b, f) for b in backends if (f := expected(client, call, b)) is not None]
            if not failing:
                row.append("✅")
                continue
            marks = []
            for reason in dict.fromkeys(f.reason for _, f in failing):
                where = ", ".join(BACKENDS[b] for b, f in failing if f.reason == reason)
                note = f"{reason} ({where})" if len(failing) < len(backends) else reason
                if note not in notes:
                    notes.append(note)
                marks.append(f"❌{notes.index(note) + 1}")
            row.append(" ".join(marks))
        lines.append("| " + " | ".join(row) + " |")
    kinds = ", ".join(BACKENDS.values())
    text = "\n".join(lines) + "\n\n"
    text += f"✅ works through `sollol serve` on every kind of backend ({kinds}); — not a call the suite makes\n"
    text += "with that client (it has no API for it, or reaches that route only through another column).\n"
    text += "".join(f"{i}. ❌ {note}\n" for i, note in enumerate(notes, 1))
    text += "\n" + "".join(f"- **{CALLS[c]}**: {n}\n" for c, n in CALL_NOTES.items())
    return text
