"""Where a coordinator runs: this machine (`ControllerHost`) or a manifest node over SSH (`NodeHost`).

The shard manager asks the same questions of both: put the model file where llama-server can read it,
start, is it still the process started, stop, what does its log say.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sollol_cli import events
from sollol_cli.sharding import coordinator as coord

if TYPE_CHECKING:
    from sollol_cli.manifest.models import Cluster, Node
    from sollol_cli.settings import Settings
    from sollol_cli.ssh.runner import CommandRunner


@dataclass(frozen=True)
class ModelFile:
    """A model's GGUF: `path` on the controller, or on node `node` when it was found there."""

    path: str
    size: int
    kv_bytes: int | None
    n_layer: int | None = None
    digest: str | None = None  # hex sha256 when known (Ollama blobs)
    node: str | None = None


class CoordinatorHost(Protocol):
    @property
    def where(self) -> str: ...

    async def model_path(self, file: ModelFile) -> str:
        """The GGUF's path where the coordinator runs, copying it there first if needed."""
        ...

    async def start(
        self, plan: coord.CoordinatorPlan, llama_server: str, keep_alive: float
    ) -> coord.CoordinatorRecord: ...

    async def alive(self, record: coord.CoordinatorRecord) -> bool: ...

    async def stop(self, record: coord.CoordinatorRecord) -> bool: ...

    async def log_text(self, record: coord.CoordinatorRecord) -> str: ...

    async def close(self) -> None: ...


class ControllerHost:
    def __init__(self, home: Path) -> None:
        self.home = home

    @property
    def where(self) -> str:
        return "this machine"

    async def model_path(self, file: ModelFile) -> str:
        assert file.node is None, "a coordinator on the controller reads a controller file"
        return file.path

    async def start(self, plan: coord.CoordinatorPlan, llama_server: str, keep_alive: float) -> coord.CoordinatorRecord:
        log = self.home / "coordinators" / f"{plan.digest}.log"
        return coord.start_process(plan, llama_server, log, keep_alive, marker=coord.record_path(self.home, plan.model))

    async def alive(self, record: coord.CoordinatorRecord) -> bool:
        return coord.alive(record)

    async def stop(self, record: coord.CoordinatorRecord) -> bool:
        return coord.stop_process(record)

    async def log_text(self, record: coord.CoordinatorRecord) -> str:
        if not record.log:
            return ""  # rebuilt from a running process whose output went elsewhere
        try:
            text = await asyncio.to_thread(Path(record.log).read_text, errors="replace")
        except FileNotFoundError:
            return ""
        return text.rsplit("--- sollol: starting coordinator", 1)[-1]  # only the latest start counts

    async def close(self) -> None:
        return None


class NodeHost:
    """A coordinator on `node`; one SSH connection, opened on first use and kept until `close`."""

    def __init__(
        self, cluster: Cluster, settings: Settings, node: Node, *, reporter: events.Reporter = events.ignore
    ) -> None:
        self.cluster, self.settings, self.node, self.reporter = cluster, settings, node, reporter
        self._runner: CommandRunner | None = None

    @property
    def where(self) -> str:
        return f"node {self.node.name}"

    async def runner(self) -> CommandRunner:
        if self._runner is None:
            from sollol_cli.provision.connect import runner_factory

            self._runner = await runner_factory(self.cluster, self.settings)(self.node)
        return self._runner

    async def model_path(self, file: ModelFile) -> str:
        from sollol_cli.sharding import node_coordinator as nc

        if file.node == self.node.name:
            return file.path  # in this node's own Ollama store: used where it is
        assert file.node is None, "a GGUF on one node is fetched to the controller before going to another"
        local = Path(file.path)
        digest = file.digest
        if digest is None:
            digest = await asyncio.to_thread(nc.file_digest, local, self.settings.cache_dir)
        path, _ = await nc.ensure_gguf(await self.runner(), local, digest, reporter=self.reporter)
        return path

    async def llama_server(self, local: str) -> str:
        """llama-server on the node: `llama_cpp.node_bin_dir`'s, else the controller's copied there once."""
        from sollol_cli.errors import BackendError
        from sollol_cli.llamacpp.build import sha256_file
        from sollol_cli.sharding import node_coordinator as nc
        from sollol_cli.ssh.nodeproc import REMOTE_HOME, shell_word

        runner = await self.runner()
        if self.cluster.llama_cpp.node_bin_dir:
            path = f"{self.cluster.llama_cpp.node_bin_dir.rstrip('/')}/llama-server"
            if not (await runner.run(f"[ -x {shell_word(path)} ]", timeout=15)).ok:
                raise BackendError(f"{path} does not exist on node {self.node.name} (llama_cpp.node_bin_dir)")
            return path
        final = f"{REMOTE_HOME}/bin/llama-server"
        source = await asyncio.to_thread(Path(local).resolve)
        sha = await asyncio.to_thread(sha256_file, source)
        await nc.ensure_file(runner, source, final, sha, mode=0o755, reporter=self.reporter)
        return final

    async def start(self, plan: coord.CoordinatorPlan, llama_server: str, keep_alive: float) -> coord.CoordinatorRecord:
        import random

        from sollol_cli.sharding import node_coordinator as nc

        model = next((m for m in self.cluster.models if m.name == plan.model), None)
        low, high = nc.PORT_RANGE
        launch = nc.NodeLaunch(
            self.cluster.name, self.node.name, plan, await self.llama_server(llama_server),
            model.coordinator_port if model else None, random.randint(low, high),
        )  # fmt: skip
        return await nc.launch(await self.runner(), launch, keep_alive)

    async def alive(self, record: coord.CoordinatorRecord) -> bool:
        from sollol_cli.sharding import node_coordinator as nc

        return await nc.running(await self.runner(), record)

    async def stop(self, record: coord.CoordinatorRecord) -> bool:
        from sollol_cli.sharding import node_coordinator as nc

        return await nc.stop(await self.runner(), self.cluster.name, record)

    async def log_text(self, record: coord.CoordinatorRecord) -> str:
        from sollol_cli.sharding import node_coordinator as nc

        return await nc.log_text(await self.runner(), record)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.close()
