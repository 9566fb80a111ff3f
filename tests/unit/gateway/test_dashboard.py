"""The dashboard's data (/ui/api/*), its event stream, its key, and its assets in the package."""

from __future__ import annotations

import asyncio
import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import aiohttp

from sollol_cli.gateway.auth import UI_COOKIE, ui_token
from sollol_cli.gateway.dashboard import asset
from sollol_cli.gateway.state import GATEWAY
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home
from sollol_cli.ssh.nodeproc import process_start_time
from tests.unit.gateway.conftest import Gateway, MakeGateway, MakeStandin, until

ASSETS = ("index.html", "app.js", "style.css")


async def test_status_shows_every_backend_with_its_state(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"), standin("b"))
    resp = await gw.get("/ui/api/status")
    assert resp.status == 200
    data = await resp.json()
    assert [row["name"] for row in data["backends"]] == ["a", "b"]
    for row in data["backends"]:
        assert row["state"] == "up"
        assert row["breaker"] == "closed"
        assert row["slots"] == 2 and row["in_use"] == 0
        assert row["probed_s_ago"] is not None
        assert row["models"] == ["tiny:latest"]
    assert data["serving"] is True and data["key_required"] is False
    assert data["gateway"] == {"in_flight": 0, "queue_depth": 0}
    assert [m["name"] for m in data["models"]] == ["tiny:latest"]
    assert data["models"][0]["mode"] == "distribute" and data["models"][0]["placement"] == []


async def test_a_request_through_the_gateway_is_in_recent_requests_and_traffic(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    gw = await gateway(standin("a", response_tokens=5))
    await (await gw.post("/api/generate", {"model": "tiny", "prompt": "hello", "stream": True})).read()
    await (await gw.post("/api/generate", {"model": "nope", "prompt": "x"})).read()
    await (await gw.get("/api/tags")).read()  # names no model: not a routing decision
    data = await (await gw.get("/ui/api/requests")).json()
    newest, first = data["requests"]
    assert (newest["model"], newest["status"], newest["backend"]) == ("nope", 404, None)
    assert (first["model"], first["backend"], first["status"], first["tokens"]) == ("tiny", "a", 200, 5)
    assert first["mode"] == "distribute" and first["reason"]
    assert first["ttft_s"] is not None and first["attempts"] == []
    only = await (await gw.get("/ui/api/requests?backend=a")).json()
    assert [r["seq"] for r in only["requests"]] == [first["seq"]]
    assert (await (await gw.get("/ui/api/requests?model=tiny&limit=0")).json())["requests"] == []
    assert (await gw.get("/ui/api/requests?limit=many")).status == 400
    traffic = await (await gw.get("/ui/api/traffic")).json()
    assert sum(traffic["cluster"]["errors"]) == 1
    assert sum(traffic["backends"]["a"]["tokens_per_s"]) > 0
    assert sorted(traffic["models"]) == ["nope", "tiny"]


async def test_a_retried_request_names_the_backend_it_left(gateway: MakeGateway, standin: MakeStandin) -> None:
    broken = standin("a")
    gw = await gateway(broken, standin("b"))  # equal backends are tried in name order here: a first
    broken.set_faults(http_500_next=1, routes=["/api/generate"])
    resp = await gw.post("/api/generate", {"model": "tiny", "prompt": "hi", "stream": False})
    assert resp.status == 200, await resp.text()
    (seen,) = (await (await gw.get("/ui/api/requests")).json())["requests"]
    assert seen["backend"] == "b"
    (attempt,) = seen["attempts"]
    assert "a" in attempt


class Stream:
    """The dashboard's event stream, read event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, name: str) -> dict[str, Any]:
        """The next event called `name` (others are skipped)."""
        event: str | None = None
        while True:
            line = (await self.response.content.readline()).decode()
            assert line, "the stream ended"
            if line.startswith("event: "):
                event = line[7:].strip()
            elif line.startswith("data: ") and event == name:
                data: dict[str, Any] = json.loads(line[6:])
                return data


async def test_the_stream_pushes_status_then_each_finished_request(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.get("/ui/api/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    stream = Stream(resp)
    assert [b["name"] for b in (await stream.next("status"))["backends"]] == ["a"]
    assert (await stream.next("traffic"))["bucket_s"] == 10
    await (await gw.post("/api/generate", {"model": "tiny", "prompt": "x", "stream": False})).read()
    request = await stream.next("request")
    assert (request["model"], request["backend"], request["status"]) == ("tiny", "a", 200)
    await gw.runtime.monitor.probe_all()  # a probe round: a fresh status
    assert (await stream.next("status"))["backends"][0]["state"] == "up"
    resp.close()


async def test_a_backend_that_stops_answering_turns_down_on_the_stream(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    gone = standin("b")
    gw = await gateway(standin("a"), gone)
    resp = await gw.get("/ui/api/events")
    stream = Stream(resp)
    await stream.next("status")
    gone.stop()
    await gw.runtime.monitor.probe_all()
    status = await stream.next("status")
    row = {r["name"]: r for r in status["backends"]}["b"]
    assert row["state"] == "down" and row["error"]
    resp.close()


async def test_the_stream_ends_when_the_gateway_stops(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    resp = await gw.get("/ui/api/events")
    await Stream(resp).next("status")
    assert await gw.app[GATEWAY].gate.drain(30) == 0  # ended by the stop, not cut after the grace period
    await resp.content.read()  # to its end
    resp.close()


async def _login(gw: Gateway, key: str, *, form: bool = True) -> aiohttp.ClientResponse:
    if form:
        return await gw.session.post(gw.url + "/ui/login", data={"key": key}, allow_redirects=False)
    return await gw.session.post(gw.url + "/ui/login", json={"key": key})


async def browser_like(gw: Gateway) -> Gateway:
    """`gw` with a session that keeps cookies of 127.0.0.1 as browsers do (aiohttp's jar refuses IP hosts)."""
    await gw.session.close()
    gw.session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    return gw


async def test_with_a_key_the_data_needs_the_key_or_the_login_cookie(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    gw = await browser_like(await gateway(standin("a"), api_key=b"k3y"))
    for path in ("/ui/api/status", "/ui/api/requests", "/ui/api/traffic", "/ui/api/events"):
        assert (await gw.get(path)).status == 401, path
        assert (await gw.get(path, headers={"Authorization": "Bearer wrong"})).status == 401, path
        assert (await gw.get(path, cookies={UI_COOKIE: "forged"})).status == 401, path
    page = await gw.get("/ui/")
    assert page.status == 401  # the page itself, asking for the key
    assert 'id="login-form"' in await page.text()
    for name in ("app.js", "style.css"):
        assert (await gw.get(f"/ui/{name}")).status == 200
    ok = await gw.get("/ui/api/status", headers={"Authorization": "Bearer k3y"})
    assert ok.status == 200 and (await ok.json())["key_required"] is True

    wrong = await _login(gw, "nope")
    assert wrong.status == 401 and 'id="login-form"' in await wrong.text()
    assert UI_COOKIE not in wrong.cookies
    assert (await _login(gw, "nope", form=False)).status == 401

    right = await _login(gw, "k3y")
    assert right.status == 303 and right.headers["Location"] == "/ui/"
    cookie = right.cookies[UI_COOKIE]
    assert cookie.value == ui_token(b"k3y") and cookie.value != "k3y"
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/ui"
    assert (await gw.get("/ui/api/status")).status == 200  # the session keeps the cookie
    assert (await gw.get("/ui/")).status == 200
    assert (await gw.get("/api/tags")).status == 401  # the cookie opens the dashboard only
    assert all("k3y" not in line for line in gw.log)

    await gw.session.post(gw.url + "/ui/logout", allow_redirects=False)
    assert (await gw.get("/ui/api/status")).status == 401
    await gw.session.close()


async def test_the_login_from_the_url_fragment_posts_json(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await browser_like(await gateway(standin("a"), api_key=b"k3y"))
    resp = await _login(gw, "k3y", form=False)
    assert resp.status == 204 and UI_COOKIE in resp.cookies
    assert (await gw.get("/ui/api/traffic")).status == 200
    await gw.session.close()


async def test_without_a_key_everything_is_open_and_ui_redirects(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    page = await gw.get("/ui")
    assert page.status == 200 and page.url.path == "/ui/"
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert (await gw.get("/ui/app.js")).headers["Content-Type"].startswith("text/javascript")
    assert (await gw.get("/ui/nothing.js")).status == 404


def test_the_page_uses_only_its_own_assets() -> None:
    html = asset("index.html").decode()
    assert 'src="/ui/app.js"' in html and 'href="/ui/style.css"' in html
    for name in ASSETS:
        text = asset(name).decode()
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "") and "https://" not in text, name


def test_the_wheel_ships_the_assets(tmp_path: Path) -> None:
    from hatchling.builders.wheel import WheelBuilder

    root = Path(__file__).parents[3]
    (wheel,) = WheelBuilder(str(root)).build(directory=str(tmp_path), versions=["standard"])
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ASSETS:
        assert f"sollol_cli/gateway/ui_assets/{name}" in names


async def test_the_logs_are_the_services_and_the_coordinators_here(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    data = await (await gw.get("/ui/api/logs")).json()
    assert data == {"logs": [{"node": "a", "role": "ollama"}]}
    record = running_coordinator(gw, "big", "loading...\nload_tensors: done\n")
    data = await (await gw.get("/ui/api/logs")).json()
    assert data["logs"][-1] == {"node": "", "role": "coordinator:big"}

    resp = await gw.get("/ui/api/logs/follow?node=&role=coordinator:big&lines=1")
    stream = Stream(resp)
    assert (await stream.next("log"))["text"] == "load_tensors: done\n"
    await asyncio.to_thread(append, Path(record.log), "slot print_timing: id 0 | task 1\n")
    assert (await stream.next("log"))["text"] == "slot print_timing: id 0 | task 1\n"  # as it is written
    resp.close()


async def test_a_log_that_cannot_be_followed_says_why(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"))
    for query, why in [
        ("node=nowhere&role=rpc", "no node named 'nowhere'"),
        ("node=&role=coordinator:big", "no coordinator for 'big' runs on this machine"),
        ("node=a&role=rpc", "node 'a' has no 'rpc' role"),
    ]:
        resp = await gw.get(f"/ui/api/logs/follow?{query}")
        assert resp.status == 200
        assert why in (await Stream(resp).next("failed"))["message"], query
    assert (await gw.get("/ui/api/logs/follow?lines=x")).status == 400


def append(path: Path, text: str) -> None:
    with path.open("a") as log:
        log.write(text)


def running_coordinator(gw: Gateway, model: str, log_text: str) -> coord.CoordinatorRecord:
    """A record of a coordinator on this machine that counts as alive (it names this test's own process)."""
    settings = gw.runtime.settings
    home = coordinator_home(settings, gw.runtime.cluster.name)
    log = settings.state_dir / f"{model}.log"
    log.write_text(log_text)
    pid = os.getpid()
    record = coord.CoordinatorRecord(
        model, "d", pid, process_start_time(pid) or 0, "127.0.0.1", 1, str(log), [], 0.0, 0.0, 60.0
    )
    coord.save_record(home, record)
    return record


async def test_a_loading_coordinator_says_for_how_long_and_queued_requests_count_per_model(
    gateway: MakeGateway, standin: MakeStandin
) -> None:
    a = standin("a")
    gw = await gateway(
        a,
        slots=1,
        backends=[{"name": "r1", "kind": "rpc", "address": "127.0.0.1", "port": 1}],
        models=[{"name": "big", "mode": "shard", "gguf": "/nowhere.gguf"}],
        routing={"queue_wait": 30},
    )
    record = running_coordinator(gw, "big", "loading...\n")  # saved before it is ready, as the manager does
    record.started_at = time.time() - 12
    coord.save_record(coordinator_home(gw.runtime.settings, "test"), record)
    a.set_faults(hold_after_tokens=1)  # the one slot stays taken: the next request waits in the queue
    first = asyncio.create_task(gw.post("/api/generate", json={"model": "tiny", "prompt": "x"}))
    await asyncio.to_thread(a.wait_until, lambda s: s["requests"].get("POST /api/generate", 0) == 1)
    second = asyncio.create_task(gw.post("/api/generate", json={"model": "tiny", "prompt": "y"}))
    await until(lambda: gw.runtime.dispatcher.waiting == 1, "a request in the queue")
    data = await (await gw.get("/ui/api/status")).json()
    models = {m["name"]: m for m in data["models"]}
    assert (models["tiny:latest"]["queued"], models["big"]["queued"]) == (1, 0)
    coordinator = models["big"]["coordinator"]
    assert coordinator["state"] == "loading" and coordinator["load_limit_s"] == 600.0
    assert 12 <= coordinator["loading_s"] < 600  # counted from its start, whichever process started it
    a.release()
    for task in (first, second):
        (await task).close()
