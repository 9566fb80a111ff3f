"""Each client of the compatibility matrix, call by call: `observe(client, call, target)` makes the call the
way a user of that client would and returns what came back in one shape for every client; `check` says
whether that is a right answer. Python clients are imported here; the JS ones run as `node js/run.mjs`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent / "js"
MESSAGES = [{"role": "user", "content": "Tell me about the sea."}]
PROMPT = "Once upon a time"
PREDICT = 5  # the `options` cells ask for exactly this many tokens
SHORT = {"num_predict": 8, "temperature": 0, "seed": 1}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
# For clients that parse the JSON themselves and refuse an object cut short: the grammar then ends it within a
# few tokens, whatever a random-weights test model would rather say
BOUNDED_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 8}},
    "required": ["answer"],
    "additionalProperties": False,
}
TEXTS = ["the sea", "a mountain"]
Obs = dict[str, Any]


@dataclass
class Target:
    """One backend behind the gateway: the model name a user types, and what `ps` must show after unload."""

    url: str
    backend: str
    model: str
    pull_model: str = ""
    js_results: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def tagged(self) -> str:
        return self.model if ":" in self.model else f"{self.model}:latest"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where every client must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI must run every client)")
    pytest.skip(reason)


def need(module: str) -> Any:
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        unavailable(f"{module} is not installed: pip install -e '.[compat]'")
        raise  # unreachable


def vectors(rows: list[list[float]]) -> Obs:
    return {"count": len(rows), "dims": [len(r) for r in rows], "distinct": len({tuple(r) for r in rows}) == len(rows)}


def http(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as reply:
        return json.loads(reply.read())


def loaded(t: Target) -> list[str]:
    return [m["model"] for m in http("GET", t.url + "/api/ps")["models"]]


# --------------------------------------------------------------------------------------------- ollama (Python)


def ollama_python(call: str, t: Target) -> Obs:
    ollama = need("ollama")
    c = ollama.Client(host=t.url, timeout=300)
    m = t.model
    if call == "chat":
        return {"text": c.chat(model=m, messages=MESSAGES, options=SHORT).message.content}
    if call == "chat_stream":
        return {
            "text": "".join(p.message.content for p in c.chat(model=m, messages=MESSAGES, options=SHORT, stream=True))
        }
    if call == "generate":
        return {"text": c.generate(model=m, prompt=PROMPT, options=SHORT).response}
    if call == "generate_stream":
        return {"text": "".join(p.response for p in c.generate(model=m, prompt=PROMPT, options=SHORT, stream=True))}
    if call == "tools":
        msg = c.chat(model=m, messages=MESSAGES, tools=[TOOL], options=SHORT).message
        return {"text": msg.content or "", "tool_calls": len(msg.tool_calls or [])}
    if call == "options":
        return {"tokens": c.chat(model=m, messages=MESSAGES, options={**SHORT, "num_predict": PREDICT}).eval_count}
    if call == "structured":
        return {"text": c.chat(model=m, messages=MESSAGES, format=SCHEMA, options=SHORT).message.content}
    if call == "list":
        return {"models": [x.model for x in c.list().models]}
    if call == "show":
        return {"format": c.show(m).details.format}
    if call == "ps":
        c.generate(model=m, prompt="Hi", options={"num_predict": 1})
        return {"models": [x.model for x in c.ps().models]}
    if call == "embed":
        return vectors(c.embed(model=m, input=TEXTS).embeddings)
    if call == "embed_legacy":
        return vectors([list(c.embeddings(model=m, prompt=TEXTS[0]).embedding)])
    if call == "pull":
        return {"statuses": [p.status for p in c.pull(t.pull_model, stream=True)]}
    if call == "unload":
        c.generate(model=m, prompt="Hi", options={"num_predict": 1})
        return {"done_reason": c.generate(model=m, prompt="", keep_alive=0).done_reason, "ps": loaded(t)}
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- openai (Python)


def openai_python(call: str, t: Target) -> Obs:
    openai = need("openai")
    c = openai.OpenAI(base_url=t.url + "/v1", api_key="unused", timeout=300)
    m = t.model
    short: dict[str, Any] = {"max_tokens": 8, "temperature": 0, "seed": 1}
    if call == "chat":
        return {"text": c.chat.completions.create(model=m, messages=MESSAGES, **short).choices[0].message.content}
    if call == "chat_stream":
        chunks = c.chat.completions.create(model=m, messages=MESSAGES, stream=True, **short)
        return {"text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)}
    if call == "generate":
        return {"text": c.completions.create(model=m, prompt=PROMPT, **short).choices[0].text}
    if call == "generate_stream":
        chunks = c.completions.create(model=m, prompt=PROMPT, stream=True, **short)
        return {"text": "".join(ch.choices[0].text for ch in chunks if ch.choices)}
    if call == "tools":
        msg = c.chat.completions.create(model=m, messages=MESSAGES, tools=[TOOL], **short).choices[0].message
        return {"text": msg.content or "", "tool_calls": len(msg.tool_calls or [])}
    if call == "options":
        reply = c.chat.completions.create(model=m, messages=MESSAGES, **{**short, "max_tokens": PREDICT})
        return {"tokens": reply.usage.completion_tokens}
    if call == "structured":
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
        return {
            "text": c.chat.completions.create(model=m, messages=MESSAGES, response_format=fmt, **short)
            .choices[0]
            .message.content
        }
    if call == "list":
        return {"models": [x.id for x in c.models.list()]}
    if call == "show":
        return {"id": c.models.retrieve(m).id}
    if call == "embed":
        return vectors([d.embedding for d in c.embeddings.create(model=m, input=TEXTS).data])
    if call == "responses":
        reply = c.responses.create(model=m, input=MESSAGES[0]["content"], max_output_tokens=16)
        events = c.responses.create(model=m, input=MESSAGES[0]["content"], max_output_tokens=16, stream=True)
        streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        return {"text": reply.output_text, "stream_text": streamed}
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- LangChain


def langchain_ollama(call: str, t: Target) -> Obs:
    lc = need("langchain_ollama")
    chat = lc.ChatOllama(model=t.model, base_url=t.url, num_predict=8, temperature=0, seed=1)
    if call == "chat":
        return {"text": chat.invoke(MESSAGES).content}
    if call == "chat_stream":
        return {"text": "".join(str(ch.content) for ch in chat.stream(MESSAGES))}
    llm = lc.OllamaLLM(model=t.model, base_url=t.url, num_predict=8, temperature=0, seed=1)
    if call == "generate":
        return {"text": llm.invoke(PROMPT)}
    if call == "generate_stream":
        return {"text": "".join(llm.stream(PROMPT))}
    if call == "tools":
        msg = chat.bind_tools([TOOL]).invoke(MESSAGES)
        return {"text": msg.content, "tool_calls": len(msg.tool_calls)}
    if call == "options":
        chat = lc.ChatOllama(model=t.model, base_url=t.url, num_predict=PREDICT, temperature=0, seed=1)
        return {"tokens": chat.invoke(MESSAGES).response_metadata["eval_count"]}
    if call == "structured":
        chat = lc.ChatOllama(model=t.model, base_url=t.url, num_predict=8, temperature=0, seed=1, format=SCHEMA)
        return {"text": chat.invoke(MESSAGES).content}
    if call == "embed":
        return vectors(lc.OllamaEmbeddings(model=t.model, base_url=t.url).embed_documents(TEXTS))
    raise AssertionError(call)


def langchain_openai(call: str, t: Target) -> Obs:
    lc = need("langchain_openai")
    base = {"model": t.model, "base_url": t.url + "/v1", "api_key": "unused", "temperature": 0, "seed": 1}
    chat = lc.ChatOpenAI(**base, max_tokens=8)
    if call == "chat":
        return {"text": chat.invoke(MESSAGES).content}
    if call == "chat_stream":
        return {"text": "".join(str(ch.content) for ch in chat.stream(MESSAGES))}
    if call == "tools":
        msg = chat.bind_tools([TOOL]).invoke(MESSAGES)
        return {"text": msg.content, "tool_calls": len(msg.tool_calls)}
    if call == "options":
        return {"tokens": lc.ChatOpenAI(**base, max_tokens=PREDICT).invoke(MESSAGES).usage_metadata["output_tokens"]}
    if call == "structured":
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": BOUNDED_SCHEMA}}
        # LangChain parses the JSON itself and refuses an answer cut short: room for the whole object
        return {"text": lc.ChatOpenAI(**base, max_tokens=64).invoke(MESSAGES, response_format=fmt).content}
    if call == "embed":
        # raw text, as the LangChain docs say for servers other than OpenAI (the default sends tiktoken ids)
        emb = lc.OpenAIEmbeddings(
            model=t.model, base_url=t.url + "/v1", api_key="unused", check_embedding_ctx_length=False
        )
        return vectors(emb.embed_documents(TEXTS))
    if call == "responses":
        base.pop("seed")  # not a Responses API parameter
        chat = lc.ChatOpenAI(**base, max_tokens=16, use_responses_api=True)
        return {"text": chat.invoke(MESSAGES).text, "stream_text": "".join(ch.text for ch in chat.stream(MESSAGES))}
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- LlamaIndex


def llamaindex_ollama(call: str, t: Target) -> Obs:
    llms = need("llama_index.llms.ollama")
    from llama_index.core.llms import ChatMessage

    def llm(**kwargs: Any) -> Any:
        options = {"num_predict": 8, "seed": 1, **kwargs.pop("options", {})}
        return llms.Ollama(
            model=t.model, base_url=t.url, request_timeout=300, temperature=0, additional_kwargs=options, **kwargs
        )

    messages = [ChatMessage(role="user", content=MESSAGES[0]["content"])]
    if call == "chat":
        return {"text": llm().chat(messages).message.content}
    if call == "chat_stream":
        return {"text": "".join(r.delta or "" for r in llm().stream_chat(messages))}
    if call == "generate":
        return {"text": llm().complete(PROMPT).text}
    if call == "generate_stream":
        return {"text": "".join(r.delta or "" for r in llm().stream_complete(PROMPT))}
    if call == "tools":
        from llama_index.core.tools import FunctionTool

        def get_weather(city: str) -> str:
            """The weather in a city."""
            return "sunny"

        reply = llm().chat_with_tools([FunctionTool.from_defaults(fn=get_weather)], user_msg=MESSAGES[0]["content"])
        return {
            "text": reply.message.content or "",
            "tool_calls": len(reply.message.additional_kwargs.get("tool_calls") or []),
        }
    if call == "options":
        return {"tokens": llm(options={"num_predict": PREDICT}).chat(messages).raw["eval_count"]}
    if call == "structured":
        return {"text": llm(json_mode=True).chat(messages).message.content}
    if call == "embed":
        emb = need("llama_index.embeddings.ollama").OllamaEmbedding(model_name=t.model, base_url=t.url)
        return vectors(emb.get_text_embedding_batch(TEXTS))
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- LiteLLM


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list at import
    litellm = need("litellm")
    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def litellm_call(provider: str, call: str, t: Target) -> Obs:
    litellm = _litellm()
    if provider == "openai":
        where: dict[str, Any] = {"model": f"openai/{t.model}", "api_base": t.url + "/v1", "api_key": "unused"}
    else:
        where = {"model": f"{provider}/{t.model}", "api_base": t.url}
    short = {"max_tokens": 8, "temperature": 0, "seed": 1}
    messages = MESSAGES if call not in ("generate", "generate_stream") else [{"role": "user", "content": PROMPT}]
    if call in ("chat", "generate"):
        return {"text": litellm.completion(**where, messages=messages, **short).choices[0].message.content}
    if call in ("chat_stream", "generate_stream"):
        chunks = litellm.completion(**where, messages=messages, stream=True, **short)
        return {"text": "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)}
    if call == "tools":
        msg = litellm.completion(**where, messages=MESSAGES, tools=[TOOL], **short).choices[0].message
        return {"text": msg.content or "", "tool_calls": len(msg.tool_calls or [])}
    if call == "options":
        reply = litellm.completion(**where, messages=MESSAGES, **{**short, "max_tokens": PREDICT})
        return {"tokens": reply.usage.completion_tokens}
    if call == "embed":
        return vectors([d["embedding"] for d in litellm.embedding(**where, input=TEXTS).data])
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- Anthropic


def anthropic_python(call: str, t: Target) -> Obs:
    anthropic = need("anthropic")
    c = anthropic.Anthropic(base_url=t.url, api_key="unused", timeout=300)
    assert call == "messages"
    reply = c.messages.create(model=t.model, max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
    with c.messages.stream(model=t.model, max_tokens=16, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        streamed = "".join(stream.text_stream)
    return {"text": "".join(b.text for b in reply.content if b.type == "text"), "stream_text": streamed}


# --------------------------------------------------------------------------------------------- curl


def curl(t: Target, path: str, body: Any = None) -> tuple[int, str]:
    if shutil.which("curl") is None:
        unavailable("curl is not installed")
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", t.url + path]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    text, _, status = done.stdout.rpartition("\n")
    if not status.startswith("2"):
        raise RuntimeError(f"HTTP {status}: {text}")
    return int(status), text


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sse(text: str) -> list[Any]:
    """The JSON data of each server-sent event (`data: ...`; `[DONE]` is left out)."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def curl_call(call: str, t: Target) -> Obs:
    m = t.model
    chat = {"model": m, "messages": MESSAGES, "options": SHORT}
    gen = {"model": m, "prompt": PROMPT, "options": SHORT}
    if call == "chat":
        return {"text": json.loads(curl(t, "/api/chat", {**chat, "stream": False})[1])["message"]["content"]}
    if call == "chat_stream":  # curl's default: Ollama streams unless told not to
        return {"text": "".join(p["message"]["content"] for p in lines(curl(t, "/api/chat", chat)[1]))}
    if call == "generate":
        return {"text": json.loads(curl(t, "/api/generate", {**gen, "stream": False})[1])["response"]}
    if call == "generate_stream":
        return {"text": "".join(p["response"] for p in lines(curl(t, "/api/generate", gen)[1]))}
    if call == "list":
        return {"models": [x["model"] for x in json.loads(curl(t, "/api/tags")[1])["models"]]}
    if call == "show":
        return {"format": json.loads(curl(t, "/api/show", {"model": m})[1])["details"]["format"]}
    if call == "ps":
        curl(t, "/api/generate", {"model": m, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
        return {"models": [x["model"] for x in json.loads(curl(t, "/api/ps")[1])["models"]]}
    if call == "embed":
        return vectors(json.loads(curl(t, "/api/embed", {"model": m, "input": TEXTS})[1])["embeddings"])
    if call == "embed_legacy":
        return vectors([json.loads(curl(t, "/api/embeddings", {"model": m, "prompt": TEXTS[0]})[1])["embedding"]])
    if call == "pull":
        return {
            "statuses": [
                p.get("status", p.get("error")) for p in lines(curl(t, "/api/pull", {"model": t.pull_model})[1])
            ]
        }
    if call == "unload":
        curl(t, "/api/generate", {"model": m, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
        reply = json.loads(curl(t, "/api/generate", {"model": m, "keep_alive": 0})[1])
        return {"done_reason": reply.get("done_reason"), "ps": loaded(t)}
    if call == "responses":
        body = {"model": m, "input": MESSAGES[0]["content"], "max_output_tokens": 16}
        text = "".join(
            c.get("text", "")
            for o in json.loads(curl(t, "/v1/responses", body)[1])["output"]
            for c in o.get("content", [])
        )
        events = sse(curl(t, "/v1/responses", {**body, "stream": True})[1])
        streamed = "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")
        return {"text": text, "stream_text": streamed}
    if call == "messages":
        body = {"model": m, "max_tokens": 16, "messages": MESSAGES}
        reply = json.loads(curl(t, "/v1/messages", body)[1])
        events = sse(curl(t, "/v1/messages", {**body, "stream": True})[1])
        streamed = "".join(e["delta"].get("text", "") for e in events if e.get("type") == "content_block_delta")
        return {"text": "".join(b.get("text", "") for b in reply["content"]), "stream_text": streamed}
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- Open WebUI


def open_webui(call: str, t: Target) -> Obs:
    """The requests Open WebUI's backend (routers/ollama.py, routers/openai.py) sends, parsed as it parses them."""
    if call == "list":
        assert http("GET", t.url + "/api/version")["version"]  # "verify connection"
        models = [x["model"] for x in http("GET", t.url + "/api/tags")["models"]]
        for running in http("GET", t.url + "/api/ps")["models"]:
            if "expires_at" in running:  # Open WebUI shows when each loaded model expires
                datetime.fromisoformat(running["expires_at"])
        openai_ids = [x["id"] for x in http("GET", t.url + "/v1/models")["data"]]
        assert sorted(openai_ids) == sorted(models), (openai_ids, models)
        return {"models": models}
    if call == "chat_stream":
        body = json.dumps({"model": t.model, "messages": MESSAGES, "stream": True, "options": SHORT}).encode()
        request = urllib.request.Request(t.url + "/api/chat", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as reply:
            parts = [json.loads(line) for line in reply if line.strip()]
        assert parts[-1]["done"] is True
        return {"text": "".join(p["message"]["content"] for p in parts)}
    raise AssertionError(call)


# --------------------------------------------------------------------------------------------- JS (node)


def js_ready() -> Path:
    """node_modules of tests/compat/js, installed with `npm ci` from the lockfile when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm are not installed: the JS clients cannot run")
    if not (JS_DIR / "node_modules" / ".package-lock.json").exists():
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sollol" / "npm"
        argv = ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--cache", str(cache)]
        done = subprocess.run(argv, cwd=JS_DIR, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            pytest.fail(f"npm ci in {JS_DIR} failed:\n{done.stdout}\n{done.stderr}")
    return JS_DIR


def js_client(client: str, call: str, t: Target) -> Obs:
    """All of a JS client's calls on one backend run in one node process (the first cell asks); each cell
    then reads its own result."""
    from tests.compat.matrix import CALLS, SUPPORTED

    key = (client, t.backend)
    if call == "pull":  # a model of its own, so it runs on its own
        key = (client, "pull")
    if key not in t.js_results:
        calls = ["pull"] if call == "pull" else [c for c in CALLS if c in SUPPORTED[client] and c != "pull"]
        model = t.pull_model if call == "pull" else t.model
        argv = ["node", "run.mjs", client, t.url, model, ",".join(calls)]
        done = subprocess.run(argv, cwd=js_ready(), capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"node run.mjs exited {done.returncode}:\n{done.stderr}")
        t.js_results[key] = json.loads(done.stdout)
    result = t.js_results[key][call]
    if "error" in result:
        raise RuntimeError(result["error"])
    observed: Obs = result["ok"]
    return observed


# --------------------------------------------------------------------------------------------- dispatch, checks

OBSERVERS: dict[str, Callable[[str, Target], Obs]] = {
    "ollama-python": ollama_python,
    "ollama-js": lambda call, t: js_client("ollama-js", call, t),
    "openai-python": openai_python,
    "openai-js": lambda call, t: js_client("openai-js", call, t),
    "langchain-ollama": langchain_ollama,
    "langchain-openai": langchain_openai,
    "llamaindex-ollama": llamaindex_ollama,
    "litellm-ollama": lambda call, t: litellm_call("ollama", call, t),
    "litellm-ollama-chat": lambda call, t: litellm_call("ollama_chat", call, t),
    "litellm-openai": lambda call, t: litellm_call("openai", call, t),
    "anthropic": anthropic_python,
    "curl": curl_call,
    "open-webui": open_webui,
}


def tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def check(call: str, obs: Obs, t: Target) -> None:
    """Assert that `obs` is a right answer to `call` (the same rule for every client)."""
    if call in ("chat", "chat_stream", "generate", "generate_stream"):
        assert isinstance(obs["text"], str) and obs["text"].strip(), obs
    elif call == "tools":  # a tiny model rarely calls the tool; the request must be understood and answered
        assert obs["tool_calls"] > 0 or obs["text"].strip(), obs
    elif call == "options":
        assert obs["tokens"] == PREDICT, obs
    elif call == "structured":  # constrained to JSON: an object starts, however far the tokens allowed
        assert obs["text"].lstrip().startswith("{"), obs
    elif call in ("list", "ps"):
        assert t.tagged in [tagged(name) for name in obs["models"]], obs
    elif call == "show":
        assert obs.get("format") == "gguf" or tagged(obs.get("id", "")) == t.tagged, obs
    elif call in ("embed", "embed_legacy"):
        count = 2 if call == "embed" else 1
        assert obs["count"] == count and len(set(obs["dims"])) == 1 and obs["dims"][0] > 0 and obs["distinct"], obs
    elif call == "pull":
        assert obs["statuses"][-1] == "success", obs
    elif call == "unload":
        assert obs["done_reason"] == "unload", obs
        if t.backend != "llama":  # a llama-server node is a process sollol does not own: its model stays
            assert t.tagged not in [tagged(name) for name in obs["ps"]], obs
    elif call in ("responses", "messages"):
        assert obs["text"].strip() and obs["stream_text"].strip(), obs
    else:
        raise AssertionError(f"no check for {call}")


def observe(client: str, call: str, t: Target) -> Obs:
    return OBSERVERS[client](call, t)
