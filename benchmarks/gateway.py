"""What `sollol serve` adds on top of talking to the backends directly, measured in one run on this machine.

    python benchmarks/gateway.py [--backends 3] [--requests 2000] [--streams 32] [--rate 200] [--tokens 200]
                                 [--duration 10] [--rounds 2]

Starts `--backends` Ollama stand-ins (one child process: a lean aiohttp server speaking the Ollama NDJSON
API, pacing every stream at `--rate` tokens/s), a bare pass-through proxy in front of the first one (another
child process: aiohttp, no routing, no validation, no log; it copies each streamed response chunk by chunk),
then the real `sollol serve` command in front of all of them (a third child process, access log on), and
measures from this process with an aiohttp client:

1. single requests: `/api/generate` with `"stream": false` (`--single-tokens`, unpaced), one at a time, direct,
   through the proxy and through the gateway interleaved; p50 and p99 of each and what each adds;
2. streams: `--streams` concurrent streaming `/api/chat` requests in a closed loop for `--duration` s
   (each `--tokens` tokens at `--rate` tokens/s, starts staggered over one answer's length so arrivals
   are steady); time to first token, p50 latency of a whole answer and token throughput, direct (spread
   round-robin over the stand-ins), through the proxy (all to its one stand-in) and through the gateway
   (spread by its router); the three alternate round by round.

The proxy is the floor: what any Python HTTP hop costs on this machine. Targets (issue 16): for one request
the gateway adds at most 2x what the proxy adds (p50); for the streams at most the proxy's + 1 ms at p50
(time to first token and latency) and at least 0.98x the direct throughput.

`--dashboard N` keeps N dashboard tabs open through all of it (each one event stream, /ui/api/events, read
as a browser reads it), so a run with and one without show what an open dashboard costs; `--idle S` then
measures the gateway process's CPU over S idle seconds (the probe loop and the open tabs only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
SERVE = (
    "import typer; from sollol_cli.cli.commands.serve import serve; app = typer.Typer(); app.command()(serve); app()"
)


# --- the stand-in backends (child process) ---


def _chunk(model: str, chat: bool, text: str, done: bool) -> dict[str, Any]:
    chunk: dict[str, Any] = {"model": model, "created_at": "2026-01-01T00:00:00.000000Z", "done": done}
    if chat:
        chunk["message"] = {"role": "assistant", "content": text}
    else:
        chunk["response"] = text
    if done:
        chunk.update(done_reason="stop", eval_count=0, eval_duration=1)
    return chunk


def standin_app(rate: float) -> web.Application:
    async def version(request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.0"})

    async def tags(request: web.Request) -> web.Response:
        model = {"name": "bench:latest", "model": "bench:latest", "size": 1, "digest": "0", "details": {}}
        return web.json_response({"models": [model]})

    async def ps(request: web.Request) -> web.Response:
        return web.json_response({"models": []})

    async def generate(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path == "/api/chat"
        options = body.get("options") or {}
        count, paced = int(options.get("num_predict", 1)), bool(options.get("paced", True))
        texts = [f"t{i} " for i in range(count)]
        if body.get("stream") is False:
            final = _chunk(body["model"], chat, "".join(texts), True) | {"eval_count": count}
            return web.json_response(final)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        started = time.monotonic()
        for i, text in enumerate(texts):
            await response.write(json.dumps(_chunk(body["model"], chat, text, False)).encode() + b"\n")
            if paced:
                delay = started + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        final = _chunk(body["model"], chat, "", True) | {"eval_count": count, "eval_duration": int(count / rate * 1e9)}
        await response.write(json.dumps(final).encode() + b"\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", generate)
    return app


async def run_standins(ports: list[int], rate: float) -> None:
    for port in ports:
        runner = web.AppRunner(standin_app(rate), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- the bare pass-through proxy (child process): the floor any Python HTTP hop costs ---


def proxy_app(upstream: str) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def start(app: web.Application) -> AsyncIterator[None]:
        nonlocal session
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
        yield
        await session.close()

    async def forward(request: web.Request) -> web.StreamResponse:
        assert session is not None
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with session.request(request.method, upstream + request.path_qs, data=body, headers=headers) as up:
            response = web.StreamResponse(status=up.status)
            response.content_type = up.content_type
            await response.prepare(request)
            async for data in up.content.iter_any():  # every chunk out as it arrives
                await response.write(data)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(start)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def run_proxy(port: int, upstream: str) -> None:
    runner = web.AppRunner(proxy_app(upstream), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --- measurement (this process) ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{url}: the process exited with {process.returncode}")
            try:
                async with session.get(url + "/api/version") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"{url} did not come up within {timeout:g} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def timed_request(session: aiohttp.ClientSession, url: str, tokens: int) -> float:
    options = {"num_predict": tokens, "paced": False}
    body = {"model": "bench", "prompt": "hi", "stream": False, "options": options}
    started = time.perf_counter()
    async with session.post(url + "/api/generate", json=body) as resp:
        data = await resp.read()
    elapsed = time.perf_counter() - started
    assert resp.status == 200 and json.loads(data)["response"].count("t") == tokens, data[:200]
    return elapsed


async def single_requests(urls: list[str], count: int, tokens: int) -> list[list[float]]:
    """`count` requests to each of `urls`, one at a time, taking turns (each sees the same background load)."""
    seconds: list[list[float]] = [[] for _ in urls]
    async with aiohttp.ClientSession() as session:
        for _ in range(200):  # warm up connections, caches and the router's speed estimates
            for url in urls:
                await timed_request(session, url, tokens)
        for _ in range(count):
            for url, values in zip(urls, seconds, strict=True):
                values.append(await timed_request(session, url, tokens))
    return seconds


@dataclass
class StreamRun:
    ttft_s: list[float]
    latency_s: list[float]
    tokens: int
    wall_s: float

    @property
    def throughput(self) -> float:
        return self.tokens / self.wall_s


async def one_stream(session: aiohttp.ClientSession, url: str, tokens: int) -> tuple[float, float, int]:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": tokens}}
    started = time.perf_counter()
    first: float | None = None
    texts: list[str] = []
    async with session.post(url + "/api/chat", json=body) as resp:
        async for line in resp.content:
            if first is None:
                first = time.perf_counter()
            chunk = json.loads(line)
            if not chunk["done"]:
                texts.append(chunk["message"]["content"])
    assert texts == [f"t{i} " for i in range(tokens)], "tokens missing, duplicated or out of order"
    assert first is not None
    return first - started, time.perf_counter() - started, len(texts)


async def streams(urls: list[str], count: int, tokens: int, rate: float, duration: float) -> StreamRun:
    run = StreamRun([], [], 0, 0.0)
    answer_s = tokens / rate

    async def worker(i: int, session: aiohttp.ClientSession, end: float) -> None:
        await asyncio.sleep(i * answer_s / count)
        while time.perf_counter() < end:
            ttft, latency, produced = await one_stream(session, urls[i % len(urls)], tokens)
            run.ttft_s.append(ttft)
            run.latency_s.append(latency)
            run.tokens += produced

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(i, session, started + duration) for i in range(count)))
        run.wall_s = time.perf_counter() - started
    return run


def merge(runs: list[StreamRun]) -> StreamRun:
    return StreamRun(
        [t for r in runs for t in r.ttft_s],
        [t for r in runs for t in r.latency_s],
        sum(r.tokens for r in runs),
        sum(r.wall_s for r in runs),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _row(label: str, direct: float, proxy: float, sollol: float, target: str) -> str:
    return (
        f"| {label} | {ms(direct)} | {ms(proxy)} | {ms(sollol)} | {ms(proxy - direct)} | {ms(sollol - direct)} "
        f"| {target} |"
    )


async def measure(args: argparse.Namespace, direct_urls: list[str], proxy: str, gateway: str) -> list[str]:
    direct_s, proxy_s, gateway_s = await single_requests(
        [direct_urls[0], proxy, gateway], args.requests, args.single_tokens
    )
    rows = [
        "| measurement | direct | through the bare proxy | through sollol serve | proxy adds | sollol adds | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, q in (("single request p50", 0.5), ("single request p99", 0.99)):
        d, p, g = (percentile(values, q) for values in (direct_s, proxy_s, gateway_s))
        target = f"≤ 2x proxy: {ms(2 * (p - d))}" if q == 0.5 else ""
        rows.append(_row(f"{label} ({args.single_tokens} tokens)", d, p, g, target))
    direct_runs, proxy_runs, gateway_runs = [], [], []
    for _ in range(args.rounds):  # alternate, so all three see the same background load
        direct_runs.append(await streams(direct_urls, args.streams, args.tokens, args.rate, args.duration))
        proxy_runs.append(await streams([proxy], args.streams, args.tokens, args.rate, args.duration))
        gateway_runs.append(await streams([gateway], args.streams, args.tokens, args.rate, args.duration))
    d_run, p_run, g_run = merge(direct_runs), merge(proxy_runs), merge(gateway_runs)
    n = args.streams
    for label, attr, q in (
        (f"{n} streams: time to first token p50", "ttft_s", 0.5),
        (f"{n} streams: time to first token p99", "ttft_s", 0.99),
        (f"{n} streams: latency p50 ({args.tokens} tokens)", "latency_s", 0.5),
    ):
        d, p, g = (percentile(getattr(run, attr), q) for run in (d_run, p_run, g_run))
        rows.append(_row(label, d, p, g, f"≤ proxy + 1 ms: {ms(p - d + 0.001)}" if q == 0.5 else ""))
    rows.append(
        f"| {n} streams: throughput | {d_run.throughput:,.0f} tokens/s | {p_run.throughput:,.0f} tokens/s "
        f"| {g_run.throughput:,.0f} tokens/s | {p_run.throughput / d_run.throughput:.3f}x "
        f"| {g_run.throughput / d_run.throughput:.3f}x | ≥ 0.98x |"
    )
    rows.append(
        f"\n{len(direct_s)} single requests each way; {len(d_run.latency_s)} direct, {len(p_run.latency_s)} proxied "
        f"and {len(g_run.latency_s)} gateway streams of {args.tokens} tokens at {args.rate:g} tokens/s."
    )
    return rows


async def dashboard_tab(session: aiohttp.ClientSession, gateway: str, received: list[int]) -> None:
    """One open dashboard tab: its event stream, read to the end (the gateway's work is the same whether
    a browser renders the events or not)."""
    async with session.get(gateway + "/ui/api/events", timeout=aiohttp.ClientTimeout(None)) as resp:
        async for chunk in resp.content.iter_any():
            received[0] += len(chunk)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_cpu(pid: int, seconds: float) -> float:
    """The share of one CPU the process used over `seconds` (wall clock) of idleness."""
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


def spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000, help="single requests each way")
    parser.add_argument("--single-tokens", type=int, default=8, help="tokens in each single request's answer")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s of every stream")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per streamed answer")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each streaming round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dashboard", type=int, default=0, help="dashboard tabs open throughout")
    parser.add_argument("--idle", type=float, default=0.0, help="then seconds of idleness to measure CPU over")
    parser.add_argument("--standin", help=argparse.SUPPRESS)  # internal: run the stand-ins on these ports
    parser.add_argument("--proxy", help=argparse.SUPPRESS)  # internal: run the proxy, PORT,UPSTREAM_URL
    args = parser.parse_args()
    if args.standin:
        asyncio.run(run_standins([int(p) for p in args.standin.split(",")], args.rate))
        return
    if args.proxy:
        port, upstream = args.proxy.split(",", 1)
        asyncio.run(run_proxy(int(port), upstream))
        return

    ports = [free_port() for _ in range(args.backends)]
    gateway_port, proxy_port = free_port(), free_port()
    slots = -(-args.streams // args.backends) + 2  # room for every stream, as a real cluster would be sized
    with tempfile.TemporaryDirectory(prefix="sollol-bench-") as tmp:
        work = Path(tmp)
        nodes = "".join(
            f"  - {{name: s{i}, address: 127.0.0.1, transport: local, "
            f"ollama: {{port: {port}, environment: {{OLLAMA_NUM_PARALLEL: '{slots}'}}}}}}\n"
            for i, port in enumerate(ports, 1)
        )
        manifest = work / "cluster.yaml"
        manifest.write_text(f"name: bench\nnodes:\n{nodes}")
        env = {**os.environ, "SOLLOL_STATE_DIR": str(work / "state")}
        standin_cmd = [sys.executable, __file__, "--standin", ",".join(map(str, ports)), "--rate", str(args.rate)]
        standins = spawn(standin_cmd, work / "standins.log", env)
        gateway_cmd = [sys.executable, "-c", SERVE, "-f", str(manifest), "--port", str(gateway_port),
                       "--log-format", "json"]  # fmt: skip
        gateway = spawn(gateway_cmd, work / "gateway.log", env)
        direct_urls = [f"http://127.0.0.1:{port}" for port in ports]
        proxy_cmd = [sys.executable, __file__, "--proxy", f"{proxy_port},{direct_urls[0]}"]
        proxy = spawn(proxy_cmd, work / "proxy.log", env)
        try:
            gateway_url = f"http://127.0.0.1:{gateway_port}"
            proxy_url = f"http://127.0.0.1:{proxy_port}"

            async def run() -> list[str]:
                for url in direct_urls:
                    await wait_ready(url, standins)
                await wait_ready(proxy_url, proxy)
                await wait_ready(gateway_url, gateway)
                received = [0]
                async with aiohttp.ClientSession() as session:
                    tabs = [
                        asyncio.create_task(dashboard_tab(session, gateway_url, received))
                        for _ in range(args.dashboard)
                    ]
                    try:
                        rows = await measure(args, direct_urls, proxy_url, gateway_url) if args.requests else []
                        if args.idle:
                            share = await idle_cpu(gateway.pid, args.idle)
                            rows.append(
                                f"\ngateway CPU while idle for {args.idle:g} s, {args.dashboard} dashboard tabs "
                                f"open: {share * 100:.2f} % of one CPU"
                            )
                    finally:
                        for tab in tabs:
                            tab.cancel()
                        await asyncio.gather(*tabs, return_exceptions=True)
                if args.dashboard:
                    rows.append(f"(the dashboard tabs received {received[0]:,} bytes of events)")
                return rows

            rows = asyncio.run(run())
        finally:
            for process in (gateway, proxy, standins):
                process.terminate()
                process.wait(30)
        access_lines = sum(1 for _ in (work / "gateway.log").open())
    command = " ".join(["python benchmarks/gateway.py", *sys.argv[1:]])
    print(f"`{command}` on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}:\n")
    print("\n".join(rows))
    print(f"(the gateway wrote {access_lines} access-log lines while measured)")


if __name__ == "__main__":
    main()
