"""The client compatibility matrix (tests/compat/matrix.py), cell by cell: every client of the matrix makes
every call it has an API for through one `sollol serve` gateway, against each kind of backend behind it: an
Ollama (the stand-in), a real llama-server node and a model sharded over two real rpc-servers. A ✅ cell must
give a right answer; a ❌ cell must fail exactly as the matrix documents, so a change either way shows up."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli.backends.http import close_session
from sollol_cli.gateway.server import Listening, ServeOptions, serve
from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.compat.clients import Target, check, observe
from tests.compat.matrix import cells, expected
from tests.harness.llama import ServerGroup
from tests.harness.ollama import ThreadedStandin
from tests.standin.ollama_standin import StandinConfig

pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,
    # LiteLLM's own types warn about themselves while it parses streams (the suite makes warnings errors)
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]

STANDIN_MODEL = "tiny-standin"
SHARDED_MODEL = "tiny-sharded"
PULLABLE = "pulled-standin"


class ThreadedGateway:
    """`sollol serve` (the same coroutine the command runs) on an event loop of its own thread, so that one
    gateway serves the whole module and the sync clients call it from the test thread."""

    def __init__(self, cluster: Cluster, settings: Settings) -> None:
        self._loop = asyncio.new_event_loop()
        self._listening: concurrent.futures.Future[Listening] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(cluster, settings), name="compat-gateway")
        self._thread.start()
        self.url = self._listening.result(timeout=120).url

    def _run(self, cluster: Cluster, settings: Settings) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        try:
            self._loop.run_until_complete(self._serve(cluster, settings))
        except BaseException as exc:
            if not self._listening.done():
                self._listening.set_exception(exc)
            raise
        finally:
            self._loop.close()

    async def _serve(self, cluster: Cluster, settings: Settings) -> None:
        try:
            await serve(
                cluster, settings, ServeOptions("127.0.0.1", 0, grace_s=5), self._stop,
                on_listening=self._listening.set_result,
            )  # fmt: skip
        finally:
            await close_session()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=120)


@pytest.fixture(scope="module")
def targets(
    llama_bins: LlamaCppBinaries, chat_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Target]]:
    # the tiny model with its chat markers as real control tokens, as every real chat model has them:
    # llama-server needs that for grammar-constrained (structured) chat output
    gguf = chat_gguf
    work = tmp_path_factory.mktemp("compat")
    standin = ThreadedStandin(
        StandinConfig.from_dict(
            {"name": "standin", "models": [{"name": STANDIN_MODEL}], "pullable": [{"name": PULLABLE}]}
        )
    )
    servers = ServerGroup(llama_bins, work / "llama-logs")
    gateway: ThreadedGateway | None = None
    try:
        # a llama-server node as sollol starts one: embeddings on, mean pooling
        node = servers.llama_server(gguf, slots=2, context=1024, extra=("--embeddings", "--pooling", "mean"))
        rpcs = [servers.rpc_server(), servers.rpc_server()]
        cluster = Cluster.model_validate(
            {
                "name": "compat",
                "nodes": [
                    {"name": "ollama1", "address": "127.0.0.1", "transport": "local",
                     "ollama": {"port": standin.port, "models": [PULLABLE]}},  # sollol pulls what it lists
                    {"name": "llama1", "address": "127.0.0.1", "transport": "local",
                     "llamacpp": {"port": node.port, "model": str(gguf), "slots": 2}},
                ],
                "backends": [
                    {"name": f"rpc{i}", "kind": "rpc", "address": r.host, "port": r.port} for i, r in enumerate(rpcs)
                ],
                "models": [
                    {"name": SHARDED_MODEL, "mode": "shard", "gguf": str(gguf), "context": 1024,
                     "embeddings": True, "pooling": "mean"},
                ],
            }
        )  # fmt: skip
        settings = Settings(state_dir=work / "state", llama_server_path=llama_bins.llama_server)
        gateway = ThreadedGateway(cluster, settings)
        yield {
            "ollama": Target(gateway.url, "ollama", STANDIN_MODEL, PULLABLE),
            "llama": Target(gateway.url, "llama", gguf.stem),
            "sharded": Target(gateway.url, "sharded", SHARDED_MODEL),
        }
    finally:
        if gateway is not None:
            gateway.stop()
        servers.stop_all()
        standin.stop()


@pytest.mark.parametrize(("client", "call", "backend"), [pytest.param(*c, id="-".join(c)) for c in cells()])
def test_cell(targets: dict[str, Target], client: str, call: str, backend: str) -> None:
    target = targets[backend]
    outcome = expected(client, call, backend)
    if outcome is None:
        check(call, observe(client, call, target), target)
    else:
        with pytest.raises(Exception, match=outcome.match):
            check(call, observe(client, call, target), target)
