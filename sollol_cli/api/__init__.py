"""The Python API: the whole cluster from a program, through the same runtime as `sollol run` and `sollol
serve` (routing by free slots, queue, retries, health, distribute-or-shard, coordinators).

`AsyncCluster` for asyncio programs, `SyncCluster` for everything else; both take the arguments of the
official `ollama` client's methods (`chat`, `generate`, `embed`, `list`, `ps`, `show`) and return the
same answer shapes (`api.types`), plus `status()`. Failures raise the `sollol_cli.errors` tree, re-exported
here (never a bare aiohttp or OS error):

SollolError
├── UsageError              -- a bad argument (no model name, a cluster used from another event loop)
│   └── ManifestNotFound    -- no manifest given and none at ./cluster.yaml or $SOLLOL_MANIFEST
├── ManifestError           -- the manifest is invalid (`problems` lists each with file:line:col)
└── BackendError            -- the cluster could not answer the request
    ├── ModelNotFound       -- no backend has the model
    ├── NoHealthyBackend    -- backends have (or may have) the model but none answers
    ├── NotEnoughMemory     -- the backends that are up cannot hold the model
    ├── QueueFull           -- every backend busy and the wait queue full or expired
    ├── BackendUnavailable  -- the backend that was tried (every retry) gave no answer
    ├── UpstreamError       -- a backend's own error answer: `status` (HTTP) and `upstream_message`
    └── StreamBroken        -- a stream broke after it began (raised while iterating)
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
from sollol_cli.backends.base import BackendUnavailable, StreamBroken, UpstreamError
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
]
