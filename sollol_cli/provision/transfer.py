"""Files sollol puts on nodes (llama.cpp binaries, GGUFs for a coordinator), checked by sha256 on arrival."""

from __future__ import annotations

import secrets
from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import SollolError
from sollol_cli.ssh.nodeproc import shell_word
from sollol_cli.ssh.runner import CommandRunner


class TransferError(SollolError):
    """Why: a file arrived on a node with another checksum than the one sent."""


async def remote_sha256(runner: CommandRunner, path: str) -> str | None:
    """The file's sha256 on the node, or None when it is not there."""
    result = await runner.run(f"[ -f {shell_word(path)} ] && sha256sum {shell_word(path)}", timeout=600)
    words = result.stdout.split()
    return words[0] if result.ok and words else None


async def upload_checked(
    runner: CommandRunner,
    local: Path,
    final: str,
    sha256: str,
    *,
    mode: int,
    reporter: events.Reporter = events.ignore,
    tag: str,
) -> None:
    """Copy `local` to a name of its own (`tag` plus a random part: unique per run, so two runs never write
    the same file), check the sha256 of what arrived there, then rename it over `final` (a running process
    keeps its inode: no "text file busy"). A mismatch removes only this run's copy, never `final`, which
    another run may have just put there and be starting."""
    tmp = f"{final}.upload-{tag}-{secrets.token_hex(4)}"
    await runner.run(f"mkdir -p {shell_word(final.rsplit('/', 1)[0])}", timeout=15, check=True)
    await runner.put_file(local, tmp, mode=mode, reporter=reporter)
    summed = await runner.run(f"sha256sum {shell_word(tmp)}", timeout=600)
    got = summed.stdout.split()[0] if summed.ok and summed.stdout.split() else ""
    if got != sha256:
        await runner.run(f"rm -f {shell_word(tmp)}", timeout=15)
        raise TransferError(
            f"{runner.name}: checksum mismatch after upload of {local.name}: {got[:12] or 'no file'} != {sha256[:12]}"
        )
    await runner.run(f"mv -f {shell_word(tmp)} {shell_word(final)}", timeout=60, check=True)
