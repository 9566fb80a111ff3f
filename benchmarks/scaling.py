"""How sollol's cost grows with the cluster: `up` (fresh and converged), `status` and routing at 3, 10 and 30
nodes (targets: converged `up` and `status` on 30 nodes within 2x their 3-node times).

    sudo python benchmarks/scaling.py [--sizes 3,10,30] [--runs 3]

Needs root: the nodes are the project's test hosts (tests/harness/sshhosts.py), one OpenSSH server per
network namespace, each a real host sollol reaches over SSH with host keys checked. Every node gets an
rpc-server (the cached CPU build of llama.cpp, `sollol llama-cpp build`). Per size, a cluster of that many
nodes (the first N of one set of hosts) is measured with the real CLI, each command a fresh process:

- fresh `up`: nodes without sollol's files: upload the rpc-server, start it, wait for it to answer;
- converged `up`: the same manifest again (nothing to change: the median of `--runs`);
- `status`: probe every backend (the median of `--runs`);
- routing: `router.choose` over N candidates in this process (the median of 20000 calls).

Each command's cell is its wall time and, after the slash, the sollol process's own CPU time. All the
nodes share this machine's cores, so at 30 nodes the wall time also carries 30 nodes' sshd and shell work,
which on a real cluster runs on 30 machines: the CPU column is what grows on the controller.

Then `down`. Prints a markdown table with each row's ratio to the smallest size. Environment: as the
real tests (SOLLOL_TEST_PREFIX, SOLLOL_TEST_SUBNET) to run beside them.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sollol_cli.llamacpp.build import build  # noqa: E402
from sollol_cli.router import Candidate, choose  # noqa: E402
from sollol_cli.settings import Settings  # noqa: E402
from tests.harness.llama import bin_dir_of  # noqa: E402
from tests.harness.sshhosts import HostsConfig, TestHosts, start_test_hosts  # noqa: E402

RPC_PORT = 50452


@dataclass(frozen=True)
class Row:
    nodes: int
    fresh_up: Took
    converged_up: Took
    status: Took
    route_us: float


@dataclass(frozen=True)
class Took:
    wall_s: float
    cpu_s: float  # the sollol process's own CPU (user + system), imports included


def sollol(*args: str, env: dict[str, str]) -> Took:
    """What one `sollol` command takes as a fresh process; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sollol_cli", *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"sollol {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Took(took, cpu)


def median(runs: list[Took]) -> Took:
    return Took(statistics.median(r.wall_s for r in runs), statistics.median(r.cpu_s for r in runs))


def route_us(count: int, calls: int = 20000) -> float:
    """Median microseconds of one routing decision among `count` equally good backends (the worst case:
    every rule ties and the weighted random pick runs)."""
    candidates = [Candidate(f"node{i}", frozenset({"tiny:latest"}), slots=2) for i in range(count)]
    rng = random.Random(1)
    times = []
    for _ in range(calls // 100):
        started = time.perf_counter()
        for _ in range(100):
            choose("tiny", candidates, random=rng.random)
        times.append((time.perf_counter() - started) / 100)
    return statistics.median(times) * 1e6


def measure(hosts: TestHosts, count: int, runs: int, work: Path, bin_dir: Path) -> Row:
    nodes = list(hosts.nodes[:count])
    manifest = work / f"cluster-{count}.yaml"
    roles = {n.name: f"rpc: {{port: {RPC_PORT}}}" for n in nodes}
    extra = f"llama_cpp:\n  bin_dir: {bin_dir}\n"
    manifest.write_text(hosts.manifest_yaml(roles, name=f"scale{count}", nodes=nodes, extra=extra))
    env = {**os.environ, "SOLLOL_STATE_DIR": str(work / f"state-{count}")}
    for node in nodes:  # fresh: nothing of sollol's on the node (an earlier size used the same hosts)
        shutil.rmtree(node.root_dir / ".sollol", ignore_errors=True)
    try:
        fresh = sollol("up", str(manifest), "-q", env=env)
        converged = median([sollol("up", str(manifest), "-q", env=env) for _ in range(runs)])
        status = median([sollol("status", "-f", str(manifest), "--json", env=env) for _ in range(runs)])
    finally:
        subprocess.run([sys.executable, "-m", "sollol_cli", "down", str(manifest), "-q"], env=env, capture_output=True)
    return Row(count, fresh, converged, status, route_us(count))


def table(rows: list[Row]) -> str:
    """Wall time and, after the slash, the sollol process's own CPU time; each with its ratio to the first
    row's."""
    base = rows[0]

    def cell(took: Took, first: Took) -> str:
        return (
            f"{took.wall_s:.2f} s ({took.wall_s / first.wall_s:.1f}x) / "
            f"{took.cpu_s:.2f} s ({took.cpu_s / first.cpu_s:.1f}x)"
        )

    lines = [
        "| nodes | fresh `up` | converged `up` | `status` | routing |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.nodes} | {cell(row.fresh_up, base.fresh_up)} | {cell(row.converged_up, base.converged_up)} "
            f"| {cell(row.status, base.status)} | {row.route_us:.1f} µs ({row.route_us / base.route_us:.1f}x) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3,10,30", help="cluster sizes, comma-separated (default 3,10,30)")
    parser.add_argument("--runs", type=int, default=3, help="runs of converged up and status per size")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    bins = build(Settings().cache_dir)
    config = HostsConfig.from_env()
    hosts = start_test_hosts(HostsConfig(count=max(sizes), subnet=config.subnet, prefix=config.prefix))
    try:
        with tempfile.TemporaryDirectory(prefix="sollol-scaling-") as tmp:
            work = Path(tmp)
            bin_dir = bin_dir_of(bins, work)
            rows = []
            for count in sizes:
                rows.append(measure(hosts, count, args.runs, work, bin_dir))
                print(f"{count} nodes measured", file=sys.stderr)
        print(table(rows))
    finally:
        hosts.close()


if __name__ == "__main__":
    main()
