"""The README's dashboard screenshots, from the browser tests' setup: a sharded model over two real
rpc-servers, a real llama-server, two Ollama stand-ins (one of them stopped, to show a backend down) and some
traffic through the gateway.

    python scripts/dashboard_screenshots.py [--out docs/screenshots]

Needs the `ui-tests` extra and Debian's chromium (`/usr/bin/chromium`, or $SOLLOL_TEST_CHROMIUM), and builds
or reuses the llama.cpp binaries and the tiny model the real tests use.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.async_api import async_playwright  # noqa: E402

from sollol_cli.llamacpp.build import build  # noqa: E402
from sollol_cli.llamacpp.tinymodel import ensure_tiny_model  # noqa: E402
from sollol_cli.manifest.models import Cluster  # noqa: E402
from sollol_cli.settings import Settings  # noqa: E402
from tests.harness._gateway import serving  # noqa: E402
from tests.harness.llama import ServerGroup  # noqa: E402
from tests.standin.ollama_standin import StandinConfig, StandinServer  # noqa: E402


async def traffic(url: str) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(300)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def ask(model: str, prompt: str) -> None:
            body = {"model": model, "prompt": prompt, "stream": False, "options": {"num_predict": 24}}
            async with session.post(url + "/api/generate", json=body) as resp:
                await resp.read()

        await ask("tiny", "The sea")  # starts the sharded model's coordinator
        for i in range(4):
            await asyncio.gather(*(ask("qwen3:0.6b", f"question {i}-{j}") for j in range(6)))
            await ask("tiny", f"The sea, part {i}")
        await ask("llama9:70b", "a model nobody has")


async def shoot(out: Path, chromium: str) -> None:
    settings = Settings()
    group = ServerGroup(build(settings.cache_dir), Path(tempfile.mkdtemp(prefix="sollol-shots-")))
    standins = []
    try:
        rpcs = [(r.host, r.port) for r in (group.rpc_server(), group.rpc_server())]
        gguf = ensure_tiny_model(settings.cache_dir, "tiny")
        solo = group.llama_server(gguf, context=1024)
        for name in ("ollama-a", "ollama-b"):
            config = StandinConfig.from_dict({"name": name, "tokens_per_second": 400.0, "models": ["qwen3:0.6b"]})
            server = StandinServer(config)
            standins.append((name, await server.start("127.0.0.1", 0), server))
        cluster = Cluster.model_validate(
            {
                "name": "lab",
                "backends": [
                    *({"name": f"rpc{i}", "kind": "rpc", "address": h, "port": p} for i, (h, p) in enumerate(rpcs)),
                    {"name": "llama-solo", "kind": "llamacpp", "address": solo.host, "port": solo.port},
                    *({"name": n, "kind": "ollama", "address": "127.0.0.1", "port": p} for n, p, _ in standins),
                ],
                "models": [{"name": "tiny", "mode": "shard", "gguf": str(gguf), "context": 1024}],
                "routing": {"probe_interval": 1.0},
            }
        )
        state = Settings(state_dir=Path(tempfile.mkdtemp(prefix="sollol-shots-state-")),
                         llama_server_path=group.bins.llama_server)  # fmt: skip
        async with serving(cluster, state) as url:
            await traffic(url)
            await standins[1][2].stop()  # one backend down, with its reason
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                for scheme in ("light", "dark"):
                    page = await browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=scheme)
                    await page.goto(url + "/ui/")
                    await page.wait_for_selector('#backends tr[data-backend="ollama-b"][data-state="down"]')
                    await page.wait_for_selector(".model-placement")
                    path = out / f"dashboard-{scheme}.png"
                    await page.screenshot(path=str(path), full_page=True)
                    print(path)
                await browser.close()
    finally:
        for _, _, server in standins:
            await server.stop()
        group.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(args.out, os.environ.get("SOLLOL_TEST_CHROMIUM", "/usr/bin/chromium")))


if __name__ == "__main__":
    main()
