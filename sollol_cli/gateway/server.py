"""Run the gateway in the foreground until SIGINT/SIGTERM, then shut down gracefully: stop accepting,
let in-flight answers finish (bounded by `grace_s`), stop the coordinators this process started."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from sollol_cli import events
from sollol_cli.errors import UsageError
from sollol_cli.gateway.accesslog import LineWriter, LogFormat
from sollol_cli.gateway.app import create_app
from sollol_cli.gateway.state import GATEWAY
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    api_key: bytes | None = None
    log: LineWriter | None = None
    log_format: LogFormat = "text"
    grace_s: float = 30.0
    reporter: events.Reporter = events.ignore  # what the runtime reports besides requests (warnings)
    api: bool = True  # False: only the dashboard and /sollol/status (`sollol dashboard`)


@dataclass(frozen=True)
class Listening:
    url: str
    backends: int  # the ones requests go to (Ollama, llama-server)
    healthy: int
    rpc_servers: int = 0  # the ones sharded models' coordinators use
    rpc_up: int = 0  # ready, or busy serving a coordinator


async def serve(
    cluster: Cluster,
    settings: Settings,
    options: ServeOptions,
    stop: asyncio.Event,
    *,
    on_listening: Callable[[Listening], None] | None = None,
    on_stopping: Callable[[int], None] | None = None,
) -> None:
    """Serve until `stop` is set. `on_stopping` gets the number of requests still in flight."""
    async with open_cluster(cluster, settings, reporter=options.reporter, stop_on_close=True) as runtime:
        app = create_app(
            runtime, api_key=options.api_key, log=options.log, log_format=options.log_format, api=options.api
        )
        # handler_cancellation: a client that disconnects cancels its handler, which closes the upstream
        # request (the backend stops generating) and frees the backend slot at once.
        # shutdown_timeout is short: by the time aiohttp shuts down, `drain` below has let the in-flight
        # requests finish within the grace period or cut them with an error in their own API shape.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, options.host, options.port, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                raise UsageError(
                    f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}",
                    hint="choose another --port, or stop what is using it",
                ) from None
            if on_listening is not None:
                host, port = runner.addresses[0][:2]
                views = [v for v in runtime.monitor.views.values() if v.client is not None]
                healthy = sum(1 for v in views if v.probe.healthy)
                rpc = [v.rpc for v in runtime.monitor.views.values() if v.client is None]
                rpc_up = sum(1 for probe in rpc if probe is not None and probe.state in ("ready", "busy"))
                url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
                on_listening(Listening(url, len(views), healthy, len(rpc), rpc_up))
            await stop.wait()
            # No new connections from here (a load balancer sees the refusal at once); idle keep-alive
            # connections close, and a request that still arrives on a busy one is answered 503.
            await site.stop()
            if runner.server is not None:
                runner.server.pre_shutdown()
            gate = app[GATEWAY].gate
            if on_stopping is not None:
                on_stopping(gate.in_flight)
            await gate.drain(options.grace_s)
        finally:
            await runner.cleanup()


async def serve_until_signalled(
    cluster: Cluster,
    settings: Settings,
    options: ServeOptions,
    *,
    on_listening: Callable[[Listening], None] | None = None,
    on_stopping: Callable[[int], None] | None = None,
) -> None:
    """`serve` with SIGINT and SIGTERM as the stop signal. A second SIGINT gives up waiting for in-flight
    requests (the default handler is back, so it interrupts as Ctrl-C always does)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        stop.set()
        loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await serve(cluster, settings, options, stop, on_listening=on_listening, on_stopping=on_stopping)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
