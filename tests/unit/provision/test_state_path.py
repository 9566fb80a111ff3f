"""A state path that cannot hold sollol's state file fails `up`/`down` in one line, before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.cli_helpers import invoke

# port 1 on loopback: nothing listens, so a command that got as far as connecting would report the node
MANIFEST = "name: lab\nssh: {port: 1, connect_timeout: 1}\nnodes:\n  - {name: a, address: 127.0.0.1, rpc: {}}\n"


@pytest.mark.parametrize("action", ["up", "down"])
def test_state_file_that_is_a_directory(action: str, tmp_path: Path, _isolated_state: Path) -> None:
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(MANIFEST)
    (_isolated_state / "clusters" / "lab.json").mkdir(parents=True)
    result = invoke(action, str(manifest), "-q")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: sollol's state file {_isolated_state}/clusters/lab.json is not a file; "
        "move it away or set SOLLOL_STATE_DIR to another directory\n"
    )


def test_state_directory_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = tmp_path / "cluster.yaml"
    manifest.write_text(MANIFEST)
    (tmp_path / "state").write_text("")
    monkeypatch.setenv("SOLLOL_STATE_DIR", str(tmp_path / "state"))
    result = invoke("down", str(manifest), "-q")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: sollol's state directory {tmp_path}/state is not a directory; "
        "move it away or set SOLLOL_STATE_DIR to another directory\n"
    )
