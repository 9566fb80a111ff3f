"""sollol's local record of what `up` started, per cluster (JSON, written atomically).

The nodes' own pidfiles are the source of truth for what runs there; this file lets commands that do
not connect to nodes (status, run, serve) know the services, versions and protocol `up` saw.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sollol_cli.errors import UsageError
from sollol_cli.files import write_atomic


class ServiceState(BaseModel):
    name: str
    kind: str
    host: str
    port: int
    digest: str
    manager: str = "process"
    pid: int | None = None
    start_time: int | None = None
    version: str | None = None  # Ollama version, llama.cpp build, or rpc protocol


class Accelerator(BaseModel):
    """A compute device a node reports, as one tool sees it: `kind` names the API (cuda from nvidia-smi, rocm
    from rocm-smi or /dev/kfd, vulkan from vulkaninfo), so a GPU reachable through two APIs is listed twice."""

    model_config = ConfigDict(frozen=True)

    kind: str  # cuda | rocm | vulkan
    name: str
    memory_total: int | None = None  # bytes; vulkaninfo --summary reports none
    memory_free: int | None = None
    driver: str = ""
    device_type: str = "gpu"  # gpu | integrated | virtual | cpu (lavapipe) | other


class NodeState(BaseModel):
    address: str
    services: dict[str, ServiceState] = Field(default_factory=dict)
    binaries: dict[str, str] = Field(default_factory=dict)  # remote path -> sha256
    os: str = ""
    arch: str = ""
    mem_total_bytes: int | None = None
    mem_available_bytes: int | None = None
    accelerators: list[Accelerator] = Field(default_factory=list)
    vulkan_loader: str | None = None  # where libvulkan.so.1 is, None if the node has none
    render_nodes: list[str] = Field(default_factory=list)  # `renderD128 (amdgpu)`
    llama_backend: str | None = None  # the llama.cpp build `up` put there: cpu | vulkan | cuda | rocm
    llama_build: str | None = None  # what it is: `vulkan 0.3.36`, `bin_dir`, `node_bin_dir`
    updated_at: float = 0.0


class ClusterState(BaseModel):
    cluster: str
    manifest: str = ""
    manifest_sha256: str = ""
    updated_at: float = 0.0
    nodes: dict[str, NodeState] = Field(default_factory=dict)


def state_path(state_dir: Path, cluster: str) -> Path:
    return state_dir / "clusters" / f"{cluster}.json"


def check_state_path(state_dir: Path, cluster: str) -> None:
    """Raise a usage error now if the cluster's state file could not be read or written later (a directory
    where the file or a file where a directory should be), so `up`/`down` fail before doing any work."""
    path = state_path(state_dir, cluster)
    hint = "move it away or set SOLLOL_STATE_DIR to another directory"
    for directory in (state_dir, path.parent):
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"sollol's state directory {directory} is not a directory", hint=hint)
    if path.exists() and not path.is_file():
        raise UsageError(f"sollol's state file {path} is not a file", hint=hint)


def load_state(state_dir: Path, cluster: str) -> ClusterState:
    path = state_path(state_dir, cluster)
    try:
        return ClusterState.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return ClusterState(cluster=cluster)
    except OSError:
        check_state_path(state_dir, cluster)  # a directory in the way: say so in one line
        raise
    except ValueError:
        # A corrupt file must not block `up`/`down`: the nodes' pidfiles are authoritative anyway.
        path.replace(path.with_suffix(f".corrupt-{int(time.time())}"))
        return ClusterState(cluster=cluster)


def save_state(state_dir: Path, state: ClusterState) -> Path:
    """Write atomically: a reader (or a controller killed mid-write) sees the old or the new file, never half."""
    path = state_path(state_dir, state.cluster)
    path.parent.mkdir(parents=True, exist_ok=True)
    state.updated_at = time.time()
    write_atomic(path, json.dumps(state.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return path
