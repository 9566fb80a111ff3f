"""Committed generated files (schema, completions, README --help blocks) must match what the code generates."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("generate", ROOT / "scripts" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED = _generator().generated()


@pytest.mark.parametrize("path", sorted(GENERATED), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_file_is_current(path: Path) -> None:
    assert path.read_text() == GENERATED[path], f"{path} is stale: run `python scripts/generate.py`"


def test_readme_has_help_blocks() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "<!-- help: sollol -->" in readme
    assert "<!-- help: sollol validate -->" in readme


def test_every_example_points_at_the_schema() -> None:
    examples = sorted((ROOT / "examples" / "clusters").glob("*.yaml"))
    assert len(examples) >= 3
    for example in examples:
        first = example.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=./sollol-cluster.schema.json", example


def test_schema_rejects_unknown_keys() -> None:
    schema = json.loads((ROOT / "examples" / "clusters" / "sollol-cluster.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) >= {
        "nodes",
        "models",
        "ssh",
        "gateway",
        "routing",
        "discovery",
        "backends",
    }


def test_completion_script_answers() -> None:
    """The committed bash script calls `sollol` back with _SOLLOL_COMPLETE; that must list commands."""
    env = {"_SOLLOL_COMPLETE": "complete_bash", "COMP_WORDS": "sollol va", "COMP_CWORD": "1", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-m", "sollol_cli"], env=env, capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert done.stdout.split() == ["validate"]
