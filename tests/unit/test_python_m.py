"""`python -m sollol_cli ...` is the `sollol` command (the original SOLLOL documented `python -m sollol.serve`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import ollama

from tests.harness.ollama import StandinFactory


def test_python_m_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "sollol_cli", "--version"], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")
    assert re.fullmatch(r"sollol \S+\n", result.stdout)


def test_python_m_serve_answers_an_ollama_client(tmp_path: Path, ollama_standin: StandinFactory) -> None:
    backend = ollama_standin({"name": "n1"})
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(f"name: m\nbackends:\n  - {{kind: ollama, address: 127.0.0.1, port: {backend.port}}}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "sollol_cli", "serve", "-f", str(manifest), "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ},
    )  # fmt: skip
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()  # the line that says where it listens: the synchronisation point
        found = re.search(r"on (http://\S+) ", banner)
        assert found, banner
        models = ollama.Client(host=found.group(1)).list().models
        assert [m.model for m in models] == [m.model for m in ollama.Client(host=backend.url).list().models]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
