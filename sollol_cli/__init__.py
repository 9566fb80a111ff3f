"""sollol: make several machines act as one LLM server.

The Python API (`sollol_cli.api`: `SyncCluster`, `AsyncCluster`, their answers and exceptions) is
importable from here, and loaded on first use so that `import sollol_cli` (and the CLI's start-up) stays
cheap:

    from sollol_cli import SyncCluster, AsyncCluster
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sollol_cli.api import *  # noqa: F403  (the names `__getattr__` hands out, for type checkers)


# The names of `sollol_cli.api.__all__` (a test keeps them equal): known here, so that a miss of any other
# name (`from sollol_cli import events` while events is being imported) never loads the API.
_API = frozenset(
    {
        "AsyncCluster",
        "BackendError",
        "BackendRow",
        "BackendUnavailable",
        "ChatResponse",
        "ClusterStatus",
        "EmbedResponse",
        "GenerateResponse",
        "ListResponse",
        "ManifestError",
        "ManifestNotFound",
        "Message",
        "ModelDetails",
        "ModelNotFound",
        "NoHealthyBackend",
        "NotEnoughMemory",
        "ProcessResponse",
        "QueueFull",
        "Served",
        "ShowResponse",
        "SollolError",
        "StreamBroken",
        "SyncCluster",
        "UpstreamError",
        "UsageError",
    }
)


def __getattr__(name: str) -> Any:
    """`sollol_cli.X` for every X of `sollol_cli.api.__all__`, importing the API the first time."""
    if name in _API:
        # import_module, not `from sollol_cli import api`: that would ask this very hook for `api` first
        return getattr(importlib.import_module("sollol_cli.api"), name)
    raise AttributeError(f"module 'sollol_cli' has no attribute {name!r}")
