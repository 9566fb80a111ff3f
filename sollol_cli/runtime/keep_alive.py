"""Ollama's `keep_alive` request field, read as Ollama reads it: a number of seconds (fractions dropped), or
a Go duration string ("5m", "1h30m", "300ms", "0"); anything negative keeps the model loaded for ever. A
number in a string ("-1", "600") is taken as seconds too, where Ollama refuses it: people write it so."""

from __future__ import annotations

import math
import re
from typing import Any

from sollol_cli.backends.base import Unsupported

FOREVER = -1.0

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")
_PART = re.compile(rf"({_NUMBER.pattern})(ns|us|µs|μs|ms|s|m|h)")


class InvalidKeepAlive(Unsupported):
    """A request's keep_alive that is neither seconds nor a duration (the gateway answers 400, as Ollama)."""


def keep_alive_seconds(value: Any) -> float | None:
    """Seconds, `FOREVER`, or None when the request does not say."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidKeepAlive(f'keep_alive must be a number of seconds or a duration like "5m", not {value!r}')
    if isinstance(value, str):
        seconds = _duration(value)
    else:
        if not math.isfinite(value):
            raise InvalidKeepAlive(f"keep_alive {value!r} is not a number of seconds")
        if value < 0:
            return FOREVER
        seconds = float(math.trunc(value))
    return FOREVER if seconds < 0 else seconds


def _duration(text: str) -> float:
    """Go's time.ParseDuration: an optional sign, then number+unit parts; a plain number is seconds."""
    body = text[1:] if text[:1] in "+-" else text
    if _NUMBER.fullmatch(body):
        body += "s"
    parts = _PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise InvalidKeepAlive(f'keep_alive "{text}" is not a duration; use e.g. "5m", "1h30m", "0" or -1')
    seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    return -seconds if text.startswith("-") and seconds else seconds
