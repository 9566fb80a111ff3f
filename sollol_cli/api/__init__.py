"""The Python API: the whole cluster from a program, through the same runtime as `sollol run` and `sollol
serve` (routing by free slots, queue, retries, health, distribute-or-shard, coordinators).

`AsyncCluster` for asyncio programs, `SyncCluster` for everything else; both take the arguments of the
official `ollama` client's methods (`chat`, `generate`, `embed`, `list`, `ps`, `show`) and return the
same answer shapes (`api.types`), plus `status()`. Failures raise the `sollol_cli.errors` tree, re-exported
here: `SollolError` > `UsageError` (> `ManifestNotFound`), `ManifestError`, `BackendError` (>
`ModelNotFound`, `NoHealthyBackend`, `NotEnoughMemory`, `QueueFull`).
"""

from sollol_cli.api.aio import AsyncCluster
from sollol_cli.api.sync import SyncCluster
from sollol_cli.api.types import (
    BackendRow,
    ChatResponse,
    ClusterStatus,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    Message,
    ModelDetails,
    ProcessResponse,
    Served,
    ShowResponse,
)
from sollol_cli.errors import (
    BackendError,
    ManifestError,
    ManifestNotFound,
    ModelNotFound,
    NoHealthyBackend,
    NotEnoughMemory,
    QueueFull,
    SollolError,
    UsageError,
)

__all__ = [
    "AsyncCluster",
    "BackendError",
    "BackendRow",
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
    "SyncCluster",
    "UsageError",
]
