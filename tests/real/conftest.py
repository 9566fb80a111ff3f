"""Fixtures for real-test modules whose tests build on each other's state."""

from __future__ import annotations

from pathlib import Path

import pytest

from sollol_cli.llamacpp.build import LlamaCppBinaries, build
from sollol_cli.settings import Settings


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state dir for a whole module."""
    return tmp_path_factory.mktemp("module-state")


@pytest.fixture
def shared_state(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the module's state dir: coordinator records of earlier tests are seen by later ones.
    Opt in with `pytestmark = [..., pytest.mark.usefixtures("shared_state")]`."""
    monkeypatch.setenv("SOLLOL_STATE_DIR", str(state_dir))


@pytest.fixture(scope="module")
def vulkan_bins() -> LlamaCppBinaries:
    """sollol's Vulkan build (cached; ~13 min on 2 cores the first time), for the tests marked `vulkan`."""
    return build(Settings().cache_dir, backend="vulkan")
