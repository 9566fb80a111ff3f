"""A small scriptable Ollama for gateway unit tests: real sockets, exact control over timing and failures,
and counters for what it saw (concurrency, cancelled generations, pulls, deletes)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


class Served:
    """`start()` on 127.0.0.1 (a free port unless `port` is set) and `stop()`, for a fake with `app()`."""

    runner: web.AppRunner | None
    port: int

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app(), shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class FakeOllama(Served):
    name: str
    models: list[str] = field(default_factory=lambda: ["tiny:latest"])
    tokens: int = 5
    delay: float = 0.0
    first_delay: float = 0.0
    version: str = "0.9.0"
    fail_after: int | None = None  # end the stream with an error line after this many tokens
    active: int = 0
    max_active: int = 0
    started: int = 0
    finished: int = 0
    cancelled: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    copied: list[tuple[str, str]] = field(default_factory=list)
    # per path, answers sent instead of the normal one, first to last: (status, JSON body, or text for str)
    canned: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    runner: web.AppRunner | None = None
    port: int = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[canned_answers(self.canned)])
        app.router.add_get("/api/version", self.get_version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/show", self.show)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.generate)
        app.router.add_post("/api/embed", self.embed)
        app.router.add_post("/api/pull", self.pull)
        app.router.add_delete("/api/delete", self.delete)
        app.router.add_post("/api/copy", self.copy)
        app.router.add_post("/v1/chat/completions", self.openai_chat)
        app.router.add_post("/v1/embeddings", self.openai_embeddings)
        return app

    def has(self, model: str) -> bool:
        def norm(name: str) -> str:
            return name if ":" in name else name + ":latest"

        return norm(model) in [norm(m) for m in self.models]

    async def get_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})

    async def tags(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2026-01-02T03:04:05.123456789Z",
                        "size": 1000,
                        "digest": "abc" + m,
                        "details": {"format": "gguf", "family": "llama", "parameter_size": "1M"},
                    }
                    for m in self.models
                ]
            }
        )

    async def ps(self, request: web.Request) -> web.Response:
        models = [{"name": m, "model": m, "size": 1000, "size_vram": 0, "digest": "abc"} for m in self.models[:1]]
        return web.json_response({"models": models})

    async def show(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self.has(body.get("model", "")):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        info = {"general.architecture": "llama", "served_by": self.name}
        return web.json_response({"modelfile": "", "details": {"family": "llama"}, "model_info": info})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if not self.has(body.get("model", "")):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        chat = request.path.endswith("chat")
        self.started += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        try:
            await response.prepare(request)
            await asyncio.sleep(self.first_delay)
            for i in range(self.tokens):
                if self.fail_after is not None and i == self.fail_after:
                    await response.write(b'{"error":"the runner crashed"}\n')
                    return response
                text = f"{self.name}-{i} "
                chunk: dict[str, Any] = {"model": body["model"], "created_at": "2026-01-01T00:00:00Z", "done": False}
                chunk.update({"message": {"role": "assistant", "content": text}} if chat else {"response": text})
                await response.write(json.dumps(chunk).encode() + b"\n")
                if self.delay:
                    await asyncio.sleep(self.delay)
            final: dict[str, Any] = {
                "model": body["model"], "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
                "eval_count": self.tokens, "eval_duration": 10**9, "prompt_eval_count": 3,
            }  # fmt: skip
            final.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
            await response.write(json.dumps(final).encode() + b"\n")
            await response.write_eof()
            self.finished += 1
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        finally:
            self.active -= 1

    async def embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self.has(body.get("model", "")):
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = [[float(len(text)), 1.0, 0.5] for text in inputs]
        return web.json_response({"model": body["model"], "embeddings": vectors, "prompt_eval_count": len(inputs)})

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        lines += [{"status": "pulling d1", "digest": "sha256:d1", "total": 100, "completed": c} for c in (0, 50, 100)]
        lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
        if body.get("model") == "missing:latest":
            lines.append({"error": "pull model manifest: file does not exist"})
        else:
            lines.append({"status": "success"})
            self.models.append(body["model"])
        for line in lines:
            await response.write(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0.001)
        await response.write_eof()
        return response

    async def delete(self, request: web.Request) -> web.Response:
        model = (await request.json())["model"]
        if not self.has(model):
            return web.json_response({"error": f"model '{model}' not found"}, status=404)
        self.deleted.append(model)
        self.models = [m for m in self.models if m != model]
        return web.Response()

    async def copy(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.copied.append((body["source"], body["destination"]))
        self.models.append(body["destination"])
        return web.Response()

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello there"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }  # fmt: skip
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(self.tokens):
            delta = {"role": "assistant", "content": f"{self.name}-{i} "}
            event = {"id": "c1", "object": "chat.completion.chunk", "model": body["model"],
                     "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
            await response.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")
        done = {"id": "c1", "object": "chat.completion.chunk", "model": body["model"],
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": "stop"}]}  # fmt: skip
        await response.write(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2]} for i, _ in enumerate(inputs)]
        return web.json_response({"object": "list", "data": data, "model": body["model"], "usage": {}})


def canned_answers(canned: dict[str, list[tuple[int, Any]]]) -> Any:
    """A middleware that answers a path with its next canned (status, body) while any are left."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        queue = canned.get(request.path)
        if not queue:
            response: web.StreamResponse = await handler(request)
            return response
        status, body = queue.pop(0)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    return middleware


# llama-server's own answer to /v1/embeddings when started without --embeddings
LLAMA_NO_EMBEDDINGS = {
    "error": {
        "code": 501,
        "message": "This server does not support embeddings. Start it with `--embeddings`",
        "type": "not_supported_error",
    }
}


@dataclass
class FakeLlamaServer(Served):
    """A llama-server as sollol's client sees it: health, props, models, streamed chat; /v1/embeddings
    answers 501 as a llama-server without `--embeddings` does (`canned` overrides any path)."""

    name: str
    model_path: str = "/models/tiny.gguf"
    canned: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    chats: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    def app(self) -> web.Application:
        app = web.Application(middlewares=[canned_answers(self.canned)])
        app.router.add_get("/health", self.health)
        app.router.add_get("/props", self.props)
        app.router.add_get("/slots", self.slots)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def slots(self, request: web.Request) -> web.Response:
        return web.json_response([{"id": 0, "is_processing": False}])

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response(LLAMA_NO_EMBEDDINGS, status=501)

    async def props(self, request: web.Request) -> web.Response:
        settings = {"n_ctx": 1024}
        return web.json_response(
            {"model_path": self.model_path, "total_slots": 1, "build_info": "b1-fake",
             "default_generation_settings": settings}
        )  # fmt: skip

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": self.model_path, "meta": {"n_params": 1000, "size": 2000}}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.chats += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in (
            {"choices": [{"index": 0, "delta": {"content": f"{self.name} says hi"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        ):  # fmt: skip
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
