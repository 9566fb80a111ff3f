"""One structured access-log line per request, as JSON or as text; the caller decides where lines go."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sollol_cli.events import Event

LogFormat = Literal["json", "text"]
LineWriter = Callable[[str], None]


@dataclass(slots=True)
class Exchange:
    """What one request did; handlers fill it in, the middleware logs it, counts it and puts it in headers."""

    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    client: str | None = None
    status: int = 0
    model: str | None = None
    backend: str | None = None
    mode: str | None = None
    reason: str | None = None  # why that mode (the dashboard's recent requests)
    attempts: tuple[str, ...] = ()  # failed attempts elsewhere before the one that answered
    tokens_per_s: float | None = None
    events: tuple[Event, ...] = ()  # what a sharded model's coordinator did for it (trace.events)
    upstream_s: float = 0.0  # wall time in the runtime's answer (routing included): Server-Timing, metrics
    backend_s: float = 0.0  # of that, the time awaiting backends' chunks: the part the gateway did not add
    queued_s: float = 0.0
    ttft_s: float | None = None
    tokens: int | None = None
    overhead_s: float | None = None  # fixed when the response headers are sent
    error: str | None = None
    streaming: bool = False  # headers sent: a failure can no longer become an error status

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def fix_overhead(self) -> float:
        """What the gateway added so far: since the middleware got the request (aiohttp has parsed its head),
        less the queue and the time awaiting backends' chunks. Fixed once more when the first byte is written."""
        self.overhead_s = max(0.0, self.elapsed() - self.backend_s - self.queued_s)
        return self.overhead_s


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def record(exchange: Exchange, duration_s: float) -> dict[str, Any]:
    data: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "client": exchange.client,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "duration_ms": _ms(duration_s),
        "model": exchange.model,
        "backend": exchange.backend,
        "mode": exchange.mode,
        "queued_ms": _ms(exchange.queued_s) if exchange.queued_s else None,
        "ttft_ms": _ms(exchange.ttft_s),
        "overhead_ms": _ms(exchange.overhead_s),
        "tokens": exchange.tokens,
        "error": exchange.error,
    }
    return {key: value for key, value in data.items() if value is not None}


def format_line(data: dict[str, Any], fmt: LogFormat) -> str:
    if fmt == "json":
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f'{data["time"]} {data.get("client", "-")} "{data["method"]} {data["path"]}" {data["status"]}'
    head += f" {data['duration_ms']:.1f}ms"
    rest = [
        f"{key}={_text_value(value)}"
        for key, value in data.items()
        if key not in ("time", "client", "method", "path", "status", "duration_ms")
    ]
    return " ".join([head, *rest])


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (" " in text or '"' in text or not text) else text
