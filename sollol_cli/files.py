"""Files on the controller that other sollol processes may read at any moment."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None, durable: bool = True) -> None:
    """Replace `path` so that a reader (another sollol process, or this one killed mid-write) sees the old
    content or the new, never half. `mode` sets the permissions before any byte is written (secrets).
    `durable` also survives a power cut (fsync before the replace). Without it a crash of the machine may
    leave the old content or an empty file: only for records that describe processes, which die with the
    machine too (and a record that does not parse is set aside by its reader). Saves milliseconds per write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.asynccontextmanager
async def held_lock(
    path: Path, holder: str, *, on_wait: Callable[[str], None] | None = None, poll_s: float = 0.05
) -> AsyncIterator[None]:
    """Hold `flock(2)` on `path` for the body: one holder at a time across processes, and across tasks of one
    process too (each call opens the file anew, and flock locks belong to the open file). The kernel drops the
    lock when the holder exits, so a killed process never leaves it stale. Polled rather than blocking in a
    thread, so a waiter can be cancelled. `holder` is written into the file; `on_wait` hears the current
    holder's text once, when this call has to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    told = True
                    on_wait(os.pread(fd, 400, 0).decode(errors="replace").strip() or "another sollol process")
                await asyncio.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


async def update_locked(path: Path, content: Callable[[], str], *, holder: str) -> None:
    """Read-modify-write `path` with no other process doing the same in between: under the lock
    `<path>.lock`, `content` reads what is there now and returns the new text, written atomically. For files
    several sollol processes merge their results into."""
    async with held_lock(path.with_name(f"{path.name}.lock"), holder):
        write_atomic(path, content())
