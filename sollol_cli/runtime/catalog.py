"""What the cluster holds, merged over every backend: the gateway's /api/tags, /api/ps, /api/show and
/v1/models, and the Python API's `list`, `ps` and `show`.

Backends are asked live (the answers carry fields the health probe does not keep); a backend that does
not answer within the probe timeout contributes what its last probe saw, so one slow node never stalls a
listing. Sharded models (served by coordinators) come from their GGUF files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sollol_cli.backends.base import Backend, ModelEntry, UpstreamError
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.backends.translate import human_parameters
from sollol_cli.errors import BackendError, ModelNotFound, SollolError
from sollol_cli.names import display_name, normalize_model_name, same_model
from sollol_cli.runtime.monitor import BackendView
from sollol_cli.runtime.session import ClusterRuntime
from sollol_cli.sharding import coordinator as coord

T = TypeVar("T")
FOREVER_S = (2**63 - 1) / 1e9  # Ollama's "for ever": Go's longest time.Duration (about 292 years)


def serving_views(runtime: ClusterRuntime) -> list[BackendView]:
    """Backends that serve HTTP and answered their last probe; Ollama nodes first (their listings are richer)."""
    views = [
        v
        for v in runtime.monitor.views.values()
        if v.client is not None and v.status is not None and v.status.reachable
    ]
    return sorted(views, key=lambda v: (v.spec.ref.kind != "ollama", -v.spec.priority, v.name))


async def ask(runtime: ClusterRuntime, backend: Backend, call: Callable[[Backend], Awaitable[T]]) -> T | None:
    """A catalog call bounded by the probe timeout; None when the backend fails or is too slow."""
    try:
        async with asyncio.timeout(runtime.timeouts.probe):
            return await call(backend)
    except (SollolError, TimeoutError):
        return None


# --- /api/tags ---


async def list_models(runtime: ClusterRuntime) -> list[dict[str, Any]]:
    views = serving_views(runtime)
    answers = await asyncio.gather(*(ask(runtime, client_of(v), lambda b: b.tags()) for v in views))
    merged: dict[str, dict[str, Any]] = {}
    for view, models in zip(views, answers, strict=True):
        if models is None:
            models = [_tag_from_entry(e) for e in view.status.models] if view.status else []
        for model in models:
            name = str(model.get("name") or model.get("model") or "")
            key = normalize_model_name(name) if name else ""
            if key and key not in merged:
                shown = display_name(name)
                merged[key] = {**model, "name": shown, "model": shown}
    for name in sharded_model_names(runtime):
        key = normalize_model_name(name)
        if key not in merged:
            entry = _sharded_tag(runtime, name)
            if entry is not None:
                merged[key] = entry
    return sorted(merged.values(), key=lambda m: str(m["name"]))


def holders(runtime: ClusterRuntime, model: str) -> list[BackendView]:
    """The serving backends whose last probe listed `model`, in `serving_views` order."""
    return [v for v in serving_views(runtime) if v.status and any(same_model(model, m.name) for m in v.status.models)]


def client_of(view: BackendView) -> Backend:
    assert view.client is not None
    return view.client


def _tag_from_entry(entry: ModelEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "model": entry.name,
        "size": entry.size or 0,
        "digest": entry.digest or "",
        "details": {
            "format": "gguf",
            "family": entry.family or "",
            "parameter_size": entry.parameter_size or "",
            "quantization_level": entry.quantization or "",
        },
    }


def sharded_model_names(runtime: ClusterRuntime) -> list[str]:
    shards = runtime.shards
    if shards is None:
        return []
    return [m.name for m in runtime.cluster.models if shards.handles(m.name)[0]]


def _gguf_of(runtime: ClusterRuntime, name: str) -> Path | None:
    shards = runtime.shards
    model = shards.model(name) if shards is not None else None
    if shards is None or model is None:
        return None
    try:
        return Path(shards.files.get(model).path)
    except SollolError:
        return None


def _sharded_tag(runtime: ClusterRuntime, name: str) -> dict[str, Any] | None:
    path = _gguf_of(runtime, name)
    if path is None:
        return None
    try:
        meta = _metadata(path)
        stat = path.stat()
    except (SollolError, OSError):
        return None
    shown = display_name(name)
    digest = path.name.removeprefix("sha256-") if path.name.startswith("sha256-") else ""
    return {
        "name": shown,
        "model": shown,
        "modified_at": _rfc3339(stat.st_mtime),
        "size": stat.st_size,
        "digest": digest,
        "details": _gguf_details(meta),
    }


def _metadata(path: Path) -> dict[str, Any]:
    from sollol_cli.sharding.gguf_info import read_metadata

    return dict(read_metadata(path))


def _gguf_details(meta: dict[str, Any]) -> dict[str, Any]:
    import gguf

    arch = str(meta.get("general.architecture") or "")
    size_label = meta.get("general.size_label")
    parameters = size_label if isinstance(size_label, str) else human_parameters(meta.get("general.parameter_count"))
    quantization = ""
    file_type = meta.get("general.file_type")
    if isinstance(file_type, int):
        try:
            quantization = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            quantization = ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch] if arch else None,
        "parameter_size": parameters or "",
        "quantization_level": quantization,
    }


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- /api/ps ---


async def running_models(runtime: ClusterRuntime) -> list[dict[str, Any]]:
    """What is loaded where: every backend's /api/ps plus the running coordinators, each entry naming its
    backend under `sollol` (clients ignore fields they do not know)."""
    views = serving_views(runtime)
    answers = await asyncio.gather(*(ask(runtime, client_of(v), lambda b: b.ps()) for v in views))
    out: list[dict[str, Any]] = []
    for view, models in zip(views, answers, strict=True):
        for model in models or []:
            name = display_name(str(model.get("name") or model.get("model") or ""))
            where = {"backend": view.name, "kind": view.spec.ref.kind, "address": view.spec.ref.address}
            out.append({**model, "name": name, "model": name, "sollol": where})
    out.extend(await _coordinators(runtime))
    return out


async def _coordinators(runtime: ClusterRuntime) -> list[dict[str, Any]]:
    records = list((await runtime.running_coordinators()).values())  # each checked, as `sollol status` does
    out = []
    for record in records:
        ref = coord.backend_ref(record)
        backend = LlamaServerBackend(ref, runtime.timeouts, alias=record.model)
        listed = await ask(runtime, backend, lambda b: b.ps())
        entry = dict(listed[0]) if listed else {"size": 0, "digest": "", "details": {"format": "gguf"}}
        name = display_name(record.model)
        entry.update(
            name=name,
            model=name,
            expires_at=_rfc3339(_expiry(record)),
            sollol={"backend": ref.name, "kind": "coordinator", "address": ref.address, "rpc": record.rpc},
        )
        out.append(entry)
    return out


def _expiry(record: coord.CoordinatorRecord) -> float:
    """When it unloads; kept for ever, the far future Ollama shows then (now + Go's longest duration)."""
    expires = coord.expires_at(record)
    return record.last_used + FOREVER_S if expires is None else expires


# --- /api/show ---


async def show(runtime: ClusterRuntime, model: str) -> dict[str, Any]:
    """From a backend that has the model, else from the GGUF of a sharded model; 404 when none has it."""
    last_error: BackendError | None = None
    for view in holders(runtime, model):
        try:
            async with asyncio.timeout(runtime.timeouts.probe * 4):
                return await client_of(view).show(model)
        except UpstreamError as exc:
            last_error = exc
        except (SollolError, TimeoutError) as exc:
            last_error = exc if isinstance(exc, BackendError) else BackendError(f"{view.name}: no answer in time")
    path = _gguf_of(runtime, model)
    if path is not None:
        return show_from_gguf(path)
    if last_error is not None and not (isinstance(last_error, UpstreamError) and last_error.status == 404):
        raise last_error
    raise ModelNotFound(f"model '{model}' not found")


def show_from_gguf(path: Path) -> dict[str, Any]:
    from sollol_cli.sharding.gguf_info import SkippedArray

    meta = _metadata(path)
    model_info: dict[str, Any] = {}
    for key, value in meta.items():
        if key == "tokenizer.chat_template":
            continue
        # Long arrays (vocabulary, merges) are shown as null, as Ollama does unless asked to be verbose.
        model_info[key] = None if isinstance(value, SkippedArray) else _plain(value)
    template = meta.get("tokenizer.chat_template")
    return {
        "modelfile": f"# sharded over llama.cpp rpc-servers by sollol\nFROM {path}\n",
        "parameters": "",
        "template": template if isinstance(template, str) else "",
        "details": _gguf_details(meta),
        "model_info": model_info,
        "capabilities": ["completion"],
        "modified_at": _rfc3339(path.stat().st_mtime),
    }


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value
