"""Client for an Ollama server: the Ollama API is spoken natively, so requests pass through unchanged
(except that chat/generate/pull always stream, see `base.aggregate`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from sollol_cli.backends.base import BackendRef, BackendStatus, Chunk, ModelEntry, StreamBroken
from sollol_cli.backends.http import Timeouts, iter_ndjson, open_response, request_json


class OllamaBackend:
    def __init__(self, ref: BackendRef, timeouts: Timeouts | None = None) -> None:
        self._ref = ref
        self.timeouts = timeouts or Timeouts()

    @property
    def ref(self) -> BackendRef:
        return self._ref

    def __repr__(self) -> str:
        return f"OllamaBackend({self._ref.label})"

    async def probe(self) -> BackendStatus:
        """`/api/version`, `/api/tags` and `/api/ps` at once, all within `timeouts.probe`."""
        timeout = self.timeouts.for_probe()
        started = time.perf_counter()

        async def version() -> Any:
            data = await request_json(self._ref, "GET", "/api/version", timeout=timeout)
            return data, (time.perf_counter() - started) * 1000

        results = await asyncio.gather(
            version(),
            request_json(self._ref, "GET", "/api/tags", timeout=timeout),
            request_json(self._ref, "GET", "/api/ps", timeout=timeout),
            return_exceptions=True,
        )
        version_result, tags_result, ps_result = results
        if isinstance(version_result, BaseException):
            return BackendStatus(reachable=False, error=_reason(version_result))
        version_data, latency = version_result
        errors = [_reason(r) for r in (tags_result, ps_result) if isinstance(r, BaseException)]
        loaded = _models_of(ps_result)
        context = {m.get("name", ""): m.get("context_length") for m in loaded}
        return BackendStatus(
            reachable=True,
            version=_str_or_none(version_data.get("version") if isinstance(version_data, dict) else None),
            models=[_entry(m, context) for m in _models_of(tags_result)],
            loaded=[str(m.get("name", "")) for m in loaded],
            latency_ms=round(latency, 2),
            error="; ".join(errors) or None,
        )

    def chat(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return self._stream("/api/chat", body)

    def generate(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return self._stream("/api/generate", body)

    def pull(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        return self._stream("/api/pull", body)

    async def _stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Forward each NDJSON line the moment it arrives; a stream without a final chunk is broken."""
        done = False
        async with open_response(
            self._ref, "POST", path, body={**body, "stream": True}, timeout=self.timeouts.request()
        ) as resp:
            async for chunk in iter_ndjson(self._ref, resp):
                done = done or bool(chunk.get("done")) or chunk.get("status") == "success"
                yield chunk
        if not done:
            raise StreamBroken(self._ref.label, "ended the stream before its final chunk")

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/api/embed", body)

    async def show(self, model: str) -> dict[str, Any]:
        return await self._json("POST", "/api/show", {"model": model})

    async def tags(self) -> list[dict[str, Any]]:
        return _models_of(await self._json("GET", "/api/tags"))

    async def ps(self) -> list[dict[str, Any]]:
        return _models_of(await self._json("GET", "/api/ps"))

    async def delete(self, model: str) -> None:
        await request_json(self._ref, "DELETE", "/api/delete", body={"model": model}, timeout=self.timeouts.request())

    async def copy(self, source: str, destination: str) -> None:
        body = {"source": source, "destination": destination}
        await request_json(self._ref, "POST", "/api/copy", body=body, timeout=self.timeouts.request())

    async def openai_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        async with open_response(self._ref, "POST", path, body=body, timeout=self.timeouts.request()) as resp:
            async for data in resp.content.iter_any():
                yield data

    async def openai_json(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if body is None else "POST"
        return await request_json(self._ref, method, path, body=body, timeout=self.timeouts.request())

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = await request_json(self._ref, method, path, body=body, timeout=self.timeouts.request())
        if not isinstance(data, dict):
            raise StreamBroken(self._ref.label, f"answered {path} with something other than a JSON object")
        return data


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, Exception) else type(exc).__name__


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _models_of(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("models"), list):
        return [m for m in data["models"] if isinstance(m, dict)]
    return []


def _entry(model: dict[str, Any], context: dict[str, Any]) -> ModelEntry:
    raw_details = model.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    name = str(model.get("name") or model.get("model") or "")
    ctx = context.get(name)
    return ModelEntry(
        name=name,
        size=model.get("size") if isinstance(model.get("size"), int) else None,
        digest=_str_or_none(model.get("digest")),
        family=_str_or_none(details.get("family")),
        parameter_size=_str_or_none(details.get("parameter_size")),
        quantization=_str_or_none(details.get("quantization_level")),
        context_length=ctx if isinstance(ctx, int) else None,
    )
