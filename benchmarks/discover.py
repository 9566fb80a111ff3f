"""Time `sollol discover` on a /24 with 3 ports at the default settings (target: under 2 s).

    python benchmarks/discover.py [--runs 3]

Needs root: it starts 3 namespace test hosts (tests/harness/sshhosts.py) on their own test subnet, runs
an rpc-server on the first, the Ollama stand-in on the second and a llama-server on the third, then
scans that subnet only (never anything else) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sollol_cli.discovery.run import discover  # noqa: E402
from sollol_cli.discovery.targets import DEFAULT_PORTS, parse_networks  # noqa: E402
from sollol_cli.llamacpp.build import build  # noqa: E402
from sollol_cli.llamacpp.tinymodel import ensure_tiny_model  # noqa: E402
from sollol_cli.settings import Settings  # noqa: E402
from tests.harness.sshhosts import HostsConfig, start_test_hosts  # noqa: E402
from tests.standin.ollama_standin import standin_script  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cache = Settings().cache_dir
    bins = build(cache)
    model = ensure_tiny_model(cache, "tiny")
    config = HostsConfig(count=3, subnet=IPv4Network("10.233.90.0/24"), prefix="soldb")
    with start_test_hosts(config) as hosts:
        n1, n2, n3 = hosts.nodes
        logs = hosts.work_dir
        for node in hosts.nodes:
            shutil.copyfile(bins.rpc_server, node.root_dir / "rpc-server")
            shutil.copyfile(bins.llama_server, node.root_dir / "llama-server")
            (node.root_dir / "rpc-server").chmod(0o755)
            (node.root_dir / "llama-server").chmod(0o755)
        shutil.copyfile(model, n3.root_dir / "tiny.gguf")
        (n2.root_dir / "ollama").write_text(standin_script(python=sys.executable))
        (n2.root_dir / "ollama").chmod(0o755)
        hosts.spawn_in(n1, f"exec /root/rpc-server -H {n1.address} -p 50052", log=logs / "rpc.log")
        hosts.spawn_in(n2, f"OLLAMA_HOST={n2.address}:11434 exec /root/ollama serve", log=logs / "ollama.log")
        hosts.spawn_in(n3, f"exec /root/llama-server -m /root/tiny.gguf --host {n3.address} -c 512", log=logs / "l.log")
        time.sleep(3)  # let the three services come up
        networks = parse_networks([str(config.subnet)])
        times, found = [], 0
        expected = {(n1.address, 50052, "rpc"), (n2.address, 11434, "ollama"), (n3.address, 8080, "llamacpp")}
        for _ in range(args.runs):
            result = asyncio.run(discover(networks, DEFAULT_PORTS))
            times.append(result.seconds)
            seen = {(item.address, item.port, item.kind) for item in result.found}
            if seen != expected:  # a fast scan that misses something is no result
                sys.exit(f"expected {sorted(expected)}, found {sorted(seen)}")
            found = len(seen)
    print("| scan | addresses x ports | backends found | median | best | runs |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {config.subnet}, default settings (512 in flight, 0.5 s connect timeout) | 254 x {len(DEFAULT_PORTS)} "
        f"| {found} | {statistics.median(times):.2f} s | {min(times):.2f} s | {args.runs} |"
    )


if __name__ == "__main__":
    main()
