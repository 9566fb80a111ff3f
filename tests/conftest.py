"""Shared fixtures. Every module in tests/harness/ is a pytest plugin (real sshd hosts, llama.cpp, models,
the Ollama stand-in); they are loaded here so test files just name the fixtures they need."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.harness.{path.stem}"
    for path in (Path(__file__).parent / "harness").glob("*.py")
    if not path.stem.startswith("_")
)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own state dir and never reads the user's manifest or ssh config by accident."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("SOLLOL_STATE_DIR", str(state))
    monkeypatch.delenv("SOLLOL_MANIFEST", raising=False)
    yield state
