"""How fast each rpc backend runs layers: measured once per rpc-server and llama.cpp protocol, and kept.

What is measured: a coordinator (llama-server on this machine) over that one rpc-server, with a small generated
model (tinymodel's `calibrate` preset: every layer and the output layer on the rpc-server), greedy-decodes
CALIBRATION_TOKENS tokens, CALIBRATION_ROUNDS times. Its best decode speed times the weights the rpc-server
holds (the coordinator's `model buffer size` line for it) is the bytes of layer weights that backend runs
through per second: decoding reads every weight once per token, so that figure carries over to any model
(layer_split.py). The round trip to the rpc-server is in the measurement, as it is in every token of a real
split.

When: a sharded model's coordinator is about to start over two or more rpc backends, without a manifest
`tensor_split`, and a backend has no kept speed. Backends are measured one after another inside the cluster's
start lock, so the cluster carries one short calibration at a time and only when a sharded model starts (no
more load than asked for). The figures are kept in `<state_dir>/rpc-speeds.json`, keyed by endpoint and
protocol (a new llama.cpp build measures again); `sollol bench` measures again on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from sollol_cli import events
from sollol_cli.backends.http import request_json
from sollol_cli.errors import BackendError, SollolError
from sollol_cli.files import update_locked
from sollol_cli.llamacpp.tinymodel import ensure_tiny_model
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.hosts import ControllerHost
from sollol_cli.sharding.layer_split import SPEED_TOLERANCE
from sollol_cli.sharding.placement_log import parse_placement
from sollol_cli.sharding.pool import RpcServer

CALIBRATION_MODEL = "sollol-calibration"
CALIBRATION_PRESET = "calibrate"
CALIBRATION_TOKENS = 24  # per round
CALIBRATION_ROUNDS = 3
CALIBRATION_CONTEXT = 256
CALIBRATION_PROMPT = "Measure this backend."
MIB = 1024**2


@dataclass(frozen=True)
class RpcSpeed:
    bytes_per_s: float  # layer weights run through per second
    tokens_per_s: float  # the calibration model's decode speed, as measured
    measured_at: float


def speeds_path(state_dir: Path) -> Path:
    return state_dir / "rpc-speeds.json"


def speed_key(endpoint: str, protocol: str) -> str:
    return f"{endpoint} rpc {protocol}"


def load_speeds(state_dir: Path) -> dict[str, RpcSpeed]:
    """Every kept speed by `speed_key`; unreadable entries (or file) are measured again, as a cache is."""
    try:
        data = json.loads(speeds_path(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    out = {}
    for key, item in data.items() if isinstance(data, dict) else []:
        try:
            out[key] = RpcSpeed(float(item["bytes_per_s"]), float(item["tokens_per_s"]), float(item["measured_at"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


async def save_speed(state_dir: Path, key: str, speed: RpcSpeed) -> None:
    """Merge one speed into the file under its lock: other sollol processes may be saving theirs."""

    def merged() -> str:
        kept = {k: asdict(v) for k, v in load_speeds(state_dir).items()}
        kept[key] = asdict(speed)
        return json.dumps(kept, indent=2, sort_keys=True) + "\n"

    await update_locked(speeds_path(state_dir), merged, holder=f"sollol (pid {os.getpid()}) saving a speed")


def known_speeds(state_dir: Path, servers: Sequence[RpcServer], protocol: str) -> dict[str, float]:
    """endpoint -> bytes/s for the servers with a kept speed."""
    kept = load_speeds(state_dir)
    return {s.endpoint: speed.bytes_per_s for s in servers if (speed := kept.get(speed_key(s.endpoint, protocol)))}


async def calibrate_all(
    servers: Sequence[RpcServer],
    protocol: str,
    *,
    llama_server: str,
    state_dir: Path,
    cache_dir: Path,
    home: Path,
    reporter: events.Reporter,
    force: bool = False,
) -> dict[str, float]:
    """Measure the servers without a kept speed (all of them with `force`), one after another, and return
    endpoint -> bytes/s for every server with a speed. A failed measurement is a warning, not an error: the
    model is then split by memory, as without speeds.

    When the fresh measurements differ by more than SPEED_TOLERANCE, they are taken once more in the opposite
    order and each server keeps its best: other work on the machine (or the network) during one measurement
    makes that server look slow, and a difference that decides the split must not come from that."""
    kept = {} if force else known_speeds(state_dir, servers, protocol)
    missing = [s for s in servers if s.endpoint not in kept]
    if not missing:
        return kept
    try:
        model = await asyncio.to_thread(ensure_tiny_model, cache_dir, CALIBRATION_PRESET, reporter=reporter)
    except SollolError as exc:
        reporter(events.Warning("speed calibration", f"no calibration model ({exc.message}); splitting by memory"))
        return kept
    measured: dict[str, RpcSpeed] = {}
    for server in missing:
        measured |= await _measure(server, llama_server, model, home, reporter)
    fresh = [speed.bytes_per_s for speed in measured.values()]
    if len(fresh) > 1 and max(fresh) >= SPEED_TOLERANCE * min(fresh):
        for server in reversed([s for s in missing if s.endpoint in measured]):
            again = await _measure(server, llama_server, model, home, reporter)
            if server.endpoint in again and again[server.endpoint].bytes_per_s > measured[server.endpoint].bytes_per_s:
                measured[server.endpoint] = again[server.endpoint]
    for endpoint, speed in measured.items():
        await save_speed(state_dir, speed_key(endpoint, protocol), speed)
        kept[endpoint] = speed.bytes_per_s
    return kept


async def _measure(
    server: RpcServer, llama_server: str, model: Path, home: Path, reporter: events.Reporter
) -> dict[str, RpcSpeed]:
    """One calibration of `server`, reported as a step: {endpoint: speed}, or {} when it failed."""
    subject = f"rpc backend {server.name}"
    rounds = f"{server.endpoint}, {CALIBRATION_ROUNDS} x {CALIBRATION_TOKENS} tokens"
    reporter(events.StepStarted(subject, "calibrating", rounds))
    try:
        speed = await calibrate(server, llama_server=llama_server, model=model, home=home)
    except SollolError as exc:
        reporter(events.StepFailed(subject, "calibrating", exc.message))
        return {}
    except OSError as exc:  # llama-server could not be started here (missing, not executable)
        reporter(events.StepFailed(subject, "calibrating", f"cannot start {llama_server}: {exc.strerror or exc}"))
        return {}
    reporter(events.StepDone(subject, "calibrating", f"{speed.bytes_per_s / MIB:.0f} MiB/s of layer weights"))
    return {server.endpoint: speed}


async def calibrate(server: RpcServer, *, llama_server: str, model: Path, home: Path) -> RpcSpeed:
    """One measurement (see the module docstring). The coordinator is started like any other on this machine,
    with the records' marker, so `sollol down` finds it if this process dies meanwhile."""
    host = ControllerHost(home)
    plan = coord.CoordinatorPlan(CALIBRATION_MODEL, str(model), (server.endpoint,), CALIBRATION_CONTEXT, 1, (1.0,))
    record = await host.start(plan, llama_server, 0.0)
    try:
        await coord.wait_ready(record, host, timeout=300.0, reporter=events.ignore)
        body = {
            "prompt": CALIBRATION_PROMPT, "n_predict": CALIBRATION_TOKENS, "temperature": 0, "top_k": 1,
            "seed": 1, "ignore_eos": True, "cache_prompt": False,
        }  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=300.0)
        rounds = []
        for _ in range(CALIBRATION_ROUNDS):
            answer = await request_json(coord.backend_ref(record), "POST", "/completion", body=body, timeout=timeout)
            timings = answer.get("timings", {}) if isinstance(answer, dict) else {}
            rounds.append(float(timings.get("predicted_per_second") or 0.0))
        buffers = parse_placement(await host.log_text(record))
        # its buffers are keyed `host:port#device` (one rpc-server may serve several devices)
        held_mib = sum(p.model_mib for k, p in buffers.items() if k.split("#")[0] == server.endpoint)
    finally:
        await host.stop(record)
    # the best round: other work on a shared machine only ever slows a round down
    tokens_per_s = max(rounds, default=0.0)
    if held_mib <= 0 or tokens_per_s <= 0:
        raise BackendError(f"the calibration of {server.endpoint} gave no figures (see {record.log})")
    return RpcSpeed(held_mib * MIB * tokens_per_s, tokens_per_s, time.time())
