"""The node-side process protocol: /proc/PID/stat parsing as a table, the shell text as exact text, and the
shell text run on this machine against a real process whose name has a space and a ')'."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from sollol_cli.provision.facts import RunningService, parse_facts
from sollol_cli.ssh.nodeproc import (
    SHELL_FUNCTIONS,
    check_text,
    parse_pidfile,
    process_start_time,
    scan_text,
    shell_word,
    start_text,
    start_time_from_stat,
    stop_text,
)

# fields 3..22 of a /proc/PID/stat line: the state, then 18 numbers, then the start time (field 22)
TAIL = "S 1 2 3 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0 987654 1234 56"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (f"42 (sleep) {TAIL}", 987654),
        (f"42 (my proc) {TAIL}", 987654),
        (f"42 (a) b (c) d) {TAIL}", 987654),  # the name ends at the LAST ')'
        (f"42 ()) {TAIL}", 987654),
        (f"42 (line\nbreak) {TAIL}", 987654),
        (f"42 (sleep) Z{TAIL[1:]}", None),  # a zombie is not running
        ("42 (sleep) S 1 2", None),
        ("", None),
        ("no parenthesis at all", None),
    ],
)
def test_start_time_from_stat(line: str, expected: int | None) -> None:
    assert start_time_from_stat(line) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("12 345 abcd rpc 10.0.0.1 50052", (12, 345, "abcd", "rpc", "10.0.0.1", 50052)),
        ("12 345 abcd rpc 10.0.0.1", None),  # truncated: a controller killed mid-write
        ("12 345 abcd rpc 10.0.0.1 50052 extra", None),
        ("x 345 abcd rpc 10.0.0.1 50052", None),
        ("", None),
    ],
)
def test_pidfile_parse(words: str, expected: tuple[object, ...] | None) -> None:
    assert parse_pidfile(words.split()) == expected


def test_shell_words() -> None:
    assert shell_word("$HOME/.sollol/a b") == "\"$HOME\"/'.sollol/a b'"
    assert shell_word("~/x") == '"$HOME"/x'
    assert shell_word("/opt/it's") == "'/opt/it'\"'\"'s'"


def test_stop_text() -> None:
    assert stop_text(12, 345, remove=["$HOME/.sollol/c/n/run/s.pid", "/tmp/s.key"], grace_s=0.3) == (
        f"( {SHELL_FUNCTIONS}if ! sollol_alive 12 345; then echo gone; exit 0; fi; kill -TERM 12 2>/dev/null; "
        "for i in $(seq 3); do sollol_alive 12 345 || { echo stopped; exit 0; }; sleep 0.1; done; "
        "kill -KILL 12 2>/dev/null; sleep 0.2; sollol_alive 12 345 && { echo still-running; exit 1; }; echo killed )"
        ' && rm -f "$HOME"/.sollol/c/n/run/s.pid /tmp/s.key'
    )


def test_check_text() -> None:
    assert check_text({}) == "true"
    assert check_text({"b": (2, 20), "a": (1, 10)}) == (
        f'{SHELL_FUNCTIONS}if sollol_alive 1 10; then echo "a alive"; else echo "a dead"; fi; '
        'if sollol_alive 2 20; then echo "b alive"; else echo "b dead"; fi'
    )


def sh(shell: str, script: str, env: dict[str, str]) -> str:
    result = subprocess.run([shell, "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_process_whose_name_has_a_space_and_a_parenthesis(tmp_path: Path, shell: str) -> None:
    """Start, check and stop a real process named `my proc) x` (its /proc/PID/stat name field has both)."""
    # a script's process is named after the script; it says it runs (and so bears that name) through a FIFO
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    script = tmp_path / "bin" / "my proc) x"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho up > {shell_word(str(ready))}\nsleep 60\n")
    script.chmod(0o755)
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    pidfile = "$HOME/run/sollol-lab-rpc-1234.pid"
    started = sh(shell, start_text(shell_word(str(script)), run_dir="$HOME/run", log="$HOME/log/my proc.log",
                                    pidfile=pidfile, record="d1 rpc 127.0.0.1 1234"), env)  # fmt: skip
    pid, start = (int(x) for x in started.split())
    try:
        assert ready.read_text() == "up\n"
        assert f"{pid} (my proc) x) " in Path(f"/proc/{pid}/stat").read_text()
        assert start == process_start_time(pid) and start > 0
        assert (tmp_path / "run/sollol-lab-rpc-1234.pid").read_text() == f"{pid} {start} d1 rpc 127.0.0.1 1234\n"
        assert sh(shell, check_text({"s": (pid, start), "reused": (pid, start + 1)}), env) == "reused dead\ns alive\n"
        (service,) = parse_facts(sh(shell, scan_text("$HOME/run"), env)).services.values()
        assert service == RunningService("sollol-lab-rpc-1234", pid, start, "d1", "rpc", "127.0.0.1", 1234, True)

        # a different start time is another process that reused the pid: left alone, its records kept
        assert sh(shell, stop_text(pid, start + 1, remove=[pidfile]), env) == "gone\n"
        assert sh(shell, check_text({"s": (pid, start)}), env) == "s alive\n"
        assert sh(shell, stop_text(pid, start, remove=[pidfile]), env) == "stopped\n"
        assert sh(shell, check_text({"s": (pid, start)}), env) == "s dead\n"
        assert not (tmp_path / "run/sollol-lab-rpc-1234.pid").exists()
        assert sh(shell, stop_text(pid, start), env) == "gone\n"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # its session: the script and its sleep
