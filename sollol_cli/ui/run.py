"""`sollol run`: tokens to stdout as they arrive, stats to stderr, and the interactive chat."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from typing import Any

from rich.markup import escape

from sollol_cli import events
from sollol_cli.backends.base import Chunk, aggregate
from sollol_cli.errors import SollolError
from sollol_cli.runtime.dispatch import Dispatcher, Operation, Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, chat_request, generate_request, parse_chat
from sollol_cli.ui.console import err, print_json, report_warnings
from sollol_cli.ui.coordinators import narrative
from sollol_cli.ui.errors import print_error


def runtime_reporter(*, verbose: int) -> events.Reporter:
    """What `run` says on stderr about the runtime's own work, beside the request's: warnings always (a
    coordinator record set aside, an orphan found), and waiting for another sollol process that is loading the
    coordinator (on a terminal, or with -v). One line each: stdout carries the tokens."""

    def report(event: events.Event) -> None:
        if isinstance(event, events.Warning):
            report_warnings(event)
        elif isinstance(event, events.StepStarted) and event.step == "waiting" and (verbose or err().is_terminal):
            err().print(escape(f"{event.subject}: waiting {event.detail}"), style="dim")

    return report


def stats_line(trace: Trace, final: Chunk, *, verbose: int) -> str:
    parts = [trace.backend or "?", trace.mode]
    if trace.ttft_s is not None:
        parts.append(f"first token {trace.ttft_s * 1000:.0f} ms")
    if trace.tokens_per_s is not None:
        parts.append(f"{trace.tokens_per_s:.1f} tokens/s")
    if isinstance(final.get("eval_count"), int):
        parts.append(f"{final['eval_count']} tokens")
    if trace.queued_s >= 0.01:
        parts.append(f"queued {trace.queued_s:.2f} s")
    line = " · ".join(parts)
    if verbose:
        if trace.reason:
            line += f"\n  decision: {trace.reason}"
        for attempt in trace.attempts:
            line += f"\n  retried after: {attempt}"
        for event in trace.events:
            for note in narrative(event):
                line += f"\n  {note}"
    return line


def _write(token: str) -> None:
    sys.stdout.write(token)
    sys.stdout.flush()


async def one_shot(
    dispatcher: Dispatcher, model: str, text: str, options: PromptOptions, *, chat: bool, as_json: bool, verbose: int
) -> None:
    op: Operation = "chat" if chat else "generate"
    body = chat_request(model, parse_chat(text), options) if chat else generate_request(model, text, options)
    trace = Trace(model)
    if as_json:
        chunks = [chunk async for chunk in dispatcher.stream(op, body, trace)]
        print_json(aggregate(chunks))
        return
    wrote = False

    def on_token(token: str) -> None:
        nonlocal wrote
        wrote = True
        _write(token)

    try:
        final = await answer(dispatcher, op, body, trace, on_token)
    finally:
        if wrote:
            _write("\n")
    err().print(escape(stats_line(trace, final, verbose=verbose)), style="dim", highlight=False)


async def interactive_chat(dispatcher: Dispatcher, model: str, options: PromptOptions, *, verbose: int) -> None:
    """Like `ollama run`: the conversation is kept, /bye or Ctrl-D quits, Ctrl-C stops the current answer."""
    loop = asyncio.get_running_loop()
    messages: list[dict[str, Any]] = []
    current: asyncio.Task[Chunk] | None = None

    def on_sigint() -> None:
        if current is not None and not current.done():
            current.cancel()
        else:
            sys.stderr.write("\nUse Ctrl + d or /bye to exit.\n>>> ")
            sys.stderr.flush()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        while True:
            try:
                line = await loop.run_in_executor(None, _read_line, ">>> ")
            except EOFError:
                sys.stderr.write("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/bye", "/exit"):
                return
            messages.append({"role": "user", "content": text})
            trace = Trace(model)
            reply: list[str] = []
            on_token = _collector(reply)

            current = asyncio.ensure_future(
                answer(dispatcher, "chat", chat_request(model, list(messages), options), trace, on_token)
            )
            try:
                final = await current
            except asyncio.CancelledError:
                _write("\n")
                messages.pop()  # the question was not answered: do not keep half an answer in the history
                continue
            except SollolError as error:
                _write("\n" if reply else "")
                print_error(error)
                messages.pop()
                continue
            finally:
                current = None
            _write("\n\n")
            messages.append({"role": "assistant", "content": "".join(reply)})
            if verbose:
                err().print(escape(stats_line(trace, final, verbose=verbose)), style="dim", highlight=False)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _collector(reply: list[str]) -> Callable[[str], None]:
    def on_token(token: str) -> None:
        reply.append(token)
        _write(token)

    return on_token


def _read_line(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line
