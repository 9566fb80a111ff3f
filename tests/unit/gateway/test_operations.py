"""API key, metrics, access log and status endpoint of the gateway."""

from __future__ import annotations

import json

import pytest

from sollol_cli.errors import UsageError
from sollol_cli.gateway.accesslog import Exchange, format_line, record
from sollol_cli.gateway.auth import api_key_from_env, authorized
from tests.unit.gateway.conftest import MakeGateway, MakeStandin


def test_authorized_compares_bearer_tokens() -> None:
    assert authorized("Bearer s3cret", b"s3cret")
    assert authorized("bearer  s3cret ", b"s3cret")
    assert not authorized("Bearer s3cre", b"s3cret")
    assert not authorized("Basic s3cret", b"s3cret")
    assert not authorized(None, b"s3cret")
    assert not authorized("", b"s3cret")


def test_api_key_comes_from_the_named_variable() -> None:
    assert api_key_from_env(None, {}) is None
    assert api_key_from_env("KEY", {"KEY": "abc"}) == b"abc"
    with pytest.raises(UsageError, match=r"gateway.api_key_env names \$KEY, but it is not set"):
        api_key_from_env("KEY", {})


async def test_requests_without_the_key_get_401(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"), api_key=b"k3y")
    resp = await gw.get("/api/tags")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in (await resp.json())["error"]
    resp = await gw.get("/api/tags", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await gw.get("/v1/models")
    assert (await resp.json())["error"]["type"] == "authentication_error"
    resp = await gw.get("/api/tags", headers={"Authorization": "Bearer k3y"})
    assert resp.status == 200
    assert (await gw.get("/")).status == 200  # liveness stays open
    assert (await gw.get("/metrics")).status == 401


async def test_metrics_count_requests_errors_tokens_and_latency(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a", response_tokens=4))
    await (await gw.post("/api/generate", {"model": "tiny", "prompt": "x"})).read()
    await (await gw.post("/api/generate", {"model": "nope", "prompt": "x"})).read()
    resp = await gw.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    text = await resp.text()
    assert 'sollol_gateway_requests_total{method="POST",route="/api/generate",status="200"} 1.0' in text
    assert 'sollol_gateway_errors_total{route="/api/generate",status="404"} 1.0' in text
    assert 'sollol_tokens_generated_total{backend="a"} 4.0' in text
    assert 'sollol_backend_request_seconds_count{backend="a"} 1.0' in text
    assert 'sollol_time_to_first_token_seconds_count{backend="a"} 1.0' in text
    assert "sollol_gateway_queue_depth 0.0" in text
    assert "sollol_gateway_in_flight 1.0" in text  # the /metrics request itself
    assert 'sollol_backend_in_flight{backend="a"} 0.0' in text
    assert 'sollol_backend_up{backend="a"} 1.0' in text


async def test_one_access_log_line_per_request(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a", response_tokens=2))
    await (await gw.post("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})).read()
    await (await gw.post("/api/chat", data=b"{")).read()
    assert len(gw.log) == 2
    ok, bad = (json.loads(line) for line in gw.log)
    assert ok["method"] == "POST" and ok["path"] == "/api/chat" and ok["status"] == 200
    assert ok["backend"] == "a" and ok["model"] == "tiny" and ok["tokens"] == 2
    assert ok["duration_ms"] >= ok["overhead_ms"] >= 0 and ok["ttft_ms"] >= 0
    assert bad["status"] == 400 and bad["error"].startswith("invalid JSON body")


def test_text_log_format() -> None:
    ex = Exchange("POST", "/api/chat", client="127.0.0.1", status=200, model="tiny", backend="a", error="x y")
    line = format_line(record(ex, 0.0123), "text")
    assert line.split(" ", 1)[1] == '127.0.0.1 "POST /api/chat" 200 12.3ms model=tiny backend=a error="x y"'


async def test_status_endpoint(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a", loaded=["tiny"]), standin("b", loaded=["tiny"]))
    data = await (await gw.get("/sollol/status")).json()
    assert data["cluster"] == "test" and data["reachable"] == 2 and data["total"] == 2
    assert [b["name"] for b in data["backends"]] == ["a", "b"]
    assert data["gateway"]["queue_depth"] == 0
    assert {m["sollol"]["backend"] for m in data["gateway"]["loaded"]} == {"a", "b"}
