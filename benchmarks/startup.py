"""Start-up time of `sollol --help` and `sollol validate` (target: well under 0.3 s).

    python benchmarks/startup.py [--runs 20]

Runs each command as a fresh process (the console script next to this interpreter) and prints the
median and best wall-clock time.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(cmd: list[str], runs: int) -> list[float]:
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache and .pyc files
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sollol = str(Path(sys.executable).with_name("sollol"))
    cases = {
        "sollol --help": [sollol, "--help"],
        "sollol validate examples/clusters/hybrid.yaml": [
            sollol,
            "validate",
            str(ROOT / "examples/clusters/hybrid.yaml"),
        ],
        "python -c pass (interpreter alone)": [sys.executable, "-c", "pass"],
    }
    print("| command | median | best | runs |\n|---|---|---|---|")
    for name, cmd in cases.items():
        times = measure(cmd, args.runs)
        print(f"| `{name}` | {statistics.median(times) * 1000:.0f} ms | {min(times) * 1000:.0f} ms | {args.runs} |")


if __name__ == "__main__":
    main()
