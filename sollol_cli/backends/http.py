"""The HTTP plumbing all backend clients share: one pooled aiohttp session, named timeouts, and the
mapping of aiohttp/OS failures onto `BackendError`s that name the backend.

Why one session: keep-alive connections to each backend are reused across requests instead of paying a
TCP handshake per token stream. A session belongs to the event loop that created it, so it is kept per
running loop (in production there is one loop per process; tests run one loop per test).
"""

from __future__ import annotations

import asyncio
import errno
import json
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from sollol_cli.backends.base import BackendRef, BackendUnavailable, StreamBroken, UpstreamError

if TYPE_CHECKING:
    from sollol_cli.manifest.models import Routing

POOL_LIMIT = 256  # simultaneous connections over all backends; the gateway's own queue limits load first
# Idle keep-alive connections are dropped before llama-server's (cpp-httplib) 5 s idle limit so we rarely
# reuse a connection the server is closing at the same moment.
KEEPALIVE_SECONDS = 4.0
MAX_LINE_BYTES = 16 * 1024 * 1024  # one NDJSON line / SSE event; embeddings and tool calls can be large
ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each phase of a backend call (like httpx's `Timeout`).

    connect: TCP connect to the backend.
    read: longest silence while waiting for the response or between bytes of a stream (None = no limit);
          generation on a big model can be slow, so this is generous.
    probe: a whole health probe, all its requests together.
    """

    connect: float = 3.0
    read: float | None = 300.0
    probe: float = 3.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "probe"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"Timeouts.{name} must be positive seconds, got {value!r}")

    @classmethod
    def from_routing(cls, routing: Routing) -> Timeouts:
        return cls(connect=routing.connect_timeout, read=routing.read_timeout, probe=routing.connect_timeout)

    def request(self) -> aiohttp.ClientTimeout:
        # No total limit: a stream may legitimately run for many minutes as long as bytes keep coming.
        return aiohttp.ClientTimeout(total=None, sock_connect=self.connect, sock_read=self.read)

    def for_probe(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.probe, sock_connect=min(self.connect, self.probe))


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = weakref.WeakKeyDictionary()


def get_session() -> aiohttp.ClientSession:
    """The shared session of the running loop, created on first use."""
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=POOL_LIMIT, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS)
        # trust_env=False: never route cluster traffic through a proxy from the environment.
        session = aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False)
        _sessions[loop] = session
    return session


async def close_session() -> None:
    """Close the running loop's session (gateway shutdown, end of a CLI command, test teardown)."""
    session = _sessions.pop(asyncio.get_running_loop(), None)
    if session is not None and not session.closed:
        await session.close()


_ERRNO_TEXT = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EADDRNOTAVAIL: "address not available",
    errno.EPIPE: "connection closed while sending",
}


def _describe(exc: BaseException, timeout: aiohttp.ClientTimeout) -> str:
    """A short lower-case reason for a transport failure (the caller prefixes the backend label)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"did not accept a connection within {timeout.sock_connect:g}s"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"sent nothing for {timeout.sock_read:g}s"
    if isinstance(exc, TimeoutError):
        limit = timeout.total or timeout.sock_read
        return f"no answer within {limit:g}s" if limit else "timed out"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "closed the connection in the middle of the response"
    os_error = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    if isinstance(os_error, OSError):
        if os_error.errno in _ERRNO_TEXT:
            return _ERRNO_TEXT[os_error.errno]
        if os_error.strerror:
            return os_error.strerror.lower()
    return str(exc) or type(exc).__name__


_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
# Failures after connecting but before any response byte (connect failures are ClientConnectorError).
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientConnectionResetError)


def error_message(body: bytes, fallback: str) -> str:
    """The message of an error body: Ollama `{"error": "msg"}`, OpenAI/llama-server
    `{"error": {"message": "msg"}}`, or plain text."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or fallback
    if isinstance(data, dict):
        error = data.get("error", data.get("message"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str) and error:
            return error
    return fallback


def error_kind(body: bytes) -> str:
    """The `type` of an OpenAI/llama-server `{"error": {"type": ...}}` or Anthropic error body, else ""."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    error = data.get("error") if isinstance(data, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    return kind if isinstance(kind, str) else ""


async def _upstream_error(ref: BackendRef, resp: aiohttp.ClientResponse) -> UpstreamError:
    try:
        body = await resp.content.read(ERROR_BODY_BYTES)
    except _TRANSPORT_ERRORS:
        body = b""
    message = error_message(body, resp.reason or "error")
    return UpstreamError(ref.label, resp.status, message, body, error_kind(body))


@asynccontextmanager
async def open_response(
    ref: BackendRef,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send a request and hand over the response once its headers arrived with a 2xx status.

    `Connection: close` in `headers` keeps the connection out of the pool, for servers that close it anyway.
    Raises `BackendUnavailable` if nothing came back, `UpstreamError` for an error status; failures while
    the caller reads the body become `StreamBroken`. Leaving early closes the connection, which is how
    llama-server and Ollama notice a cancelled generation and stop it.
    """
    session = get_session()
    url = ref.base_url + path
    if ref.api_key:
        headers = {**(headers or {}), "Authorization": f"Bearer {ref.api_key}"}
    resp: aiohttp.ClientResponse | None = None
    for attempt in (1, 2):
        try:
            resp = await session.request(method, url, json=body, headers=headers, timeout=timeout)
            break
        except aiohttp.ClientConnectorError as exc:
            raise BackendUnavailable(ref.label, _describe(exc, timeout)) from None
        except _STALE_CONNECTION as exc:
            # A pooled keep-alive connection the server closed meanwhile (llama-server closes every connection
            # after a streamed answer): no response came back, so one retry on a fresh connection is safe.
            if attempt == 2:
                raise BackendUnavailable(ref.label, _describe(exc, timeout)) from None
        except _TRANSPORT_ERRORS as exc:
            raise BackendUnavailable(ref.label, _describe(exc, timeout)) from None
    assert resp is not None
    try:
        if resp.status >= 400:
            raise await _upstream_error(ref, resp)
        yield resp
    except _TRANSPORT_ERRORS as exc:
        raise StreamBroken(ref.label, _describe(exc, timeout)) from None
    finally:
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()


async def request_json(
    ref: BackendRef,
    method: str,
    path: str,
    *,
    body: Any = None,
    timeout: aiohttp.ClientTimeout,
) -> Any:
    """One request whose whole answer is a JSON document (None for an empty body)."""
    async with open_response(ref, method, path, body=body, timeout=timeout) as resp:
        raw = await resp.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise StreamBroken(ref.label, f"answered {method} {path} with invalid JSON") from None


async def iter_lines(ref: BackendRef, resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Yield each line of the body (without the newline) the moment it is complete."""
    buffer = bytearray()
    async for data in resp.content.iter_any():
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield bytes(buffer[start:end])
            start = end + 1
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            raise StreamBroken(ref.label, f"sent a line longer than {MAX_LINE_BYTES} bytes")
    if buffer.strip():
        yield bytes(buffer)


async def iter_ndjson(ref: BackendRef, resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Parse an NDJSON stream, each line the moment it is complete; an `{"error": ...}` line (Ollama's way to
    fail mid-stream) raises StreamBroken. (`iter_lines` inlined: one generator less for every chunk.)"""
    buffer = bytearray()
    async for data in resp.content.iter_any():
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end])
            start = end + 1
            if line.strip():
                yield _ndjson_item(ref, line)
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            raise StreamBroken(ref.label, f"sent a line longer than {MAX_LINE_BYTES} bytes")
    if buffer.strip():
        yield _ndjson_item(ref, bytes(buffer))


def _ndjson_item(ref: BackendRef, line: bytes) -> dict[str, Any]:
    item = parse_json_object(ref, line)
    if "error" in item:
        raise StreamBroken(ref.label, error_message(line, "failed mid-stream"))
    return item


async def iter_sse(ref: BackendRef, resp: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """Yield the data of each server-sent event as soon as its closing blank line arrives.

    Comments (`:` lines, llama-server's keep-alive pings) and `event:`/`id:` fields are skipped.
    """
    data: list[str] = []
    async for raw in iter_lines(ref, resp):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def parse_json_object(ref: BackendRef, text: bytes | str) -> dict[str, Any]:
    try:
        item = json.loads(text)
    except ValueError:
        raise StreamBroken(ref.label, "sent a line that is not JSON") from None
    if not isinstance(item, dict):
        raise StreamBroken(ref.label, "sent a JSON line that is not an object")
    return item
