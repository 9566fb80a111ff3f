"""Finding a sharded model's GGUF: a manifest path, the controller's Ollama store, or an Ollama store on a
node (resolved there, and copied here unless the coordinator runs on that node). Found once per process."""

from __future__ import annotations

from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import BackendError, SollolError
from sollol_cli.manifest.models import Cluster, Model
from sollol_cli.settings import Settings
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.ollama_store import resolve_model


class ModelFiles:
    def __init__(self, cluster: Cluster, settings: Settings, *, reporter: events.Reporter = events.ignore) -> None:
        self.cluster = cluster
        self.settings = settings
        self.reporter = reporter
        self._files: dict[str, ModelFile] = {}

    def get(self, model: Model) -> ModelFile:
        """The GGUF of `model`; one on a node is known only after `fetch` (it is copied when first used)."""
        if model.name in self._files:
            return self._files[model.name]
        from sollol_cli.sharding.gguf_info import kv_cache_bytes, read_gguf_info  # imports gguf (numpy)

        if model.store_node:
            raise BackendError(f"model '{model.name}' is on node {model.store_node}; it is copied when first used")
        try:
            if model.gguf:
                path = Path(model.gguf).expanduser()
            else:
                store = Path(model.store).expanduser() if model.store else None
                path = resolve_model(model.ollama_model or model.name, store).gguf_path
            info = read_gguf_info(path)
        except SollolError as exc:
            raise BackendError(f"model '{model.name}': {exc.message}", hint=exc.hint) from None
        file = ModelFile(str(path), info.file_size, kv_cache_bytes(info, model.context), info.block_count)
        self._files[model.name] = file
        return file

    def get_or_none(self, model: Model) -> ModelFile | None:
        try:
            return self.get(model)
        except BackendError:
            return None

    def known(self, model: Model) -> ModelFile | None:
        """The GGUF when it was found already (no I/O)."""
        return self._files.get(model.name)

    async def find(self, model: Model) -> ModelFile:
        """The GGUF, fetching it from its node first when it lives in an Ollama store there."""
        if model.store_node and model.name not in self._files:
            await self._fetch_from_node(model)
        return self.get(model)

    async def _fetch_from_node(self, model: Model) -> None:
        """The GGUF lives in an Ollama store on a node: resolve it there. When the coordinator runs on that
        node it is used where it is (only its metadata is read); else it is copied here, cached by digest."""
        # SSH and gguf (numpy) are imported only when a model lives on a node
        from sollol_cli.provision.connect import runner_factory
        from sollol_cli.sharding.gguf_info import kv_cache_bytes, read_gguf_info
        from sollol_cli.sharding.remote_store import fetch_model, locate_model, remote_info

        assert model.store_node is not None
        node = self.cluster.node(model.store_node)
        name = model.ollama_model or model.name
        try:
            runner = await runner_factory(self.cluster, self.settings)(node)
            async with runner:
                if model.coordinator == node.name:
                    blob = await locate_model(runner, node.name, name, model.store)
                    info = await remote_info(runner, node.name, blob)
                    kv = kv_cache_bytes(info, model.context)
                    file = ModelFile(blob.path, blob.size, kv, info.block_count, blob.digest, node.name)
                else:
                    cache = self.settings.cache_dir
                    path = await fetch_model(runner, node.name, name, model.store, cache, self.reporter)
                    info = read_gguf_info(path)
                    kv = kv_cache_bytes(info, model.context)
                    digest = path.stem.removeprefix("sha256-")
                    file = ModelFile(str(path), info.file_size, kv, info.block_count, digest)
        except SollolError as exc:
            raise BackendError(f"model '{model.name}': {exc.message}", hint=exc.hint) from None
        self._files[model.name] = file
