"""The CLI shell: start-up imports, exit codes, version."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import typer

from sollol_cli import __version__
from sollol_cli.cli._run import run
from sollol_cli.errors import PartialFailure, UnreachableError
from tests.unit.cli_helpers import invoke

HEAVY = ("aiohttp", "asyncssh", "gguf", "numpy")


@pytest.mark.parametrize("args", [["--help"], ["validate", "examples/clusters/homelab.yaml"]])
def test_startup_does_not_import_heavy_modules(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from sollol_cli.cli import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_version() -> None:
    result = invoke("--version")
    assert result.stdout == f"sollol {__version__}\n"
    assert result.exit_code == 0


def test_unknown_command_is_usage_error() -> None:
    result = invoke("frobnicate")
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (PartialFailure("2 of 3 nodes failed"), 1, "error: 2 of 3 nodes failed\n"),
        (UnreachableError("no node answered"), 4, "error: no node answered\n"),
        # the command already showed its per-node table: only the exit code is left to give
        (PartialFailure("2 of 3 nodes failed", reported=True), 1, ""),
        (UnreachableError("no node answered", reported=True), 4, ""),
        (KeyboardInterrupt(), 130, "interrupted\n"),
        (
            RuntimeError("boom"),
            1,
            "error: internal error: RuntimeError: boom (run again with --verbose for the traceback)\n",
        ),
    ],
)
def test_error_boundary(exc: BaseException, code: int, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> None:
        raise exc

    with pytest.raises(typer.Exit) as exit_info:
        run(body)
    assert exit_info.value.exit_code == code
    captured = capsys.readouterr()
    assert captured.err == message
    assert "Traceback" not in captured.err


def _commands(command: Any, path: str = "sollol") -> list[tuple[str, Any]]:
    """Every leaf command under typer's group, with its full name."""
    children = getattr(command, "commands", None)
    if children is None:
        return [(path, command)]
    return [found for name, child in children.items() for found in _commands(child, f"{path} {name}")]


def test_no_command_uses_an_option_name_twice() -> None:
    """Two options sharing `-f` parse as whichever was defined last: every flag must mean one thing."""
    from sollol_cli.cli import app

    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 10
    clashes = []
    for path, command in commands:
        seen: dict[str, str] = {}
        for param in command.params:
            for flag in [*param.opts, *param.secondary_opts]:
                if flag.startswith("-") and flag in seen:
                    clashes.append(f"{path}: {flag} is both {seen[flag]} and {param.name}")
                seen.setdefault(flag, str(param.name))
    assert clashes == []
