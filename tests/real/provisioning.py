"""Helpers for real-test modules that provision a cluster once for all their tests."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from tests.unit.cli_helpers import invoke


@contextlib.contextmanager
def module_cluster(manifest: Path, state_dir: Path) -> Iterator[Path]:
    """A manifest a module's tests bring up themselves: state in `state_dir`, `down` after the last one."""
    os.environ["SOLLOL_STATE_DIR"] = str(state_dir)
    try:
        yield manifest
    finally:
        invoke("down", str(manifest), "-q")
        os.environ.pop("SOLLOL_STATE_DIR", None)


@contextlib.contextmanager
def provisioned(manifest: Path, state_dir: Path) -> Iterator[Path]:
    """`sollol up` the manifest for a module's tests (state in `state_dir`), and `down` after the last one."""
    with module_cluster(manifest, state_dir):
        result = invoke("up", str(manifest), "-q")
        assert result.exit_code == 0, result.stderr
        yield manifest
