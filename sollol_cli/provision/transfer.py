"""Files sollol puts on nodes (llama.cpp binaries, GGUFs for a coordinator), checked by sha256 on arrival."""

from __future__ import annotations

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
    """Copy `local` to `final` under a name of its own (`tag`), then rename it over `final` (a running
    process keeps its inode: no "text file busy") and check the sha256 of what arrived."""
    tmp = f"{final}.upload-{tag}"
    await runner.run(f"mkdir -p {shell_word(final.rsplit('/', 1)[0])}", timeout=15, check=True)
    await runner.put_file(local, tmp, mode=mode, reporter=reporter)
    moved = await runner.run(
        f"mv -f {shell_word(tmp)} {shell_word(final)} && sha256sum {shell_word(final)}", timeout=600, check=True
    )
    got = moved.stdout.split()[0] if moved.stdout.split() else ""
    if got != sha256:
        await runner.run(f"rm -f {shell_word(final)}", timeout=15)
        raise TransferError(
            f"{runner.name}: checksum mismatch after upload of {local.name}: {got[:12]} != {sha256[:12]}"
        )
