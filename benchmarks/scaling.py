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

Then `down`. Prints a markdown table with each row's ratio to the smallest size. Environment: as the
real tests (SOLLOL_TEST_PREFIX, SOLLOL_TEST_SUBNET) to run beside them.
"""

from __future__ import annotations

import argparse
import os
import random
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
    fresh_up_s: float
    converged_up_s: float
    status_s: float
    route_us: float


def sollol(*args: str, env: dict[str, str]) -> float:
    """Seconds one `sollol` command takes as a fresh process; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sollol_cli", *args], capture_output=True, text=True, env=env)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"sollol {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return took


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
        converged = statistics.median(sollol("up", str(manifest), "-q", env=env) for _ in range(runs))
        status = statistics.median(sollol("status", "-f", str(manifest), "--json", env=env) for _ in range(runs))
    finally:
        subprocess.run([sys.executable, "-m", "sollol_cli", "down", str(manifest), "-q"], env=env, capture_output=True)
    return Row(count, fresh, converged, status, route_us(count))


def table(rows: list[Row]) -> str:
    base = rows[0]
    lines = [
        "| nodes | fresh `up` | converged `up` | `status` | routing |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.nodes} | {row.fresh_up_s:.2f} s ({row.fresh_up_s / base.fresh_up_s:.1f}x) "
            f"| {row.converged_up_s:.2f} s ({row.converged_up_s / base.converged_up_s:.1f}x) "
            f"| {row.status_s:.2f} s ({row.status_s / base.status_s:.1f}x) "
            f"| {row.route_us:.1f} µs ({row.route_us / base.route_us:.1f}x) |"
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
