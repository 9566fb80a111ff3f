"""`sollol dashboard` as a process: the page and its data without the API, on SOLLOL_DASHBOARD_PORT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.harness.ollama import StandinHandle, free_port
from tests.unit.gateway.conftest import MakeStandin
from tests.unit.gateway.test_serve_command import manifest

DASHBOARD = (
    "import typer; from sollol_cli.cli.commands.dashboard import dashboard; app = typer.Typer(); "
    "app.command()(dashboard); app()"
)


async def test_the_dashboard_serves_status_without_the_api(tmp_path: Path, standin: MakeStandin) -> None:
    fake: StandinHandle = standin("n1")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DASHBOARD, "-f", str(manifest(tmp_path, fake)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SOLLOL_DASHBOARD_PORT": str(port)},
    )  # fmt: skip
    assert process.stderr is not None
    try:
        banner = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        found = re.search(r"on (http://\S+/ui/) \(no API key\)", banner)
        assert found, banner + (await process.stderr.read()).decode()
        url = found.group(1)
        assert url == f"http://127.0.0.1:{port}/ui/"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as page:
                assert page.status == 200 and "sollol dashboard" in await page.text()
            async with session.get(url + "api/status") as resp:
                data = await resp.json()
            assert data["serving"] is False
            assert [(row["name"], row["state"]) for row in data["backends"]] == [("n1", "up")]
            async with session.get(url.removesuffix("/ui/") + "/api/tags") as resp:
                assert resp.status == 404  # no API here
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
