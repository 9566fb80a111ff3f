"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (the `ui-tests` extra;
`apt-get install chromium`; no browser is ever downloaded). The gateway runs in this test's event loop in
front of Ollama stand-ins or of a sharded model over real rpc-servers. Every test fails when the page logs
a JavaScript error.

Waits are for states of the page (Playwright's `expect`, with a generous bound), never for the clock."""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from tests.harness._gateway import serving
from tests.harness.llama import ServerGroup
from tests.harness.ollama import StandinHandle, SubprocessStandin
from tests.real.test_gateway_sharded import sharded_cluster
from tests.standin.ollama_standin import StandinConfig, StandinServer

pytestmark = pytest.mark.real

if os.environ.get("CI", "").lower() in ("1", "true", "yes"):  # CI runs every browser test: missing is a failure
    playwright_api = importlib.import_module("playwright.async_api")
else:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="the `ui-tests` extra: pip install -e '.[ui-tests]'"
    )
CHROMIUM = os.environ.get("SOLLOL_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 15_000  # a bound for states to show, never expected to be reached
PROBE_INTERVAL = 0.5


class Page:
    """A browser tab plus the JavaScript errors it logged."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None)

    def row(self, backend: str) -> Any:
        return self.page.locator(f'#backends tr[data-backend="{backend}"]')


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set SOLLOL_TEST_CHROMIUM)")
    return CHROMIUM


@pytest.fixture
async def tab(chromium: str) -> AsyncIterator[Page]:
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = Page(await browser.new_page())
            yield page
            # the 401 a locked page gets for its data is expected; anything else is a fault of the page
            errors = [e for e in page.errors if "401 (Unauthorized)" not in e]
            assert errors == [], errors
        finally:
            await browser.close()


def cluster(*standins: StandinHandle) -> Cluster:
    return Cluster.model_validate(
        {
            "name": "dash",
            "backends": [{"name": s.name, "kind": "ollama", "address": "127.0.0.1", "port": s.port} for s in standins],
            "routing": {"probe_interval": PROBE_INTERVAL},
        }
    )


async def test_the_page_shows_backends_requests_and_a_backend_going_down_and_back(
    ollama_standin, tab: Page, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    expect = playwright_api.expect
    steady = ollama_standin({"name": "steady", "tokens_per_second": 2000.0})
    victim = ollama_standin({"name": "victim", "tokens_per_second": 2000.0}, subprocess=True)
    assert isinstance(victim, SubprocessStandin)
    settings = Settings(state_dir=tmp_path / "state")
    async with serving(cluster(steady, victim), settings) as url:
        await tab.page.goto(url + "/ui/")
        for name in ("steady", "victim"):
            await expect(tab.row(name)).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(tab.row("steady")).to_contain_text("tiny:latest")
        await expect(tab.page.locator("#conn")).to_have_text("live", timeout=WAIT_MS)

        async with aiohttp.ClientSession() as session:
            body = {"model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 5}}
            async with session.post(url + "/api/generate", json=body) as resp:
                assert resp.status == 200
                backend = resp.headers["X-Sollol-Backend"]
        newest = tab.page.locator("#requests tbody tr").first
        await expect(newest).to_have_attribute("data-model", "tiny", timeout=WAIT_MS)
        await expect(newest).to_have_attribute("data-backend", backend)
        await expect(newest).to_contain_text("200")

        # the filter by backend: the other backend shows none
        other = "victim" if backend == "steady" else "steady"
        await tab.page.select_option("#filter-backend", backend)
        await expect(tab.page.locator("#requests tbody tr")).to_have_count(1)

        port = victim.port
        victim.process.kill()
        victim.process.wait(timeout=10)
        await expect(tab.row("victim")).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        await expect(tab.row("victim").locator(".reason").first).not_to_be_empty()
        await expect(tab.row("steady")).to_have_attribute("data-state", "up")

        back = StandinServer(StandinConfig(name="victim", tokens_per_second=2000.0))
        await back.start("127.0.0.1", port)
        try:
            await expect(tab.row("victim")).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        finally:
            await back.stop()
        assert other  # both backends were on the page throughout


async def test_with_a_key_the_page_asks_for_it(ollama_standin, tab: Page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expect = playwright_api.expect
    steady = ollama_standin({"name": "steady"})
    settings = Settings(state_dir=tmp_path / "state")
    async with serving(cluster(steady), settings, api_key=b"s3cret") as url:
        response = await tab.page.goto(url + "/ui/")
        assert response is not None and response.status == 401
        await expect(tab.page.locator("#login")).to_be_visible(timeout=WAIT_MS)
        await expect(tab.page.locator("#board")).to_be_hidden()
        await tab.page.fill("#key", "wrong")
        await tab.page.keyboard.press("Enter")
        await expect(tab.page.locator("#login-error")).to_have_text("That key is wrong.", timeout=WAIT_MS)
        await tab.page.fill("#key", "s3cret")
        await tab.page.keyboard.press("Enter")
        await expect(tab.row("steady")).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(tab.page.locator("#login")).to_be_hidden()

        # a link with the key in its fragment, in a fresh context (no cookie): logged in, fragment gone
        context = await tab.page.context.browser.new_context()
        try:
            linked = Page(await context.new_page())
            await linked.page.goto(url + "/ui/#key=s3cret")
            await expect(linked.row("steady")).to_have_attribute("data-state", "up", timeout=WAIT_MS)
            assert "s3cret" not in linked.page.url
            errors = [e for e in linked.errors if "401 (Unauthorized)" not in e]
            assert errors == [], errors
        finally:
            await context.close()


async def generate(url: str, body: dict[str, Any]) -> None:
    timeout = aiohttp.ClientTimeout(300)  # the first request starts the coordinator
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url + "/api/generate", json=body) as resp,
    ):
        assert resp.status == 200, await resp.text()


@pytest.mark.slow
async def test_a_sharded_model_shows_its_layer_placement(
    llama_servers: ServerGroup, tiny_gguf: Path, ollama_standin, tab: Page, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A cluster of two real rpc-servers (the sharded model), a real llama-server and an Ollama stand-in."""
    expect = playwright_api.expect
    rpcs = [llama_servers.rpc_server(), llama_servers.rpc_server()]
    solo = llama_servers.llama_server(tiny_gguf, context=1024)
    standin = ollama_standin({"name": "ollama1"})
    cluster = sharded_cluster(rpcs, tiny_gguf)
    cluster.backends += Cluster.model_validate(
        {
            "name": "extra",
            "backends": [
                {"name": "solo", "kind": "llamacpp", "address": solo.host, "port": solo.port},
                {"name": "ollama1", "kind": "ollama", "address": "127.0.0.1", "port": standin.port},
            ],
        }
    ).backends
    settings = Settings(state_dir=tmp_path / "state", llama_server_path=llama_servers.bins.llama_server)
    async with serving(cluster, settings) as url:
        await tab.page.goto(url + "/ui/")
        await expect(tab.page.locator("#models tr[data-model='tiny']")).to_contain_text("shard", timeout=WAIT_MS)
        for name in ("rpc0", "rpc1", "solo", "ollama1"):
            await expect(tab.row(name)).to_have_attribute("data-state", "up", timeout=WAIT_MS)
        await expect(tab.row("rpc0").locator("td").nth(1)).to_have_text(re.compile(r"^rpc \d+\.\d+\.\d+$"))
        await expect(tab.row("solo").locator("td").nth(1)).not_to_have_text("–")  # llama.cpp's build
        await expect(tab.row("solo")).to_contain_text("tiny")
        body = {"model": "tiny", "prompt": "The sea", "stream": False, "options": {"num_predict": 4}}
        await generate(url, body)
        bars = tab.page.locator(".model-placement[data-model='tiny']")
        await expect(bars).to_be_visible(timeout=WAIT_MS)
        first, second = (f"{r.host}:{r.port}" for r in rpcs)
        # tiny has 8 blocks plus the output layer (0-8), split over the two rpc-servers by their free memory
        one, two = bars.locator(f".part[data-device='{first}']"), bars.locator(f".part[data-device='{second}']")
        await expect(one).to_contain_text(re.compile(r"layers 0–\d, model \d+\.\d MiB, KV \d+\.\d MiB"))
        await expect(two).to_contain_text(re.compile(r"layers \d–8, model \d+\.\d MiB, KV \d+\.\d MiB"))
        await expect(bars.locator(".part.coordinator")).to_contain_text("coordinator: model")
        await expect(one.locator(".span")).to_be_visible()
        await expect(tab.page.locator("#models tr[data-model='tiny']")).to_contain_text("ready on this machine")
        for i in range(2):  # held by the coordinator now
            await expect(tab.row(f"rpc{i}")).to_have_attribute("data-state", "busy", timeout=WAIT_MS)

        # the coordinator's log, live: the request made above is in it, and the next one arrives
        log = tab.page.locator("#log")
        source = tab.page.locator("#log-source option", has_text="this machine · coordinator:tiny")
        await expect(source).to_have_count(1, timeout=WAIT_MS)
        await tab.page.select_option("#log-source", label="this machine · coordinator:tiny")
        await expect(log).to_contain_text("stop processing", timeout=WAIT_MS)
        served = await log.evaluate("pre => pre.textContent.split('stop processing').length - 1")
        await generate(url, body)
        await tab.page.wait_for_function(
            "n => document.querySelector('#log').textContent.split('stop processing').length - 1 > n",
            arg=served,
            timeout=WAIT_MS,
        )
