"""Tokens/s of a sharded model split by measured speed next to the same model split by memory, over two
rpc-servers of which one gets about a third of the other's CPU.

    python benchmarks/speed_split.py [--blocks 6] [--rounds 4] [--num-predict 64] [--memory-mib 600]
                                     [--slow-share 0.33] [--json PATH] [--quick]

Setup (needs root for the cgroup; everything on loopback, the real static llama.cpp build from the sollol cache):

- two rpc-servers with `-t 1`, each with `memory_mib: --memory-mib` in the manifest (the pinned rpc-server
  has no `-m`; it reports all of this machine's memory): `slow` on 127.0.0.2, first in `--rpc` order, and
  `fast` on 127.0.0.3. `slow` runs in a cgroup of its own with a CPU quota of `--slow-share` of one
  CPU (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); `fast` may use a whole one. Two loopback addresses make
  them two machines to sollol, each with its own advertised memory, as two nodes would be;
- the model: the generated `big` test model (16 layers, n_embd 1024, 543 MB), `mode: shard`, context 1024.
  With 600 MiB allowed on each, neither backend can hold it all;
- memory split: the model with `split_by: memory`, how sollol split every model before (here: equal memory,
  equal shares);
- speed split: the same manifest with the default `split_by: speed`. sollol measures both rpc-servers once
  (calibration.py, reported on stderr), then fills the fast one to its memory and gives the slow one the rest
  (layer_split.py).

Both splits are driven in-process exactly as `sollol run` drives them (`open_cluster`, `runtime.prompt.answer`),
in alternating blocks (memory, speed, memory, speed, ...; every switch reloads the model, as the rpc-servers
serve one coordinator at a time). Each block has one untimed request, then `--rounds` measured ones; round n
has the same prompt in every block, and greedy decoding (temperature 0, fixed seed) must give the same text in
every block: the script counts the rounds where it does. Reported: the median generation tokens/s of each split
(llama-server's own `eval_count` / `eval_duration`), their ratio, the median of the per-block ratios (a memory
block and the speed block after it ran back to back, so other work on the machine weighs on both alike), and
the expected tokens/s sollol computed from the calibration. Every process and the cgroup are removed at the end,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_processes import (
    Children,
    parse_with_defaults,
    report,
    run_measurement,
    say,
    sigterm_as_interrupt,
    start_rpc_server,
    workspace,
)

from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Dispatcher, Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.calibration import load_speeds
from sollol_cli.sharding.lifecycle import coordinator_home, speed_line
from sollol_cli.sharding.placement_log import parse_placement

CLUSTER = "bench-speed-split"
MODEL = "big"
CONTEXT = 1024
SLOW_HOST, FAST_HOST = "127.0.0.2", "127.0.0.3"
PROMPT = "Round {n}. Describe how a model split over several machines generates one token after another."
QUICK = {"blocks": 1, "rounds": 2, "num_predict": 16}
DEFAULTS = {"blocks": 6, "rounds": 4, "num_predict": 64}
EXIT_INTERRUPTED = 130
SPLITS = ("memory", "speed")


@dataclass
class CpuLimit:
    """A cgroup with a CPU quota (a share of one CPU), for processes this script starts; removed on close."""

    path: Path
    version: int
    pids: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, name: str, share: float) -> CpuLimit:
        period = 100_000
        quota = max(1000, int(period * share))
        unified = Path("/sys/fs/cgroup")
        if "cpu" in _read(unified / "cgroup.controllers").split():
            _write(unified / "cgroup.subtree_control", "+cpu")
            path = unified / name
            path.mkdir()
            _write(path / "cpu.max", f"{quota} {period}")
            return cls(path, 2)
        path = Path("/sys/fs/cgroup/cpu") / name
        path.mkdir()
        _write(path / "cpu.cfs_period_us", str(period))
        _write(path / "cpu.cfs_quota_us", str(quota))
        return cls(path, 1)

    @property
    def quota(self) -> str:
        if self.version == 2:
            return _read(self.path / "cpu.max").strip()
        return f"{_read(self.path / 'cpu.cfs_quota_us').strip()} {_read(self.path / 'cpu.cfs_period_us').strip()}"

    def add(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))
        self.pids.append(pid)

    def remove(self) -> None:
        """Move what still runs in it back to the root group, then remove it."""
        if not self.path.exists():
            return
        for pid in _read(self.path / "cgroup.procs").split():
            with contextlib.suppress(OSError):  # exited meanwhile
                _write(self.path.parent / "cgroup.procs", pid)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:  # a process still leaving it
                time.sleep(0.1)
        self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, text: str) -> None:
    with path.open("w") as handle:
        handle.write(text)


@dataclass(frozen=True)
class Sample:
    block: int
    round: int
    predicted_n: int
    predicted_ms: float
    text: str

    @property
    def generation(self) -> float:
        return self.predicted_n / self.predicted_ms * 1000


def write_manifest(work: Path, binaries: LlamaCppBinaries, model: Path, endpoints: list[str], split: str,
                   memory_mib: int) -> Path:  # fmt: skip
    lines = [f"name: {CLUSTER}", f"llama_cpp: {{bin_dir: {binaries.llama_server.parent}}}", "backends:"]
    for name, endpoint in zip(("slow", "fast"), endpoints, strict=True):
        host, port = endpoint.rsplit(":", 1)
        lines.append(f"  - {{name: {name}, kind: rpc, address: {host}, port: {port}, memory_mib: {memory_mib}}}")
    split_by = ", split_by: memory" if split == "memory" else ""
    lines += [
        "models:",
        f"  - {{name: {MODEL}, mode: shard, gguf: {model}, context: {CONTEXT}, keep_alive: 3600{split_by}}}",
    ]
    path = work / f"cluster-{split}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def one_request(dispatcher: Dispatcher, n: int, opts: PromptOptions, block: int) -> Sample:
    text: list[str] = []
    final = await answer(dispatcher, "generate", generate_request(MODEL, PROMPT.format(n=n), opts), Trace(MODEL),
                         text.append)  # fmt: skip
    if not final.get("done"):
        raise RuntimeError("sollol's stream ended without its final chunk")
    return Sample(block, n, int(final.get("eval_count", 0)), int(final.get("eval_duration", 0)) / 1e6, "".join(text))


@contextlib.asynccontextmanager
async def sollol_runtime(manifest: Path, settings: Settings) -> AsyncIterator[Dispatcher]:
    """The objects `sollol run` builds; the coordinator is stopped on the way out (the next block reloads)."""
    cluster = load_manifest(manifest).cluster
    async with open_cluster(cluster, settings, reporter=report, stop_on_close=True) as runtime:
        yield runtime.dispatcher


async def block(
    args: argparse.Namespace, manifest: Path, settings: Settings, index: int, pids: list[int]
) -> tuple[list[Sample], dict[str, Any]]:
    opts = PromptOptions(temperature=0.0, seed=args.seed, num_predict=args.num_predict)
    async with sollol_runtime(manifest, settings) as dispatcher:
        await one_request(dispatcher, -1, opts, index)  # plans, (calibrates,) starts and loads the coordinator
        record = coord.load_record(coordinator_home(settings, CLUSTER), MODEL)
        if record is None or not coord.alive(record):
            raise RuntimeError("sollol's coordinator is not running after its first answer")
        pids.append(record.pid)
        log = await asyncio.to_thread(Path(record.log).read_text, errors="replace")
        log = log.rsplit("--- sollol: starting coordinator", 1)[-1]
        mib: dict[str, float] = {}  # per rpc-server (its buffers are keyed `host:port#device`) or CPU buffer
        for where, part in parse_placement(log).items():
            mib[where.split("#")[0]] = round(mib.get(where.split("#")[0], 0.0) + part.model_mib, 2)
        placed = {"rpc": record.rpc, "split": record.split, "placement": record.placement,
                  "speed": speed_line(record), "expected_tokens_per_s": record.expected_tokens_per_s,
                  "split_by": record.split_by, "log_model_mib": mib}  # fmt: skip
        samples = []
        for n in range(args.rounds):
            samples.append(await one_request(dispatcher, n, opts, index))
            say(f"block {index} ({record.split_by}) round {n}: {samples[-1].generation:.1f} tokens/s")
    return samples, placed


async def measure(args: argparse.Namespace, binaries: LlamaCppBinaries, model: Path, work: Path,
                  settings: Settings, children: Children, limit: CpuLimit) -> dict[str, Any]:  # fmt: skip
    say(f"starting rpc-servers: slow on {SLOW_HOST} (CPU quota {args.slow_share:g} of one CPU), fast on {FAST_HOST}")
    slow = await start_rpc_server(children, binaries.rpc_server, SLOW_HOST, 1, work / "rpc-slow.log")
    limit.add(children.processes[-1].pid)
    fast = await start_rpc_server(children, binaries.rpc_server, FAST_HOST, 1, work / "rpc-fast.log")
    pids = [p.pid for p in children.processes]
    endpoints = [slow, fast]
    manifests = {s: write_manifest(work, binaries, model, endpoints, s, args.memory_mib) for s in SPLITS}
    samples: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    placements: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for index in range(args.blocks):
        for split in SPLITS:
            say(f"block {index}: {split} split")
            got, placed = await block(args, manifests[split], settings, index, pids)
            samples[split] += got
            placements[split].append(placed)
    medians = {s: statistics.median(x.generation for x in samples[s]) for s in SPLITS}
    # block i of each split ran back to back: their ratio cancels what other work on the machine did meanwhile
    per_block = [
        statistics.median(x.generation for x in samples["speed"] if x.block == i)
        / statistics.median(x.generation for x in samples["memory"] if x.block == i)
        for i in range(args.blocks)
    ]
    texts = {s: {(x.block, x.round): x.text for x in samples[s]} for s in SPLITS}
    identical = sum(1 for key, text in texts["memory"].items() if texts["speed"].get(key) == text)
    speeds = {key: vars(value) for key, value in load_speeds(settings.state_dir).items()}
    return {
        "command": "python benchmarks/speed_split.py " + " ".join(sys.argv[1:]),
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, {platform.system()} {platform.release()}",
        "model": str(model), "memory_mib": args.memory_mib, "slow_share": args.slow_share, "cgroup_quota": limit.quota,
        "cgroup_version": limit.version, "cgroup": str(limit.path), "endpoints": {"slow": slow, "fast": fast},
        "blocks": args.blocks, "rounds": args.rounds, "num_predict": args.num_predict,
        "tokens_per_s": {s: round(medians[s], 2) for s in SPLITS},
        "ratio": round(medians["speed"] / medians["memory"], 3),
        "paired_ratio": round(statistics.median(per_block), 3), "block_ratios": [round(r, 3) for r in per_block],
        "identical_text": identical, "compared": len(texts["memory"]), "placement": placements,
        "calibration": speeds,
        "samples": {s: [vars(x) | {"generation": x.generation} for x in samples[s]] for s in SPLITS},
        "pids": pids,
    }  # fmt: skip


def _cpu_model() -> str:
    for line in _read(Path("/proc/cpuinfo")).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def summary(result: dict[str, Any]) -> str:
    memory, speed = (result["placement"][s][-1] for s in SPLITS)  # the last: by then both backends are measured
    lines = [
        "| split | placement | expected tokens/s | measured tokens/s (median) |",
        "| --- | --- | --- | --- |",
    ]
    for split, placed in (("memory", memory), ("speed", speed)):
        where = "; ".join(line.removeprefix("placement ") for line in placed["placement"] if "layers" in line)
        expected = placed["expected_tokens_per_s"]
        lines.append(f"| {split} | {where} | {'-' if expected is None else f'{expected:.1f}'} | "
                     f"{result['tokens_per_s'][split]:.1f} |")  # fmt: skip
    lines += [
        "",
        f"speed / memory: {result['ratio']:.2f}x (medians), {result['paired_ratio']:.2f}x (median of the "
        f"per-block ratios {', '.join(f'{r:.2f}' for r in result['block_ratios'])}); "
        f"greedy text identical in {result['identical_text']} of "
        f"{result['compared']} rounds. {result['blocks']} block(s) of {result['rounds']} requests x "
        f"{result['num_predict']} tokens per split; slow rpc-server CPU quota {result['cgroup_quota']} "
        f"(cgroup v{result['cgroup_version']}), each rpc-server -t 1, memory_mib {result['memory_mib']}; "
        f"{result['machine']}.",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, help="blocks per split, alternating (default 6)")
    parser.add_argument("--rounds", type=int, help="measured requests per block (default 4)")
    parser.add_argument("--num-predict", type=int, help="tokens generated per request (default 64)")
    parser.add_argument("--memory-mib", type=int, default=600, help="memory_mib of each rpc backend")
    parser.add_argument("--slow-share", type=float, default=0.33, help="CPU quota of the slow rpc-server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the whole result (every sample) to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 block, 2 rounds, 16 tokens")
    args = parse_with_defaults(parser, argv, QUICK, DEFAULTS)
    if min(args.blocks, args.rounds, args.num_predict) < 1 or not 0 < args.slow_share <= 1:
        parser.error("--blocks, --rounds and --num-predict must be at least 1, --slow-share in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with sigterm_as_interrupt():
        binaries, model, work, settings = workspace("big", "speed-split")
        prefix = os.environ.get("SOLLOL_TEST_PREFIX", "sollol")
        children = Children()
        with _cgroup(f"{prefix}-speed-split-{os.getpid()}", args.slow_share) as limit:
            say(f"cgroup: {limit.path}")
            measuring = measure(args, binaries, model, work, settings, children, limit)
            result = run_measurement(measuring, settings, CLUSTER, children, work)
        if result is None:
            return EXIT_INTERRUPTED
    text = summary(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result | {"summary": text}, indent=2))
    return 0


@contextlib.contextmanager
def _cgroup(name: str, share: float) -> Iterator[CpuLimit]:
    limit = CpuLimit.create(name, share)
    try:
        yield limit
    finally:
        limit.remove()


if __name__ == "__main__":
    sys.exit(main())
