"""`AsyncCluster`: the cluster from an asyncio program, through the same runtime `sollol run` and `sollol
serve` use (`runtime.session.open_cluster`): the same routing by free slots, queue, retries, health loop,
distribute-or-shard decision and coordinators. Nothing here routes: it builds Ollama request bodies,
hands them to the dispatcher and reads its chunks into the typed answers of `api.types`."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypedDict, TypeVar, Unpack, overload

from pydantic import BaseModel, ValidationError

from sollol_cli.api.types import (
    ChatResponse,
    ClusterStatus,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    ProcessResponse,
    Served,
    ShowResponse,
)
from sollol_cli.backends.base import Chunk, collect
from sollol_cli.errors import BackendError, UsageError
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime import catalog
from sollol_cli.runtime.dispatch import Operation, Trace
from sollol_cli.runtime.session import ClusterRuntime, kept_running, open_cluster
from sollol_cli.runtime.status import live_status
from sollol_cli.settings import Settings, load_settings

R = TypeVar("R", bound=BaseModel)
ManifestLike = str | os.PathLike[str] | Cluster | None
# What the caller passes in is typed `object` inside, never `Any`: `Any` would leak into the caller's own
# expressions (a dict literal argument would be inferred `dict[str, Any]`).
MessageLike = Mapping[str, object] | BaseModel  # a dict, or a message object (ours or `ollama.Message`)
OptionsLike = Mapping[str, object] | BaseModel  # a dict, or `ollama.Options`
Think = bool | Literal["low", "medium", "high"]
Format = Literal["", "json"] | Mapping[str, object]  # "json" or a JSON schema
KeepAlive = float | str  # seconds, or a duration like "5m"


class ChatFields(TypedDict, total=False):
    """`chat`'s keyword arguments besides `stream`, as `ollama.Client.chat` takes them."""

    tools: Sequence[MessageLike] | None  # tool definitions (JSON schema dicts)
    think: Think | None
    format: Format | None
    options: OptionsLike | None  # temperature, seed, num_predict, num_ctx, ...
    keep_alive: KeepAlive | None


class GenerateFields(TypedDict, total=False):
    """`generate`'s keyword arguments besides `stream`, as `ollama.Client.generate` takes them."""

    system: str | None
    template: str | None
    context: Sequence[int] | None
    think: Think | None
    raw: bool | None
    format: Format | None
    images: Sequence[str | bytes] | None  # base64 strings or raw bytes
    options: OptionsLike | None
    keep_alive: KeepAlive | None


def load_cluster(manifest: ManifestLike, settings: Settings) -> Cluster:
    """The manifest as `sollol` commands find it: a `Cluster`, a path, or (None) ./cluster.yaml, else
    $SOLLOL_MANIFEST. Raises `ManifestNotFound` or `ManifestError` (every problem with file:line)."""
    if isinstance(manifest, Cluster):
        return manifest
    from sollol_cli.manifest.loader import find_manifest, load_manifest

    given = Path(manifest) if manifest is not None else None
    return load_manifest(find_manifest(given, settings.manifest)).cluster


class AsyncCluster:
    """The cluster as one Ollama-like client for asyncio programs.

    ```python
    async with AsyncCluster("cluster.yaml") as cluster:
        answer = await cluster.chat("llama3.2", [{"role": "user", "content": "hi"}])
        print(answer.message.content, "from", answer.sollol.backend)
    ```

    The methods take the arguments of `ollama.AsyncClient`'s and return the same shapes, so code written
    for that client runs against the cluster. `manifest` is a path, a `Cluster` (from
    `sollol_cli.manifest.models`) or None for ./cluster.yaml, else $SOLLOL_MANIFEST. The manifest is read
    here (raising `ManifestNotFound` / `ManifestError`); the backends are probed when the cluster opens:
    at `async with`, `open()` or the first request. Close it (`async with` or `close()`) on the loop it
    was opened on.

    `stop_on_close`: stop the sharding coordinators this cluster started when it closes, as `sollol serve`
    does; by default they stay warm for their keep-alive, as after `sollol run` (a watchdog stops them).
    `health_loop`: probe the backends in the background while open, so a backend that goes down is routed
    around and one that comes back is used again (as `sollol serve` does).

    Errors are `sollol_cli.errors` exceptions: `UsageError` for a bad argument, `BackendError` and its
    subclasses (`ModelNotFound`, `NoHealthyBackend`, `NotEnoughMemory`, `QueueFull`) for a request the
    cluster could not answer.
    """

    def __init__(
        self,
        manifest: ManifestLike = None,
        *,
        settings: Settings | None = None,
        stop_on_close: bool = False,
        health_loop: bool = True,
    ) -> None:
        self.settings = settings if settings is not None else load_settings()
        self.cluster = load_cluster(manifest, self.settings)
        self._stop_on_close = stop_on_close
        self._health_loop = health_loop
        self._stack: AsyncExitStack | None = None
        self._runtime: ClusterRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    # --- lifetime ---

    async def open(self) -> None:
        """Probe every backend once and start routing (and the health loop). Idempotent."""
        await self.runtime()

    async def runtime(self) -> ClusterRuntime:
        """The open runtime (opened now if needed): its monitor, dispatcher and shard manager."""
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            raise UsageError("this AsyncCluster was opened on another event loop; use one cluster per loop")
        if self._runtime is not None:
            return self._runtime
        self._loop = loop
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._runtime is None:
                stack = AsyncExitStack()
                try:
                    runtime = await stack.enter_async_context(
                        open_cluster(self.cluster, self.settings, stop_on_close=self._stop_on_close)
                    )
                    if self._health_loop:
                        await stack.enter_async_context(kept_running(runtime))
                except BaseException:
                    await stack.aclose()
                    raise
                self._stack, self._runtime = stack, runtime
        assert self._runtime is not None
        return self._runtime

    async def close(self) -> None:
        """Stop the health loop, stop the coordinators this cluster started if `stop_on_close`, close the
        connections. The cluster can be opened again afterwards."""
        stack, self._stack, self._runtime = self._stack, None, None
        self._loop = self._opening = None  # free to open again, on any loop
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> AsyncCluster:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- generation ---

    @overload
    async def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[False] = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse: ...

    @overload
    async def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[True],
        **fields: Unpack[ChatFields],
    ) -> AsyncIterator[ChatResponse]: ...

    @overload
    async def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: bool = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse | AsyncIterator[ChatResponse]: ...

    async def chat(
        self, model: str = "", messages: Sequence[MessageLike] | None = None, *, stream: bool = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse | AsyncIterator[ChatResponse]:  # fmt: skip
        """Answer a conversation (Ollama's /api/chat; the keyword fields are `ChatFields`). With `stream=True`,
        an async iterator of chunks whose `message.content` are fragments; the last one has `done=True`, the
        counts and `sollol`."""
        tools = fields.get("tools")
        body = _body(
            model,
            fields,
            messages=[_plain(m) for m in messages or ()],
            tools=[_plain(t) for t in tools] if tools else None,
            options=_options(fields),
        )
        return await self._generation("chat", body, stream, ChatResponse)

    @overload
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: Literal[False] = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse: ...

    @overload
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: Literal[True],
        **fields: Unpack[GenerateFields],
    ) -> AsyncIterator[GenerateResponse]: ...

    @overload
    async def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: bool = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse | AsyncIterator[GenerateResponse]: ...

    async def generate(
        self, model: str = "", prompt: str = "", suffix: str | None = None, *, stream: bool = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse | AsyncIterator[GenerateResponse]:  # fmt: skip
        """Complete a prompt (Ollama's /api/generate; the keyword fields are `GenerateFields`). With
        `stream=True`, an async iterator of chunks whose `response` are fragments."""
        context, images = fields.get("context"), fields.get("images")
        body = _body(
            model,
            fields,
            prompt=prompt,
            suffix=suffix,
            context=list(context) if context is not None else None,
            images=[_image(i) for i in images] if images else None,
            options=_options(fields),
        )
        return await self._generation("generate", body, stream, GenerateResponse)

    async def embed(
        self,
        model: str = "",
        input: str | Sequence[str] = "",
        truncate: bool | None = None,
        options: OptionsLike | None = None,
        keep_alive: KeepAlive | None = None,
        dimensions: int | None = None,
    ) -> EmbedResponse:
        """Embed one text or several (Ollama's /api/embed): `embeddings` has one vector per input."""
        body = _body(
            model,
            {},
            input=input if isinstance(input, str) else list(input),
            truncate=truncate,
            options=_plain(options) if options is not None else None,
            keep_alive=keep_alive,
            dimensions=dimensions,
        )
        runtime = await self.runtime()
        trace = Trace(model)
        [result] = [item async for item in runtime.dispatcher.embed(body, trace)]
        return _parse(EmbedResponse, result, trace)

    async def _generation(self, op: Operation, body: Chunk, stream: bool, kind: type[R]) -> R | AsyncIterator[R]:
        runtime = await self.runtime()
        trace = Trace(str(body["model"]))
        chunks = runtime.dispatcher.stream(op, body, trace)
        if not stream:
            return _parse(kind, await collect(chunks), trace)
        return _parsed(chunks, kind, trace)

    # --- what the cluster holds ---

    async def list(self) -> ListResponse:
        """Every model some backend has (merged, one entry per name), and the sharded models' files."""
        models = await catalog.list_models(await self.runtime())
        return _parse(ListResponse, {"models": models})

    async def ps(self) -> ProcessResponse:
        """What is loaded where, each entry naming its backend under `sollol`."""
        models = await catalog.running_models(await self.runtime())
        return _parse(ProcessResponse, {"models": models})

    async def show(self, model: str) -> ShowResponse:
        """A model's details from a backend that has it (or a sharded model's GGUF); `ModelNotFound` if none."""
        if not model:
            raise UsageError("show needs a model name")
        return _parse(ShowResponse, await catalog.show(await self.runtime(), model))

    async def status(self) -> ClusterStatus:
        """Every backend as the health loop sees it (`sollol status`'s rows) and the load now."""
        data, load = await live_status(await self.runtime())
        return _parse(ClusterStatus, data | load)


def _body(model: str, given: Mapping[str, object], **converted: object) -> Chunk:
    """An Ollama request body: the caller's keyword fields as given, those converted to plain JSON in their
    place, and none left out (None)."""
    if not model:
        raise UsageError("a model name is required")
    fields = {**given, **converted}
    return {"model": model, **{key: value for key, value in fields.items() if value is not None}}


def _options(fields: ChatFields | GenerateFields) -> dict[str, Any] | None:
    options = fields.get("options")
    return _plain(options) if options is not None else None


def _plain(value: Mapping[str, object] | BaseModel) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        plain: dict[str, Any] = value.model_dump(exclude_none=True, by_alias=True)
        return plain
    return dict(value)


def _image(image: str | bytes) -> str:
    return base64.b64encode(image).decode() if isinstance(image, bytes) else image


def _served(trace: Trace) -> Served:
    return Served(
        backend=trace.backend, mode=trace.mode, reason=trace.reason, attempts=trace.attempts, queued_s=trace.queued_s
    )


def _parse(kind: type[R], data: Mapping[str, Any], trace: Trace | None = None) -> R:
    """The backend's answer as `kind`; an answer that does not fit is the backend's error, not the caller's."""
    if trace is not None:
        data = {**data, "sollol": _served(trace)}
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise BackendError(f"an answer sollol does not understand: {exc.errors()[0]['msg']}") from None


async def _parsed(chunks: AsyncIterator[Chunk], kind: type[R], trace: Trace) -> AsyncIterator[R]:
    """Each streamed chunk as `kind`; the last (`done`) one says where the request went."""
    try:
        async for chunk in chunks:
            yield _parse(kind, chunk, trace if chunk.get("done") else None)
    finally:
        closer: Callable[[], Any] | None = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
