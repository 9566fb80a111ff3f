"""Run a build on the node (`llama_cpp.build: node`): put the pinned sources there, run the plan's script
(nodeplan.py) over SSH and turn its output into progress events. The node keeps the log
(`sollol logs NODE build`) and the result; a failure is one line that points at that log.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import SollolError
from sollol_cli.llamacpp.build import SKIPPED_TOP_DIRS, parse_progress
from sollol_cli.llamacpp.nodeplan import CACHED, EXIT, STEP, NodeBuildPlan, build_script, tarball_path
from sollol_cli.provision.transfer import remote_sha256, upload_checked
from sollol_cli.ssh.runner import CommandRunner

STEP_NAME = "build"


class NodeBuildError(SollolError):
    """Why: llama.cpp did not build on the node; its log there says more."""


@dataclass(frozen=True)
class SourceTarball:
    """The pinned llama-cpp-python sdist on the controller (it vendors llama.cpp's tree)."""

    path: Path
    sha256: str


@dataclass
class _Progress:
    """What the script's output said so far."""

    node: str
    reporter: events.Reporter
    step: str = "source"
    status: int | None = None
    cached: bool = False
    last: tuple[int, int] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=3))  # the last lines, for a failure's message

    def line(self, text: str) -> None:
        if text.startswith(f"{STEP} "):
            self.step = text.split(" ", 1)[1].strip()
            self.reporter(events.StepStarted(self.node, STEP_NAME, self.step))
        elif text.startswith(f"{EXIT} "):
            word = text.split(" ", 1)[1].strip()
            self.status = int(word) if word.lstrip("-").isdigit() else -1
        elif text.strip() == CACHED:
            self.cached = True
        else:
            if text.strip():
                self.tail.append(text.strip())
            progress = parse_progress(text)
            if progress is not None and progress != self.last:
                self.last = progress
                self.reporter(events.StepProgress(self.node, STEP_NAME, progress[0], progress[1], self.step))


async def build_on_node(
    runner: CommandRunner,
    plan: NodeBuildPlan,
    source: SourceTarball,
    *,
    node: str,
    home: str,
    log: str,
    reporter: events.Reporter = events.ignore,
) -> bool:
    """Build on the node; True when this run built, False when another run had just finished the same build.
    `log` is the node's build log (an absolute path)."""
    tarball = tarball_path(home)
    if await remote_sha256(runner, tarball) != source.sha256:
        await upload_checked(runner, source.path, tarball, source.sha256, mode=0o644, reporter=reporter, tag=node)
    seen = _Progress(node, reporter)
    pending = ""
    async for chunk in runner.stream(build_script(plan, tarball, log, SKIPPED_TOP_DIRS)):
        pending += chunk
        *lines, pending = pending.split("\n")
        for line in lines:
            seen.line(line)
    if pending:
        seen.line(pending)
    if seen.cached:
        return False
    if seen.status != 0:
        exit_text = "no exit status: the connection ended" if seen.status is None else f"exit {seen.status}"
        last = seen.tail[-1] if seen.tail else "no output"
        raise NodeBuildError(
            f"llama.cpp {seen.step} failed on the node ({exit_text}): {last[:200]}; see `sollol logs {node} build`"
        )
    return True
