"""Time `sollol status` against a healthy 3-backend cluster (target: well under a second).

    python benchmarks/status.py [--runs 10]

Starts three Ollama stand-ins (tests/standin) as `ollama serve` on loopback ports, writes a manifest for
them and runs the real `sollol status` command as a fresh process each time (start-up included).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.standin.ollama_standin import standin_script  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sollol-bench-status-"))
    script = work / "ollama"
    script.write_text(standin_script(python=sys.executable))
    script.chmod(0o755)
    ports = [free_port() for _ in range(3)]
    procs = [
        subprocess.Popen(
            [str(script), "serve"],
            env={**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for port in ports
    ]
    try:
        for port in ports:
            while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
                time.sleep(0.05)
        manifest = work / "cluster.yaml"
        backends = "".join(
            f"  - {{name: node{i}, kind: ollama, address: 127.0.0.1, port: {p}}}\n" for i, p in enumerate(ports)
        )
        manifest.write_text(f"name: bench\nbackends:\n{backends}")
        sollol = str(Path(sys.executable).with_name("sollol"))
        env = {**os.environ, "SOLLOL_STATE_DIR": str(work / "state")}
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            done = subprocess.run([sollol, "status", "-f", str(manifest)], env=env, capture_output=True, check=False)
            times.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
    finally:
        for proc in procs:
            proc.kill()
    print("| command | backends | median | best | runs |\n|---|---|---|---|---|")
    print(f"| `sollol status` (fresh process) | 3 Ollama | {statistics.median(times) * 1000:.0f} ms "
          f"| {min(times) * 1000:.0f} ms | {args.runs} |")  # fmt: skip


if __name__ == "__main__":
    main()
