"""Time `sollol status` against a 3-backend cluster (target: well under a second when all are healthy).

    python benchmarks/status.py [--runs 10] [--delay 0.3]

Starts three Ollama stand-ins (tests/standin) as `ollama serve` on loopback ports and measures:

- the real `sollol status` as a fresh process each time (Python start-up and imports included);
- one probe round inside a process (`open_cluster` entry: fresh connections, no start-up);
- `sollol status` again with every stand-in answering each request only after `--delay` seconds. A probe
  asks each backend three things, so probing one request at a time would take 9 x delay; concurrent
  probes take about one delay, which is what this row shows.

Prints a markdown table of medians and bests over `--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.standin.ollama_standin import Faults, StandinConfig, standin_script  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def standins(work: Path, *, delay: float) -> Iterator[Path]:
    """Three stand-ins (each answering after `delay` s) and a manifest naming them."""
    script = work / "ollama"
    script.write_text(standin_script(python=sys.executable))
    script.chmod(0o755)
    ports = [free_port() for _ in range(3)]
    procs = []
    try:
        for i, port in enumerate(ports):
            config = work / f"standin{i}-{delay}.json"
            StandinConfig(name=f"node{i}", faults=Faults(slow_start=delay)).dump(config)
            env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "SOLLOL_STANDIN_CONFIG": str(config)}
            procs.append(
                subprocess.Popen([str(script), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        deadline = time.monotonic() + 30
        while not all(listening(port) for port in ports):
            if time.monotonic() > deadline:
                raise TimeoutError("the stand-ins did not start")
            time.sleep(0.05)
        manifest = work / f"cluster-{delay}.yaml"
        backends = "".join(
            f"  - {{name: node{i}, kind: ollama, address: 127.0.0.1, port: {p}}}\n" for i, p in enumerate(ports)
        )
        manifest.write_text(f"name: bench\nbackends:\n{backends}")
        yield manifest
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def timed(action: Callable[[], None], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def status_process(manifest: Path, env: dict[str, str]) -> Callable[[], None]:
    sollol = str(Path(sys.executable).with_name("sollol"))

    def run() -> None:
        done = subprocess.run([sollol, "status", "-f", str(manifest)], env=env, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"sollol status exited {done.returncode}: {done.stdout.decode()}{done.stderr.decode()}")

    return run


def probe_round(manifest: Path) -> Callable[[], None]:
    from sollol_cli.manifest.loader import load_manifest
    from sollol_cli.runtime.session import open_cluster
    from sollol_cli.settings import Settings

    cluster = load_manifest(manifest).cluster

    async def once() -> None:
        async with open_cluster(cluster, Settings()) as runtime:  # entering probes every backend once
            down = [v.name for v in runtime.monitor.views.values() if not v.probe.healthy]
            if down:
                raise RuntimeError(f"not healthy: {down}")

    return lambda: asyncio.run(once())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds each slow stand-in waits per request")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="sollol-bench-status-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "SOLLOL_STATE_DIR": str(work / "state")}
        with standins(work, delay=0.0) as manifest:
            rows.append(
                ("`sollol status` (fresh process)", "3 healthy", timed(status_process(manifest, env), args.runs))
            )
            rows.append(("one probe round (in-process)", "3 healthy", timed(probe_round(manifest), args.runs)))
        with standins(work, delay=args.delay) as manifest:
            label = f"3 answering after {args.delay * 1000:.0f} ms"
            rows.append(("`sollol status` (fresh process)", label, timed(status_process(manifest, env), args.runs)))
    print("| measurement | backends | median | best | runs |\n|---|---|---|---|---|")
    for name, backends, times in rows:
        median, best = statistics.median(times) * 1000, min(times) * 1000
        print(f"| {name} | {backends} | {median:.0f} ms | {best:.0f} ms | {args.runs} |")


if __name__ == "__main__":
    main()
