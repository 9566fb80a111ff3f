"""Real llama.cpp for tests (pytest plugin): the static binaries, built once per machine into the sollol cache
(~4 min the first time), and rpc-server / llama-server processes on 127.0.0.1 with their output in a log file.

Readiness is what a client sees: a HELLO reply for rpc-server (it prints its banner and exits 0 when it cannot
bind), `/health` 200 for llama-server. Ports are picked free by the kernel; a server that loses the race for
its port exits at once and is restarted on another one.
"""

from __future__ import annotations

import functools
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sollol_cli.backends.rpc import (
    MAX_HELLO_REPLY,
    ProtocolError,
    decode_hello,
    decode_reply_size,
    encode_hello,
)
from sollol_cli.llamacpp.build import LlamaCppBinaries, build
from sollol_cli.settings import Settings
from tests.harness._process import stop_process

LOOPBACK = "127.0.0.1"
_PORT_ATTEMPTS = 3


class ServerFailed(RuntimeError):
    """A test server exited or never became ready; the message ends with its log."""


@dataclass
class ServerProcess:
    """One running rpc-server or llama-server; `stop()` is idempotent."""

    kind: str
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.process)


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def hello(host: str, port: int, timeout: float = 1.0) -> tuple[int, int, int] | None:
    """A blocking HELLO (usable inside or outside an event loop); None if nothing rpc-server-like answered."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(encode_hello())
            size = decode_reply_size(_recv_exactly(sock, 8), minimum=3, maximum=MAX_HELLO_REPLY)
            return decode_hello(_recv_exactly(sock, size))
        except (OSError, ProtocolError):
            # reset, not FIN: rpc-server dies of SIGPIPE answering a queued HELLO whose client closed normally
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def _spawn(kind: str, argv: list[str], host: str, port: int, log: Path) -> ServerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:  # the child keeps its own handle: output drains to the file, never blocks
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return ServerProcess(kind, process, host, port, log)


def _wait_ready(server: ServerProcess, is_ready: Callable[[], bool], timeout: float) -> bool:
    """True once ready; False if the process exited first; ServerFailed on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        if is_ready():
            # a bind failure exits right after the banner; make sure the answer was not from someone else
            time.sleep(0.05)
            return server.process.poll() is None
        time.sleep(0.05)
    server.stop()
    raise ServerFailed(f"{server.kind} on {server.endpoint} not ready after {timeout:g}s:\n{server.log_tail()}")


def _start(
    kind: str,
    make_argv: Callable[[int], list[str]],
    is_ready: Callable[[str, int], bool],
    host: str,
    port: int | None,
    log: Path,
    timeout: float,
) -> ServerProcess:
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        server = _spawn(kind, make_argv(chosen), host, chosen, log)
        if _wait_ready(server, functools.partial(is_ready, server.host, server.port), timeout):
            return server
        server.stop()
    raise ServerFailed(
        f"{kind} on {host}:{chosen} exited with {server.process.returncode} before it was ready:\n{server.log_tail()}"
    )


def start_rpc_server(
    binary: Path,
    log: Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    threads: int = 1,
    extra: Sequence[str] = (),
    timeout: float = 15.0,
) -> ServerProcess:
    # this rpc-server has no `-m` (advertised memory): it reports the host's real free/total memory
    def argv(chosen: int) -> list[str]:
        return [str(binary), "-H", host, "-p", str(chosen), "-t", str(threads), *extra]

    return _start("rpc-server", argv, lambda h, p: hello(h, p) is not None, host, port, log, timeout)


def health_ok(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # 503 while loading arrives as HTTPError, a URLError
        return False


def start_llama_server(
    binary: Path,
    model: Path,
    log: Path,
    *,
    host: str = LOOPBACK,
    port: int | None = None,
    rpc: Sequence[str] = (),
    gpu_layers: int | None = None,
    context: int = 512,
    slots: int = 1,
    threads: int = 1,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> ServerProcess:
    def argv(chosen: int) -> list[str]:
        args = [str(binary), "-m", str(model), "--host", host, "--port", str(chosen)]
        args += ["-c", str(context), "-np", str(slots), "-t", str(threads)]
        if rpc:
            args += ["--rpc", ",".join(rpc), "-ngl", str(999 if gpu_layers is None else gpu_layers)]
        elif gpu_layers is not None:
            args += ["-ngl", str(gpu_layers)]
        return args + list(extra)

    return _start("llama-server", argv, health_ok, host, port, log, timeout)


@dataclass
class ServerGroup:
    """Starts servers for one test and stops every one of them at teardown."""

    bins: LlamaCppBinaries
    log_dir: Path
    started: list[ServerProcess] = field(default_factory=list)

    def _log(self, kind: str) -> Path:
        return self.log_dir / f"{kind}-{len(self.started)}.log"

    def rpc_server(self, **options: Any) -> ServerProcess:
        server = start_rpc_server(self.bins.rpc_server, self._log("rpc-server"), **options)
        self.started.append(server)
        return server

    def llama_server(self, model: Path, **options: Any) -> ServerProcess:
        log = self._log("llama-server")
        server = start_llama_server(self.bins.llama_server, model, log, **options)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


def rpc_backend_rows(servers: Sequence[ServerProcess]) -> str:
    """The manifest's `backends:` entries for running rpc-servers, named rpc0, rpc1, ... in order."""
    return "".join(
        f"  - {{name: rpc{i}, kind: rpc, address: {r.host}, port: {r.port}}}\n" for i, r in enumerate(servers)
    )


def bin_dir_of(bins: LlamaCppBinaries, parent: Path) -> Path:
    """A directory with rpc-server and llama-server, for a manifest's `llama_cpp.bin_dir`."""
    bin_dir = parent / "bin"
    bin_dir.mkdir()
    for name, path in (("rpc-server", bins.rpc_server), ("llama-server", bins.llama_server)):
        (bin_dir / name).symlink_to(path)
    return bin_dir


@pytest.fixture(scope="session")
def llama_bins() -> LlamaCppBinaries:
    """The static rpc-server and llama-server (built on first use per machine, then read from the cache)."""
    return build(Settings().cache_dir)


@pytest.fixture
def llama_servers(llama_bins: LlamaCppBinaries, tmp_path: Path) -> Iterator[ServerGroup]:
    """`llama_servers.rpc_server(...)` / `llama_servers.llama_server(model, ...)`; all stopped after the test."""
    group = ServerGroup(llama_bins, tmp_path / "llama-logs")
    yield group
    group.stop_all()


@pytest.fixture
def rpc_server(llama_servers: ServerGroup) -> ServerProcess:
    """One ready rpc-server on a free loopback port."""
    return llama_servers.rpc_server()
