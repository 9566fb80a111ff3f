"""Build progress: Ninja `[n/N]` and make `[ xx%]` status lines become StepProgress events; a failing step
raises BuildError naming the log file and quoting its last lines."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.errors import BuildError
from sollol_cli.llamacpp.build import parse_progress, run_logged


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[1/211] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o\n", (1, 211)),
        ("[211/211] Linking CXX executable bin/llama-server", (211, 211)),
        ("[ 45%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o", (45, 100)),
        ("[  3%] Built target build_info", (3, 100)),
        ("[100%] Linking CXX executable ../../bin/ggml-rpc-server", (100, 100)),
        ("-- Configuring done", None),
        ("ninja: no work to do.", None),
        ("In file included from [1/2] weird.h:", None),
        ("  [5/9] indented output of a compiler is not a status line", None),
        ("[abc/def] not numbers", None),
        ("", None),
    ],
)
def test_parse_progress(line: str, expected: tuple[int, int] | None) -> None:
    assert parse_progress(line) == expected


def script(*lines: str, exit_code: int = 0) -> list[str]:
    body = "".join(f"print({line!r}, flush=True)\n" for line in lines) + f"raise SystemExit({exit_code})\n"
    return [sys.executable, "-c", body]


def test_run_logged_reports_each_new_progress_and_logs_everything(tmp_path: Path) -> None:
    seen: list[events.Event] = []
    log = tmp_path / "build.log"
    cmd = script("[1/3] cc a.c", "warning: something", "[2/3] cc b.c", "[2/3] cc b.c", "[3/3] link")
    with log.open("w") as handle:
        run_logged(cmd, handle, log, seen.append, step="compile")
    assert seen == [
        events.StepProgress("llama.cpp", "compile", 1, 3),
        events.StepProgress("llama.cpp", "compile", 2, 3),
        events.StepProgress("llama.cpp", "compile", 3, 3),
    ]
    text = log.read_text()
    assert text.startswith(f"$ {sys.executable} -c ")
    assert "warning: something\n[2/3] cc b.c\n[2/3] cc b.c\n[3/3] link\n" in text


def test_run_logged_failure_names_the_log_and_quotes_its_tail(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    lines = [f"line {i}" for i in range(40)] + ["error: 'foo' was not declared in this scope"]
    with log.open("w") as handle, pytest.raises(BuildError) as caught:
        run_logged(script(*lines, exit_code=2), handle, log, events.ignore, step="compile")
    message = str(caught.value)
    first, *tail = message.splitlines()
    assert first == f"llama.cpp compile failed (exit 2); log: {log}; last lines:"
    assert tail[-1] == "  error: 'foo' was not declared in this scope"
    assert tail[0] == "  line 26"  # only the last 15 lines
    assert len(tail) == 15
    assert "line 0\n" in log.read_text()  # the log keeps everything


def test_run_logged_missing_program_is_a_build_error(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with log.open("w") as handle, pytest.raises(BuildError, match="could not run /nonexistent/cmake"):
        run_logged(["/nonexistent/cmake"], handle, log, events.ignore, step="configure")
