"""`sollol run MODEL` with no prompt on a terminal: an interactive chat, driven through a real pty.

The pty is the program's controlling terminal (`setsid --ctty`), so Ctrl-C and Ctrl-D are keystrokes: the
terminal's line discipline turns ^C into SIGINT for the foreground process group and ^D into end of file,
exactly as when a person types them."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


class Terminal:
    """`python -m sollol_cli ...` in a session of its own whose controlling terminal is a pseudo-terminal."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            ["setsid", "--ctty", "--wait", sys.executable, "-m", "sollol_cli", *args],
            stdin=slave, stdout=slave, stderr=slave, env={**os.environ, "TERM": "dumb"},
        )  # fmt: skip
        os.close(slave)
        self.master = master
        self.screen = ""

    def read_until(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited for {text!r}; the screen shows:\n{self.screen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the program exited and closed the terminal
                    raise AssertionError(f"exited before {text!r}; the screen shows:\n{self.screen}") from None
        before, _, after = self.screen.partition(text)
        self.screen = after
        return before

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def exit_code(self) -> int:
        return self.proc.wait(timeout=15)

    def close(self) -> None:
        if self.proc.poll() is None:  # a failed test left it running
            self.proc.kill()
            self.proc.wait(timeout=15)
        os.close(self.master)


CTRL_C, CTRL_D = "\x03", "\x04"


@pytest.fixture
def terminal() -> Iterator[Callable[[list[str]], Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(args: list[str]) -> Terminal:
        opened.append(Terminal(args))
        return opened[-1]

    yield open_terminal
    for term in opened:
        term.close()


@pytest.fixture
def chat_manifest(ollama_standin, tmp_path: Path):  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "chatty", "tokens_per_second": 400.0, "response_tokens": 6})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: chat\nbackends:\n  - {{name: chatty, kind: ollama, address: 127.0.0.1, port: {standin.port}}}\n"
    )
    return standin, path


def test_conversation_is_kept_and_bye_quits(chat_manifest, terminal) -> None:  # type: ignore[no-untyped-def]
    standin, path = chat_manifest
    term = terminal(["run", "tiny", "-f", str(path)])
    term.read_until(">>> ")
    term.type("what is a cluster?\n")
    first = term.read_until(">>> ")
    answer = next(line for line in first.splitlines() if line.startswith("<chatty>"))  # below the echoed question
    assert len(answer.split()) == 6
    term.type("and a node?\n")
    term.read_until(">>> ")
    chats = [r for r in standin.stats()["recent"] if r["route"] == "/api/chat"]
    assert len(chats) == 2
    assert chats[0]["prompt"] == "user: what is a cluster?"
    # the second request carries the whole conversation, in order: question, the answer shown, question
    assert chats[1]["prompt"] == f"user: what is a cluster?\nassistant: {answer}\nuser: and a node?"
    term.type("/bye\n")
    assert term.exit_code() == 0


def test_ctrl_c_stops_the_answer_and_ctrl_d_quits(ollama_standin, terminal, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "slow", "tokens_per_second": 4.0})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: chat\nbackends:\n  - {{name: slow, kind: ollama, address: 127.0.0.1, port: {standin.port}}}\n"
    )
    term = terminal(["run", "tiny", "--num-predict", "8", "-f", str(path)])  # 2 s per answer
    term.read_until(">>> ")
    term.type("tell me a long story\n")
    term.read_until("<slow>")  # the answer is streaming
    term.type(CTRL_C)
    term.read_until(">>> ", timeout=10)  # back at the prompt, the program still runs
    assert term.proc.poll() is None
    deadline = time.monotonic() + 5
    while standin.stats()["cancelled"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert standin.stats()["cancelled"] == 1, "the upstream request must be cancelled"
    term.type("short one\n")
    assert "<slow>" in term.read_until(">>> ")
    # the interrupted question was dropped from the conversation; the answered one is in it
    chats = [r for r in standin.stats()["recent"] if r["route"] == "/api/chat"]
    assert chats[-1]["prompt"] == "user: short one"
    term.type(CTRL_C)  # at an empty prompt it explains how to leave
    term.read_until("Use Ctrl + d or /bye to exit.")
    term.read_until(">>> ")
    term.type(CTRL_D)
    assert term.exit_code() == 0
