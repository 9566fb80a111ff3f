"""The OpenAI Responses API (`/v1/responses`) and the Anthropic Messages API (`/v1/messages`) through the
gateway, in front of Ollama stand-ins that speak them as Ollama does, used through the official `openai` and
`anthropic` clients. Every answer is checked against the same request sent straight to the stand-in that
served it (the stand-ins put their name in the first token)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.harness.ollama import StandinFactory
from tests.unit.gateway.conftest import MakeGateway, MakeStandin
from tests.unit.gateway.test_with_standins import Served, serve_standins  # noqa: F401  (a fixture)

QUESTION = "why is the sea blue?"
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]


def responses_calls(url: str) -> dict[str, Any]:
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    once = client.responses.create(model="tiny", input=QUESTION, instructions="be brief", max_output_tokens=6)
    events = list(client.responses.create(model="tiny", input=QUESTION, max_output_tokens=6, stream=True))
    listed = client.responses.create(
        model="tiny", max_output_tokens=4, input=[{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]
    )
    return {"once": once, "events": events, "listed": listed}


async def test_responses_api_with_the_openai_client(
    ollama_standin: StandinFactory,
    serve_standins: Callable[..., Any],  # noqa: F811
) -> None:
    standins = [ollama_standin({"name": n}) for n in ("s1", "s2")]
    served: Served = await serve_standins(standins)
    out = await asyncio.to_thread(responses_calls, served.url)
    once = out["once"]
    direct = await asyncio.to_thread(responses_calls, served.by_name(once.output_text).url)
    assert once.output_text == direct["once"].output_text != ""
    assert once.status == "completed" and once.model == "tiny" and once.instructions == "be brief"
    assert once.usage.output_tokens == 6 and once.usage.input_tokens == direct["once"].usage.input_tokens
    events = out["events"]
    assert [e.type for e in events] == [e.type for e in direct["events"]]
    assert [e.type for e in events][:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.output_text == text
    assert text == "".join(e.delta for e in direct["events"] if e.type == "response.output_text.delta")
    assert completed.response.usage.output_tokens == 6
    assert out["listed"].output_text.startswith("<s") and out["listed"].usage.output_tokens == 4


def messages_calls(url: str) -> dict[str, Any]:
    client = anthropic.Anthropic(base_url=url, api_key="unused")
    once = client.messages.create(model="tiny", max_tokens=6, system="be brief", messages=MESSAGES)
    with client.messages.stream(model="tiny", max_tokens=6, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    blocks = client.messages.create(
        model="tiny", max_tokens=3, messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    )
    return {"once": once, "pieces": pieces, "final": final, "blocks": blocks}


async def test_messages_api_with_the_anthropic_client(
    ollama_standin: StandinFactory,
    serve_standins: Callable[..., Any],  # noqa: F811
) -> None:
    standins = [ollama_standin({"name": n}) for n in ("s1", "s2")]
    served: Served = await serve_standins(standins)
    out = await asyncio.to_thread(messages_calls, served.url)
    once = out["once"]
    text = once.content[0].text
    direct = await asyncio.to_thread(messages_calls, served.by_name(text).url)
    assert text == direct["once"].content[0].text
    assert once.type == "message" and once.role == "assistant" and once.model == "tiny"
    assert once.stop_reason == "max_tokens" and once.usage.output_tokens == 6
    assert len(out["pieces"]) == 6
    assert "".join(out["pieces"]) == out["final"].content[0].text == direct["final"].content[0].text
    assert out["final"].stop_reason == "max_tokens" and out["final"].usage.output_tokens == 6
    assert out["blocks"].usage.output_tokens == 3


async def raw_events(url: str, path: str, body: dict[str, Any]) -> tuple[aiohttp.ClientResponse, list[str]]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body) as resp:
        raw = (await resp.read()).decode()
    return resp, [event for event in raw.split("\n\n") if event]


async def test_each_api_keeps_the_backends_own_event_framing(
    ollama_standin: StandinFactory,
    serve_standins: Callable[..., Any],  # noqa: F811
) -> None:
    standin = ollama_standin({"name": "solo"})
    served: Served = await serve_standins([standin])
    for path, body in (
        ("/v1/responses", {"model": "tiny", "input": QUESTION, "max_output_tokens": 5, "stream": True}),
        ("/v1/messages", {"model": "tiny", "max_tokens": 5, "messages": MESSAGES, "stream": True}),
    ):
        through, events = await raw_events(served.url, path, body)
        _, direct = await raw_events(standin.url, path, body)
        assert through.status == 200 and through.headers["Content-Type"].startswith("text/event-stream")
        assert through.headers["X-Sollol-Backend"] == "solo"
        kinds = [e.split("\n")[0] for e in events]
        assert kinds == [e.split("\n")[0] for e in direct] and all(k.startswith("event: ") for k in kinds)
        for event in events:  # every event whole: its type line, then one data line that is its JSON
            kind, data = event.split("\n")
            assert json.loads(data.removeprefix("data: "))["type"] == kind.removeprefix("event: ")


async def test_errors_come_in_each_apis_own_shape(
    ollama_standin: StandinFactory,
    serve_standins: Callable[..., Any],  # noqa: F811
) -> None:
    served: Served = await serve_standins([ollama_standin({"name": "solo"})])
    claude = anthropic.AsyncAnthropic(base_url=served.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await claude.messages.create(model="nope", max_tokens=5, messages=MESSAGES)
    assert missing.value.body == {
        "type": "error", "error": {"type": "not_found_error", "message": "model 'nope' not found on any node; see `sollol status`"},
    }  # fmt: skip
    async with aiohttp.ClientSession() as session:
        body = {"model": "tiny", "max_tokens": "x", "messages": MESSAGES}
        async with session.post(served.url + "/v1/messages", json=body) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "type": "error",
                "error": {"type": "invalid_request_error",
                          "message": "invalid request: 'max_tokens' must be an integer, not a string"},
            }  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as refused:  # the stand-in's own 400, passed on in its shape
        await claude.messages.create(model="tiny", max_tokens=0, messages=MESSAGES)
    assert refused.value.body["error"]["message"] == "max_tokens is required and must be positive"  # type: ignore[index]
    gpt = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as unknown:
        await gpt.responses.create(model="nope", input="hi")
    assert unknown.value.body == {
        "message": "model 'nope' not found on any node; see `sollol status`", "type": "not_found_error", "param": None, "code": None,
    }  # fmt: skip


async def test_a_stream_that_breaks_ends_with_each_apis_error_event(
    ollama_standin: StandinFactory,
    serve_standins: Callable[..., Any],  # noqa: F811
) -> None:
    standin = ollama_standin({"name": "solo", "tokens_per_second": 1000})
    served: Served = await serve_standins([standin])
    standin.set_faults(drop_after_tokens=3)
    claude = anthropic.AsyncAnthropic(base_url=served.url, api_key="unused", max_retries=0)
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as broken:
        async with claude.messages.stream(model="tiny", max_tokens=8, messages=MESSAGES) as stream:
            async for text in stream.text_stream:
                pieces.append(text)
    assert len(pieces) == 3
    assert broken.value.body["type"] == "error"  # type: ignore[index]
    assert broken.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "solo" in broken.value.body["error"]["message"]  # type: ignore[index]
    gpt = openai.AsyncOpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    deltas: list[str] = []
    with pytest.raises(openai.APIError) as failed:
        async for event in await gpt.responses.create(model="tiny", input="x", max_output_tokens=8, stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert len(deltas) == 3 and "solo" in failed.value.message


def unstamped(events: str) -> str:
    """A Responses stream without what differs between two answers to the same request: ids and times."""
    events = re.sub(r'"(id|item_id)":"(resp|msg)_\d+"', r'"\1":"\2_"', events)
    return re.sub(r'"(created_at|completed_at)":\d+', r'"\1":0', events)


async def test_tokens_are_counted_from_each_apis_usage(gateway: MakeGateway, standin: MakeStandin) -> None:
    """The count is each API's `usage`, not a count of text events: the stand-in sends three tokens per
    event here, as Ollama does when it held text back."""
    a = standin("a", response_tokens=9, tokens_per_chunk=3)
    gw = await gateway(a)
    once = await gw.post("/v1/responses", {"model": "tiny", "input": "x"})
    message = await gw.post("/v1/messages", {"model": "tiny", "max_tokens": 4, "messages": MESSAGES})
    assert (once.status, message.status) == (200, 200)
    assert ((await once.json())["usage"]["output_tokens"], (await message.json())["usage"]["output_tokens"]) == (9, 4)
    assert [json.loads(line)["tokens"] for line in gw.log] == [9, 4]
    body = {"model": "tiny", "input": "x", "stream": True}
    resp = await gw.post("/v1/responses", body)
    through = (await resp.read()).decode()
    _, direct = await raw_events(a.url, "/v1/responses", body)
    assert unstamped(through) == unstamped("".join(event + "\n\n" for event in direct))  # passed through as it came
    assert through.count("event: response.output_text.delta\n") == 3
    completed = json.loads(through.split("\n\n")[-2].split("\n")[1].removeprefix("data: "))
    assert completed["type"] == "response.completed" and completed["response"]["usage"]["output_tokens"] == 9
    assert json.loads(gw.log[-1])["tokens"] == 9


async def test_anthropic_clients_may_send_the_key_as_x_api_key(gateway: MakeGateway, standin: MakeStandin) -> None:
    gw = await gateway(standin("a"), api_key=b"k3y")
    body = {"model": "tiny", "max_tokens": 4, "messages": MESSAGES}
    resp = await gw.post("/v1/messages", body)
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    resp = await gw.post("/v1/messages", body, headers={"x-api-key": "wrong"})
    assert resp.status == 401
    resp = await gw.post("/v1/messages", body, headers={"x-api-key": "k3y"})
    assert resp.status == 200  # past the key: the stand-in's answer
    assert (await resp.json())["content"][0]["text"].startswith("<a>")
    resp = await gw.post("/v1/messages", body, headers={"Authorization": "Bearer k3y"})
    assert resp.status == 200
