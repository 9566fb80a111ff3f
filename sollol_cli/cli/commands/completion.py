"""`sollol completion SHELL`: the shell completion script (committed copies live in completions/)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish.")]) -> None:
    """Print the completion script for SHELL, e.g. `sollol completion bash > /etc/bash_completion.d/sollol`."""
    typer.echo(completion_script(shell.value), nl=False)


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="sollol", complete_var="_SOLLOL_COMPLETE", shell=shell) + "\n"
