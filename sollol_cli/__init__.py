"""sollol: make several machines act as one LLM server.

The Python API (`sollol_cli.api`) is importable from here, loaded on first use so that `import sollol_cli`
(and the CLI's start-up) stays cheap:

    from sollol_cli import SyncCluster, AsyncCluster
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from sollol_cli.api import (
        AsyncCluster,
        BackendError,
        BackendUnavailable,
        ChatResponse,
        ClusterStatus,
        EmbedResponse,
        GenerateResponse,
        ListResponse,
        ManifestError,
        ManifestNotFound,
        ModelNotFound,
        NoHealthyBackend,
        NotEnoughMemory,
        ProcessResponse,
        QueueFull,
        ShowResponse,
        SollolError,
        StreamBroken,
        SyncCluster,
        UpstreamError,
        UsageError,
    )

__all__ = [
    "__version__",
    "AsyncCluster",
    "BackendError",
    "BackendUnavailable",
    "ChatResponse",
    "ClusterStatus",
    "EmbedResponse",
    "GenerateResponse",
    "ListResponse",
    "ManifestError",
    "ManifestNotFound",
    "ModelNotFound",
    "NoHealthyBackend",
    "NotEnoughMemory",
    "ProcessResponse",
    "QueueFull",
    "ShowResponse",
    "SollolError",
    "StreamBroken",
    "SyncCluster",
    "UpstreamError",
    "UsageError",
]
_API = frozenset(__all__) - {"__version__"}  # loaded from sollol_cli.api on first use


def __getattr__(name: str) -> Any:
    if name in _API:
        from sollol_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'sollol_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
