"""Speed-aware sharding with real components: two rpc-servers, one in a cgroup with a quarter of one CPU, the
`big` generated model (16 layers + output, 543 MB) sharded over them with 600 MiB allowed on each, so neither
holds it all. Driven by the speed-split benchmark in its quick mode (benchmarks/speed_split.py: sollol in-process,
as `sollol run` drives it), once split by memory (`split_by: memory`, what sollol did before) and once by
measured speed.

Asserted: sollol measured both rpc-servers and found the throttled one slower; the speed split filled the fast
one to its memory and gave the slow one the rest, in `--rpc` order, and the coordinator's own log says it holds
exactly those layers' weights; greedy text is the same under both splits; nothing is left running and the
cgroup is gone. No assertion on tokens/s: the benchmark reports them, a shared 2-core machine cannot hold them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.llamacpp.tinymodel import ensure_tiny_model
from sollol_cli.settings import Settings
from tests.real.test_bench_sharding import gone

pytestmark = [pytest.mark.real, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "speed_split.py"
MIB = 1024**2
N_LAYER = 16  # the big preset; layer 16 is the output layer


def held_mib(model: Path, layers: list[int]) -> float:
    """MiB of the weights of `layers` (N_LAYER: the output layer), from the GGUF's tensor table."""
    reader = gguf.GGUFReader(model)
    total = 0
    for tensor in reader.tensors:
        name = tensor.name
        block = int(name.split(".")[1]) if name.startswith("blk.") else None
        if (block is not None and block in layers) or (N_LAYER in layers and name.startswith("output")):
            total += int(tensor.n_bytes)
    return total / MIB


def layers_of(line: str) -> list[int]:
    """`placement HOST:PORT: layers 2-16, model ...` -> [2, ..., 16]."""
    span = line.split(": layers ", 1)[1].split(",", 1)[0]
    first, last = span.split("-")
    return list(range(int(first), int(last) + 1))


def test_the_speed_split_fills_the_fast_backend_and_keeps_the_greedy_text(
    tmp_path: Path, llama_bins: LlamaCppBinaries
) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--slow-share", "0.25", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    slow, fast = result["endpoints"]["slow"], result["endpoints"]["fast"]

    # both measured (calibration.py), kept per endpoint and protocol; the quarter-CPU one is the slow one
    speeds = {key.split()[0]: value["bytes_per_s"] for key, value in result["calibration"].items()}
    assert set(speeds) == {slow, fast}
    assert speeds[fast] > 1.5 * speeds[slow], result["calibration"]  # beyond the tolerance: speed decides

    # memory split (equal memory, equal shares): slow first in --rpc order, 9 layers, fast the other 8
    (memory,) = result["placement"]["memory"]
    assert memory["split_by"] == "memory" and memory["rpc"] == [slow, fast]
    assert [layers_of(line) for line in memory["placement"][:2]] == [list(range(9)), list(range(9, 17))]

    # speed split: each layer ~35.9 MB by sollol's estimate ((543 MB + 67 MB of KV) / 17), 90% of 600 MiB holds
    # 15 of the 17; the fast backend gets those (layers 2-16, output included), the slow one only the first 2
    (speed,) = result["placement"]["speed"]
    assert speed["split_by"] == "speed" and speed["rpc"] == [slow, fast] and speed["split"] == [2.0, 15.0]
    slow_layers, fast_layers = (layers_of(line) for line in speed["placement"][:2])
    assert (slow_layers, fast_layers) == ([0, 1], list(range(2, 17)))
    # ... and that is what the coordinator loaded: its log's buffer sizes are those layers' weights
    model = ensure_tiny_model(Settings().cache_dir, "big")
    assert speed["log_model_mib"][slow] == pytest.approx(held_mib(model, slow_layers), abs=0.5)
    assert speed["log_model_mib"][fast] == pytest.approx(held_mib(model, fast_layers), abs=0.5)
    # what `sollol run -v` and `sollol status` show under the placement
    assert speed["speed"].startswith("speed: split by measured speed (fastest rpc backend filled first), expected ")
    assert speed["expected_tokens_per_s"] > 0

    # greedy decoding gives the same text whichever way the layers are split
    assert result["identical_text"] == result["compared"] == 2
    assert all(sample["text"] for samples in result["samples"].values() for sample in samples)

    # 2 rpc-servers and 2 coordinators, all stopped; the cgroup removed
    assert len(result["pids"]) == 4 and all(gone(pid) for pid in result["pids"])
    assert not Path(result["cgroup"]).exists()
