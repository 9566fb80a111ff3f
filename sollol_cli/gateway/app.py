"""The gateway application: routes, and one middleware that authenticates, turns every failure into an
error in the client's API shape, and logs, counts and times each request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from sollol_cli.gateway import dashboard, routes_anthropic, routes_ollama, routes_openai
from sollol_cli.gateway.accesslog import Exchange, LineWriter, LogFormat, format_line, record
from sollol_cli.gateway.auth import PUBLIC_PATHS, UI_COOKIE, authorized, ui_authorized
from sollol_cli.gateway.metrics import GatewayMetrics
from sollol_cli.gateway.problems import error_response, problem_for
from sollol_cli.gateway.state import GATEWAY, GatewayState, attach_exchange, gateway
from sollol_cli.gateway.streaming import identify, json_response
from sollol_cli.runtime.session import ClusterRuntime, kept_running

# Chat requests carry base64 images and embedding requests whole documents: far above aiohttp's 1 MiB default.
MAX_BODY_BYTES = 256 * 1024 * 1024
# nginx's code for "the client closed the connection before the answer was complete" (logs and metrics only).
CLIENT_GONE = 499
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    runtime: ClusterRuntime,
    *,
    api_key: bytes | None = None,
    log: LineWriter | None = None,
    log_format: LogFormat = "text",
    health_loop: bool = True,
    max_body_bytes: int = MAX_BODY_BYTES,
    api: bool = True,
) -> web.Application:
    """`health_loop` runs the monitor's periodic probes while the app runs (off in tests that drive probes).
    `api=False` serves only the dashboard and /sollol/status (`sollol dashboard`)."""
    metrics = GatewayMetrics(runtime.monitor, lambda: float(runtime.dispatcher.waiting))
    state = GatewayState(runtime, metrics, api_key, log, log_format, serving=api)
    app = web.Application(middlewares=[_middleware(state)], client_max_size=max_body_bytes)
    app[GATEWAY] = state
    if api:
        routes_ollama.add_routes(app)
        routes_openai.add_routes(app)
        routes_anthropic.add_routes(app)
    dashboard.add_routes(app)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/sollol/status", _status)
    if health_loop:
        app.cleanup_ctx.append(_background(state))
    return app


def _background(state: GatewayState) -> Callable[[web.Application], AsyncIterator[None]]:
    async def run(app: web.Application) -> AsyncIterator[None]:
        async with kept_running(state.runtime):
            yield

    return run


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = gateway(request).metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


async def _status(request: web.Request) -> web.Response:
    """The data of `sollol status`, from the gateway's own health loop, plus the gateway's load."""
    from sollol_cli.runtime.status import live_status

    data, load = await live_status(gateway(request).runtime)
    return json_response(data | {"gateway": load})


def _middleware(state: GatewayState) -> Any:
    metrics, key = state.metrics, state.api_key

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        ex = Exchange(request.method, path, client=request.remote)
        attach_exchange(request, ex)
        metrics.in_flight.inc()
        response: web.StreamResponse | None = None
        gate = state.gate
        gate.enter()
        try:
            if gate.closing:
                response = _refuse(ex, 503, "the server is shutting down; retry on another gateway or later")
                response.force_close()
            elif key is not None and path not in PUBLIC_PATHS and not _allowed(request, path, key):
                response = _refuse(ex, 401, "unauthorized: send the API key as 'Authorization: Bearer <key>'")
                response.headers["WWW-Authenticate"] = "Bearer"
            else:
                response = await handler(request)
        except web.HTTPException as exc:  # no such route, wrong method, body too large
            response = _refuse(ex, exc.status, _http_message(request, exc))
        except asyncio.CancelledError:
            if not gate.was_cut():
                ex.status, ex.error = CLIENT_GONE, "the client disconnected"
                raise
            assert gate.cut_reason is not None
            response = _refuse(ex, 503, gate.cut_reason)  # cut before its first byte
            response.force_close()
        except ConnectionResetError:
            ex.status, ex.error = CLIENT_GONE, "the client disconnected"
            raise
        except Exception as exc:
            problem = problem_for(exc)
            if ex.streaming:  # the status is already sent: all that is left is to drop the connection
                ex.status, ex.error = 200, problem.message
                raise
            response = _refuse(ex, problem.status, problem.message)
        finally:
            gate.leave()
            metrics.in_flight.dec()
            if response is None:  # leaving by an exception: nothing more will be sent
                _account(state, request, ex)
        ex.status = response.status
        try:
            if not response.prepared:
                # Send it here rather than after returning, so the client has its answer before the bookkeeping
                # (metrics, dashboard feed, access-log line) runs; aiohttp's own prepare/write_eof are then no-ops.
                identify(response, ex)
                await response.prepare(request)
                ex.fix_overhead()  # up to the first byte written
                await response.write_eof()
        finally:
            _account(state, request, ex)
        return response

    return middleware


def _allowed(request: web.Request, path: str, key: bytes) -> bool:
    """The API's key; the dashboard (/ui/) also takes its login cookie and serves its page and login form."""
    header = request.headers.get("Authorization")
    if path == "/ui" or path.startswith("/ui/"):
        return path in dashboard.UI_PUBLIC or ui_authorized(header, request.cookies.get(UI_COOKIE), key)
    return authorized(header, key, request.headers.get("x-api-key"))


def _http_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path}; use {allowed}"
    if isinstance(exc, web.HTTPNotFound):
        return f"{request.method} {request.path} is not part of the Ollama, OpenAI or Anthropic API that sollol serves"
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"the request body is larger than {request.client_max_size} bytes"
    return exc.reason


def _refuse(ex: Exchange, status: int, message: str) -> web.Response:
    ex.error = message
    return error_response(ex.path, status, message)


def _account(state: GatewayState, request: web.Request, ex: Exchange) -> None:
    """Metrics and the access-log line, once the request is over."""
    metrics = state.metrics
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = str(ex.status)
    metrics.requests.labels(route, ex.method, status).inc()
    if ex.status >= 400 or ex.error is not None:
        metrics.errors.labels(route, status).inc()
    if ex.overhead_s is not None:
        metrics.overhead.observe(ex.overhead_s)
    if ex.backend and ex.status < 400 and "," not in ex.backend:
        metrics.backend_latency.labels(ex.backend).observe(ex.upstream_s)
        if ex.ttft_s is not None:
            metrics.ttft.labels(ex.backend).observe(ex.ttft_s)
        if ex.tokens:
            metrics.tokens.labels(ex.backend).inc(ex.tokens)
    duration_s = ex.elapsed()
    dispatcher = state.runtime.dispatcher
    state.feed.add(ex, duration_s, dispatcher.waiting, dispatcher.waiting_by_model)
    if state.log is not None:
        state.log(format_line(record(ex, duration_s), state.log_format))
