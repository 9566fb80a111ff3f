"""Every way a request can fail, as an HTTP status and one clear message, in Ollama's, OpenAI's or
Anthropic's shape.

Ollama answers errors with `{"error": "message"}`; its OpenAI-compatible routes (/v1/...) answer
`{"error": {"message", "type", "param", "code"}}` and its Anthropic-compatible /v1/messages
`{"type": "error", "error": {"type", "message"}}`. Clients of each API parse their own shape, so the
gateway answers each route family in the shape its clients expect.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sollol_cli.backends.base import BackendUnavailable, StreamBroken, Unsupported, UpstreamError
from sollol_cli.errors import ModelNotFound, NoHealthyBackend, QueueFull, SollolError
from sollol_cli.health import Answer, judge_answer

JSON_TYPE = "application/json; charset=utf-8"


class Problem(Exception):
    """A request the gateway refuses or cannot serve; becomes an error response with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def problem_for(exc: BaseException) -> Problem:
    """Map an exception from the runtime or a backend onto a status and message for the client."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, ModelNotFound):
        return Problem(404, str(exc))
    if isinstance(exc, NoHealthyBackend | QueueFull):
        return Problem(503, str(exc))
    if isinstance(exc, UpstreamError):
        # The backend's own 4xx is the client's mistake: forward it as Ollama would have answered it.
        if exc.status < 500:
            return Problem(exc.status, exc.upstream_message)
        if exc.status in _PASSED_ON:  # not supported, busy loading: the backend's answer, not a failure
            return Problem(exc.status, f"{exc.backend}: {exc.upstream_message}")
        answer = judge_answer(exc.status, exc.upstream_message, exc.kind)
        if answer in _MEANT:  # a 500 that means "bad request" or "not supported" (see `judge_answer`)
            return Problem(_MEANT[answer], f"{exc.backend}: {exc.upstream_message}")
        return Problem(502, str(exc))
    if isinstance(exc, BackendUnavailable | StreamBroken):
        return Problem(502, str(exc))
    if isinstance(exc, Unsupported):
        return Problem(400, str(exc))
    if isinstance(exc, SollolError):
        # Sharding and configuration problems (no rpc backend ready, llama-server missing): the server's side.
        return Problem(503, str(exc))
    return Problem(500, f"internal error in the sollol gateway: {type(exc).__name__}: {exc}")


# 5xx a backend answers that say what it cannot do now rather than that it failed (see `health.judge_answer`).
_PASSED_ON = (501, 503)
_MEANT = {Answer.refused: 400, Answer.elsewhere: 501}


def is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def is_anthropic(path: str) -> bool:
    return path == "/v1/messages" or path.startswith("/v1/messages/")


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
}  # fmt: skip


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    if is_anthropic(path):
        return anthropic_error(status, message)
    if is_openai(path):
        kind = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return {"error": message}


def error_response(path: str, status: int, message: str) -> web.Response:
    body = json.dumps(error_body(path, status, message), ensure_ascii=False).encode()
    return web.Response(status=status, body=body, content_type="application/json", charset="utf-8")


def dumps(data: Any) -> bytes:
    """Compact JSON like Ollama's Go encoder writes it."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
