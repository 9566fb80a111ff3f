"""`SyncCluster`: the cluster from ordinary (threaded or plain) Python. It runs an `AsyncCluster` on an event
loop of its own, in a background thread, and waits for each call; many threads may call it at once, and
their requests are routed concurrently, as the gateway routes concurrent clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack, overload

from sollol_cli.api.aio import (
    AsyncCluster,
    ChatFields,
    GenerateFields,
    KeepAlive,
    ManifestLike,
    MessageLike,
    OptionsLike,
)
from sollol_cli.api.types import (
    ChatResponse,
    ClusterStatus,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    ProcessResponse,
    ShowResponse,
)
from sollol_cli.errors import UsageError
from sollol_cli.settings import Settings

T = TypeVar("T")


class SyncCluster:
    """The cluster as one Ollama-like client for synchronous programs.

    ```python
    with SyncCluster("cluster.yaml") as cluster:
        print(cluster.generate("llama3.2", "Why is the sky blue?").response)
    ```

    The methods are `AsyncCluster`'s without `await`: the arguments of `ollama.Client`'s and the same
    answer shapes; `stream=True` gives an iterator. The cluster opens here (manifest read, backends probed)
    and is ready when the constructor returns; `close()` (or leaving the `with` block) stops its loop. See
    `AsyncCluster` for `manifest`, `stop_on_close`, `health_loop` and the exceptions raised.
    """

    def __init__(
        self,
        manifest: ManifestLike = None,
        *,
        settings: Settings | None = None,
        stop_on_close: bool = False,
        health_loop: bool = True,
    ) -> None:
        self.aio = AsyncCluster(manifest, settings=settings, stop_on_close=stop_on_close, health_loop=health_loop)
        self.cluster = self.aio.cluster
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sollol-api", daemon=True)
        self._thread.start()
        try:
            self._call(self.aio.open())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        if not self._thread.is_alive():
            work.close()
            raise UsageError("this SyncCluster is closed")
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C while waiting: the request stops too
            raise

    def _iterate(self, chunks: AsyncIterator[T]) -> Iterator[T]:
        done = object()

        async def step() -> T | object:
            try:
                return await anext(chunks)
            except StopAsyncIteration:
                return done

        async def stop() -> None:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

        try:
            while (item := self._call(step())) is not done:
                yield item  # type: ignore[misc]  # not `done`, so a T
        finally:
            if self._thread.is_alive():
                self._call(stop())

    def close(self) -> None:
        """Close the cluster (see `AsyncCluster.close`) and stop the background loop. Idempotent."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self.aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def finish() -> None:
            await self._loop.shutdown_asyncgens()

        asyncio.run_coroutine_threadsafe(finish(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[False] = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse: ...

    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[True],
        **fields: Unpack[ChatFields],
    ) -> Iterator[ChatResponse]: ...

    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: bool = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse | Iterator[ChatResponse]: ...

    def chat(
        self, model: str = "", messages: Sequence[MessageLike] | None = None, *, stream: bool = False,
        **fields: Unpack[ChatFields],
    ) -> ChatResponse | Iterator[ChatResponse]:  # fmt: skip
        """`AsyncCluster.chat`, waited for; with `stream=True` an iterator of chunks."""
        answer = self._call(self.aio.chat(model, messages, stream=stream, **fields))
        return answer if isinstance(answer, ChatResponse) else self._iterate(answer)

    @overload
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: Literal[False] = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse: ...

    @overload
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: Literal[True],
        **fields: Unpack[GenerateFields],
    ) -> Iterator[GenerateResponse]: ...

    @overload
    def generate(
        self,
        model: str = "",
        prompt: str = "",
        suffix: str | None = None,
        *,
        stream: bool = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse | Iterator[GenerateResponse]: ...

    def generate(
        self, model: str = "", prompt: str = "", suffix: str | None = None, *, stream: bool = False,
        **fields: Unpack[GenerateFields],
    ) -> GenerateResponse | Iterator[GenerateResponse]:  # fmt: skip
        """`AsyncCluster.generate`, waited for; with `stream=True` an iterator of chunks."""
        answer = self._call(self.aio.generate(model, prompt, suffix, stream=stream, **fields))
        return answer if isinstance(answer, GenerateResponse) else self._iterate(answer)

    def embed(
        self,
        model: str = "",
        input: str | Sequence[str] = "",
        truncate: bool | None = None,
        options: OptionsLike | None = None,
        keep_alive: KeepAlive | None = None,
        dimensions: int | None = None,
    ) -> EmbedResponse:
        """`AsyncCluster.embed`, waited for."""
        return self._call(self.aio.embed(model, input, truncate, options, keep_alive, dimensions))

    def list(self) -> ListResponse:
        """`AsyncCluster.list`, waited for."""
        return self._call(self.aio.list())

    def ps(self) -> ProcessResponse:
        """`AsyncCluster.ps`, waited for."""
        return self._call(self.aio.ps())

    def show(self, model: str) -> ShowResponse:
        """`AsyncCluster.show`, waited for."""
        return self._call(self.aio.show(model))

    def status(self) -> ClusterStatus:
        """`AsyncCluster.status`, waited for."""
        return self._call(self.aio.status())
