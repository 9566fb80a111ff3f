"""Client for llama.cpp's llama-server (llamacpp nodes and sharding coordinators), presented as an
Ollama backend. The request/response mapping lives in `translate.py`; this module does the I/O."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from pathlib import PurePath
from typing import Any

from sollol_cli.backends import translate
from sollol_cli.backends.base import (
    BackendRef,
    BackendStatus,
    Chunk,
    ModelEntry,
    StreamBroken,
    Unsupported,
    UpstreamError,
)
from sollol_cli.backends.http import (
    Timeouts,
    error_message,
    iter_sse,
    open_response,
    parse_json_object,
    request_json,
)
from sollol_cli.errors import BackendError
from sollol_cli.names import same_model

COORDINATOR_PREFIX = "coordinator:"  # the BackendRef name of a sharded model's coordinator (sharding/coordinator.py)
_NO_SLOTS_ENDPOINT = (404, 501)  # `--no-slots`, or a build without the route
# llama-server closes the connection after every streamed answer; saying so up front keeps that
# connection out of the pool instead of handing a dying connection to the next request.
_STREAM_HEADERS = {"Connection": "close"}


class LlamaServerBackend:
    def __init__(self, ref: BackendRef, timeouts: Timeouts | None = None, *, alias: str | None = None) -> None:
        self._ref = ref
        self.timeouts = timeouts or Timeouts()
        self.alias = alias
        self._model_name: str | None = alias

    @property
    def ref(self) -> BackendRef:
        return self._ref

    def __repr__(self) -> str:
        return f"LlamaServerBackend({self._ref.label})"

    # -- health ------------------------------------------------------------------------------------------

    async def probe(self) -> BackendStatus:
        """`/health`, then `/props`, `/slots` and `/v1/models` at once; all within `timeouts.probe`.

        Requests in flight are the slots `is_processing`; a server started with `--no-slots` is asked for the
        `llamacpp:requests_processing` gauge of `/metrics` instead (served with `--metrics`, as sollol starts
        it); with neither, `in_flight` is None."""
        timeout = self.timeouts.for_probe()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeouts.probe):
                try:
                    await request_json(self._ref, "GET", "/health", timeout=timeout)
                except UpstreamError as exc:
                    if exc.status != 503:
                        raise
                    # Loading its model: up, but nothing can be served yet.
                    latency = (time.perf_counter() - started) * 1000
                    return BackendStatus(reachable=True, latency_ms=round(latency, 2), error=str(exc))
                latency = (time.perf_counter() - started) * 1000
                results: tuple[Any, Any, Any] = await asyncio.gather(
                    request_json(self._ref, "GET", "/props", timeout=timeout),
                    request_json(self._ref, "GET", "/slots", timeout=timeout),
                    request_json(self._ref, "GET", "/v1/models", timeout=timeout),
                    return_exceptions=True,
                )
                in_flight: int | None = None
                if isinstance(results[1], list):
                    in_flight = sum(1 for s in results[1] if isinstance(s, dict) and s.get("is_processing"))
                elif isinstance(results[1], BaseException) and _slots_disabled(results[1]):
                    in_flight = await self._requests_processing()
        except TimeoutError:
            return BackendStatus(reachable=False, error=f"{self._ref.label}: no answer within {self.timeouts.probe:g}s")
        except Exception as exc:  # a probe reports, it never raises
            return BackendStatus(reachable=False, error=str(exc))
        props_result, _, models = results
        errors = [str(r) for r in results if isinstance(r, BaseException) and not _slots_disabled(r)]
        props = _dict(props_result)
        entry = self._entry(props, _model_meta(models)) if props else None
        return BackendStatus(
            reachable=True,
            version=_str_or_none(props.get("build_info")),
            models=[entry] if entry else [],
            loaded=[entry.name] if entry else [],  # llama-server always holds its one model in memory
            slots=_int_or_none(props.get("total_slots")),
            in_flight=in_flight,
            latency_ms=round(latency, 2),
            error="; ".join(errors) or None,
        )

    async def _requests_processing(self) -> int | None:
        try:
            async with open_response(self._ref, "GET", "/metrics", timeout=self.timeouts.for_probe()) as resp:
                text = (await resp.read()).decode(errors="replace")
        except BackendError:  # started without --metrics (501), or gone: the load is not known
            return None
        return requests_processing(text)

    def _entry(self, props: dict[str, Any], meta: dict[str, Any]) -> ModelEntry:
        self._model_name = self._name_from(props)
        settings = _dict(props.get("default_generation_settings"))
        return ModelEntry(
            name=self._model_name,
            size=_int_or_none(meta.get("size")),
            parameter_size=translate.human_parameters(meta.get("n_params")),
            quantization=_str_or_none(props.get("model_ftype") or meta.get("ftype")),
            context_length=_int_or_none(settings.get("n_ctx") or meta.get("n_ctx")),
        )

    def _name_from(self, props: dict[str, Any]) -> str:
        """The configured alias, else llama-server's `--alias`, else the model file name without `.gguf`."""
        if self.alias:
            return self.alias
        path = str(props.get("model_path") or "")
        file_name = PurePath(path).name
        server_alias = str(props.get("model_alias") or "")
        if server_alias and server_alias not in (file_name, path):
            return server_alias
        stem = PurePath(path).stem if path else ""
        return stem or server_alias or self._ref.name

    async def model_name(self) -> str:
        if self._model_name is None:
            self._model_name = self._name_from(await self._props())
        return self._model_name

    async def _props(self) -> dict[str, Any]:
        return _dict(await request_json(self._ref, "GET", "/props", timeout=self.timeouts.request()))

    # -- generation --------------------------------------------------------------------------------------

    async def generate(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        clock = _clock()
        model = str(body.get("model") or await self.model_name())
        if body.get("images"):
            raise Unsupported(f"{self._ref.label}: llama-server nodes take images only through /api/chat")
        if body.get("template"):
            raise Unsupported(
                f"{self._ref.label}: llama-server nodes cannot apply an Ollama 'template'; "
                "send raw: true with a formatted prompt"
            )
        prompt = str(body.get("prompt") or "")
        if not prompt and not body.get("suffix"):
            yield _load_chunk(model, response="")
            return
        if body.get("suffix"):
            path = "/infill"  # fill-in-the-middle with the model's own FIM tokens
        else:
            path = "/completion"
            if not body.get("raw"):
                prompt = await self._apply_template(translate.template_messages(body))
        framing = translate.GenerateFraming(model=model, clock=clock)
        request = translate.completion_request(body, prompt)
        async with aclosing(self._events(path, request)) as events:
            async for event in events:
                for chunk in framing.feed(event):
                    yield chunk
        if not framing.finished:
            raise StreamBroken(self._ref.label, "ended the stream before its final chunk")

    async def _apply_template(self, messages: list[dict[str, Any]]) -> str:
        data = await request_json(
            self._ref, "POST", "/apply-template", body={"messages": messages}, timeout=self.timeouts.request()
        )
        prompt = _dict(data).get("prompt")
        if not isinstance(prompt, str):
            raise StreamBroken(self._ref.label, "answered /apply-template without a prompt")
        return prompt

    async def chat(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        clock = _clock()
        model = str(body.get("model") or await self.model_name())
        if not body.get("messages"):
            yield _load_chunk(model, message={"role": "assistant", "content": ""})
            return
        framing = translate.ChatFraming(model=model, clock=clock)
        saw_done = False
        async with aclosing(self._events("/v1/chat/completions", translate.chat_request(body))) as events:
            async for event in events:
                if event is _DONE:
                    saw_done = True  # the server closes the stream right after; reading on releases it cleanly
                    continue
                for chunk in framing.feed(event):
                    yield chunk
        if not (saw_done or framing.started_finishing):
            raise StreamBroken(self._ref.label, "ended the stream before its final chunk")
        try:
            final_chunks = framing.finish()
        except ValueError as exc:
            raise StreamBroken(self._ref.label, str(exc)) from None
        for chunk in final_chunks:
            yield chunk

    async def _events(self, path: str, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Each SSE event as JSON the moment it arrives; `[DONE]` becomes `_DONE`; an error event raises."""
        async with open_response(
            self._ref, "POST", path, body=request, headers=_STREAM_HEADERS, timeout=self.timeouts.request()
        ) as resp:
            async for data in iter_sse(self._ref, resp):
                if data.strip() == "[DONE]":
                    yield _DONE
                    continue
                event = parse_json_object(self._ref, data)
                if "error" in event:
                    raise StreamBroken(self._ref.label, error_message(data.encode(), "failed mid-stream"))
                yield event

    # -- other Ollama routes -----------------------------------------------------------------------------

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter_ns()
        request = {"input": translate.embed_input(body), "encoding_format": "float"}
        if body.get("model"):
            request["model"] = body["model"]
        data = await self.openai_json("/v1/embeddings", request)
        reply = body if body.get("model") else {**body, "model": await self.model_name()}
        return translate.embed_response(reply, data, time.perf_counter_ns() - started)

    async def show(self, model: str) -> dict[str, Any]:
        props, models = await asyncio.gather(
            self._props(),
            request_json(self._ref, "GET", "/v1/models", timeout=self.timeouts.request()),
        )
        entry = self._entry(props, _model_meta(models))
        if not same_model(model, entry.name):
            raise UpstreamError(self._ref.label, 404, f"model '{model}' not found")
        meta = _model_meta(models)
        caps = _dict(props.get("chat_template_caps"))
        capabilities = ["completion"]
        if caps.get("supports_tools"):
            capabilities.append("tools")
        if _dict(props.get("modalities")).get("vision"):
            capabilities.append("vision")
        model_info = {
            key: value
            for key, value in (
                ("general.parameter_count", meta.get("n_params")),
                ("general.context_length", meta.get("n_ctx_train")),
                ("general.embedding_length", meta.get("n_embd")),
            )
            if value is not None
        }
        return {
            "modelfile": "",
            "parameters": "",
            "template": str(props.get("chat_template") or ""),
            "details": _details(entry),
            "model_info": model_info,
            "capabilities": capabilities,
        }

    async def tags(self) -> list[dict[str, Any]]:
        entry = await self._current_entry()
        return [
            {"name": entry.name, "model": entry.name, "size": entry.size or 0, "digest": "", "details": _details(entry)}
        ]

    async def ps(self) -> list[dict[str, Any]]:
        entry = await self._current_entry()
        item: dict[str, Any] = {
            "name": entry.name,
            "model": entry.name,
            "size": entry.size or 0,
            "digest": "",
            "details": _details(entry),
        }
        if entry.context_length:
            item["context_length"] = entry.context_length
        return [item]

    async def _current_entry(self) -> ModelEntry:
        props, models = await asyncio.gather(
            self._props(),
            request_json(self._ref, "GET", "/v1/models", timeout=self.timeouts.request()),
        )
        return self._entry(props, _model_meta(models))

    async def pull(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        raise Unsupported(f"{self._ref.label}: llama-server nodes cannot pull models; put the GGUF on the node")
        yield {}  # unreachable: makes this a stream, so the error comes on iteration as with Ollama

    async def delete(self, model: str) -> None:
        raise Unsupported(f"{self._ref.label}: llama-server nodes cannot delete models; remove the GGUF on the node")

    async def copy(self, source: str, destination: str) -> None:
        raise Unsupported(f"{self._ref.label}: llama-server nodes cannot copy models; set an alias in the manifest")

    # -- OpenAI pass-through -----------------------------------------------------------------------------

    async def openai_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        headers = _STREAM_HEADERS if body.get("stream") else None
        async with open_response(
            self._ref, "POST", path, body=body, headers=headers, timeout=self.timeouts.request()
        ) as resp:
            async for data in resp.content.iter_any():
                yield data

    async def openai_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if body is None else "POST"
        try:
            return await request_json(self._ref, method, path, body=body, timeout=self.timeouts.request())
        except UpstreamError as exc:
            if path == "/v1/embeddings":
                raise embeddings_refusal(self._ref, exc) from None
            raise


def embeddings_refusal(ref: BackendRef, exc: UpstreamError) -> UpstreamError:
    """llama-server's refusals of embeddings tell the user to pass a flag, which a sollol user never does
    directly: say which manifest key turns it on instead. Other errors are returned as they are."""
    if exc.status == 501 and "embeddings" in exc.upstream_message:
        kind, fix = "not_supported_error", _where(ref, "embeddings: true", "--embeddings --pooling last")
        message = f"this llama-server serves no embeddings; {fix}"
    elif exc.status == 400 and "pooling type 'none'" in exc.upstream_message.lower():
        kind, fix = "invalid_request_error", _where(ref, "pooling: last", "--pooling last")
        message = f"its model declares no pooling, so it has no single vector per input; {fix}"
    else:
        return exc
    body = json.dumps({"error": {"code": exc.status, "message": message, "type": kind}}).encode()
    return UpstreamError(ref.label, exc.status, message, body)


def _where(ref: BackendRef, setting: str, flags: str) -> str:
    if ref.name.startswith(COORDINATOR_PREFIX):
        model = ref.name.removeprefix(COORDINATOR_PREFIX)
        return f"set '{setting}' on model '{model}' under models: in the manifest"
    if ref.node is not None:
        return f"set '{setting}' under node {ref.node}'s llamacpp: in the manifest and run `sollol up`"
    return f"sollol does not manage it: start it with {flags}"


_DONE: dict[str, Any] = {}  # sentinel event for `data: [DONE]`, compared by identity


def _slots_disabled(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.status in _NO_SLOTS_ENDPOINT


def _clock() -> translate.Clock:
    started = time.perf_counter_ns()
    return lambda: time.perf_counter_ns() - started


def _load_chunk(model: str, **fields: Any) -> Chunk:
    # Ollama answers an empty prompt by loading the model; a llama-server always has it loaded.
    return {"model": model, "created_at": translate.now_rfc3339(), **fields, "done": True, "done_reason": "load"}


def _details(entry: ModelEntry) -> dict[str, Any]:
    return {
        "format": "gguf",
        "family": entry.family or "",
        "parameter_size": entry.parameter_size or "",
        "quantization_level": entry.quantization or "",
    }


def _model_meta(models: Any) -> dict[str, Any]:
    data = _dict(models).get("data")
    first = data[0] if isinstance(data, list) and data else {}
    return _dict(_dict(first).get("meta"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def requests_processing(metrics: str) -> int | None:
    """The `llamacpp:requests_processing` gauge from llama-server's Prometheus text, None when absent."""
    for line in metrics.splitlines():
        name, _, value = line.strip().partition(" ")
        if name == "llamacpp:requests_processing":
            try:
                number = float(value.split()[0])
            except (ValueError, IndexError):
                return None
            return max(round(number), 0) if math.isfinite(number) else None
    return None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
