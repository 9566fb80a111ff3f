"""sollol: make several machines act as one LLM server.

The Python API (`sollol_cli.api`: `SyncCluster`, `AsyncCluster`, their answers and exceptions) is
importable from here, and loaded on first use so that `import sollol_cli` (and the CLI's start-up) stays
cheap:

    from sollol_cli import SyncCluster, AsyncCluster
"""

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: this module must stay free to import


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


if TYPE_CHECKING:
    # What `__getattr__` hands out, for type checkers; they do not see `__getattr__` itself, so a name the
    # API does not have stays an error instead of becoming `Any`.
    from sollol_cli.api import *  # noqa: F403
else:

    def __getattr__(name: str) -> object:
        """`sollol_cli.X` for every X of `sollol_cli.api.__all__`, importing the API the first time."""
        if name in _API:
            import importlib

            # import_module, not `from sollol_cli import api`: that would ask this very hook for `api` first
            return getattr(importlib.import_module("sollol_cli.api"), name)
        raise AttributeError(f"module 'sollol_cli' has no attribute {name!r}")
