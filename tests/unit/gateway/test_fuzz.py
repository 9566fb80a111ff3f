"""Property: whatever malformed request reaches the gateway (broken JSON, wrong types, huge or empty input,
unknown routes, wrong methods), the answer is a well-formed error of the route's API with a 4xx status,
never a 5xx and never a hang.

The gateway runs on its own event loop in a thread so hypothesis can drive it with a plain blocking client.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sollol_cli.backends.http import close_session
from sollol_cli.gateway import dashboard, routes_anthropic, routes_ollama, routes_openai
from sollol_cli.gateway.app import create_app
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from tests.harness.ollama import ThreadedStandin
from tests.standin.ollama_standin import StandinConfig
from tests.unit.gateway.conftest import cluster_of

MAX_BODY = 512 * 1024
JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
NOT_STRING = JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, str))
NOT_BOOL = JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, bool))
NOT_OBJECT = JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, dict))
NOT_LIST = JSON_VALUES.filter(lambda v: v is not None and not isinstance(v, list))
NOT_NUMBER = JSON_VALUES.filter(lambda v: v is not None and (isinstance(v, bool) or not isinstance(v, int | float)))

CHAT_MESSAGES = [{"role": "user", "content": "hi"}]
# route -> (method, a valid body, {field: strategy of values that are wrong for it})
ROUTES: dict[str, tuple[str, dict[str, Any], dict[str, st.SearchStrategy[Any]]]] = {
    "/api/generate": (
        "POST",
        {"model": "tiny", "prompt": "hi"},
        {"model": NOT_STRING, "prompt": NOT_STRING, "stream": NOT_BOOL, "options": NOT_OBJECT, "images": NOT_LIST},
    ),
    "/api/chat": (
        "POST",
        {"model": "tiny", "messages": CHAT_MESSAGES},
        {"messages": NOT_LIST, "tools": NOT_LIST, "think": st.lists(JSON_SCALARS, min_size=1)},
    ),
    "/api/embed": ("POST", {"model": "tiny", "input": "hi"}, {"input": NOT_STRING.filter(lambda v: not _strings(v))}),
    "/api/embeddings": ("POST", {"model": "tiny", "prompt": "hi"}, {"prompt": NOT_STRING}),
    "/api/show": ("POST", {"model": "tiny"}, {"model": NOT_STRING}),
    "/api/pull": ("POST", {"model": "tiny"}, {"stream": NOT_BOOL, "insecure": NOT_BOOL}),
    "/api/delete": ("DELETE", {"model": "tiny"}, {"model": NOT_STRING}),
    "/api/copy": ("POST", {"source": "tiny", "destination": "t2"}, {"source": NOT_STRING, "destination": NOT_STRING}),
    "/v1/chat/completions": ("POST", {"model": "tiny", "messages": CHAT_MESSAGES}, {"messages": NOT_LIST}),
    "/v1/completions": ("POST", {"model": "tiny", "prompt": "hi"}, {"stream": NOT_BOOL}),
    "/v1/embeddings": ("POST", {"model": "tiny", "input": "hi"}, {"model": NOT_STRING}),
}


def _routed_paths() -> frozenset[str]:
    """Every path the gateway answers (from its own route tables, so a new route is never drawn as unknown)."""
    app = web.Application()
    for add_routes in (routes_ollama.add_routes, routes_openai.add_routes, routes_anthropic.add_routes):
        add_routes(app)
    dashboard.add_routes(app)
    app_own = {"/metrics", "/sollol/status"}  # added by app.py itself
    return frozenset({resource.canonical.rstrip("/") for resource in app.router.resources()} | app_own)


ROUTED = _routed_paths()
OPTION_FIELDS = {
    "temperature": NOT_NUMBER,
    "num_predict": NOT_NUMBER,
    "stop": NOT_STRING.filter(lambda v: not _strings(v)),
}


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(method, path, body) that no correct server would answer with success."""
    path = draw(st.sampled_from(sorted(ROUTES)))
    method, valid, wrong = ROUTES[path]
    kind = draw(st.sampled_from(["wrong-type", "option", "no-model", "unknown-model", "not-object", "bytes", "empty",
                                 "huge", "deep", "too-large", "wrong-method", "unknown-route"]))  # fmt: skip
    body: Any = dict(valid)
    model_key = "source" if path == "/api/copy" else "model"
    if kind == "wrong-type":
        field = draw(st.sampled_from(sorted(wrong)))
        body[field] = draw(wrong[field])
    elif kind == "option" and path in ("/api/generate", "/api/chat"):
        field = draw(st.sampled_from(sorted(OPTION_FIELDS)))
        body["options"] = {field: draw(OPTION_FIELDS[field])}
    elif kind in ("no-model", "option"):
        body[model_key] = draw(st.sampled_from([None, "", "   "]))
    elif kind == "unknown-model":
        body[model_key] = "nope-" + draw(st.text(alphabet="abcdefghij:/._-", min_size=1, max_size=30))
    elif kind == "not-object":
        return method, path, json.dumps(draw(NOT_OBJECT)).encode()
    elif kind == "bytes":
        raw = draw(st.binary(max_size=200))
        return method, path, (raw if not _parses_as_object(raw) else b"{" + raw)
    elif kind == "empty":
        return method, path, draw(st.sampled_from([b"", b" ", b"\n\t "]))
    elif kind == "huge":
        body[model_key] = "nope-" + "x" * draw(st.integers(100_000, 400_000))  # a huge, unknown model name
    elif kind == "deep":
        depth = draw(st.integers(1000, 200_000))
        return method, path, b"[" * depth + b"]" * depth
    elif kind == "too-large":
        body["prompt"] = "y" * (MAX_BODY + draw(st.integers(1, 100_000)))
    elif kind == "wrong-method":
        return draw(st.sampled_from(sorted({"GET", "PUT", "PATCH", "POST", "DELETE"} - {method}))), path, b"{}"
    else:
        prefix = draw(st.sampled_from(["/api/", "/v1/", "/", "/sollol/"]))
        tail = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_./%", min_size=1, max_size=40))
        unknown = prefix + tail
        if unknown.rstrip("/") in ROUTED or unknown.startswith(("/v1/models/", "/ui/")):
            unknown = "/nowhere" + unknown
        return draw(st.sampled_from(["GET", "POST", "DELETE", "PUT"])), unknown, json.dumps(body).encode()
    return method, path, json.dumps(body).encode()


def _parses_as_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, RecursionError):
        return False


class ThreadedGateway:
    """An Ollama stand-in and the gateway, each on an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop_event: asyncio.Event | None = None

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        fake = ThreadedStandin(StandinConfig(name="a"))
        async with open_cluster(cluster_of([fake]), Settings()) as runtime:
            app = create_app(runtime, health_loop=False, max_body_bytes=MAX_BODY)
            runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.port = runner.addresses[0][1]
            self.ready.set()
            await self.stop_event.wait()
            await runner.cleanup()
            await close_session()
        fake.stop()

    def __enter__(self) -> ThreadedGateway:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


@pytest.fixture(scope="module")
def threaded_gateway() -> Iterator[ThreadedGateway]:
    with ThreadedGateway() as gw:
        yield gw


def send(port: int, method: str, path: str, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=malformed())
def test_malformed_requests_get_a_well_formed_4xx(threaded_gateway: ThreadedGateway, request: Any) -> None:
    method, path, body = request
    status, content_type, raw = send(threaded_gateway.port, method, path, body)
    assert 400 <= status < 500, (status, raw[:300])
    assert content_type.startswith("application/json")
    error = json.loads(raw)["error"]
    if path.startswith("/v1/"):
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
    else:
        assert isinstance(error, str) and error
