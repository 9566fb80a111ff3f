"""`/api/pull` onto the nodes the manifest assigns the model to and the Ollamas it lists under `backends:`,
as one merged progress stream.

Each node pulls concurrently. Per layer digest the merged line reports the sum of bytes every node has
completed against the layer size times the number of nodes, so one progress bar covers the whole cluster.
Status lines without a digest ("pulling manifest", "verifying sha256 digest", ...) go out once, and
"success" only when every node succeeded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from sollol_cli.backends.base import Chunk, UpstreamError
from sollol_cli.errors import BackendError, NoHealthyBackend
from sollol_cli.gateway.problems import Problem
from sollol_cli.manifest.models import Cluster
from sollol_cli.names import normalize_model_name
from sollol_cli.runtime.monitor import BackendView, Monitor


def assigned_nodes(cluster: Cluster, model: str) -> list[str]:
    """Nodes with an Ollama role that list the model, or that hold the store of a manifest model."""
    key = normalize_model_name(model)
    store_nodes = {m.store_node for m in cluster.models if m.store_node and normalize_model_name(m.name) == key}
    return [
        node.name
        for node in cluster.nodes
        if node.ollama is not None
        and (node.name in store_nodes or any(normalize_model_name(m) == key for m in node.ollama.models))
    ]


def pull_targets(cluster: Cluster, monitor: Monitor, model: str) -> list[BackendView]:
    """The nodes the manifest assigns the model to, and every Ollama it lists under `backends:` (sollol does
    not manage those, so the manifest cannot assign them models: a pull through the gateway is how they get
    them)."""
    nodes = assigned_nodes(cluster, model)
    views = [
        v
        for v in monitor.views.values()
        if v.spec.ref.kind == "ollama" and (not v.spec.managed or v.spec.ref.node in nodes)
    ]
    if not views:
        raise Problem(
            400,
            f"model '{model}' is not assigned to any node and no Ollama is listed under backends:; sollol pulls "
            "only where the manifest says: add it to nodes[].ollama.models",
        )
    down = [v.name for v in views if not v.probe.healthy]
    if down:
        raise NoHealthyBackend(f"cannot pull '{model}': {', '.join(down)} not reachable; see `sollol status`")
    return views


async def merged_pull(views: list[BackendView], body: dict[str, Any]) -> AsyncIterator[Chunk]:
    queue: asyncio.Queue[tuple[str, Chunk | BaseException | None]] = asyncio.Queue()

    async def pump(view: BackendView) -> None:
        assert view.client is not None
        try:
            async for chunk in view.client.pull(body):
                await queue.put((view.name, chunk))
        except Exception as exc:
            await queue.put((view.name, exc))
            return
        await queue.put((view.name, None))

    tasks = [asyncio.create_task(pump(view)) for view in views]
    progress: dict[str, dict[str, tuple[int, int]]] = {}  # digest -> node -> (completed, total)
    announced: set[str] = set()
    failures: dict[str, BaseException] = {}
    pending = len(views)
    try:
        while pending:
            node, item = await queue.get()
            if item is None or isinstance(item, BaseException):
                pending -= 1
                if isinstance(item, BaseException):
                    failures[node] = item
                continue
            status = str(item.get("status") or "")
            digest = item.get("digest")
            if isinstance(digest, str) and digest:
                completed, total = _int(item.get("completed")), _int(item.get("total"))
                progress.setdefault(digest, {})[node] = (completed, total)
                yield _merged(status, digest, progress[digest], len(views))
            elif status and status != "success" and status not in announced:
                announced.add(status)
                yield {"status": status}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failures:
        raise _failure(failures, len(views))
    yield {"status": "success"}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _merged(status: str, digest: str, nodes: dict[str, tuple[int, int]], node_count: int) -> Chunk:
    size = max(total for _, total in nodes.values())
    line: Chunk = {"status": status, "digest": digest}
    if size:
        line["total"] = size * node_count
        line["completed"] = sum(min(done, size) for done, _ in nodes.values())
    return line


def _failure(failures: dict[str, BaseException], node_count: int) -> BackendError:
    errors = list(failures.values())
    if len(failures) == node_count and len(errors) == 1 and isinstance(errors[0], UpstreamError):
        return errors[0]  # the one node's own answer (e.g. 404 for an unknown model), status kept
    detail = "; ".join(f"{node}: {_message(exc)}" for node, exc in sorted(failures.items()))
    return BackendError(f"pull failed on {len(failures)} of {node_count} nodes: {detail}")


def _message(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError):
        return exc.upstream_message
    return str(exc) or type(exc).__name__
