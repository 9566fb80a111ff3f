"""The coordinators a cluster's commands started, as recorded in the state directory: where each runs,
whether it still runs, what its log says, stopping it, and expiring it once idle for its keep-alive.

Used by the shard manager (which starts them), `sollol status`, `sollol down` and the keep-alive watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sollol_cli import events
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.llamacpp import LlamaServerBackend
from sollol_cli.errors import BackendError, SshError
from sollol_cli.files import held_lock
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.hosts import ControllerHost, CoordinatorHost, NodeHost
from sollol_cli.sharding.layer_split import tokens_per_s_for
from sollol_cli.sharding.placement_log import layers_by_device, parse_placement


def coordinator_home(settings: Settings, cluster: str) -> Path:
    return settings.state_dir / "clusters" / cluster


class Coordinators:
    def __init__(self, cluster: Cluster, settings: Settings, *, reporter: events.Reporter = events.ignore) -> None:
        self.cluster = cluster
        self.settings = settings
        self.reporter = reporter
        self.home = coordinator_home(settings, cluster.name)
        self._hosts: dict[str, NodeHost] = {}

    def host_for(self, node: str | None) -> CoordinatorHost:
        """Where a coordinator runs (None: this machine). Node hosts keep one SSH connection until close."""
        if node is None:
            return ControllerHost(self.home)
        if node not in self._hosts:
            self._hosts[node] = NodeHost(self.cluster, self.settings, self.cluster.node(node), reporter=self.reporter)
        return self._hosts[node]

    async def log(self, record: coord.CoordinatorRecord) -> str:
        try:
            return await self.host_for(record.node).log_text(record)
        except SshError as exc:
            return f"its log is out of reach: {exc.message}"

    async def stop(self, record: coord.CoordinatorRecord) -> bool:
        """Stop and forget; on an unreachable node it is left to `sollol down` (the node keeps its pidfile)."""
        try:
            stopped = await self.host_for(record.node).stop(record)
        except SshError:
            stopped = False
        coord.forget_record(self.home, record)
        return stopped

    async def running(self) -> dict[str, coord.CoordinatorRecord]:
        """The coordinators that run now, by model (each checked, those on nodes over HTTP, concurrently)."""
        records = coord.all_records(self.home, self.reporter)
        checks = await asyncio.gather(*(self.still_running(record) for record in records))
        return {record.model: record for record, up in zip(records, checks, strict=True) if up}

    async def still_running(self, record: coord.CoordinatorRecord) -> bool:
        """On this machine: the same process. On a node: it answers with our key (an HTTP round trip, cheaper
        than SSH; another process on a reused port would not know the key)."""
        if record.node is None:
            return coord.alive(record)
        try:
            await self._client(record).openai_json("/v1/models")
        except BackendError:
            return False
        return True

    async def expire(self) -> list[str]:
        """Stop coordinators idle for longer than their keep-alive. Idle is asked of the coordinator itself
        (its slots): another sollol process may be using it right now. One still loading is left alone: the
        process loading it holds the start lock and owns it until it is ready."""
        stopped = []
        now = time.time()
        for record in coord.all_records(self.home, self.reporter):
            expires = coord.expires_at(record)
            if record.node is None and not coord.alive(record):
                coord.forget_record(self.home, record)
            elif record.ready_after_s is not None and expires is not None and now > expires:
                if await self.busy(record):
                    coord.update_record(self.home, record, coord.used_at(now))
                    continue
                await self.stop(record)
                stopped.append(record.model)
        return stopped

    def start_lock(self, subject: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a coordinator of this cluster is chosen, started and loaded, by every sollol process
        on this machine (`run`, `serve`, the Python API): a caller that finds one loading waits for it to be
        ready instead of starting a second on the same rpc-servers or routing to it while it still loads."""
        holder = f"sollol (pid {os.getpid()}) starting {subject}"

        def waiting(other: str) -> None:
            self.reporter(events.StepStarted(subject, "waiting", f"for {other}"))

        return held_lock(self.home / "coordinators.lock", holder, on_wait=waiting)

    async def busy(self, record: coord.CoordinatorRecord) -> bool:
        """Serving a request now (asked of its slots; a coordinator that does not answer is not busy)."""
        return bool((await self._client(record).probe()).in_flight)

    def _client(self, record: coord.CoordinatorRecord) -> LlamaServerBackend:
        """The coordinator as a backend, with short timeouts: for the checks sollol makes, not for requests."""
        return LlamaServerBackend(coord.backend_ref(record), Timeouts(self.cluster.routing.connect_timeout, 5.0))

    async def close(self) -> None:
        """Close the SSH connections to nodes (the coordinators keep running)."""
        hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            await host.close()


@dataclass(frozen=True)
class Placed:
    """One part of a sharded model: an rpc device's layers (`first`..`last`, None when it got none) and the
    MiB of weights and KV cache it holds, or (`endpoint` None) what stays on the coordinator. `endpoint` is
    the device's label: `host:port`, or `host:port#index` for a device of an rpc-server serving several."""

    endpoint: str | None
    first: int | None
    last: int | None
    model_mib: float
    kv_mib: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "device": self.endpoint or "coordinator",
            "coordinator": self.endpoint is None,
            "first_layer": self.first,
            "last_layer": self.last,
            "model_mib": self.model_mib,
            "kv_mib": self.kv_mib,
        }


def placement_of(record: coord.CoordinatorRecord, log: str) -> list[Placed]:
    """Per rpc device its layers (llama.cpp's split rule) and MiB (its log), then the coordinator's part."""
    mib = parse_placement(log)
    devices = record.devices or record.rpc
    layers = layers_by_device(record.n_layer, devices, record.split) if record.n_layer and record.split else {}
    out = []
    for device in devices:
        # a device of a server with several is keyed as in the log; a server's only device is all it holds
        entries = [mib[device]] if device in mib else [e for k, e in mib.items() if k.startswith(f"{device}#")]
        assigned = layers.get(device, [])
        model_mib, kv_mib = sum(e.model_mib for e in entries), sum(e.kv_mib for e in entries)
        first, last = (assigned[0], assigned[-1]) if assigned else (None, None)
        out.append(Placed(device, first, last, round(model_mib, 1), round(kv_mib, 1)))
    local = mib.get("CPU_Mapped") or mib.get("CPU")
    if local is not None and local.model_mib:
        out.append(Placed(None, None, None, round(local.model_mib, 1)))
    return out


def placement_lines(record: coord.CoordinatorRecord, log: str) -> list[str]:
    """`host:port: layers 0-4, model 9.4 MiB, KV 1.2 MiB` per rpc device (what `-v` and status show)."""
    return [placement_line(part, record.where) for part in placement_of(record, log)]


def placement_line(part: Placed, where: str) -> str:
    if part.endpoint is None:
        return f"placement coordinator ({where}): token embeddings, model {part.model_mib:.1f} MiB"
    span = f"{part.first}-{part.last}" if part.first is not None else "-"
    return f"placement {part.endpoint}: layers {span}, model {part.model_mib:.1f} MiB, KV {part.kv_mib:.1f} MiB"


_SPLIT_BY = {
    "speed": "by measured speed (fastest rpc backend filled first)",
    "manifest": "by the manifest's tensor_split",
    "memory": "by memory",
}


def speed_line(record: coord.CoordinatorRecord) -> str:
    """`speed: split by ..., expected N tokens/s, measured M tokens/s` (what `-v` and status show under
    the placement). Expected is layer compute alone, from the rpc backends' measured speeds (layer_split.py)."""
    parts = [f"speed: split {_SPLIT_BY.get(record.split_by, record.split_by)}"]
    if record.expected_tokens_per_s is not None:
        parts.append(f"expected {record.expected_tokens_per_s:.1f} tokens/s")
    if record.measured_tokens_per_s is not None:
        parts.append(f"measured {record.measured_tokens_per_s:.1f} tokens/s")
    return ", ".join(parts)


def expected_after_load(record: coord.CoordinatorRecord, log: str) -> float | None:
    """Tokens/s a loaded coordinator should reach: the weights each rpc backend holds (its log) over the
    backend's measured speed, rounded as shown; None without a speed for every backend that holds weights."""
    parts = [part for part in placement_of(record, log) if part.endpoint is not None]
    held = [part.model_mib * 1024**2 for part in parts]
    expected = tokens_per_s_for(held, [record.rpc_speeds.get(part.endpoint or "") for part in parts])
    return None if expected is None else round(expected, 1)


def speed_of(record: coord.CoordinatorRecord) -> dict[str, object]:
    """The same as JSON (`status --json`, the dashboard)."""
    return {
        "split_by": record.split_by,
        "expected_tokens_per_s": record.expected_tokens_per_s,
        "measured_tokens_per_s": record.measured_tokens_per_s,
    }


_PLACEMENT_LINE = re.compile(
    r"placement (?:coordinator \(.*\): token embeddings|(?P<ep>\S+): layers (?:(?P<first>\d+)-(?P<last>\d+)|-))"
    r", model (?P<model>[\d.]+) MiB(?:, KV (?P<kv>[\d.]+) MiB)?$"
)


def parse_placement_lines(lines: list[str]) -> list[Placed]:
    """The parts back from a record's `placement` lines (what it stores), for the dashboard; lines that are not
    placement lines are skipped."""
    out = []
    for line in lines:
        match = _PLACEMENT_LINE.match(line)
        if match is None:
            continue
        first, last = match["first"], match["last"]
        out.append(
            Placed(
                match["ep"],
                None if first is None else int(first),
                None if last is None else int(last),
                float(match["model"]),
                float(match["kv"] or 0.0),
            )
        )
    return out


def stop_all(settings: Settings, cluster: str, report: events.Reporter = events.ignore) -> list[str]:
    """`sollol down`: stop every coordinator this cluster's commands started on this machine, also those whose
    record was lost or unreadable (found by their marker), and forget those on nodes (each node's own `down`
    stopped them, by the pidfile they left there)."""
    home = coordinator_home(settings, cluster)
    coord.adopt_orphans(home, report)
    stopped = []
    for record in coord.all_records(home, report):
        if record.node is None and coord.stop_process(record):
            stopped.append(record.model)
        coord.forget_record(home, record)
    return stopped
