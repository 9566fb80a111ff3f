"""Stand-ins for llama.cpp's ``rpc-server`` and ``llama-server`` in tests that run sollol's commands without root
and without the real build. NOT llama.cpp; never shipped. They really listen and answer what sollol asks:

- ``rpc-server -H HOST -p PORT [-t N] [-c] [-d DEV] [-m MB]``: the RPC wire protocol's HELLO (version 7.0.0),
  DEVICE_COUNT and GET_DEVICE_MEMORY, one client at a time like the real one (a second client is accepted by
  the kernel and never answered, so it looks busy).
- ``llama-server -m MODEL --host H --port P [-np N] [-c CTX] [--alias NAME] [--embeddings] [...]``:
  ``/health``, ``/props``, ``/slots``, ``/v1/models``, ``/apply-template``, ``/completion`` and
  ``/v1/chat/completions`` (SSE or one JSON object; a chat is answered on its ``/apply-template`` prompt), and
  ``/v1/embeddings``, which answers llama-server's own 501 unless it was started with ``--embeddings``. The
  answer is :func:`answer_tokens` of the alias and the prompt, the way the Ollama stand-in answers, so a test
  can say exactly what ``sollol run`` prints.

:func:`write_bin_dir` puts both as executables into a directory (what ``llama_cpp.bin_dir`` points at).
Each prints one line when it listens, and exits on SIGTERM or SIGINT. :func:`serving_llama` runs the
llama-server stand-in in this process instead, for tests on one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.standin.ollama_standin import answer_tokens, embedding_vector

RPC_VERSION = (7, 0, 0)
HELLO, DEVICE_COUNT, GET_DEVICE_MEMORY = 14, 15, 11
HELLO_REPLY_SIZE = 28
BUILD_INFO = "b0-standin"
DEFAULT_PREDICT = 8
EMBEDDING_LENGTH = 32
LLAMA_VALUE_FLAGS = {"-m", "--host", "--port", "-np", "-ngl", "-c", "-t", "--alias", "--rpc", "-ts", "-lv", "--pooling"}
# llama-server's answer to /v1/embeddings when it was started without --embeddings
NO_EMBEDDINGS = {
    "error": {
        "code": 501,
        "message": "This server does not support embeddings. Start it with `--embeddings`",
        "type": "not_supported_error",
    }
}
ROOT = Path(__file__).resolve().parents[2]


def _flags(argv: list[str], with_value: set[str]) -> dict[str, str]:
    """``-x VALUE`` and bare ``--flag`` arguments; unknown ones are kept (the real tools take many)."""
    found: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        found[arg] = next(args, "") if arg in with_value else "1"
    return found


# ----------------------------------------------------------------------------------------------- rpc-server


async def _rpc_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, free: int, total: int) -> None:
    while True:
        head = await reader.read(1)
        if not head:
            return
        size = int.from_bytes(await reader.readexactly(8), "little")
        payload = await reader.readexactly(size)
        if head[0] == HELLO:
            reply = bytes(RPC_VERSION) + bytes(HELLO_REPLY_SIZE - len(RPC_VERSION))
        elif head[0] == DEVICE_COUNT:
            reply = struct.pack("<I", 1)
        elif head[0] == GET_DEVICE_MEMORY and int.from_bytes(payload, "little") == 0:
            reply = struct.pack("<QQ", free, total)
        else:
            return  # like the real one: an unknown command ends the connection
        writer.write(len(reply).to_bytes(8, "little") + reply)
        await writer.drain()


async def rpc_server(argv: list[str]) -> None:
    flags = _flags(argv, {"-H", "-p", "-t", "-d", "-m"})
    host, port = flags.get("-H", "127.0.0.1"), int(flags.get("-p", "50052"))
    total = int(flags.get("-m", "4096")) * 1024 * 1024
    one_at_a_time = asyncio.Lock()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with one_at_a_time:
            try:
                await _rpc_client(reader, writer, total * 3 // 4, total)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

    server = await asyncio.start_server(client, host, port, backlog=1)
    print(f"rpc-server stand-in listening on {host}:{port} (protocol {'.'.join(map(str, RPC_VERSION))})", flush=True)
    async with server:
        await _until_signalled()


# ----------------------------------------------------------------------------------------------- llama-server


def _answer(alias: str, prompt: str, count: int) -> list[str]:
    return answer_tokens(alias, alias, prompt, 0, count)


def render_template(messages: Any) -> str:
    """The stand-in's chat template: what ``/apply-template`` answers and what a chat is answered on."""
    messages = messages if isinstance(messages, list) else []
    lines = [f"<|{m.get('role', '')}|>{m.get('content', '')}" for m in messages if isinstance(m, dict)]
    return "\n".join(lines) + "\n<|assistant|>"


def chat_answer(alias: str, messages: list[dict[str, Any]], count: int = DEFAULT_PREDICT) -> str:
    """The text the stand-in answers a chat with (``count`` tokens: ``max_tokens``, else its default)."""
    return "".join(_answer(alias, render_template(messages), count))


def llama_app(flags: dict[str, str]) -> Any:
    from aiohttp import web

    model = flags.get("-m", "model.gguf")
    alias = flags.get("--alias") or Path(model).stem
    slots = int(flags.get("-np", "1"))
    context = int(flags.get("-c", "4096"))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def props(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "build_info": BUILD_INFO,
                "model_path": model,
                "model_alias": alias,
                "total_slots": slots,
                "default_generation_settings": {"n_ctx": context},
            }
        )

    async def slot_list(request: web.Request) -> web.Response:
        return web.json_response([{"id": i, "is_processing": False} for i in range(slots)])

    async def models(request: web.Request) -> web.Response:
        meta = {"size": 1_000_000, "n_params": 1_200_000, "n_ctx_train": context}
        return web.json_response({"object": "list", "data": [{"id": alias, "object": "model", "meta": meta}]})

    async def apply_template(request: web.Request) -> web.Response:
        return web.json_response({"prompt": render_template((await request.json()).get("messages"))})

    async def completion(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = str(body.get("prompt") or "")
        count = int(body.get("n_predict") or -1)
        tokens = _answer(alias, prompt, count if count > 0 else DEFAULT_PREDICT)
        timings = {"prompt_n": len(prompt.split()), "prompt_ms": 1.0, "predicted_n": len(tokens), "predicted_ms": 2.0}
        final = {"content": "", "stop": True, "stop_type": "limit" if count > 0 else "eos", "timings": timings}
        final.update(tokens_predicted=len(tokens), tokens_evaluated=timings["prompt_n"], model=alias)
        if not body.get("stream"):
            return web.json_response({**final, "content": "".join(tokens)})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for token in tokens:
            await response.write(b"data: " + json.dumps({"content": token, "stop": False}).encode() + b"\n\n")
        await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = render_template(body.get("messages"))
        limit = int(body.get("max_tokens") or body.get("n_predict") or -1)
        tokens = _answer(alias, prompt, limit if limit > 0 else DEFAULT_PREDICT)
        finish = "length" if limit > 0 else "stop"
        usage = {"completion_tokens": len(tokens), "prompt_tokens": len(prompt.split())}
        usage["total_tokens"] = usage["completion_tokens"] + usage["prompt_tokens"]
        timings = {
            "prompt_n": usage["prompt_tokens"],
            "prompt_ms": 1.0,
            "predicted_n": len(tokens),
            "predicted_ms": 2.0,
        }
        head = {"created": int(time.time()), "id": "chatcmpl-standin", "model": alias, "system_fingerprint": BUILD_INFO}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(tokens)}
            choice = {"finish_reason": finish, "index": 0, "message": message}
            reply = {"choices": [choice], **head, "object": "chat.completion", "usage": usage, "timings": timings}
            return web.json_response(reply)

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            choice = {"finish_reason": finish_reason, "index": 0, "delta": delta}
            data = {"choices": [choice], **head, "object": "chat.completion.chunk", **extra}
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(event({"role": "assistant", "content": None}))
        for token in tokens:
            await response.write(event({"content": token}))
        if (body.get("stream_options") or {}).get("include_usage"):  # the usage event carries the timings
            await response.write(event({}, finish))
            last = {**head, "choices": [], "object": "chat.completion.chunk", "usage": usage, "timings": timings}
            await response.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        else:
            await response.write(event({}, finish, timings=timings))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(request: web.Request) -> web.Response:
        if not {"--embeddings", "--embedding"} & flags.keys():
            return web.json_response(NO_EMBEDDINGS, status=501)
        raw = (await request.json()).get("input")
        inputs = [str(raw)] if not isinstance(raw, list) else [str(text) for text in raw]
        data = [
            {"embedding": embedding_vector(alias, text, EMBEDDING_LENGTH), "index": i, "object": "embedding"}
            for i, text in enumerate(inputs)
        ]
        tokens = sum(len(text.split()) for text in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response({"model": alias, "object": "list", "usage": usage, "data": data})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/props", props)
    app.router.add_get("/slots", slot_list)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/apply-template", apply_template)
    app.router.add_post("/completion", completion)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    return app


@contextlib.asynccontextmanager
async def serving_llama(argv: list[str], host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """The llama-server stand-in with these command-line arguments, listening on host:port (0: a free port)
    on the running event loop until the block ends; yields the port."""
    from aiohttp import web

    runner = web.AppRunner(llama_app(_flags(argv, LLAMA_VALUE_FLAGS)), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound: int = runner.addresses[0][1]
        yield bound
    finally:
        await runner.cleanup()


async def llama_server(argv: list[str]) -> None:
    flags = _flags(argv, LLAMA_VALUE_FLAGS)
    host, port = flags.get("--host", "127.0.0.1"), int(flags.get("--port", "8080"))
    async with serving_llama(argv, host, port):
        print(f"llama-server stand-in listening on {host}:{port} with {flags.get('-m', '?')}", flush=True)
        await _until_signalled()


# ----------------------------------------------------------------------------------------------- executables


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(program: str, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        asyncio.run({"rpc-server": rpc_server, "llama-server": llama_server}[program](args))
    except OSError as err:
        print(f"{program} stand-in: {err}", file=sys.stderr)
        return 1
    return 0


def write_bin_dir(directory: Path, python: str = sys.executable) -> Path:
    """``rpc-server`` and ``llama-server`` stand-ins as executables in ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for program in ("rpc-server", "llama-server"):
        path = directory / program
        path.write_text(
            f"#!{python}\n"
            f'"""{program} stand-in for sollol\'s tests (tests/standin/llama_standins.py); not llama.cpp."""\n'
            "import sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.standin.llama_standins import main\n"
            f"sys.exit(main({program!r}))\n"
        )
        path.chmod(0o755)
    return directory


if __name__ == "__main__":
    sys.exit(main(os.path.basename(sys.argv[0])))
