"""`sollol run MODEL` with no prompt on a terminal: an interactive chat, driven through a real pty."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


class Terminal:
    """`python -m sollol_cli ...` with stdin/stdout/stderr on a pseudo-terminal, as a person runs it."""

    def __init__(self, args: list[str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sollol_cli", *args],
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env={**os.environ, "TERM": "dumb"},
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
                    break
        before, _, after = self.screen.partition(text)
        self.screen = after
        return before

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def interrupt(self) -> None:
        # what Ctrl-C does on a terminal: SIGINT to the foreground process group
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> int:
        code = self.proc.wait(timeout=15)
        os.close(self.master)
        return code


@pytest.fixture
def chat_manifest(ollama_standin, tmp_path: Path):  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "chatty", "tokens_per_second": 400.0, "response_tokens": 6})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: chat\nbackends:\n  - {{name: chatty, kind: ollama, address: 127.0.0.1, port: {standin.port}}}\n"
    )
    return standin, path


def test_conversation_is_kept_and_bye_quits(chat_manifest) -> None:  # type: ignore[no-untyped-def]
    standin, path = chat_manifest
    term = Terminal(["run", "tiny", "-f", str(path)])
    term.read_until(">>> ")
    term.type("what is a cluster?\n")
    first = term.read_until(">>> ")
    assert "<chatty>" in first
    term.type("and a node?\n")
    term.read_until(">>> ")
    chats = [r for r in standin.stats()["recent"] if r["route"] == "/api/chat"]
    assert len(chats) == 2
    # the second request carries the whole conversation: first question, first answer, second question
    assert "what is a cluster?" in chats[1]["prompt"] and "and a node?" in chats[1]["prompt"]
    assert "<chatty>" in chats[1]["prompt"]
    term.type("/bye\n")
    assert term.close() == 0


def test_ctrl_c_stops_the_answer_and_ctrl_d_quits(ollama_standin, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    standin = ollama_standin({"name": "slow", "tokens_per_second": 4.0})
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"name: chat\nbackends:\n  - {{name: slow, kind: ollama, address: 127.0.0.1, port: {standin.port}}}\n"
    )
    term = Terminal(["run", "tiny", "--num-predict", "8", "-f", str(path)])  # 2 s per answer
    term.read_until(">>> ")
    term.type("tell me a long story\n")
    term.read_until("<slow>")  # the answer is streaming
    term.interrupt()
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
    assert "short one" in chats[-1]["prompt"] and "long story" not in chats[-1]["prompt"]
    term.interrupt()  # Ctrl-C at an empty prompt explains how to leave
    term.read_until("Use Ctrl + d or /bye to exit.")
    term.type("\x04")  # Ctrl-D
    assert term.close() == 0
