"""Pytest plugin: the Ollama stand-in (tests/standin/ollama_standin.py) as a fixture factory.

``ollama_standin(config)`` starts one instance on 127.0.0.1 at a free port and returns a
:class:`StandinHandle` (base URL, faults, stats). By default the instance runs in this process: an aiohttp
AppRunner on an event loop of its own thread, so both the sync and the async Ollama clients can talk to it
from any test. ``subprocess=True`` runs the uploadable single-file script as ``ollama serve`` instead, the
way test hosts run it. Every instance is stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.harness._process import stop_process
from tests.standin.ollama_standin import StandinConfig, StandinServer, standin_script

ConfigLike = StandinConfig | dict[str, Any] | None


class StandinFactory(Protocol):
    def __call__(
        self, config: ConfigLike = None, *, subprocess: bool = False, env: dict[str, str] | None = None
    ) -> StandinHandle: ...


def write_standin_script(directory: Path, python: str = sys.executable) -> Path:
    """The stand-in as an executable ``ollama`` file in ``directory`` (what tests upload to hosts)."""
    path = directory / "ollama"
    path.write_text(standin_script(python))
    path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StandinHandle:
    """A running stand-in. ``host`` is what ``OLLAMA_HOST`` / ``ollama.Client(host=...)`` take; the
    test-only controls go over its /_standin/ routes, so they work the same for every way of running it."""

    def __init__(self, port: int, config: StandinConfig) -> None:
        self.port = port
        self.config = config
        self.name = config.name
        self.host = f"127.0.0.1:{port}"
        self.url = f"http://{self.host}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def stats(self) -> dict[str, Any]:
        """Counters: ``requests`` per "METHOD /path", ``max_concurrency`` (running in slots),
        ``max_in_flight`` (running or queued), ``active``, ``queued``,
        ``completed``, ``cancelled``, ``held``, ``faults_fired``, the ``recent`` inference requests and the
        ``bodies`` of the last API requests."""
        result: dict[str, Any] = self._call("GET", "/_standin/stats")
        return result

    def reset_stats(self) -> None:
        self._call("DELETE", "/_standin/stats")

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Merge the given Faults fields (http_500_next, error_after_tokens, drop_after_tokens, slow_start,
        hang, hold_after_tokens, routes, message) into the instance's faults; returns them all."""
        result: dict[str, Any] = self._call("POST", "/_standin/faults", faults)
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/_standin/faults")

    def release(self) -> None:
        """Streams held by the ``hold_after_tokens`` fault go on."""
        self._call("POST", "/_standin/release", {})

    def wait_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Poll the stats until ``predicate`` holds; fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if predicate(stats):
                return stats
            if time.monotonic() > deadline:
                pytest.fail(f"stand-in {self.name} never reached the expected state: {stats}")
            time.sleep(0.02)

    def stop(self) -> None:
        raise NotImplementedError


class ThreadedStandin(StandinHandle):
    """In this process, on its own event loop thread."""

    def __init__(self, config: StandinConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"standin-{config.name}", daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(config), self._loop).result(timeout=10)
        super().__init__(self._port, config)

    async def _start(self, config: StandinConfig) -> StandinServer:
        server = StandinServer(config)
        self._port = await server.start("127.0.0.1", 0)
        return server

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=15)


class SubprocessStandin(StandinHandle):
    """``ollama serve`` of the uploadable script, bound through OLLAMA_HOST."""

    def __init__(self, config: StandinConfig, workdir: Path, env: dict[str, str] | None) -> None:
        self.workdir = workdir
        self.script = write_standin_script(workdir)
        self.config_path = workdir / "standin.json"
        config.dump(self.config_path)
        self.log_path = workdir / "serve.log"
        for _attempt in range(3):  # a free port can be taken between probing and binding
            port = free_port()
            self.env = {
                **os.environ,
                "OLLAMA_HOST": f"127.0.0.1:{port}",
                "SOLLOL_STANDIN_CONFIG": str(self.config_path),
                **(env or {}),
            }
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [str(self.script), "serve"],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            super().__init__(port, config)
            if self._wait_ready():
                return
        pytest.fail(f"the stand-in subprocess did not start:\n{self.log_path.read_text()}")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + "/", timeout=1) as reply:
                if reply.status == 200:
                    return True
            time.sleep(0.05)
        self.stop()
        return False

    def run_cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the same ``ollama`` script as a client of this instance (``--version``, ``list``)."""
        return subprocess.run(
            [str(self.script), *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def ollama_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinFactory]:
    """Factory: ``ollama_standin(config=None, *, subprocess=False, env=None) -> StandinHandle``.

    ``config`` is a StandinConfig or a dict of its fields; unnamed instances are called standin-1,
    standin-2, ... in the order they start. ``env`` adds environment variables to a subprocess instance
    (OLLAMA_NUM_PARALLEL, OLLAMA_MODELS, ...)."""
    started: list[StandinHandle] = []

    def start(
        config: ConfigLike = None, *, subprocess: bool = False, env: dict[str, str] | None = None
    ) -> StandinHandle:
        resolved = StandinConfig.from_dict(config) if isinstance(config, dict) else (config or StandinConfig())
        if not resolved.name:
            resolved.name = f"standin-{len(started) + 1}"
        if subprocess:
            handle: StandinHandle = SubprocessStandin(resolved, tmp_path_factory.mktemp("ollama-standin"), env)
        else:
            if env:
                raise ValueError("env only applies to subprocess=True instances")
            handle = ThreadedStandin(resolved)
        started.append(handle)
        return handle

    yield start
    for handle in reversed(started):
        handle.stop()
