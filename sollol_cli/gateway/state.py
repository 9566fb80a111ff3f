"""What every handler shares: the cluster runtime (with its settings and shard manager), metrics, the log."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import web

from sollol_cli.gateway.accesslog import Exchange, LineWriter, LogFormat
from sollol_cli.gateway.feed import Feed
from sollol_cli.gateway.metrics import GatewayMetrics
from sollol_cli.gateway.shutdown import ShutdownGate
from sollol_cli.runtime.session import ClusterRuntime

# What /api/version answers when no Ollama backend reports its own version (llama.cpp-only clusters):
# recent enough that clients enable the features sollol passes through (tools, format schemas, think).
OLLAMA_COMPAT_VERSION = "0.12.0"


@dataclass
class GatewayState:
    runtime: ClusterRuntime
    metrics: GatewayMetrics
    api_key: bytes | None
    log: LineWriter | None
    log_format: LogFormat
    gate: ShutdownGate = field(default_factory=ShutdownGate)
    feed: Feed = field(default_factory=Feed)  # finished requests, for the dashboard
    serving: bool = True  # False: `sollol dashboard`, the dashboard without the API


GATEWAY = web.AppKey("sollol_gateway", GatewayState)
# The request being handled: the middleware and the handler run in the same task, so a context variable
# carries it without request storage (typed request keys need aiohttp 3.14).
_EXCHANGE: ContextVar[Exchange] = ContextVar("sollol_exchange")


def gateway(request: web.Request) -> GatewayState:
    return request.app[GATEWAY]


def exchange(request: web.Request) -> Exchange:
    """The exchange of the request this task is handling (`request` documents which one)."""
    return _EXCHANGE.get()


def attach_exchange(request: web.Request, value: Exchange) -> None:
    _EXCHANGE.set(value)
