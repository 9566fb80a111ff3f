"""The live dashboard at /ui/: one page (plain HTML, CSS and JavaScript shipped in the package, no build step),
its JSON under /ui/api/ and one server-sent event stream per open tab. Everything it shows comes from the
runtime's own state (`runtime.status.dashboard_status`) and the gateway's finished requests (`feed.Feed`).

With an API key, the page and its data need the key: the API's own `Authorization` header, or the cookie the
login form sets (a value derived from the key, HttpOnly, SameSite=Strict). The page, its two assets and the
login form are public; the page answers 401 without the key and asks for it.
"""

from __future__ import annotations

import asyncio
import json
from importlib import resources
from typing import Any

from aiohttp import web

from sollol_cli.gateway.auth import UI_COOKIE, ui_authorized, ui_token
from sollol_cli.gateway.feed import with_failures
from sollol_cli.gateway.state import GatewayState, exchange, gateway
from sollol_cli.gateway.streaming import json_response

# Served without the key: the page (it shows the login form when its data answers 401), its assets, login.
UI_PUBLIC = frozenset({"/ui", "/ui/", "/ui/app.js", "/ui/style.css", "/ui/login", "/ui/logout"})
_ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PUSH_GAP_S = 0.5  # what changed goes to a tab at most this often (a burst of requests is one push)
KEEPALIVE_S = 15.0  # a comment line on an idle stream, so proxies do not close it


def add_routes(app: web.Application) -> None:
    app.router.add_get("/ui", _to_page)
    app.router.add_get("/ui/", _page)
    app.router.add_get("/ui/{asset:app\\.js|style\\.css}", _asset)
    app.router.add_post("/ui/login", _login)
    app.router.add_post("/ui/logout", _logout)
    app.router.add_get("/ui/api/status", _status)
    app.router.add_get("/ui/api/requests", _requests)
    app.router.add_get("/ui/api/traffic", _traffic)
    app.router.add_get("/ui/api/events", _events)
    app.router.add_get("/ui/api/logs", _log_sources)
    app.router.add_get("/ui/api/logs/follow", _follow_log)


def asset(name: str) -> bytes:
    return resources.files("sollol_cli.gateway").joinpath("ui_assets", name).read_bytes()


def allowed(request: web.Request, key: bytes | None) -> bool:
    """The dashboard's data: open without a key, else the `Authorization` header or the login cookie."""
    return key is None or ui_authorized(request.headers.get("Authorization"), request.cookies.get(UI_COOKIE), key)


async def _to_page(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/ui/"})


async def _page(request: web.Request) -> web.Response:
    status = 200 if allowed(request, gateway(request).api_key) else 401
    return _asset_response("index.html", status)


async def _asset(request: web.Request) -> web.Response:
    return _asset_response(request.match_info["asset"])


def _asset_response(name: str, status: int = 200) -> web.Response:
    response = web.Response(body=asset(name), status=status)
    response.headers["Content-Type"] = _ASSETS[name]
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if name == "index.html":
        # everything the page needs is its own: no script, style or connection elsewhere
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        )
    return response


async def _login(request: web.Request) -> web.Response:
    """The key from the form (`key=`), or as JSON `{"key": ...}` from the page (a key in the URL fragment).
    A form gets a redirect to the page, JSON an empty answer; both set the cookie. The key is never logged."""
    key = gateway(request).api_key
    is_json = request.content_type == "application/json"
    if is_json:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = {}
        given = str(body.get("key", "")) if isinstance(body, dict) else ""
    else:
        given = str((await request.post()).get("key", ""))
    if key is not None and not ui_authorized(f"Bearer {given.strip()}", None, key):
        if is_json:
            return json_response({"error": "wrong key"}, status=401)
        return _asset_response("index.html", 401)
    response = web.Response(status=204) if is_json else _see_page()
    if key is not None:
        response.set_cookie(UI_COOKIE, ui_token(key), path="/ui", httponly=True, samesite="Strict")
    return response


async def _logout(request: web.Request) -> web.Response:
    response = _see_page()
    response.del_cookie(UI_COOKIE, path="/ui")
    return response


def _see_page() -> web.Response:
    return web.Response(status=303, headers={"Location": "/ui/"})


def status_snapshot(state: GatewayState) -> dict[str, Any]:
    from sollol_cli.runtime.status import dashboard_status

    data = dashboard_status(state.runtime)
    data["models"] = with_failures(data["models"], state.feed.coordinator_failures)
    return data | {"serving": state.serving, "key_required": state.api_key is not None}


async def _status(request: web.Request) -> web.Response:
    return json_response(status_snapshot(gateway(request)))


async def _requests(request: web.Request) -> web.Response:
    """Newest first; `?model=`, `?backend=` and `?limit=` narrow it."""
    query = request.query
    try:
        limit = int(query["limit"]) if "limit" in query else None
    except ValueError:
        raise web.HTTPBadRequest(reason="limit must be a number") from None
    seen = gateway(request).feed.recent.newest(model=query.get("model"), backend=query.get("backend"), limit=limit)
    return json_response({"requests": [s.as_json() for s in seen]})


async def _traffic(request: web.Request) -> web.Response:
    return json_response(gateway(request).feed.traffic.snapshot())


async def _event_stream(request: web.Request) -> web.StreamResponse:
    """A server-sent event stream, its headers sent (no proxy buffering, no cache)."""
    response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.content_type = "text/event-stream"
    exchange(request).streaming = True
    await response.prepare(request)
    return response


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(request: web.Request) -> web.StreamResponse:
    """One stream per tab: `status` after probe rounds and finished requests, `request` for each finished
    request, `traffic` once per traffic bucket. Event-driven and debounced: a burst of requests costs one push
    per PUSH_GAP_S (the new requests and one status), an idle cluster one status per probe round."""
    state = gateway(request)
    monitor, feed, gate = state.runtime.monitor, state.feed, state.gate
    response = await _event_stream(request)
    loop = asyncio.get_running_loop()
    # Taken before each read of what they guard: a change while the data is built sets the next one.
    changed, added = monitor.changed, feed.changed
    cursor = feed.recent.last_seq
    await response.write(_event("status", status_snapshot(state)) + _event("traffic", feed.traffic.snapshot()))
    last_push = last_write = loop.time()
    next_traffic = last_push + feed.traffic.bucket_s
    while not gate.closing:
        if not (changed.is_set() or added.is_set()):
            timeout = max(0.0, min(next_traffic, last_write + KEEPALIVE_S) - loop.time())
            waits = [asyncio.ensure_future(e.wait()) for e in (changed, added, gate.stopping)]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            if gate.closing:
                break
        pending = changed.is_set() or added.is_set()
        if pending and (rest := last_push + PUSH_GAP_S - loop.time()) > 0:
            await asyncio.sleep(rest)  # let the burst go on: its requests go out together
        out = b""
        if added.is_set():
            added = feed.changed
            for seen in feed.recent.after(cursor):
                out += _event("request", seen.as_json())
                cursor = seen.seq
        if changed.is_set():
            changed = monitor.changed
            out += _event("status", status_snapshot(state))
        now = loop.time()
        if pending:
            last_push = now
        if now >= next_traffic:
            out += _event("traffic", feed.traffic.snapshot())
            next_traffic = now + feed.traffic.bucket_s
        if not out and now - last_write >= KEEPALIVE_S:
            out = b": keep-alive\n\n"
        if out:
            await response.write(out)
            last_write = now
    await response.write_eof()
    return response


async def _log_sources(request: web.Request) -> web.Response:
    """The logs that can be followed: `node` (empty: this machine) and `role` of each."""
    from sollol_cli.runtime import logs

    return json_response({"logs": [source.as_json() for source in logs.sources(gateway(request).runtime)]})


async def _follow_log(request: web.Request) -> web.StreamResponse:
    """`?node=&role=&lines=`: one log as a stream of `log` events (`{"text": ...}`, chunks as written), or one
    `failed` event (`{"message": ...}`) when it cannot be read. Opened by the page only while a log is shown."""
    from sollol_cli.errors import SollolError
    from sollol_cli.runtime import logs

    state, query = gateway(request), request.query
    try:
        lines = min(max(int(query.get("lines", "200")), 0), 5000)
    except ValueError:
        raise web.HTTPBadRequest(reason="lines must be a number") from None
    response = await _event_stream(request)

    async def pump() -> None:
        async for text in logs.follow(state.runtime, query.get("node", ""), query.get("role", ""), lines=lines):
            await response.write(_event("log", {"text": text}))

    task = asyncio.ensure_future(pump())
    stopping = asyncio.ensure_future(state.gate.stopping.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (task, stopping):
            waiting.cancel()
        await asyncio.wait([task])  # its `tail` is stopped before the answer ends
    if not task.cancelled() and not task.cancelled() and (error := task.exception()) is not None:
        if not isinstance(error, SollolError):
            raise error
        await response.write(_event("failed", {"message": error.message}))
    await response.write_eof()
    return response
