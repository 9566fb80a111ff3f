"""examples/multi_agent.py runs against two Ollama stand-ins: ten agents at once, answered by both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.api.test_typing_and_import import mypy
from tests.unit.gateway.conftest import MakeStandin

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "multi_agent.py"


def test_ten_agents_in_parallel_over_two_backends(standin: MakeStandin, tmp_path: Path) -> None:
    a, b = standin("a", num_parallel=2), standin("b", num_parallel=2)
    nodes = "".join(
        f"  - name: {s.name}\n    address: 127.0.0.1\n    transport: local\n"
        f"    ollama: {{port: {s.port}, models: [tiny], environment: {{OLLAMA_NUM_PARALLEL: '2'}}}}\n"
        for s in (a, b)
    )
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(f"name: agents\nnodes:\n{nodes}models:\n  - name: tiny\n")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(manifest), "--num-predict", "8"],
        capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    agents = [line for line in lines if line.startswith("agent ")]
    assert len(agents) == 10
    assert {line.split("<-")[1].split()[0] for line in agents} == {"a", "b"}
    for line in agents:  # each answer starts with the name of the stand-in that wrote it
        assert f"<{line.split('<-')[1].split()[0]}>" in line
    assert lines[-2].startswith("summary <- ")
    assert "10 agents and the summary in" in lines[-1] and "a: " in lines[-1] and "b: " in lines[-1]
    assert a.stats()["max_concurrency"] <= 2 and b.stats()["max_concurrency"] <= 2


def test_the_example_type_checks(tmp_path: Path) -> None:
    assert mypy(tmp_path, EXAMPLE.read_text()) == []
