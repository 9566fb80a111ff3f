"""The exception tree and the one source of exit codes: `cli/_run.py` is the one place that catches these
and exits with their `exit_code` (README's exit-code table lists the same codes; a test keeps them equal).
Modules may subclass these, but only this module sets an `exit_code`.

SollolError (exit 1)                 -- anything sollol reports without a traceback
├── UsageError (exit 2)              -- bad arguments / options / environment the user can fix
│   └── ManifestNotFound (exit 2)    -- no manifest given and none at the default places
├── ManifestError (exit 3)           -- the manifest is invalid; carries every problem with file:line:col
├── UnreachableError (exit 4)        -- no node / backend could be reached at all
├── PartialFailure (exit 1)          -- some nodes or backends failed, the others went on
├── BackendError (exit 1)            -- a backend answered with an error or broke a stream
│   ├── ModelNotFound (exit 1)       -- no backend has the model
│   ├── NoHealthyBackend (exit 4)    -- backends have (or may have) the model but none of them is up
│   ├── NotEnoughMemory (exit 1)     -- the backends that are up cannot hold the model
│   └── QueueFull (exit 1)           -- every backend busy and the wait queue full or expired
├── BuildError (exit 1)              -- building llama.cpp failed
└── SshError (exit 1)                -- an SSH-level failure on one node (wrapped per node, never raised raw)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class SollolError(Exception):
    """Why: a failure we can explain in one line; the CLI prints `error: <message>` and exits `exit_code`."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None, reported: bool = False) -> None:
        """`reported`: the command has shown this failure already (e.g. a table of per-node results), so
        the boundary only exits with the code and prints nothing more."""
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.reported = reported

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}; {self.hint}"


class UsageError(SollolError):
    """Why: the user asked for something that cannot work as typed; retrying with other input fixes it."""

    exit_code = 2


class ManifestNotFound(UsageError):
    """Why: commands need a cluster description and none was given or found at the default places."""


@dataclass(frozen=True)
class ManifestProblem:
    """One validation problem, located in the source file."""

    file: str
    line: int  # 1-based
    column: int  # 1-based
    path: str  # dotted path into the document, e.g. "nodes[0].rpc.port"
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestError(SollolError):
    """Why: the manifest is invalid; all problems are reported at once so one edit round fixes them."""

    exit_code = 3

    def __init__(self, problems: list[ManifestProblem]) -> None:
        self.problems = problems
        count = len(problems)
        first = str(problems[0]) if problems else "invalid manifest"
        more = f" (and {count - 1} more)" if count > 1 else ""
        super().__init__(first + more)


class UnreachableError(SollolError):
    """Why: nothing answered, so there is nothing partial to report (`up`/`down` reached no node, `status`
    reached no backend)."""

    exit_code = 4


class PartialFailure(SollolError):
    """Why: some nodes failed; the rest did their work and the caller has already rendered per-node results
    (`up`/`down` with a failed or unreachable node, `status` with a backend that does not answer)."""

    exit_code = 1


class BackendError(SollolError):
    """Why: a backend refused or broke a request."""


class ModelNotFound(BackendError):
    """Why: no node in the cluster has the model."""


class NoHealthyBackend(BackendError):
    """Why: nodes have (or may have) the model but none of them answers right now."""

    exit_code = 4


class NotEnoughMemory(BackendError):
    """Why: some backends answer, but together they cannot hold the model (others that could are missing)."""


class QueueFull(BackendError):
    """Why: every suitable backend is at its slot limit and the bounded wait queue is full or timed out."""


class BuildError(SollolError):
    """Why: the llama.cpp build failed; the log file path is in the message."""


class SshError(SollolError):
    """Why: connecting to or running a command on one node failed."""
