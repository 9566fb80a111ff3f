"""`sollol init`: a starter manifest, from flags or from a SynapticLlamas / SOLLOL config.

Pure: data in, YAML text out (the caller reads files and validates the text with the manifest loader).
People come from the original SOLLOL with `~/.synapticllamas.json` (`rpc_backends`, `model`,
`model_sharding_enabled`, `task_distribution_enabled`) and `~/.synapticllamas_nodes.json` (the Ollama nodes
it found). Its two switches become each model's `mode`:

| task distribution | model sharding | SynapticLlamas did                        | manifest          |
|-------------------|----------------|-------------------------------------------|-------------------|
| on                | off            | whole model per Ollama node               | `mode: distribute`|
| off               | on             | every model split over the rpc-servers    | `mode: shard`     |
| on                | on             | small models on Ollama, large ones split  | `mode: auto`      |
| off               | off            | one local Ollama                          | `mode: distribute`|
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sollol_cli.errors import UsageError
from sollol_cli.manifest.models import ModelMode

SYNAPTIC_DEFAULT_MODEL = "llama3.2"  # what SynapticLlamas used when its config named none
LOCAL_OLLAMA = ("127.0.0.1", 11434)
# SynapticLlamas settings that have no sollol counterpart: named in the manifest so nothing is dropped silently.
_NOT_CARRIED = {
    "coordinator_url": "sollol starts and supervises its own coordinator",
    "mode": "sollol picks per model (the `mode` of each model below)",
    "strategy": "sollol routes by warmth, free slots and measured speed",
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    name: str | None = None
    priority: int = 0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class StarterModel:
    name: str
    mode: ModelMode


@dataclass(frozen=True)
class Starter:
    """What the manifest will hold, with the reasons written into it as comments."""

    name: str
    ollama: list[Endpoint] = field(default_factory=list)
    rpc: list[Endpoint] = field(default_factory=list)
    models: list[StarterModel] = field(default_factory=list)
    source: str | None = None  # the file it came from, for the header
    why_mode: str = ""
    unused_rpc: list[Endpoint] = field(default_factory=list)  # listed but off in the old config: commented out
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should still do


def parse_endpoint(text: str, default_port: int, *, what: str) -> Endpoint:
    """`HOST`, `HOST:PORT`, `[V6]:PORT` or `http://HOST:PORT` -> Endpoint; a bad one is a usage error."""
    value = text.strip()
    if "://" in value:
        parts = urlsplit(value)
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"{what} '{text}' has a bad port", hint="use HOST:PORT") from None
        return _endpoint(parts.hostname or "", port or default_port, text, what)
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s]+)(?::(\d+))?", value)
    if match is None:
        raise UsageError(f"{what} '{text}' is not HOST or HOST:PORT", hint="e.g. 192.168.1.10:50052")
    host = match.group(1) or match.group(3) or ""
    port_text = match.group(2) or match.group(4)
    return _endpoint(host, int(port_text) if port_text else default_port, text, what)


def _endpoint(host: str, port: int, text: str, what: str, *, name: str | None = None, priority: int = 0) -> Endpoint:
    if not host or not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
        raise UsageError(f"{what} '{text}' has no usable host", hint="use an IP address or host name")
    if not 1 <= port <= 65535:
        raise UsageError(f"{what} '{text}': port {port} is not between 1 and 65535")
    if host == "localhost":
        host = "127.0.0.1"  # sollol's static llama.cpp builds cannot resolve names
    return Endpoint(host, port, name, priority)


def from_synapticllamas(
    config: Any, *, source: str, nodes: Any | None = None, nodes_source: str | None = None, name: str
) -> Starter:
    """Translate a parsed `~/.synapticllamas.json` (and optionally its `_nodes.json` sibling)."""
    if not isinstance(config, Mapping):
        raise UsageError(f"{source} is not a SynapticLlamas config (expected a JSON object)")
    distribute = _flag(config, "task_distribution_enabled", True, source)
    # older SynapticLlamas versions called model sharding "distributed_inference_enabled"
    legacy = "distributed_inference_enabled" in config and "model_sharding_enabled" not in config
    shard = _flag(config, "distributed_inference_enabled" if legacy else "model_sharding_enabled", False, source)

    rpc = _unique(_rpc_entry(entry, i, source) for i, entry in enumerate(_list(config, "rpc_backends", source)))
    ollama = _unique(_ollama_nodes(nodes, nodes_source or "nodes file")) if nodes is not None else []
    if (distribute or not shard) and not ollama:
        ollama = [Endpoint(*LOCAL_OLLAMA)]  # SynapticLlamas always had the local Ollama

    if shard and distribute:
        mode, why = ModelMode.auto, "task distribution and model sharding were both on: split only what fits nowhere"
    elif shard:
        mode, why = ModelMode.shard, "model sharding was on, task distribution off: always split over the rpc-servers"
    else:
        mode, why = ModelMode.distribute, "model sharding was off: whole models on the Ollama nodes"

    names = [_model_name(config.get("model", SYNAPTIC_DEFAULT_MODEL), "model", source)]
    if config.get("synthesis_model"):
        names.append(_model_name(config["synthesis_model"], "synthesis_model", source))
    ignored = [f"{key}: {why_not}" for key, why_not in _NOT_CARRIED.items() if config.get(key)]
    notes = []
    if shard and not rpc:
        notes.append(
            "model sharding was on with no rpc_backends listed (SynapticLlamas looked for them at start): "
            "add them with `sollol discover CIDR --write`"
        )
    return Starter(
        name=name,
        ollama=ollama if (distribute or not shard) else [],
        rpc=rpc if shard else [],
        unused_rpc=[] if shard else rpc,
        models=[StarterModel(n, mode) for n in dict.fromkeys(names)],
        source=source,
        why_mode=why,
        ignored=ignored,
        notes=notes,
    )


def with_flags(
    starter: Starter,
    *,
    rpc: Sequence[str] = (),
    ollama: Sequence[str] = (),
    models: Sequence[str] = (),
    mode: ModelMode | None = None,
) -> Starter:
    """Add what `sollol init`'s flags name. A --mode applies to every model; without one, models the flags
    add take the mode the config chose (auto when there is no config)."""
    default = mode or (starter.models[0].mode if starter.models else ModelMode.auto)
    names = [m.name for m in starter.models] + [m for m in models if m.strip()]
    kept = {m.name: m.mode for m in starter.models}
    result = Starter(
        name=starter.name,
        ollama=_unique([*starter.ollama, *(parse_endpoint(t, 11434, what="--ollama") for t in ollama)]),
        rpc=_unique([*starter.rpc, *(parse_endpoint(t, 50052, what="--rpc") for t in rpc)]),
        unused_rpc=starter.unused_rpc,
        models=[StarterModel(n, mode or kept.get(n, default)) for n in dict.fromkeys(names)],
        source=starter.source,
        why_mode=f"set with --mode {mode.value}" if mode else starter.why_mode,
        ignored=starter.ignored,
        notes=starter.notes if not rpc else [],
    )
    if not result.rpc and any(m.mode is ModelMode.shard for m in result.models):
        raise UsageError(
            f"{starter.source} turns model sharding on but lists no rpc_backends"
            if starter.source and not mode
            else "sharding needs rpc-servers, and none are listed",
            hint="add them with --rpc HOST:PORT (`sollol discover` finds rpc-servers on a subnet)",
        )
    return result


def render(starter: Starter) -> str:
    """The manifest as commented YAML text."""
    out: list[str] = []
    if starter.source:
        out.append(f"# Written by `sollol init --from {starter.source}`.")
    else:
        out.append("# Written by `sollol init`.")
    out += [
        "# Check it with `sollol validate`; `sollol status` shows every backend live; `sollol serve` answers the",
        "# Ollama and OpenAI APIs for all of them. Every key and its default: README, 'Manifest reference'.",
        f"name: {_scalar(starter.name)}",
        "",
    ]
    out += [f"# NOTE: {note}." for note in starter.notes]
    if starter.notes:
        out.append("")
    if starter.ignored:
        out.append("# Not carried over from the old config:")
        out += [f"#   {line}" for line in starter.ignored]
        out.append("")

    out += [
        "# Backends sollol uses as they are, without SSH. To have sollol install, start and supervise",
        "# llama.cpp and Ollama on your machines instead, describe them under `nodes:` (see",
        "# examples/clusters/homelab.yaml) and run `sollol up`.",
    ]
    entries = [("ollama", e) for e in starter.ollama] + [("rpc", e) for e in starter.rpc]
    if entries:
        out.append("backends:")
        for kind, endpoint in entries:
            out += _backend(kind, endpoint)
    else:
        out.append("backends: []")
    if starter.unused_rpc:
        out.append("  # rpc-servers the old config listed while model sharding was off; uncomment to shard over them:")
        for endpoint in starter.unused_rpc:
            out += ["  # " + line[2:] for line in _backend("rpc", endpoint)]
    out.append("")

    if starter.models:
        out.append("models:")
        if starter.why_mode:
            out.append(f"  # mode: {starter.why_mode}.")
        out.append("  # auto: whole model per node when it fits on one, split by layers over the rpc-servers when not.")
        for model in starter.models:
            out.append(f"  - name: {_scalar(model.name)}")
            out.append(f"    mode: {model.mode.value}")
    else:
        out += ["models: []  # e.g. - {name: llama3.1:8b}; models no entry names are routed as `mode: auto`"]
    return "\n".join(out) + "\n"


def _backend(kind: str, endpoint: Endpoint) -> list[str]:
    lines = [f"  - kind: {kind}", f"    address: {_scalar(endpoint.host)}", f"    port: {endpoint.port}"]
    if endpoint.name:
        lines.insert(1, f"    name: {_scalar(endpoint.name)}")
    if endpoint.priority:
        lines.append(f"    priority: {endpoint.priority}")
    return lines


def _scalar(value: str) -> str:
    """A YAML plain scalar when that reads back as the same string, else a double-quoted one."""
    # a colon at the end would start a mapping (`key: 0:`), as ": " would inside
    plain = re.fullmatch(r"[A-Za-z0-9_./-][A-Za-z0-9_./:@+-]*", value) and ": " not in value and value[-1] != ":"
    reads_as_other = re.fullmatch(
        r"(?i)true|false|yes|no|on|off|null|~|[-+]?(\d[\d_]*)?(\.\d*)?(e[-+]?\d+)?|[-+]?\.(inf|nan)|0[xo][0-9a-f]+",
        value,
    )
    if plain and not reads_as_other:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flag(config: Mapping[str, Any], key: str, default: bool, source: str) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise UsageError(f"{source}: {key} must be true or false, not {value!r}")
    return value


def _list(config: Mapping[str, Any], key: str, source: str) -> list[Any]:
    value = config.get(key) or []
    if not isinstance(value, list):
        raise UsageError(f"{source}: {key} must be a list")
    return value


def _rpc_entry(entry: Any, index: int, source: str) -> Endpoint:
    what = f"{source}: rpc_backends[{index}]"
    if isinstance(entry, str):
        return parse_endpoint(entry, 50052, what=what)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("host"), str):
        raise UsageError(f"{what} needs a host", hint='e.g. {"host": "192.168.1.10", "port": 50052}')
    port = entry.get("port", 50052)
    if not isinstance(port, int) or isinstance(port, bool):
        raise UsageError(f"{what}: port {port!r} is not a number")
    return _endpoint(entry["host"], port, str(entry["host"]), what)


def _ollama_nodes(nodes: Any, source: str) -> list[Endpoint]:
    """`~/.synapticllamas_nodes.json`: {"nodes": [{"url": "http://10.0.0.5:11434", "name": ..., "priority": 0}]}."""
    items = nodes.get("nodes") if isinstance(nodes, Mapping) else None
    if not isinstance(items, list):
        raise UsageError(f'{source} is not a SynapticLlamas nodes file (expected {{"nodes": [...]}})')
    found = []
    for i, item in enumerate(items):
        what = f"{source}: nodes[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("url"), str):
            raise UsageError(f"{what} needs a url", hint='e.g. {"url": "http://10.0.0.5:11434"}')
        endpoint = parse_endpoint(item["url"], 11434, what=what)
        priority = item.get("priority", 0)
        found.append(
            Endpoint(
                endpoint.host,
                endpoint.port,
                name=_backend_name(item.get("name")),
                priority=priority if isinstance(priority, int) and not isinstance(priority, bool) else 0,
            )
        )
    return found


def _backend_name(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _model_name(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{source}: {key} must be a model name, not {value!r}")
    return value.strip()


def _unique(endpoints: Any) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for endpoint in endpoints:
        key = (_canonical(endpoint.host), endpoint.port)
        seen.setdefault(key, endpoint)
    return list(seen.values())


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower()
