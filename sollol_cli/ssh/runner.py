"""Run commands and move files on one node: `SshRunner` over SSH, `LocalRunner` on this machine.

This is the only module that imports asyncssh. Every failure leaves as an `SshError` whose one-line
message names the node and says what to do, so callers can report per-node results without tracebacks.

Host-key policies:
- strict: the key must already be in `known_hosts_path` (default ~/.ssh/known_hosts).
- accept-new: trust on first use. A host with no entry in either known_hosts file has its key recorded in
  sollol's own file; a key that differs from a recorded one is refused (OpenSSH's `accept-new`).
- off: no checking at all; the caller warns about it.
Nothing from the user's environment leaks in unless asked: no ssh-agent unless `use_agent`, no
~/.ssh/config unless `use_ssh_config` (asyncssh treats `config=()` as "the default file"; `None` is none).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

with warnings.catch_warnings():
    # asyncssh still offers DSA keys, and cryptography >= 47 warns on import that DSA is deprecated; sollol never
    # uses DSA, and the warning would reach every user's terminal
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=UserWarning)
    import asyncssh

from sollol_cli.errors import SshError, UsageError
from sollol_cli.events import Reporter, StepDone, StepFailed, StepProgress, StepStarted, ignore
from sollol_cli.files import write_atomic
from sollol_cli.manifest.models import HostKeyPolicy

# asyncssh's default order puts chacha20-poly1305 first, which it computes with a new cipher context per
# packet: ~7x the CPU of AES-GCM, which runs in OpenSSL with the CPU's AES instructions. With many nodes the
# controller's CPU is what `up` waits on. Every algorithm here is one OpenSSH offers by default.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
_PART = ".sollol-part"  # uploads land here first, then are renamed: a running binary is never overwritten


@dataclass(frozen=True)
class CommandResult:
    exit_status: int  # negative signal number when the command was killed by a signal
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class RemoteFileNotFound(SshError):
    """Why: `read_file` of a path that does not exist; callers often treat that as "not set up yet"."""


class CommandRunner(Protocol):
    """Commands and files on one node. Use as `async with runner:` so the connection is always closed."""

    @property
    def name(self) -> str: ...

    async def run(
        self, command: str, *, timeout: float | None = None, input: str | None = None, check: bool = False
    ) -> CommandResult:
        """Run `command` in a shell; `check=True` raises SshError on a non-zero exit status."""
        ...

    def stream(self, command: str) -> AsyncIterator[str]:
        """Yield the command's stdout as it arrives; leaving the loop stops the command."""
        ...

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o755, reporter: Reporter = ignore) -> None:
        """Copy a file to the node (atomically: written aside, then renamed), emitting progress events."""
        ...

    async def read_file(self, remote: str, *, limit: int | None = None) -> bytes:
        """The file's bytes (at most `limit` of them, from the start)."""
        ...

    async def get_file(self, remote: str, local: Path, *, reporter: Reporter = ignore) -> None:
        """Copy a (large) file from the node to `local`, emitting progress events."""
        ...

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


# ----- shared helpers -----------------------------------------------------------------------------------


def _short(command: str, limit: int = 60) -> str:
    lines = command.strip().splitlines() or [""]
    first = lines[0]
    return first if len(first) <= limit and len(lines) == 1 else first[:limit] + "..."


def _checked(node: str, command: str, result: CommandResult, check: bool) -> CommandResult:
    if check and not result.ok:
        last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]
        detail = f": {last[0]}" if last else ""
        raise SshError(f"{node}: `{_short(command)}` failed with exit status {result.exit_status}{detail}")
    return result


def _timed_out(node: str, command: str, timeout: float | None) -> SshError:
    return SshError(f"{node}: `{_short(command)}` timed out after {timeout:g}s")


async def _local_size(node: str, local: Path) -> int:
    try:
        return (await asyncio.to_thread(local.stat)).st_size
    except OSError as exc:
        raise SshError(f"{node}: cannot upload {local}: {exc.strerror or exc}") from None


class _Progress:
    """Byte counts -> StepProgress events, about one per percent (at least 1 MiB apart) plus the last."""

    def __init__(self, reporter: Reporter, subject: str, step: str, total: int) -> None:
        self._reporter, self._subject, self._step, self._total = reporter, subject, step, total
        self._every = max(total // 100, 1 << 20)
        self._last: int | None = None

    def __call__(self, done: int) -> None:
        due = self._last is None or done - self._last >= self._every or done >= self._total
        if due and done != self._last:
            self._last = done
            self._reporter(StepProgress(self._subject, self._step, completed=done, total=self._total))


# ----- SSH ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _KnownHosts:
    path: Path
    text: str
    entries: asyncssh.SSHKnownHosts


def _read_known_hosts(node: str, path: Path) -> _KnownHosts:
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""  # no file yet = nothing known; strict then refuses with a hint how to add the key
    except OSError as exc:
        raise SshError(f"{node}: cannot read known_hosts file {path}: {exc.strerror or exc}") from None
    try:
        return _KnownHosts(path, text, asyncssh.import_known_hosts(text))
    except ValueError as exc:
        raise SshError(f"{node}: cannot parse known_hosts file {path}: {exc}") from None


def _host_pattern(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _HostKeyGuard(asyncssh.SSHClient):
    """Called by asyncssh for a host key with no trusted match: accepts it (accept-new, host not recorded
    anywhere) or refuses it, remembering which files hold a different key so the error can name them."""

    def __init__(self, files: Sequence[_KnownHosts], trust_first_use: bool) -> None:
        self._files = files
        self._trust_first_use = trust_first_use
        self.presented: asyncssh.SSHKey | None = None
        self.files_with_other_key: list[Path] = []
        self.accepted_new = False

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key
        lookup_port = None if port == 22 else port
        self.files_with_other_key = [f.path for f in self._files if any(f.entries.match(host, addr, lookup_port)[:2])]
        self.accepted_new = self._trust_first_use and not self.files_with_other_key
        return self.accepted_new


def _record_host_key(node: str, path: Path, host: str, port: int, key: asyncssh.SSHKey) -> None:
    public = " ".join(key.export_public_key("openssh").decode().split()[:2])
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a") as out:
            out.write(f"{_host_pattern(host, port)} {public}\n")
    except OSError as exc:
        raise SshError(f"{node}: cannot record the host key in {path}: {exc.strerror or exc}") from None


def _check_identity_files(node: str, paths: Sequence[Path] | None) -> list[str] | None:
    """Read keys up front so a missing or encrypted file gets its own message, not a vague auth failure."""
    if paths is None:
        return None
    checked = []
    for raw in paths:
        path = Path(raw).expanduser()
        try:
            asyncssh.read_private_key(path)
        except FileNotFoundError:
            raise SshError(f"{node}: identity file {path} does not exist") from None
        except OSError as exc:
            raise SshError(f"{node}: cannot read identity file {path}: {exc.strerror or exc}") from None
        except asyncssh.KeyImportError as exc:
            if "passphrase" in str(exc).lower():
                raise SshError(
                    f"{node}: identity file {path} is encrypted; load it into ssh-agent and set ssh.use_agent: true"
                ) from None
            raise SshError(f"{node}: identity file {path} is not a usable private key: {exc}") from None
        checked.append(str(path))
    return checked


def _host_key_error(
    node: str, host: str, port: int, guard: _HostKeyGuard, exc: asyncssh.Error, known_hosts: Path
) -> SshError:
    where = f"{host}:{port}"
    if guard.presented is None:
        return SshError(f"{node}: host key of {where} was refused: {exc.reason}")
    if guard.files_with_other_key:
        file = guard.files_with_other_key[0]
        return SshError(
            f"{node}: host key changed for {where} (possible man-in-the-middle); remove the old key from "
            f"{file} if the node was reinstalled (ssh-keygen -f {file} -R '{_host_pattern(host, port)}')"
        )
    return SshError(
        f"{node}: unknown host key for {where} ({guard.presented.get_fingerprint()}); it is not in {known_hosts}: "
        f"check the fingerprint and add it (ssh-keyscan -p {port} {host} >> {known_hosts}) "
        "or set ssh.host_key_policy: accept-new"
    )


def _connect_error(node: str, host: str, port: int, user: str, timeout: float, exc: Exception) -> SshError:
    where = f"{host}:{port}"
    if isinstance(exc, asyncssh.PermissionDenied):
        return SshError(f"{node}: permission denied for user {user} at {where} (check identity_file)")
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return SshError(f"{node}: connection to {where} timed out after {timeout:g}s")
    if isinstance(exc, ConnectionRefusedError):
        return SshError(f"{node}: connection refused by {where} (is sshd running on port {port}?)")
    if isinstance(exc, socket.gaierror):
        return SshError(f"{node}: cannot resolve host name '{host}'")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return SshError(f"{node}: no route to {where} (is the node up and its address right?)")
    if isinstance(exc, OSError):
        return SshError(f"{node}: cannot connect to {where}: {exc.strerror or exc}")
    if isinstance(exc, asyncssh.Error):
        return SshError(f"{node}: SSH connection to {where} failed: {exc.reason}")
    return SshError(f"{node}: invalid SSH settings for {where}: {exc}")


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _sftp_path(remote: str) -> str:
    """SFTP paths are relative to the login directory, so `~/x` (or `$HOME/x`) becomes `x` and means what a
    shell means."""
    if remote in ("~", "$HOME"):
        return "."
    for prefix in ("~/", "$HOME/"):
        if remote.startswith(prefix):
            return remote[len(prefix) :] or "."
    return remote


class SshRunner:
    """One node over one SSH connection (commands share it; SFTP opens on first file operation)."""

    def __init__(self, name: str, conn: asyncssh.SSHClientConnection, where: str) -> None:
        self.name = name
        self._conn = conn
        self._where = where
        self._sftp: asyncssh.SFTPClient | None = None
        self._sftp_lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        node_name: str,
        host: str,
        port: int,
        user: str,
        *,
        client_keys: Sequence[Path] | None = None,
        known_hosts_path: Path | None = None,
        policy: HostKeyPolicy | str = "strict",  # validated below; the manifest hands over `.value`
        sollol_known_hosts: Path | None = None,
        use_agent: bool = False,
        use_ssh_config: bool = False,
        connect_timeout: float = 10.0,
        keepalive: float = 30.0,
    ) -> SshRunner:
        """Connect and log in. `client_keys=None` means OpenSSH's default keys (~/.ssh/id_*)."""
        try:
            chosen = HostKeyPolicy(policy)
        except ValueError:
            raise UsageError(f"unknown host_key_policy '{policy}'", hint="use strict, accept-new or off") from None
        keys = _check_identity_files(node_name, client_keys)
        user_file = (known_hosts_path or Path("~/.ssh/known_hosts")).expanduser()
        files: list[_KnownHosts] = []
        if chosen is not HostKeyPolicy.off:
            files.append(_read_known_hosts(node_name, user_file))
        if chosen is HostKeyPolicy.accept_new:
            if sollol_known_hosts is None:
                raise UsageError("host_key_policy accept-new needs sollol's own known_hosts file")
            files.append(_read_known_hosts(node_name, sollol_known_hosts))
        guard = _HostKeyGuard(files, trust_first_use=chosen is HostKeyPolicy.accept_new)
        known_hosts = asyncssh.import_known_hosts("\n".join(f.text for f in files)) if files else None
        try:
            async with asyncio.timeout(connect_timeout + 5):  # a safety net around asyncssh's own timeout
                conn = await asyncssh.connect(
                    host,
                    port,
                    username=user,
                    client_keys=keys if keys is not None else (),
                    known_hosts=known_hosts,
                    agent_path=() if use_agent else None,
                    config=() if use_ssh_config else None,
                    password_auth=False,
                    kbdint_auth=False,
                    connect_timeout=connect_timeout,
                    encryption_algs=ENCRYPTION_ALGS,
                    keepalive_interval=keepalive,
                    keepalive_count_max=3,
                    client_factory=lambda: guard,
                    encoding="utf-8",
                    errors="replace",
                )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise _host_key_error(node_name, host, port, guard, exc, user_file) from None
        except (asyncssh.Error, OSError, ValueError) as exc:
            # Key exchange succeeded before a login failure, so a first-seen key is proven all the same.
            if guard.accepted_new and guard.presented and sollol_known_hosts:
                _record_host_key(node_name, sollol_known_hosts, host, port, guard.presented)
            raise _connect_error(node_name, host, port, user, connect_timeout, exc) from None
        runner = cls(node_name, conn, f"{host}:{port}")
        if guard.accepted_new and guard.presented and sollol_known_hosts:
            try:
                _record_host_key(node_name, sollol_known_hosts, host, port, guard.presented)
            except SshError:
                await runner.close()
                raise
        return runner

    def _lost(self, exc: BaseException, doing: str) -> SshError:
        reason = exc.reason if isinstance(exc, asyncssh.Error) else (getattr(exc, "strerror", None) or exc)
        return SshError(f"{self.name}: connection to {self._where} failed while {doing}: {reason}")

    async def run(
        self, command: str, *, timeout: float | None = None, input: str | None = None, check: bool = False
    ) -> CommandResult:
        try:
            done = await self._conn.run(command, input=input, timeout=timeout, check=False)
        except asyncssh.TimeoutError:
            raise _timed_out(self.name, command, timeout) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"running `{_short(command)}`") from None
        status = done.returncode if done.returncode is not None else -1
        return _checked(self.name, command, CommandResult(status, _text(done.stdout), _text(done.stderr)), check)

    async def stream(self, command: str) -> AsyncIterator[str]:
        try:
            async with self._conn.create_process(command, stderr=asyncssh.DEVNULL) as process:
                try:
                    while chunk := await process.stdout.read(65536):
                        yield _text(chunk)
                finally:
                    if process.exit_status is None:
                        with contextlib.suppress(asyncssh.Error, OSError):
                            process.terminate()
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"running `{_short(command)}`") from None

    async def _sftp_client(self) -> asyncssh.SFTPClient:
        async with self._sftp_lock:
            if self._sftp is None:
                try:
                    self._sftp = await self._conn.start_sftp_client()
                except (asyncssh.Error, OSError) as exc:
                    raise self._lost(exc, "starting SFTP") from None
            return self._sftp

    @staticmethod
    async def _replace(sftp: asyncssh.SFTPClient, source: str, target: str) -> None:
        try:
            await sftp.posix_rename(source, target)
        except asyncssh.SFTPOpUnsupported:  # servers without the OpenSSH extension
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(target)
            await sftp.rename(source, target)

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o755, reporter: Reporter = ignore) -> None:
        step = f"upload {local.name}"
        total = await _local_size(self.name, local)
        sftp = await self._sftp_client()
        reporter(StepStarted(self.name, step, detail=remote))
        progress = _Progress(reporter, self.name, step, total)
        target = _sftp_path(remote)
        part = target + _PART
        try:
            # follow_symlinks: upload the file a symlink points at, never the link itself
            await sftp.put(
                str(local), part, follow_symlinks=True, progress_handler=lambda _src, _dst, done, _total: progress(done)
            )
            await sftp.chmod(part, mode)
            await self._replace(sftp, part, target)
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.Error) else (exc.strerror or str(exc))
            reporter(StepFailed(self.name, step, reason=reason))
            with contextlib.suppress(asyncssh.Error, OSError):
                await sftp.remove(part)
            raise SshError(f"{self.name}: cannot upload {local.name} to {remote}: {reason}") from None
        progress(total)
        reporter(StepDone(self.name, step, detail=f"{total} bytes"))

    async def read_file(self, remote: str, *, limit: int | None = None) -> bytes:
        sftp = await self._sftp_client()
        try:
            async with sftp.open(_sftp_path(remote), "rb") as handle:
                data = await handle.read(-1 if limit is None else limit)
        except asyncssh.SFTPNoSuchFile:
            raise RemoteFileNotFound(f"{self.name}: {remote} does not exist") from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"reading {remote}") from None
        return data if isinstance(data, bytes) else data.encode()

    async def get_file(self, remote: str, local: Path, *, reporter: Reporter = ignore) -> None:
        step = f"download {Path(remote).name}"
        sftp = await self._sftp_client()
        try:
            total = int((await sftp.stat(_sftp_path(remote))).size or 0)
        except asyncssh.SFTPNoSuchFile:
            raise RemoteFileNotFound(f"{self.name}: {remote} does not exist") from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"reading {remote}") from None
        reporter(StepStarted(self.name, step, detail=remote))
        progress = _Progress(reporter, self.name, step, total)
        try:
            await sftp.get(
                _sftp_path(remote), str(local), progress_handler=lambda _src, _dst, done, _total: progress(done)
            )
        except (asyncssh.Error, OSError) as exc:
            reason = exc.reason if isinstance(exc, asyncssh.Error) else (exc.strerror or str(exc))
            reporter(StepFailed(self.name, step, reason=reason))
            raise SshError(f"{self.name}: cannot download {remote}: {reason}") from None
        progress(total)
        reporter(StepDone(self.name, step, detail=f"{total} bytes"))

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        sftp = await self._sftp_client()
        target = _sftp_path(remote)
        part = target + _PART
        try:
            async with sftp.open(part, "wb") as handle:
                await handle.write(data)
            await sftp.chmod(part, mode)
            await self._replace(sftp, part, target)
        except (asyncssh.Error, OSError) as exc:
            with contextlib.suppress(asyncssh.Error, OSError):
                await sftp.remove(part)
            raise self._lost(exc, f"writing {remote}") from None

    async def close(self) -> None:
        if self._sftp is not None:
            self._sftp.exit()
            with contextlib.suppress(asyncssh.Error, OSError):
                await self._sftp.wait_closed()
            self._sftp = None
        self._conn.close()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self._conn.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


# ----- this machine -------------------------------------------------------------------------------------


def _local_path(remote: str) -> Path:
    """Relative paths are relative to the home directory, as they are over SFTP."""
    path = Path(_sftp_path(remote)).expanduser()
    return path if path.is_absolute() else Path.home() / path


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _copy_atomically(local: Path, target: Path, mode: int, on_progress: Callable[[int], None]) -> None:
    part = target.with_name(target.name + _PART)
    try:
        with local.open("rb") as src, part.open("wb") as dst:
            done = 0
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                done += len(chunk)
                on_progress(done)
        part.chmod(mode)
        part.replace(target)
    finally:
        part.unlink(missing_ok=True)


def _read_head(path: Path, limit: int | None) -> bytes:
    with path.open("rb") as handle:
        return handle.read(-1 if limit is None else limit)


class LocalRunner:
    """The controller itself (`address: local`): commands through `bash -c`, files on the local disk."""

    def __init__(self, name: str = "local") -> None:
        self.name = name

    async def run(
        self, command: str, *, timeout: float | None = None, input: str | None = None, check: bool = False
    ) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                command,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, so a timeout kills what it started too
            )
        except OSError as exc:
            raise SshError(f"{self.name}: cannot start bash: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input.encode() if input is not None else None)
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise _timed_out(self.name, command, timeout) from None
        except BaseException:
            _kill_group(proc.pid)
            raise
        status = proc.returncode if proc.returncode is not None else -1
        result = CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
        return _checked(self.name, command, result, check)

    async def stream(self, command: str) -> AsyncIterator[str]:
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-c",
            command,
            stdin=asyncio.subprocess.PIPE,  # open until the stream is left, as an SSH channel's stdin is
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            while chunk := await proc.stdout.read(65536):
                yield chunk.decode(errors="replace")
        finally:
            if proc.returncode is None:
                _kill_group(proc.pid)
                await proc.wait()

    async def put_file(self, local: Path, remote: str, *, mode: int = 0o755, reporter: Reporter = ignore) -> None:
        step = f"upload {local.name}"
        total = await _local_size(self.name, local)
        reporter(StepStarted(self.name, step, detail=remote))
        progress = _Progress(reporter, self.name, step, total)
        loop = asyncio.get_running_loop()

        def from_worker(done: int) -> None:
            # Handed back to the loop thread, so reporters never run on a worker thread.
            loop.call_soon_threadsafe(progress, done)

        try:
            await asyncio.to_thread(_copy_atomically, local, _local_path(remote), mode, from_worker)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            reporter(StepFailed(self.name, step, reason=reason))
            raise SshError(f"{self.name}: cannot copy {local} to {remote}: {reason}") from None
        progress(total)
        reporter(StepDone(self.name, step, detail=f"{total} bytes"))

    async def read_file(self, remote: str, *, limit: int | None = None) -> bytes:
        try:
            return await asyncio.to_thread(_read_head, _local_path(remote), limit)
        except FileNotFoundError:
            raise RemoteFileNotFound(f"{self.name}: {remote} does not exist") from None
        except OSError as exc:
            raise SshError(f"{self.name}: cannot read {remote}: {exc.strerror or exc}") from None

    async def get_file(self, remote: str, local: Path, *, reporter: Reporter = ignore) -> None:
        source = _local_path(remote)
        if not source.is_file():
            raise RemoteFileNotFound(f"{self.name}: {remote} does not exist")
        step = f"copy {source.name}"
        reporter(StepStarted(self.name, step, detail=remote))
        try:
            await asyncio.to_thread(shutil.copyfile, source, local)
        except OSError as exc:
            raise SshError(f"{self.name}: cannot copy {remote}: {exc.strerror or exc}") from None
        reporter(StepDone(self.name, step))

    async def write_file(self, remote: str, data: bytes, mode: int = 0o644) -> None:
        try:
            await asyncio.to_thread(write_atomic, _local_path(remote), data, mode=mode)
        except OSError as exc:
            raise SshError(f"{self.name}: cannot write {remote}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        """Nothing to release; present so both runners are used the same way."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
