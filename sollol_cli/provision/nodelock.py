"""One `up` or `down` per node at a time, across processes and controllers: a lock on the node itself.

The lock is `flock` on a file in the node's run directory (per cluster and node, where the pidfiles are),
held by a small command that lives as long as the controller's SSH channel: it takes the lock, says
`locked`, and waits on its stdin. When the controller is done, or dies, the channel closes, the command
ends and the kernel releases the lock; a crashed `up` never leaves a stale lock. On the node, rather than
on the controller, so two controllers (or two users of one account) are kept apart too. A second run
waits for the first (and is told who holds it), then plans from what the first left: "unchanged".
Nodes without `flock` (not util-linux) are not locked.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
from collections.abc import AsyncGenerator, AsyncIterator

from sollol_cli import events
from sollol_cli.errors import SollolError
from sollol_cli.ssh.nodeproc import run_dir, shell_word
from sollol_cli.ssh.runner import CommandRunner

LOCK_NAME = "provision.lock"


class LockError(SollolError):
    """Why: the node's provisioning lock could not be taken (the node's shell failed before locking)."""


def lock_script(cluster: str, node: str, holder: str) -> str:
    """Take the node's lock (waiting if held, after printing `waiting <holder>`), print `locked`, hold it
    until stdin closes. The holder line is written into the lock file for the next waiter to show."""
    path = shell_word(f"{run_dir(cluster, node)}/{LOCK_NAME}")
    return (
        f'f={path}; mkdir -p "$(dirname "$f")" && exec 9>>"$f" || exit 1\n'
        "if command -v flock >/dev/null 2>&1 && ! flock -n 9; then\n"
        '  echo "waiting $(head -n1 "$f")"; flock 9 || exit 1\n'
        "fi\n"
        f'echo {shlex.quote(holder)} > "$f"; echo locked\n'
        "exec cat >/dev/null\n"
    )


def holder_text(action: str) -> str:
    return f"sollol {action} (pid {os.getpid()} on {socket.gethostname()})"


@contextlib.asynccontextmanager
async def node_lock(
    runner: CommandRunner, cluster: str, node: str, action: str, reporter: events.Reporter = events.ignore
) -> AsyncIterator[None]:
    """Hold the node's provisioning lock for the body; waits (and reports whom for) while another holds it."""
    stream = runner.stream(lock_script(cluster, node, holder_text(action)))
    text = ""
    try:
        while "locked\n" not in text:
            try:
                text += await anext(stream)
            except StopAsyncIteration:
                raise LockError(f"{node}: could not lock {run_dir(cluster, node)}/{LOCK_NAME}") from None
            if text.startswith("waiting") and "\n" in text and "locked\n" not in text:
                who = text.split("\n", 1)[0].removeprefix("waiting").strip() or "another sollol up or down"
                reporter(events.StepStarted(node, "waiting", f"for {who} on this node"))
                text = text.split("\n", 1)[1]
        yield
    finally:
        if isinstance(stream, AsyncGenerator):
            await stream.aclose()
