"""`sollol serve` as a process: manifest settings, access log on stderr, API key, SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.harness.ollama import StandinHandle, free_port
from tests.standin.llama_standins import write_bin_dir
from tests.unit.gateway.conftest import MakeStandin

# The command on its own typer app, so the test does not depend on how the CLI registers it.
SERVE = (
    "import typer; from sollol_cli.cli.commands.serve import serve; app = typer.Typer(); app.command()(serve); app()"
)


class Served:
    def __init__(self, process: asyncio.subprocess.Process, url: str, banner: str) -> None:
        self.process, self.url, self.banner = process, url, banner
        self.stderr: list[str] = []

    async def finish(self, timeout: float = 20) -> int:
        assert self.process.stderr is not None
        rest = await asyncio.wait_for(self.process.stderr.read(), timeout)
        self.stderr += rest.decode().splitlines()
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def read_until(self, text: str) -> None:
        """Read stderr until a line says `text`."""
        assert self.process.stderr is not None
        while not any(text in line for line in self.stderr):
            line = await asyncio.wait_for(self.process.stderr.readline(), 30)
            assert line, f"serve ended without saying {text!r}"
            self.stderr.append(line.decode().rstrip("\n"))

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stderr if line.startswith("{")]


@pytest.fixture
def fake(standin: MakeStandin) -> StandinHandle:
    return standin("n1", response_tokens=40)


def manifest(tmp_path: Path, fake: StandinHandle, gateway: str = "") -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        "name: served\n"
        "nodes:\n"
        f"  - {{name: n1, address: 127.0.0.1, transport: local, ollama: {{port: {fake.port}, models: [tiny]}}}}\n"
        + gateway
    )
    return path


async def start(path: Path, *args: str, env: dict[str, str] | None = None) -> Served:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "-f", str(path), "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
    found = re.search(r"on (http://\S+) ", line)
    assert found, line + (await process.stderr.read()).decode()
    return Served(process, found.group(1), line)


async def test_sigterm_lets_the_running_stream_finish_and_exits_0(tmp_path: Path, fake: StandinHandle) -> None:
    served = await start(manifest(tmp_path, fake), "--log-format", "json")
    assert served.url.startswith("http://127.0.0.1:")  # the manifest's default bind
    assert "1/1 backends up" in served.banner
    fake.set_faults(hold_after_tokens=1)  # the stream stays under way until the gateway is stopping
    body = {"model": "tiny", "prompt": "x"}
    async with aiohttp.ClientSession() as session, session.post(served.url + "/api/generate", json=body) as resp:
        first = await resp.content.readline()
        served.process.send_signal(signal.SIGTERM)
        await served.read_until("stopping, waiting up to 30 s for 1 in-flight requests")
        fake.release()
        rest = await resp.read()
    lines = [json.loads(line) for line in (first + rest).splitlines()]
    assert lines[-1]["done"] is True and len(lines) == 41
    assert await served.finish() == 0
    assert any("stopping, waiting up to 30 s for 1 in-flight requests" in line for line in served.stderr)
    [entry] = served.log_lines()
    assert entry["path"] == "/api/generate" and entry["status"] == 200 and entry["backend"] == "n1"


async def test_sigterm_cuts_a_stream_past_the_grace_period_with_an_error_line(
    tmp_path: Path, fake: StandinHandle
) -> None:
    """Issue 19 item 4: `--grace G` gives the stream G seconds, then ends it with Ollama's `{"error"}` line
    (not a dropped connection), exits 0, and the access log says the server cut it (not 499)."""
    served = await start(manifest(tmp_path, fake), "--log-format", "json", "--grace", "0.5")
    fake.set_faults(hold_after_tokens=1)  # never released: the stream outlives the grace period
    body = {"model": "tiny", "prompt": "x"}
    async with aiohttp.ClientSession() as session, session.post(served.url + "/api/generate", json=body) as resp:
        first = await resp.content.readline()
        served.process.send_signal(signal.SIGTERM)
        rest = await resp.read()
    lines = [json.loads(line) for line in (first + rest).splitlines()]
    reason = "the server is shutting down: the request ran past its 0.5 s grace period"
    assert lines[-1] == {"error": reason} and len(lines) == 2
    assert await served.finish() == 0
    assert any("stopping, waiting up to 0.5 s for 1 in-flight requests" in line for line in served.stderr)
    [entry] = served.log_lines()
    assert (entry["path"], entry["status"], entry["error"]) == ("/api/generate", 200, reason)


async def test_banner_counts_the_rpc_servers_of_an_rpc_only_manifest(tmp_path: Path) -> None:
    """Issue 19 item 7: a manifest with only rpc-servers said "(0/0 backends up)"."""
    bin_dir = write_bin_dir(tmp_path / "bin")
    up, down = free_port(), free_port()
    rpc = await asyncio.create_subprocess_exec(
        str(bin_dir / "rpc-server"), "-H", "127.0.0.1", "-p", str(up), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert rpc.stdout is not None
        assert b"listening" in await asyncio.wait_for(rpc.stdout.readline(), 30)
        path = tmp_path / "cluster.yaml"
        path.write_text(
            "name: rpconly\n"
            "backends:\n"
            f"  - {{name: r1, kind: rpc, address: 127.0.0.1, port: {up}}}\n"
            f"  - {{name: r2, kind: rpc, address: 127.0.0.1, port: {down}}}\n"
        )
        served = await start(path)
        assert served.banner.rstrip().endswith("(1/2 rpc-servers up, no API key); Ctrl-C to stop"), served.banner
        served.process.send_signal(signal.SIGTERM)
        assert await served.finish() == 0
    finally:
        rpc.terminate()
        await rpc.wait()


async def test_sigint_exits_0_and_text_log(tmp_path: Path, fake: StandinHandle) -> None:
    served = await start(manifest(tmp_path, fake))
    async with aiohttp.ClientSession() as session:
        assert (await session.get(served.url + "/api/version")).status == 200
    served.process.send_signal(signal.SIGINT)
    assert await served.finish() == 0
    assert any(re.search(r'"GET /api/version" 200 [\d.]+ms', line) for line in served.stderr)


async def test_api_key_from_the_manifest_variable(tmp_path: Path, fake: StandinHandle) -> None:
    path = manifest(tmp_path, fake, "gateway: {api_key_env: SOLLOL_TEST_KEY}\n")
    served = await start(path, env={"SOLLOL_TEST_KEY": "s3cret"})
    assert "API key required" in served.banner
    async with aiohttp.ClientSession() as session:
        assert (await session.get(served.url + "/api/tags")).status == 401
        resp = await session.get(served.url + "/api/tags", headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 200
    served.process.send_signal(signal.SIGTERM)
    assert await served.finish() == 0


async def test_unset_key_variable_is_a_usage_error(tmp_path: Path, fake: StandinHandle) -> None:
    path = manifest(tmp_path, fake, "gateway: {api_key_env: SOLLOL_UNSET_KEY}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "-f", str(path), stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SOLLOL_UNSET_KEY"},
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "gateway.api_key_env names $SOLLOL_UNSET_KEY, but it is not set" in err.decode()


async def test_port_in_use_is_a_clear_error(tmp_path: Path, fake: StandinHandle) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE, "-f", str(manifest(tmp_path, fake)), "--port", str(fake.port),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert f"cannot listen on 127.0.0.1:{fake.port}" in err.decode()


def test_only_loopback_binds_go_without_a_warning() -> None:
    from sollol_cli.cli.commands.serve import _loopback

    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost") and _loopback("127.0.0.2")
    assert not _loopback("0.0.0.0") and not _loopback("10.0.0.5") and not _loopback("gateway.lan")
