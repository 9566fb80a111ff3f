#!/usr/bin/env python3
"""Ollama stand-in for sollol's tests. NOT the real Ollama and never shipped: it lives in tests/.

No package registry ships the real Ollama server, so tests talk to this instead. It answers Ollama's HTTP
contract (native /api/* routes and the OpenAI-compatible /v1/* routes) the way Ollama does: NDJSON streaming
by default, integer-nanosecond durations, RFC 3339 timestamps, omitted empty fields, ``{"error": ...}``
bodies with Ollama's status codes and a last ``{"error": ...}`` line when a stream fails after it began.

What it generates is deterministic and names the instance: the first token is ``<instance-name>``, the
rest are words derived from model, prompt and seed, so a test can tell which instance answered.
Embeddings are derived from model and input only.

Test-only controls (never part of Ollama): per-model parallel slots with a queue (``OLLAMA_NUM_PARALLEL``),
counters and the highest concurrency ever observed (running, and running plus queued) at
``GET /_standin/stats``, and fault injection at start (config ``faults``) or at run time at
``POST /_standin/faults``: HTTP 500 (or any status, in Ollama's error shape) on the next N requests, an
error line or a dropped connection after K tokens, a slow start and a hang.
Config ``missing_routes`` makes it an older Ollama that lacks some routes (they answer Gin's 404), and
``tokens_per_chunk`` streams several tokens per chunk, as Ollama does when it holds text back. ``hold_after_tokens`` pauses every
stream after K tokens until ``POST /_standin/release``: a test decides when an answer goes on, with no
clock involved (``stats.held`` says how many streams wait there).

This one file is also the ``ollama`` executable (``ollama serve``, ``ollama --version``, ``ollama list``)
that tests upload to SSH test hosts: :func:`standin_script` returns its text with the shebang pointing at
a chosen Python. It needs only the standard library and aiohttp (``serve`` only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from aiohttp import web
except ImportError:  # `ollama --version` and `ollama list` need only the standard library
    web = None  # type: ignore[assignment]

DEFAULT_VERSION = "0.12.6"
DEFAULT_PORT = 11434
FOREVER = math.inf
_NS = 1_000_000_000

# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


def _from_dict(cls: type[Any], data: dict[str, Any], what: str) -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls``; unknown keys are a mistake in a test config, so refuse them."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys {unknown}; known: {sorted(known)}")
    return dict(data)


def normalize_model_name(name: str) -> str:
    """Ollama's shortest display form: ``registry.ollama.ai/library/tiny`` -> ``tiny:latest``."""
    parts = name.strip().split("/")
    if len(parts) == 3 and parts[0].lower() == "registry.ollama.ai":
        parts = parts[1:]
    if len(parts) == 2 and parts[0].lower() == "library":
        parts = parts[1:]
    last = parts[-1]
    if ":" not in last or last.endswith(":"):
        parts[-1] = last.rstrip(":") + ":latest"
    return "/".join(parts)


@dataclass
class ModelSpec:
    """One model as /api/tags, /api/show and /api/ps describe it."""

    name: str
    size: int = 4_000_000
    digest: str = ""  # 64 hex; derived from the name when empty
    family: str = "llama"
    parameter_size: str = "1.2M"
    quantization_level: str = "Q4_0"
    context_length: int = 4096
    embedding_length: int = 32  # dimensions of the embeddings it returns
    block_count: int = 4
    completion: bool = True  # serves /api/generate and /api/chat
    embedding: bool = True  # serves /api/embed and /api/embeddings
    size_vram: int = 0  # 0 = "100% CPU" in `ollama ps`
    modified_at: str = ""  # RFC 3339; the start time when empty

    def __post_init__(self) -> None:
        self.name = normalize_model_name(self.name)
        if not self.digest:
            self.digest = hashlib.sha256(f"manifest:{self.name}".encode()).hexdigest()
        if not self.modified_at:
            self.modified_at = rfc3339()

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str) -> ModelSpec:
        if isinstance(data, str):
            return cls(name=data)
        return cls(**_from_dict(cls, data, "model"))


@dataclass
class Faults:
    """Injected failures. ``routes`` limits them to request paths with these prefixes (empty = every API
    route; the /_standin/ routes are never affected)."""

    http_500_next: int = 0  # the next N requests answer 500 {"error": message}
    # the next N requests answer http_error_status with Ollama's {"error": message} (on /v1/ routes in the
    # OpenAI or Anthropic shape, as Ollama's middlewares render errors), e.g. 503 while a model loads
    http_error_next: int = 0
    http_error_status: int = 500
    error_after_tokens: int | None = None  # streams end with an {"error"} line after K tokens
    drop_after_tokens: int | None = None  # the connection is cut after K tokens
    slow_start: float = 0.0  # seconds before the first byte of every response
    hang: bool = False  # requests are accepted and never answered
    hold_after_tokens: int | None = None  # streams pause after K tokens until POST /_standin/release
    routes: list[str] = field(default_factory=list)
    message: str = "stand-in injected fault"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Faults:
        return cls(**_from_dict(cls, data, "faults"))

    def applies_to(self, path: str) -> bool:
        return not self.routes or any(path.startswith(prefix) for prefix in self.routes)


def _default_models() -> list[ModelSpec]:
    return [ModelSpec(name="tiny:latest")]


@dataclass
class StandinConfig:
    """One instance. Load it with :meth:`load` from a JSON file of the same shape."""

    name: str = ""  # the instance's identity in generated text; the host name when empty
    version: str = DEFAULT_VERSION
    models: list[ModelSpec] = field(default_factory=_default_models)
    pullable: list[ModelSpec] = field(default_factory=list)  # what /api/pull can fetch
    loaded: list[str] = field(default_factory=list)  # models in memory at start
    num_parallel: int = 1  # slots per model, like OLLAMA_NUM_PARALLEL
    max_queue: int = 512  # waiting requests beyond this get 503, like OLLAMA_MAX_QUEUE
    tokens_per_second: float = 500.0
    # tokens per streamed chunk (the last may be shorter): Ollama sends several at once when it held text back
    # (a possible stop sequence, an incomplete UTF-8 character); eval_count still counts tokens
    tokens_per_chunk: int = 1
    time_to_first_token: float = 0.0  # seconds of "prompt evaluation"
    load_seconds: float = 0.0  # time to load a model that is not in memory
    response_tokens: int = 16  # natural answer length when num_predict is not set
    pull_seconds: float = 0.0  # duration of a pull's download phase
    keep_alive: float = 300.0  # seconds a model stays loaded (Ollama's 5m)
    num_ctx: int = 4096
    faults: Faults = field(default_factory=Faults)
    state_file: str = ""  # where pulls, copies and deletes persist; in memory only when empty
    # routes an older Ollama lacks (e.g. /v1/responses, /v1/messages): 404 "404 page not found", as Gin answers
    missing_routes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StandinConfig:
        kwargs = _from_dict(cls, data, "config")
        if "models" in kwargs:
            kwargs["models"] = [ModelSpec.from_dict(m) for m in kwargs["models"]]
        if "pullable" in kwargs:
            kwargs["pullable"] = [ModelSpec.from_dict(m) for m in kwargs["pullable"]]
        if "faults" in kwargs:
            kwargs["faults"] = Faults.from_dict(kwargs["faults"])
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StandinConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


# ---------------------------------------------------------------------------------------------------------
# Wire formats
# ---------------------------------------------------------------------------------------------------------


def rfc3339(ns: int | None = None) -> str:
    """Go's RFC3339Nano in UTC: fractional seconds up to nanoseconds, trailing zeros dropped."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, _NS)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def parse_rfc3339(text: str) -> datetime:
    match = re.fullmatch(r"(.+?)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    head, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{micro}{'+00:00' if zone == 'Z' else zone}")


def go_json(obj: Any) -> bytes:
    """Compact JSON escaped like Go's json.Marshal (``<``, ``>``, ``&`` as \\u escapes), as Ollama sends it."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
        text = text.replace(char, escape)
    return text.encode()


def _go_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    kinds: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return kinds.get(type(value), "null")


class ApiError(Exception):
    """An Ollama error answer: ``status`` with body ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InjectedStreamError(Exception):
    """The error_after_tokens fault fired."""


class DropConnection(Exception):
    """The drop_after_tokens fault fired."""


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: Any, default: float) -> float:
    """Seconds from Ollama's ``keep_alive`` (a number of seconds or a Go duration); negative = forever."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, f"json: cannot unmarshal {_go_kind(value)} into Go value of type api.Duration")
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if body == "0":
            seconds = 0.0
        else:
            parts = _DURATION_PART.findall(body)
            if not body or "".join(n + u for n, u in parts) != body:
                raise ApiError(400, f'time: invalid duration "{value}"')
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
        seconds *= sign
    else:
        seconds = float(value)
    return FOREVER if seconds < 0 else seconds


_INT_OPTIONS = {"num_predict", "seed", "num_ctx", "top_k", "num_keep", "repeat_last_n", "num_gpu", "num_thread"}
_FLOAT_OPTIONS = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty"}


def check_options(options: Any) -> dict[str, Any]:
    """The request options, type-checked the way Ollama's Options.FromMap does."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ApiError(400, f"json: cannot unmarshal {_go_kind(options)} into Go value of type map[string]any")
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(500, f'option "{key}" must be of type integer')
        if key in _FLOAT_OPTIONS and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ApiError(500, f'option "{key}" must be of type float32')
        if key == "stop" and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
            raise ApiError(500, f'option "{key}" must be of type array')
    return options


# ---------------------------------------------------------------------------------------------------------
# Deterministic "model"
# ---------------------------------------------------------------------------------------------------------

# fmt: off
VOCAB = (
    "amber", "bison", "cedar", "delta", "ember", "fjord", "glade", "harbor", "iris", "juniper", "kestrel",
    "lumen", "meadow", "nimbus", "onyx", "pebble", "quartz", "raven", "sierra", "tundra", "umber",
    "vortex", "willow", "xenon", "yarrow", "zephyr", "acorn", "breeze", "comet", "dune", "echo", "fern",
    "granite", "heron", "island", "jasper", "kelp", "lagoon", "maple", "nectar", "orchid", "prairie",
    "quill", "ridge", "spruce", "thistle", "upland", "valley", "walnut", "yonder", "zinnia", "aurora",
    "basalt", "canyon", "drift", "estuary", "falcon", "grove", "hollow", "inlet",
)
# fmt: on


def _hash_int(*parts: object) -> int:
    text = "\x00".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def answer_tokens(instance: str, model: str, prompt: str, seed: int, count: int) -> list[str]:
    """The whole answer the stand-in "wants" to give: ``<instance>`` then words from model+prompt+seed."""
    tokens = [f"<{instance}>"]
    tokens += [" " + VOCAB[_hash_int(model, prompt, seed, i) % len(VOCAB)] for i in range(1, count)]
    return tokens[:count]


def json_answer_tokens(instance: str, model: str, prompt: str, seed: int, count: int) -> list[str]:
    """With ``format`` set the answer is a JSON object, streamed in 8-character pieces."""
    words = [w.strip() for w in answer_tokens(instance, model, prompt, seed, count)[1:]]
    text = json.dumps({"instance": instance, "words": words})
    return [text[i : i + 8] for i in range(0, len(text), 8)]


def cut_at_stop(tokens: list[str], stops: list[str]) -> tuple[list[str], bool]:
    """Tokens up to the first stop sequence (exclusive); True when one was found."""
    text = "".join(tokens)
    hits = [text.find(s) for s in stops if s and s in text]
    if not hits:
        return tokens, False
    end = min(hits)
    kept: list[str] = []
    used = 0
    for token in tokens:
        if used + len(token) >= end:
            if end > used:
                kept.append(token[: end - used])
            break
        kept.append(token)
        used += len(token)
    return kept, True


def plan_answer(
    instance: str, spec: ModelSpec, prompt: str, options: dict[str, Any], fmt: Any, natural_length: int
) -> tuple[list[str], str]:
    """(tokens, done_reason): ``num_predict`` > 0 gives exactly that many tokens ("length"); otherwise the
    natural length ("stop"); a stop sequence cuts the answer short ("stop")."""
    num_predict = int(options.get("num_predict") or -1)
    seed = int(options.get("seed") or 0)
    count = num_predict if num_predict > 0 else natural_length
    if fmt:
        tokens = json_answer_tokens(instance, spec.name, prompt, seed, natural_length)
        done_reason = "length" if 0 < num_predict < len(tokens) else "stop"
        tokens = tokens[:num_predict] if num_predict > 0 else tokens
    else:
        tokens = answer_tokens(instance, spec.name, prompt, seed, count)
        done_reason = "length" if num_predict > 0 else "stop"
    stops = options.get("stop") or []
    tokens, stopped = cut_at_stop(tokens, [stops] if isinstance(stops, str) else list(stops))
    return tokens, "stop" if stopped else done_reason


def token_ids(text: str) -> list[int]:
    """A stand-in tokenization for ``context``: one id per word."""
    return [_hash_int("tok", word) % 32000 + 1 for word in text.split()]


def count_prompt_tokens(text: str) -> int:
    return len(text.split()) + 1  # + BOS, so an answer always has a prompt_eval_count


def embedding_vector(model: str, text: str, dims: int) -> list[float]:
    """Unit-length float32 values derived from model and text only."""
    values: list[float] = []
    block = 0
    while len(values) < dims:
        digest = hashlib.sha256(f"{model}\x00{text}\x00{block}".encode()).digest()
        values += [int.from_bytes(digest[i : i + 4], "big") / 2**31 - 1.0 for i in range(0, 32, 4)]
        block += 1
    values = values[:dims]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [_float32(v / norm) for v in values]


def _float32(value: float) -> float:
    result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    return result


def parameter_count(parameter_size: str) -> int:
    match = re.fullmatch(r"([\d.]+)\s*([KMBT]?)", parameter_size.strip().upper())
    if match is None:
        return 0
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2)]
    return int(float(match.group(1)) * scale)


# ---------------------------------------------------------------------------------------------------------
# State: models, loaded models, slots, stats, faults
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    expires_at: float  # time.time() seconds; FOREVER for a negative keep_alive
    num_ctx: int


@dataclass
class Outcome:
    text: str
    done_reason: str
    prompt_eval_count: int
    eval_count: int
    total_duration: int
    load_duration: int
    prompt_eval_duration: int
    eval_duration: int

    def metrics(self) -> dict[str, int]:
        """Ollama's Metrics: zero values are omitted."""
        names = ["total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration"]
        names += ["eval_count", "eval_duration"]
        return {name: getattr(self, name) for name in names if getattr(self, name)}


@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=dict)  # "METHOD /path" -> count
    by_model: dict[str, int] = field(default_factory=dict)  # inference requests per model
    active: int = 0
    queued: int = 0
    max_concurrency: int = 0  # the most running in slots at once
    max_in_flight: int = 0  # the most inference requests it had at once, running or waiting for a slot
    active_by_model: dict[str, int] = field(default_factory=dict)
    max_concurrency_by_model: dict[str, int] = field(default_factory=dict)
    completed: int = 0
    cancelled: int = 0  # the client went away: generation stopped, slot freed
    faults_fired: dict[str, int] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)  # the last 200 inference requests
    held: int = 0  # streams paused by hold_after_tokens right now
    released: int = 0  # POST /_standin/release calls
    bodies: list[Any] = field(default_factory=list)  # the last 200 JSON request bodies of the API routes

    def fired(self, fault: str) -> None:
        self.faults_fired[fault] = self.faults_fired.get(fault, 0) + 1

    def record(self, entry: dict[str, Any]) -> None:
        self.recent.append(entry)
        del self.recent[:-200]


class StandinState:
    """Everything one instance knows. Lives on the server's event loop; no locking needed."""

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.name = config.name or socket.gethostname()
        self.faults = dataclasses.replace(config.faults, routes=list(config.faults.routes))
        self.stats = Stats()
        self.shutdown = asyncio.Event()
        self.models: dict[str, ModelSpec] = {}
        for spec in self._initial_models():
            self.models[spec.name.lower()] = spec
        self.loaded: dict[str, Loaded] = {}
        for name in config.loaded:
            found = self.find(name)
            if found is None:
                raise ValueError(f"loaded model {name!r} is not among the configured models")
            self.loaded[found.name] = Loaded(self._expiry(config.keep_alive), self._num_ctx(found, {}))
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._ids = 0
        self.release = asyncio.Event()  # set (and replaced) by POST /_standin/release

    def _initial_models(self) -> list[ModelSpec]:
        path = Path(self.config.state_file) if self.config.state_file else None
        if path is not None and path.is_file():
            return [ModelSpec.from_dict(m) for m in json.loads(path.read_text())["models"]]
        return [dataclasses.replace(m) for m in self.config.models]

    def save(self) -> None:
        if not self.config.state_file:
            return
        path = Path(self.config.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({"models": [dataclasses.asdict(m) for m in self.models.values()]}, indent=2))
        tmp.replace(path)

    def find(self, name: str) -> ModelSpec | None:
        return self.models.get(normalize_model_name(name).lower()) if name.strip() else None

    def pullable(self, name: str) -> ModelSpec | None:
        wanted = normalize_model_name(name).lower()
        for spec in self.config.pullable:
            if spec.name.lower() == wanted:
                return spec
        return self.models.get(wanted)

    def add(self, spec: ModelSpec) -> None:
        self.models[spec.name.lower()] = spec
        self.save()

    def remove(self, spec: ModelSpec) -> None:
        self.models.pop(spec.name.lower(), None)
        self.loaded.pop(spec.name, None)
        self.save()

    def next_id(self) -> int:
        self._ids += 1
        return self._ids % 999

    @staticmethod
    def _expiry(keep_alive: float) -> float:
        return FOREVER if keep_alive == FOREVER else time.time() + keep_alive

    def _num_ctx(self, spec: ModelSpec, options: dict[str, Any]) -> int:
        return min(int(options.get("num_ctx") or self.config.num_ctx), spec.context_length)

    def running(self) -> list[tuple[ModelSpec, Loaded]]:
        now = time.time()
        for name in [n for n, entry in self.loaded.items() if entry.expires_at <= now]:
            del self.loaded[name]
        found = [(self.find(name), entry) for name, entry in self.loaded.items()]
        return [(spec, entry) for spec, entry in found if spec is not None]

    async def load(self, spec: ModelSpec, keep_alive: float, options: dict[str, Any]) -> int:
        """Make sure ``spec`` is in memory; returns the load duration in ns (never 0, as with Ollama)."""
        start = time.monotonic_ns()
        if spec.name not in self.loaded and self.config.load_seconds > 0:
            await asyncio.sleep(self.config.load_seconds)
        self.loaded[spec.name] = Loaded(self._expiry(keep_alive), self._num_ctx(spec, options))
        return max(1, time.monotonic_ns() - start)

    def unload(self, spec: ModelSpec) -> None:
        self.loaded.pop(spec.name, None)

    @contextlib.asynccontextmanager
    async def slot(self, model: str) -> AsyncIterator[None]:
        """One of the model's ``num_parallel`` slots; requests beyond them wait here, like Ollama's queue."""
        if self.stats.queued >= self.config.max_queue:
            raise ApiError(503, "server busy, please try again.  maximum pending requests exceeded")
        semaphore = self._slots.setdefault(model, asyncio.Semaphore(max(1, self.config.num_parallel)))
        self.stats.queued += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.active + self.stats.queued)
        try:
            await semaphore.acquire()
        finally:
            self.stats.queued -= 1
        self._count_active(model, +1)
        try:
            yield
        finally:
            self._count_active(model, -1)
            semaphore.release()

    def _count_active(self, model: str, delta: int) -> None:
        # Always the current Stats object: DELETE /_standin/stats may replace it mid-request.
        stats = self.stats
        stats.active += delta
        stats.active_by_model[model] = stats.active_by_model.get(model, 0) + delta
        stats.max_concurrency = max(stats.max_concurrency, stats.active)
        stats.max_concurrency_by_model[model] = max(
            stats.max_concurrency_by_model.get(model, 0), stats.active_by_model[model]
        )

    async def before_request(self, path: str) -> None:
        """Faults that act before the handler runs: hang, slow start, an HTTP error status."""
        faults = self.faults
        if not faults.applies_to(path):
            return
        if faults.hang:
            self.stats.fired("hang")
            await self.shutdown.wait()
            raise ApiError(503, "stand-in is shutting down")
        if faults.slow_start > 0:
            self.stats.fired("slow_start")
            await asyncio.sleep(faults.slow_start)
        if faults.http_500_next > 0:
            faults.http_500_next -= 1
            self.stats.fired("http_500")
            raise ApiError(500, faults.message)
        if faults.http_error_next > 0:
            faults.http_error_next -= 1
            self.stats.fired("http_error")
            raise ApiError(faults.http_error_status, faults.message)

    async def generate(
        self,
        spec: ModelSpec,
        *,
        route: str,
        prompt: str,
        tokens: list[str],
        done_reason: str,
        keep_alive: float,
        options: dict[str, Any],
        faults: Faults,
        emit: Callable[[str], Awaitable[None]],
    ) -> Outcome:
        """Run one generation in a slot at ``tokens_per_second``, calling ``emit`` per ``tokens_per_chunk``
        tokens. Faults count tokens: what was generated before one fires has been emitted."""
        start = time.monotonic_ns()
        emitted: list[str] = []
        pending: list[str] = []

        async def flush() -> None:
            if pending:
                text = "".join(pending)
                pending.clear()
                await emit(text)

        entry: dict[str, Any] = {"route": route, "model": spec.name, "prompt": prompt[:200], "status": "queued"}
        self.stats.by_model[spec.name] = self.stats.by_model.get(spec.name, 0) + 1
        self.stats.record(entry)
        try:
            async with self.slot(spec.name):
                entry["status"] = "running"
                load_ns = await self.load(spec, keep_alive, options)
                prompt_start = time.monotonic_ns()
                if self.config.time_to_first_token > 0:
                    await asyncio.sleep(self.config.time_to_first_token)
                prompt_ns = max(1, time.monotonic_ns() - prompt_start)
                eval_start = time.monotonic_ns()
                delay = 1.0 / self.config.tokens_per_second if self.config.tokens_per_second > 0 else 0.0
                per_chunk = max(1, self.config.tokens_per_chunk)
                for index in range(len(tokens) + 1):
                    after = (faults.error_after_tokens, faults.drop_after_tokens, faults.hold_after_tokens)
                    if index in after and faults.applies_to(route):
                        await flush()  # "after K tokens": all K have gone out
                        if faults.error_after_tokens == index:
                            self.stats.fired("error_after_tokens")
                            raise InjectedStreamError(faults.message)
                        if faults.drop_after_tokens == index:
                            self.stats.fired("drop_after_tokens")
                            raise DropConnection
                        if faults.hold_after_tokens == index:
                            await self._hold()
                    if index == len(tokens):
                        break
                    await asyncio.sleep(delay)
                    emitted.append(tokens[index])
                    pending.append(tokens[index])
                    if len(pending) >= per_chunk:
                        await flush()
                await flush()
                eval_ns = max(1, time.monotonic_ns() - eval_start)
                if keep_alive == 0:
                    self.unload(spec)
        except (asyncio.CancelledError, ConnectionError):
            self.stats.cancelled += 1
            entry["status"] = "cancelled"
            raise
        except (InjectedStreamError, DropConnection, ApiError):
            entry["status"] = "failed"
            raise
        finally:
            entry["eval_count"] = len(emitted)
        self.stats.completed += 1
        entry.update(status="done", done_reason=done_reason)
        return Outcome(
            text="".join(emitted),
            done_reason=done_reason,
            prompt_eval_count=count_prompt_tokens(prompt),
            eval_count=len(emitted),
            total_duration=max(1, time.monotonic_ns() - start),
            load_duration=load_ns,
            prompt_eval_duration=prompt_ns,
            eval_duration=eval_ns,
        )

    async def _hold(self) -> None:
        """Wait for the next POST /_standin/release (or shutdown)."""
        hold = self.release
        self.stats.fired("hold_after_tokens")
        self.stats.held += 1
        try:
            shutdown = asyncio.ensure_future(self.shutdown.wait())
            released = asyncio.ensure_future(hold.wait())
            try:
                await asyncio.wait([shutdown, released], return_when=asyncio.FIRST_COMPLETED)
            finally:
                shutdown.cancel()
                released.cancel()
        finally:
            self.stats.held -= 1  # the current Stats: DELETE /_standin/stats carries `held` over

    def release_held(self) -> None:
        """Let every held stream go on; streams that reach their hold later wait for the next release."""
        self.stats.released += 1
        self.release.set()
        self.release = asyncio.Event()

    def stats_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.config.version,
            "num_parallel": self.config.num_parallel,
            **dataclasses.asdict(self.stats),
        }


# ---------------------------------------------------------------------------------------------------------
# HTTP: helpers
# ---------------------------------------------------------------------------------------------------------

if web is not None:
    STATE_KEY: web.AppKey[StandinState] = web.AppKey("standin_state", StandinState)


def _state(request: web.Request) -> StandinState:
    return request.app[STATE_KEY]


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=go_json(obj), status=status, content_type="application/json", charset="utf-8")


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def error_response(status: int, message: str, openai: bool) -> web.Response:
    return json_response(openai_error(status, message) if openai else {"error": message}, status)


async def read_json(request: web.Request, go_type: str) -> dict[str, Any]:
    """The JSON body as Ollama's gin binding sees it: empty -> "missing request body"."""
    raw = await request.read()
    if not raw.strip():
        raise ApiError(400, "missing request body")
    try:
        body = json.loads(raw.decode("utf-8", errors="replace"))
    except json.JSONDecodeError as err:
        if err.pos >= len(err.doc.rstrip()):
            raise ApiError(400, "unexpected EOF") from None
        raise ApiError(400, f"invalid character '{err.doc[err.pos]}' looking for beginning of value") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"json: cannot unmarshal {_go_kind(body)} into Go value of type api.{go_type}")
    return body


def _string_field(body: dict[str, Any], key: str, go_type: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(
            400, f"json: cannot unmarshal {_go_kind(value)} into Go struct field {go_type}.{key} of type string"
        )
    return value


def _wants_thinking(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value not in ("", "false"))


def details(spec: ModelSpec) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization_level,
    }


class NdjsonWriter:
    """A streaming answer, started on the first line as Ollama does (headers go out with the first token)."""

    def __init__(self, request: web.Request, content_type: str = "application/x-ndjson") -> None:
        self.request = request
        self.content_type = content_type
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def send_raw(self, data: bytes) -> None:
        if self.response is None:
            self.response = web.StreamResponse()
            self.response.content_type = self.content_type
            await self.response.prepare(self.request)
        await self.response.write(data)

    async def send(self, obj: Any) -> None:
        await self.send_raw(go_json(obj) + b"\n")

    async def finish(self) -> web.StreamResponse:
        if self.response is None:
            await self.send_raw(b"")
        assert self.response is not None
        await self.response.write_eof()
        return self.response


async def drop_connection(request: web.Request) -> web.StreamResponse:
    """Cut the TCP connection mid-answer; the client sees a truncated body, as when a server dies."""
    if request.transport is not None:
        request.transport.abort()
    # aiohttp treats a cancelled handler as a client disconnect: no error log, no response written.
    raise asyncio.CancelledError


# ---------------------------------------------------------------------------------------------------------
# HTTP: native Ollama routes
# ---------------------------------------------------------------------------------------------------------


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": _state(request).config.version})


async def tags(request: web.Request) -> web.Response:
    specs = sorted(_state(request).models.values(), key=lambda s: parse_rfc3339(s.modified_at), reverse=True)
    models = [
        {
            "name": spec.name,
            "model": spec.name,
            "modified_at": spec.modified_at,
            "size": spec.size,
            "digest": spec.digest,
            "details": details(spec),
        }
        for spec in specs
    ]
    return json_response({"models": models})


async def ps(request: web.Request) -> web.Response:
    running = sorted(_state(request).running(), key=lambda item: item[1].expires_at, reverse=True)
    models = [
        {
            "name": spec.name,
            "model": spec.name,
            "size": spec.size,
            "digest": spec.digest,
            "details": details(spec),
            "expires_at": rfc3339(int(min(entry.expires_at, time.time() + 100 * 365 * 86400) * _NS)),
            "size_vram": spec.size_vram,
            "context_length": entry.num_ctx,
        }
        for spec, entry in running
    ]
    return json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request, "ShowRequest")
    name = _string_field(body, "model", "ShowRequest") or _string_field(body, "name", "ShowRequest")
    if not name:
        raise ApiError(400, "model is required")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    arch = spec.family
    capabilities = (["completion"] if spec.completion else []) + (["embedding"] if spec.embedding else [])
    return json_response(
        {
            "modelfile": (
                '# Modelfile generated by "ollama show"\n'
                "# To build a new Modelfile based on this, replace FROM with:\n"
                f"# FROM {spec.name}\n\n"
                f"FROM {_layer_path(spec)}\nTEMPLATE {{{{ .Prompt }}}}\n"
            ),
            "template": "{{ .Prompt }}",
            "details": details(spec),
            "model_info": {
                "general.architecture": arch,
                "general.file_type": 2,
                "general.parameter_count": parameter_count(spec.parameter_size),
                "general.quantization_version": 2,
                f"{arch}.block_count": spec.block_count,
                f"{arch}.context_length": spec.context_length,
                f"{arch}.embedding_length": spec.embedding_length,
            },
            "capabilities": capabilities,
            "modified_at": spec.modified_at,
        }
    )


def _layers(spec: ModelSpec) -> list[tuple[str, int]]:
    """(digest, size) of the layers a pull downloads: the weights and a small params blob."""
    params = 512
    return [
        ("sha256:" + hashlib.sha256(f"weights:{spec.name}".encode()).hexdigest(), max(1, spec.size - params)),
        ("sha256:" + hashlib.sha256(f"params:{spec.name}".encode()).hexdigest(), params),
    ]


def _layer_path(spec: ModelSpec) -> str:
    models_dir = os.environ.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
    return f"{models_dir}/blobs/{_layers(spec)[0][0].replace(':', '-')}"


def _inference_target(state: StandinState, name: str, missing: ApiError) -> ModelSpec:
    if not name:
        raise missing
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    return spec


async def generate(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    body = await read_json(request, "GenerateRequest")
    name = _string_field(body, "model", "GenerateRequest")
    spec = _inference_target(state, name, ApiError(404, "model '' not found"))
    prompt = _string_field(body, "prompt", "GenerateRequest")
    keep_alive = parse_keep_alive(body.get("keep_alive"), state.config.keep_alive)
    if not prompt and keep_alive == 0:
        state.unload(spec)
        reply = {"model": name, "created_at": rfc3339(), "response": "", "done": True, "done_reason": "unload"}
        return json_response(reply)
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise ApiError(400, "raw mode does not support template, system, or context")
    if _wants_thinking(body.get("think")):
        raise ApiError(400, f'"{name}" does not support thinking')
    if not spec.completion:
        raise ApiError(400, f'"{name}" does not support generate')
    options = check_options(body.get("options"))
    if not prompt:
        await state.load(spec, keep_alive, options)
        reply = {"model": name, "created_at": rfc3339(), "response": "", "done": True, "done_reason": "load"}
        return json_response(reply)
    text = "\n".join(part for part in (_string_field(body, "system", "GenerateRequest"), prompt) if part)
    tokens, done_reason = plan_answer(state.name, spec, text, options, body.get("format"), state.config.response_tokens)

    def chunk(token: str) -> dict[str, Any]:
        return {"model": name, "created_at": rfc3339(), "response": token, "done": False}

    def final(outcome: Outcome, streamed: bool) -> dict[str, Any]:
        reply: dict[str, Any] = {"model": name, "created_at": rfc3339(), "response": "" if streamed else outcome.text}
        reply.update(done=True, done_reason=outcome.done_reason)
        if not body.get("raw"):
            reply["context"] = token_ids(text + " " + outcome.text)
        return {**reply, **outcome.metrics()}

    return await _native_generation(request, state, spec, body, text, tokens, done_reason, options, chunk, final)


async def chat(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    body = await read_json(request, "ChatRequest")
    name = _string_field(body, "model", "ChatRequest")
    spec = _inference_target(state, name, ApiError(400, "model is required"))
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "json: cannot unmarshal into Go struct field ChatRequest.messages of type []api.Message")
    keep_alive = parse_keep_alive(body.get("keep_alive"), state.config.keep_alive)
    empty_message = {"role": "assistant", "content": ""}
    if not messages and keep_alive == 0:
        state.unload(spec)
        reply = {"model": name, "created_at": rfc3339(), "message": empty_message, "done_reason": "unload"}
        return json_response({**reply, "done": True})
    if _wants_thinking(body.get("think")):
        raise ApiError(400, f'"{name}" does not support thinking')
    if not spec.completion:
        raise ApiError(400, f'"{name}" does not support chat')
    options = check_options(body.get("options"))
    if not messages:
        await state.load(spec, keep_alive, options)
        reply = {"model": name, "created_at": rfc3339(), "message": empty_message, "done_reason": "load"}
        return json_response({**reply, "done": True})
    text = render_messages(messages)
    tokens, done_reason = plan_answer(state.name, spec, text, options, body.get("format"), state.config.response_tokens)

    def chunk(token: str) -> dict[str, Any]:
        return {
            "model": name,
            "created_at": rfc3339(),
            "message": {"role": "assistant", "content": token},
            "done": False,
        }

    def final(outcome: Outcome, streamed: bool) -> dict[str, Any]:
        message = {"role": "assistant", "content": "" if streamed else outcome.text}
        reply = {"model": name, "created_at": rfc3339(), "message": message, "done_reason": outcome.done_reason}
        return {**reply, "done": True, **outcome.metrics()}

    return await _native_generation(request, state, spec, body, text, tokens, done_reason, options, chunk, final)


def render_messages(messages: list[dict[str, Any]]) -> str:
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{message.get('role', '')}: {content or ''}")
    return "\n".join(lines)


async def _native_generation(
    request: web.Request,
    state: StandinState,
    spec: ModelSpec,
    body: dict[str, Any],
    text: str,
    tokens: list[str],
    done_reason: str,
    options: dict[str, Any],
    chunk: Callable[[str], dict[str, Any]],
    final: Callable[[Outcome, bool], dict[str, Any]],
) -> web.StreamResponse:
    """Stream NDJSON (the default: a missing ``stream`` means true) or answer one object."""
    stream = body.get("stream") is not False
    writer = NdjsonWriter(request) if stream else None

    async def emit(token: str) -> None:
        if writer is not None:
            await writer.send(chunk(token))

    try:
        outcome = await state.generate(
            spec,
            route=request.path,
            prompt=text,
            tokens=tokens,
            done_reason=done_reason,
            keep_alive=parse_keep_alive(body.get("keep_alive"), state.config.keep_alive),
            options=options,
            faults=dataclasses.replace(state.faults),
            emit=emit,
        )
    except InjectedStreamError as err:
        if writer is not None and writer.started:
            await writer.send({"error": str(err)})  # after streaming began: status stays 200
            return await writer.finish()
        raise ApiError(500, str(err)) from None
    except DropConnection:
        return await drop_connection(request)
    if writer is None:
        return json_response(final(outcome, False))
    await writer.send(final(outcome, True))
    return await writer.finish()


def _embed_inputs(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "invalid input type")


async def _embeddings_for(
    state: StandinState, spec: ModelSpec, route: str, inputs: list[str], dims: int, options: dict[str, Any]
) -> tuple[list[list[float]], int, int]:
    """(vectors, load_duration ns, prompt tokens), computed in one of the model's slots."""
    if not spec.embedding:
        raise ApiError(400, f'"{spec.name}" does not support embeddings')
    state.stats.by_model[spec.name] = state.stats.by_model.get(spec.name, 0) + 1
    entry: dict[str, Any] = {"route": route, "model": spec.name, "prompt": "\n".join(inputs)[:200], "status": "queued"}
    state.stats.record(entry)
    try:
        async with state.slot(spec.name):
            load_ns = await state.load(spec, state.config.keep_alive, options)
            await asyncio.sleep(0)
    except (asyncio.CancelledError, ConnectionError):
        state.stats.cancelled += 1
        entry["status"] = "cancelled"
        raise
    entry["status"] = "done"
    state.stats.completed += 1
    size = dims if 0 < dims < spec.embedding_length else spec.embedding_length
    vectors = [embedding_vector(spec.name, text, spec.embedding_length) for text in inputs]
    if size < spec.embedding_length:  # Ollama truncates, then normalises again
        vectors = [embedding_vector_truncated(v, size) for v in vectors]
    return vectors, load_ns, sum(count_prompt_tokens(t) for t in inputs)


def embedding_vector_truncated(vector: list[float], size: int) -> list[float]:
    head = vector[:size]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return [_float32(v / norm) for v in head]


async def embed(request: web.Request) -> web.Response:
    state = _state(request)
    start = time.monotonic_ns()
    body = await read_json(request, "EmbedRequest")
    name = _string_field(body, "model", "EmbedRequest")
    if not name:
        raise ApiError(404, "model '' not found")
    inputs = _embed_inputs(body.get("input"))
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    options = check_options(body.get("options"))
    if not inputs:
        await state.load(spec, parse_keep_alive(body.get("keep_alive"), state.config.keep_alive), options)
        return json_response({"model": name, "embeddings": []})
    dims = body.get("dimensions") or 0
    vectors, load_ns, tokens = await _embeddings_for(state, spec, request.path, inputs, int(dims), options)
    reply = {"model": name, "embeddings": vectors, "total_duration": max(1, time.monotonic_ns() - start)}
    return json_response({**reply, "load_duration": load_ns, "prompt_eval_count": tokens})


async def embeddings(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request, "EmbeddingRequest")
    name = _string_field(body, "model", "EmbeddingRequest")
    if not name:
        raise ApiError(400, "model is required")
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f'model "{name}" not found, try pulling it first')
    options = check_options(body.get("options"))
    prompt = _string_field(body, "prompt", "EmbeddingRequest")
    if not prompt:
        await state.load(spec, parse_keep_alive(body.get("keep_alive"), state.config.keep_alive), options)
        return json_response({"embedding": []})
    vectors, _, _ = await _embeddings_for(state, spec, request.path, [prompt], 0, options)
    return json_response({"embedding": vectors[0]})


async def pull(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    body = await read_json(request, "PullRequest")
    name = _string_field(body, "model", "PullRequest") or _string_field(body, "name", "PullRequest")
    if not name:
        raise ApiError(400, "invalid model name")
    writer = NdjsonWriter(request) if body.get("stream") is not False else None
    latest: dict[str, Any] = {}

    async def progress(status: dict[str, Any]) -> None:
        latest.clear()
        latest.update(status)
        if writer is not None:
            await writer.send(status)

    await progress({"status": "pulling manifest"})
    source = state.pullable(name)
    if source is None:
        message = "pull model manifest: file does not exist"
        if writer is None:
            raise ApiError(500, message)
        await writer.send({"error": message})
        return await writer.finish()
    layers = _layers(source)
    pause = state.config.pull_seconds / (4 * len(layers))
    for digest, total in layers:
        for step in range(5):
            status: dict[str, Any] = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            if step:
                status["completed"] = total * step // 4
            await progress(status)
            if step < 4 and pause > 0:
                await asyncio.sleep(pause)
    await progress({"status": "verifying sha256 digest"})
    await progress({"status": "writing manifest"})
    state.add(dataclasses.replace(source, modified_at=rfc3339()))
    await progress({"status": "success"})
    if writer is None:
        return json_response(latest)
    return await writer.finish()


async def delete(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request, "DeleteRequest")
    name = _string_field(body, "model", "DeleteRequest") or _string_field(body, "name", "DeleteRequest")
    if not name:
        raise ApiError(400, 'name "" is invalid')
    spec = state.find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    state.remove(spec)
    return web.Response()


async def copy(request: web.Request) -> web.Response:
    state = _state(request)
    body = await read_json(request, "CopyRequest")
    source = _string_field(body, "source", "CopyRequest")
    destination = _string_field(body, "destination", "CopyRequest")
    if not source:
        raise ApiError(400, f'source "{source}" is invalid')
    if not destination:
        raise ApiError(400, f'destination "{destination}" is invalid')
    spec = state.find(source)
    if spec is None:
        raise ApiError(404, f'model "{source}" not found')
    state.add(dataclasses.replace(spec, name=normalize_model_name(destination), modified_at=rfc3339()))
    return web.Response()


# ---------------------------------------------------------------------------------------------------------
# HTTP: OpenAI-compatible routes
# ---------------------------------------------------------------------------------------------------------


def _openai_options(body: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list):
        options["stop"] = [s for s in stop if isinstance(s, str)]
    for key in ("seed", "temperature", "top_p", "frequency_penalty", "presence_penalty"):
        if body.get(key) is not None:
            options[key] = body[key]
    return check_options(options)


def _usage(outcome: Outcome) -> dict[str, int]:
    total = outcome.prompt_eval_count + outcome.eval_count
    return {"prompt_tokens": outcome.prompt_eval_count, "completion_tokens": outcome.eval_count, "total_tokens": total}


async def _openai_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else None
    except json.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "EOF" if not raw.strip() else "invalid request body")
    return body


async def openai_chat(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    body = await _openai_body(request)
    messages = body.get("messages") or []
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "[] is too short - 'messages'")
    name = str(body.get("model") or "")
    spec = _inference_target(state, name, ApiError(400, "model is required"))
    if not spec.completion:
        raise ApiError(400, f'"{name}" does not support chat')
    options = _openai_options(body)
    text = render_messages([m for m in messages if isinstance(m, dict)])
    response_format = body.get("response_format")
    fmt = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
    tokens, done_reason = plan_answer(state.name, spec, text, options, fmt, state.config.response_tokens)
    ident = f"chatcmpl-{state.next_id()}"
    created = int(time.time())
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name}
    head["system_fingerprint"] = "fp_ollama"

    def chunk(content: str, finish: str | None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": content}
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def completion(outcome: Outcome) -> dict[str, Any]:
        message = {"role": "assistant", "content": outcome.text}
        choice = {"index": 0, "message": message, "finish_reason": outcome.done_reason}
        return {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(outcome)}

    return await _openai_generation(request, state, spec, body, text, tokens, done_reason, options, chunk, completion)


async def openai_completions(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    body = await _openai_body(request)
    name = str(body.get("model") or "")
    spec = _inference_target(state, name, ApiError(404, "model '' not found"))
    if not spec.completion:
        raise ApiError(400, f'"{name}" does not support generate')
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ApiError(400, "invalid prompt: only a single string prompt is supported")
    options = _openai_options(body)
    tokens, done_reason = plan_answer(state.name, spec, prompt, options, None, state.config.response_tokens)
    head = {"id": f"cmpl-{state.next_id()}", "object": "text_completion", "created": int(time.time())}
    head.update(model=name, system_fingerprint="fp_ollama")

    def chunk(text: str, finish: str | None) -> dict[str, Any]:
        return {**head, "choices": [{"text": text, "index": 0, "finish_reason": finish}]}

    def completion(outcome: Outcome) -> dict[str, Any]:
        choice = {"text": outcome.text, "index": 0, "finish_reason": outcome.done_reason}
        return {**head, "choices": [choice], "usage": _usage(outcome)}

    return await _openai_generation(request, state, spec, body, prompt, tokens, done_reason, options, chunk, completion)


async def _openai_generation(
    request: web.Request,
    state: StandinState,
    spec: ModelSpec,
    body: dict[str, Any],
    text: str,
    tokens: list[str],
    done_reason: str,
    options: dict[str, Any],
    chunk: Callable[[str, str | None], dict[str, Any]],
    completion: Callable[[Outcome], dict[str, Any]],
) -> web.StreamResponse:
    """Server-sent events when ``stream`` is true (OpenAI's default is false), else one JSON object."""
    writer = NdjsonWriter(request, "text/event-stream") if body.get("stream") is True else None

    async def event(obj: Any) -> None:
        assert writer is not None
        await writer.send_raw(b"data: " + go_json(obj) + b"\n\n")

    async def emit(token: str) -> None:
        if writer is not None:
            await event(chunk(token, None))

    try:
        outcome = await state.generate(
            spec,
            route=request.path,
            prompt=text,
            tokens=tokens,
            done_reason=done_reason,
            keep_alive=state.config.keep_alive,
            options=options,
            faults=dataclasses.replace(state.faults),
            emit=emit,
        )
    except InjectedStreamError as err:
        if writer is not None and writer.started:
            await event(openai_error(500, str(err)))
            return await writer.finish()
        raise ApiError(500, str(err)) from None
    except DropConnection:
        return await drop_connection(request)
    if writer is None:
        return json_response(completion(outcome))
    await event(chunk("", outcome.done_reason))
    if (body.get("stream_options") or {}).get("include_usage"):
        await event({**chunk("", None), "choices": [], "usage": _usage(outcome)})
    await writer.send_raw(b"data: [DONE]\n\n")
    return await writer.finish()


async def openai_embeddings(request: web.Request) -> web.Response:
    state = _state(request)
    body = await _openai_body(request)
    encoding = str(body.get("encoding_format") or "")
    if encoding and encoding.lower() not in ("float", "base64"):
        message = f"Invalid value for 'encoding_format' = {encoding}. Supported values: ['float', 'base64']."
        raise ApiError(400, message)
    raw_input = body.get("input")
    if raw_input == "":
        raw_input = [""]
    if raw_input is None or raw_input == []:
        raise ApiError(400, "invalid input")
    if isinstance(raw_input, list) and raw_input and all(isinstance(i, list) for i in raw_input):
        raise ApiError(400, "invalid input type")  # token arrays: Ollama takes text only
    inputs = _embed_inputs(raw_input)
    name = str(body.get("model") or "")
    spec = _inference_target(state, name, ApiError(404, "model '' not found"))
    vectors, _, tokens = await _embeddings_for(state, spec, request.path, inputs, int(body.get("dimensions") or 0), {})
    data = []
    for index, vector in enumerate(vectors):
        value: Any = vector
        if encoding.lower() == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "embedding": value, "index": index})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return json_response({"object": "list", "data": data, "model": name, "usage": usage})


def _openai_model(spec: ModelSpec, name: str) -> dict[str, Any]:
    owner = name.split("/")[-2] if name.count("/") else "library"
    created = int(parse_rfc3339(spec.modified_at).timestamp())
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


async def openai_models(request: web.Request) -> web.Response:
    specs = sorted(_state(request).models.values(), key=lambda s: parse_rfc3339(s.modified_at), reverse=True)
    return json_response({"object": "list", "data": [_openai_model(s, s.name) for s in specs]})


async def openai_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    spec = _state(request).find(name)
    if spec is None:
        raise ApiError(404, f"model '{name}' not found")
    return json_response(_openai_model(spec, name))


# ---------------------------------------------------------------------------------------------------------
# HTTP: the OpenAI Responses API and the Anthropic Messages API (Ollama's openai/responses.go and
# anthropic/anthropic.go: both are converted to a chat and answered as events `event: <type>\ndata: {...}`)
# ---------------------------------------------------------------------------------------------------------


def _content_text(content: Any, text_types: tuple[str, ...]) -> str:
    """A message's text: a string, or the concatenated ``text`` of its parts of the given types."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") in text_types)


async def _converted_chat(
    request: web.Request,
    state: StandinState,
    name: str,
    messages: list[dict[str, Any]],
    options: dict[str, Any],
    fmt: Any,
    emit: Callable[[str], Awaitable[None]],
) -> Outcome:
    """Run the chat these APIs are converted to; ``emit`` gets each token as it is generated."""
    spec = _inference_target(state, name, ApiError(400, "model is required"))
    if not spec.completion:
        raise ApiError(400, f'"{name}" does not support chat')
    options = check_options(options)
    text = render_messages(messages)
    tokens, done_reason = plan_answer(state.name, spec, text, options, fmt, state.config.response_tokens)
    return await state.generate(
        spec,
        route=request.path,
        prompt=text,
        tokens=tokens,
        done_reason=done_reason,
        keep_alive=state.config.keep_alive,
        options=options,
        faults=dataclasses.replace(state.faults),
        emit=emit,
    )


class EventWriter(NdjsonWriter):
    """Server-sent events with a type line, as Ollama's Responses and Anthropic middlewares write them."""

    def __init__(self, request: web.Request) -> None:
        super().__init__(request, "text/event-stream")

    async def event(self, kind: str, data: dict[str, Any]) -> None:
        await self.send_raw(f"event: {kind}\n".encode() + b"data: " + go_json(data) + b"\n\n")


def _responses_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    raw = body.get("input")
    if isinstance(raw, str):
        if raw:
            messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise ApiError(400, f"input[{index}]: input item missing required 'type' field")
            kind = item.get("type") or ("message" if item.get("role") else "")
            if kind == "message":
                text = _content_text(item.get("content"), ("input_text", "output_text"))
                messages.append({"role": str(item.get("role") or ""), "content": text})
            elif kind == "function_call_output":
                messages.append({"role": "tool", "content": str(item.get("output") or "")})
            elif kind not in ("function_call", "reasoning"):
                raise ApiError(400, f"input[{index}]: unknown input item type: {json.dumps(kind)}")
    elif raw is not None:
        raise ApiError(400, "input must be a string or array")
    return messages


def _responses_object(
    body: dict[str, Any], ident: str, status: str, output: list[Any], usage: dict[str, Any] | None
) -> dict[str, Any]:
    """The response object Ollama's responses converter builds, echoing the request's settings."""
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    fmt = text.get("format") if text and isinstance(text.get("format"), dict) else {"type": "text"}
    return {
        "id": ident, "object": "response", "created_at": int(time.time()), "completed_at": None,
        "status": status, "incomplete_details": None, "model": body.get("model"), "previous_response_id": None,
        "instructions": body.get("instructions") or None, "output": output, "error": None,
        "tools": body.get("tools") or [], "tool_choice": "auto", "truncation": body.get("truncation") or "disabled",
        "parallel_tool_calls": True, "text": {"format": fmt}, "top_p": body.get("top_p", 1.0),
        "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
        "temperature": 1.0 if body.get("temperature") is None else body["temperature"], "reasoning": None,
        "usage": usage, "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": None,
        "store": False, "background": bool(body.get("background")), "service_tier": "default", "metadata": {},
        "safety_identifier": None, "prompt_cache_key": None,
    }  # fmt: skip


def _responses_message(item_id: str, status: str, text: str | None) -> dict[str, Any]:
    content = [] if text is None else [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


async def openai_responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: stateless; ``stream`` defaults to false."""
    state = _state(request)
    body = await _openai_body(request)
    name = str(body.get("model") or "")
    messages = _responses_messages(body)
    options: dict[str, Any] = {"temperature": 1.0 if body.get("temperature") is None else body["temperature"]}
    if body.get("top_p") is not None:
        options["top_p"] = body["top_p"]
    if body.get("max_output_tokens") is not None:
        options["num_predict"] = body["max_output_tokens"]
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    fmt = isinstance(text_format, dict) and text_format.get("type") == "json_schema"
    ident, item_id = f"resp_{state.next_id()}", f"msg_{state.next_id()}"
    writer = EventWriter(request) if body.get("stream") is True else None
    sequence = 0
    sent: list[str] = []

    async def event(kind: str, data: dict[str, Any]) -> None:
        nonlocal sequence
        assert writer is not None
        await writer.event(kind, {**data, "type": kind, "sequence_number": sequence})
        sequence += 1

    async def begin() -> None:
        for kind in ("response.created", "response.in_progress"):
            await event(kind, {"response": _responses_object(body, ident, "in_progress", [], None)})

    async def emit(token: str) -> None:
        if writer is None:
            return
        if not sent:
            await begin()
            await event(
                "response.output_item.added",
                {"output_index": 0, "item": _responses_message(item_id, "in_progress", None)},
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await event(
                "response.content_part.added", {"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}
            )
        sent.append(token)
        delta = {"item_id": item_id, "output_index": 0, "content_index": 0, "delta": token, "logprobs": []}
        await event("response.output_text.delta", delta)

    try:
        outcome = await _converted_chat(request, state, name, messages, options, fmt, emit)
    except InjectedStreamError as err:
        if writer is not None and writer.started:
            return await writer.finish()  # Ollama's converter drops the error line: the stream just ends
        raise ApiError(500, str(err)) from None
    except DropConnection:
        return await drop_connection(request)
    usage = {
        "input_tokens": outcome.prompt_eval_count, "output_tokens": outcome.eval_count,
        "total_tokens": outcome.prompt_eval_count + outcome.eval_count,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0},
    }  # fmt: skip
    output = [_responses_message(item_id, "completed", outcome.text)]
    if writer is None:
        return json_response(
            {**_responses_object(body, ident, "completed", output, usage), "completed_at": int(time.time())}
        )
    if not sent:
        await begin()
    else:
        part = {"type": "output_text", "text": outcome.text, "annotations": [], "logprobs": []}
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        await event("response.output_text.done", {**where, "text": outcome.text, "logprobs": []})
        await event("response.content_part.done", {**where, "part": part})
        await event("response.output_item.done", {"output_index": 0, "item": output[0]})
    final = _responses_object(body, ident, "completed", output if sent else [], usage)
    await event("response.completed", {"response": {**final, "completed_at": int(time.time())}})
    return await writer.finish()


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip
    error = {"type": kinds.get(status, "api_error"), "message": message}
    return {"type": "error", "error": error, "request_id": f"req_{os.urandom(12).hex()}"}


def _anthropic_stop_reason(done_reason: str) -> str:
    return {"stop": "end_turn", "length": "max_tokens"}.get(done_reason, "stop_sequence" if done_reason else "")


async def anthropic_messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``: ``max_tokens`` is required; ``stream`` defaults to false."""
    state = _state(request)
    body = await _openai_body(request)
    name = str(body.get("model") or "")
    if not name:
        raise ApiError(400, "model is required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise ApiError(400, "max_tokens is required and must be positive")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise ApiError(400, "messages is required")
    system = _content_text(body.get("system"), ("text",))
    turns = [
        {"role": str(m.get("role") or "").lower(), "content": _content_text(m.get("content"), ("text",))}
        for m in raw_messages
        if isinstance(m, dict)
    ]
    messages = ([{"role": "system", "content": system}] if system else []) + turns
    options: dict[str, Any] = {"num_predict": max_tokens}
    for key, option in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop_sequences", "stop"),
    ):
        if body.get(key) is not None:
            options[option] = body[key]
    # Ollama estimates input tokens for message_start as characters / 4 (the real count comes at the end)
    estimate = max(1, (len(system) + sum(len(t["role"]) + len(t["content"]) for t in turns)) // 4)
    ident = f"msg_{os.urandom(12).hex()}"
    writer = EventWriter(request) if body.get("stream") is True else None
    sent: list[str] = []

    def message(content: list[Any] | None, usage: dict[str, int], stop_reason: str = "") -> dict[str, Any]:
        reply: dict[str, Any] = {"id": ident, "type": "message", "role": "assistant", "model": name, "content": content}
        if stop_reason:
            reply["stop_reason"] = stop_reason
        return {**reply, "usage": usage}

    async def begin() -> None:
        assert writer is not None
        start = message([], {"input_tokens": estimate, "output_tokens": 0})
        await writer.event("message_start", {"type": "message_start", "message": start})

    async def emit(token: str) -> None:
        if writer is None:
            return
        if not sent:
            await begin()
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            await writer.event("content_block_start", block)
        sent.append(token)
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": token}}
        await writer.event("content_block_delta", delta)

    try:
        outcome = await _converted_chat(request, state, name, messages, options, None, emit)
    except InjectedStreamError as err:
        if writer is not None and writer.started:
            return await writer.finish()  # Ollama's converter drops the error line: the stream just ends
        raise ApiError(500, str(err)) from None
    except DropConnection:
        return await drop_connection(request)
    usage = {"input_tokens": outcome.prompt_eval_count, "output_tokens": outcome.eval_count}
    stop_reason = _anthropic_stop_reason(outcome.done_reason)
    if writer is None:
        # Go encodes the empty content list of an empty answer as null
        content = [{"type": "text", "text": outcome.text}] if outcome.text else None
        return json_response(message(content, usage, stop_reason))
    if not sent:
        await begin()
    else:
        await writer.event("content_block_stop", {"type": "content_block_stop", "index": 0})
    await writer.event(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": usage}
    )
    await writer.event("message_stop", {"type": "message_stop"})
    return await writer.finish()


# ---------------------------------------------------------------------------------------------------------
# HTTP: test-only control routes
# ---------------------------------------------------------------------------------------------------------


async def standin_stats(request: web.Request) -> web.Response:
    return json_response(_state(request).stats_json())


async def standin_reset_stats(request: web.Request) -> web.Response:
    state = _state(request)
    old = state.stats
    state.stats = Stats(active=old.active, queued=old.queued, active_by_model=dict(old.active_by_model))
    state.stats.held = old.held
    return json_response(state.stats_json())


async def standin_faults(request: web.Request) -> web.Response:
    """GET shows the faults, POST merges the given fields, DELETE clears them all."""
    state = _state(request)
    if request.method == "POST":
        body = await read_json(request, "Faults")
        try:
            merged = {**dataclasses.asdict(state.faults), **body}
            state.faults = Faults.from_dict(merged)
        except (TypeError, ValueError) as err:
            raise ApiError(400, str(err)) from None
    elif request.method == "DELETE":
        state.faults = Faults()
    return json_response(dataclasses.asdict(state.faults))


async def standin_release(request: web.Request) -> web.Response:
    """Streams held by the hold_after_tokens fault go on; answers the stats as they were before."""
    state = _state(request)
    before = state.stats_json()
    state.release_held()
    return json_response(before)


async def _record_body(state: StandinState, request: web.Request) -> None:
    if request.method not in ("POST", "DELETE"):
        return
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = json.loads(await request.read())  # aiohttp keeps the bytes: the handler reads them again
        state.stats.bodies.append(body)
        del state.stats.bodies[:-200]


@web.middleware if web is not None else (lambda f: f)
async def ollama_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Counts requests, applies request-level faults and renders errors the way Ollama (or its /v1 layer)
    does."""
    state = _state(request)
    openai = request.path.startswith("/v1/")
    try:
        if request.path.startswith("/_standin/"):
            return await handler(request)
        key = f"{request.method} {request.path}"
        state.stats.requests[key] = state.stats.requests.get(key, 0) + 1
        await _record_body(state, request)
        await state.before_request(request.path)
        return await handler(request)
    except ApiError as err:
        if request.path == "/v1/messages":  # Ollama's Anthropic middleware answers in Anthropic's shape
            return json_response(anthropic_error(err.status, err.message), err.status)
        return error_response(err.status, err.message, openai)
    except web.HTTPNotFound:
        return web.Response(status=404, text="404 page not found")
    except web.HTTPMethodNotAllowed:
        return web.Response(status=405, text="405 method not allowed")


def build_app(state: StandinState) -> web.Application:
    app = web.Application(middlewares=[ollama_middleware])
    app[STATE_KEY] = state
    missing = set(state.config.missing_routes)

    def route(
        method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], head: bool = True
    ) -> None:
        if path in missing:  # an older Ollama without it: Gin answers 404 "404 page not found"
            return
        if method == "GET":
            app.router.add_get(path, handler, allow_head=head)
        else:
            app.router.add_route(method, path, handler)

    app.router.add_get("/", root)
    route("GET", "/api/version", version)
    route("GET", "/api/tags", tags)
    route("GET", "/api/ps", ps, head=False)
    route("POST", "/api/show", show)
    route("POST", "/api/generate", generate)
    route("POST", "/api/chat", chat)
    route("POST", "/api/embed", embed)
    route("POST", "/api/embeddings", embeddings)
    route("POST", "/api/pull", pull)
    route("DELETE", "/api/delete", delete)
    route("POST", "/api/copy", copy)
    route("POST", "/v1/chat/completions", openai_chat)
    route("POST", "/v1/completions", openai_completions)
    route("POST", "/v1/embeddings", openai_embeddings)
    route("POST", "/v1/responses", openai_responses)
    route("POST", "/v1/messages", anthropic_messages)
    route("GET", "/v1/models", openai_models, head=False)
    route("GET", "/v1/models/{model:.+}", openai_model, head=False)
    app.router.add_get("/_standin/stats", standin_stats, allow_head=False)
    app.router.add_delete("/_standin/stats", standin_reset_stats)
    app.router.add_route("*", "/_standin/faults", standin_faults)
    app.router.add_post("/_standin/release", standin_release)
    return app


class StandinServer:
    """One instance on an aiohttp AppRunner. A client that disconnects cancels its handler, which stops
    the generation and frees the slot (``handler_cancellation``)."""

    def __init__(self, config: StandinConfig) -> None:
        if web is None:
            raise RuntimeError("the Ollama stand-in server needs aiohttp; run it with a Python that has it")
        self.state = StandinState(config)
        self.app = build_app(self.state)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0 = a free port); returns the port."""
        runner = web.AppRunner(self.app, handler_cancellation=True, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound: int = runner.addresses[0][1]
        return bound

    async def stop(self) -> None:
        self.state.shutdown.set()  # hanging handlers return now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ---------------------------------------------------------------------------------------------------------
# The `ollama` executable
# ---------------------------------------------------------------------------------------------------------


def parse_ollama_host(value: str | None) -> tuple[str, str, int]:
    """(scheme, host, port) from OLLAMA_HOST, with Ollama's defaults: http, 127.0.0.1, 11434."""
    text = (value or "").strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    default_port = {"http": 80, "https": 443}[scheme] if sep and scheme in ("http", "https") else DEFAULT_PORT
    rest = rest.split("/", 1)[0]
    host, port = rest, ""
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.lstrip(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    return scheme, host or "127.0.0.1", int(port) if port else default_port


def config_from_env(environ: dict[str, str] | None = None) -> StandinConfig:
    """The config `ollama serve` uses: SOLLOL_STANDIN_CONFIG (JSON file), then OLLAMA_NUM_PARALLEL,
    OLLAMA_MAX_QUEUE and SOLLOL_STANDIN_NAME override it. Pulled models persist in $OLLAMA_MODELS
    (``standin-state.json``) or next to the config file."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("SOLLOL_STANDIN_CONFIG")
    config = StandinConfig.load(path) if path else StandinConfig()
    if env.get("OLLAMA_NUM_PARALLEL"):
        config.num_parallel = int(env["OLLAMA_NUM_PARALLEL"])
    if env.get("OLLAMA_MAX_QUEUE"):
        config.max_queue = int(env["OLLAMA_MAX_QUEUE"])
    if env.get("SOLLOL_STANDIN_NAME"):
        config.name = env["SOLLOL_STANDIN_NAME"]
    if not config.state_file:
        if env.get("OLLAMA_MODELS"):
            config.state_file = str(Path(env["OLLAMA_MODELS"]) / "standin-state.json")
        elif path:
            config.state_file = str(Path(path).with_name(Path(path).stem + ".state.json"))
    return config


async def _serve(config: StandinConfig, host: str, port: int) -> None:
    server = StandinServer(config)
    await server.start(host, port)
    print(f"Listening on {host}:{port} (version {config.version}) [sollol Ollama stand-in]", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def cmd_serve() -> int:
    if web is None:
        print("Error: the Ollama stand-in server needs aiohttp; run it with a Python that has it", file=sys.stderr)
        return 1
    _, host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    try:
        config = config_from_env()
    except (OSError, ValueError) as err:
        print(f"Error: bad stand-in config: {err}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as err:
        reason = f"bind: {os.strerror(err.errno).lower()}" if err.errno else str(err)
        print(f"Error: listen tcp {host}:{port}: {reason}", file=sys.stderr)
        return 1
    return 0


def _client_url(path: str) -> str:
    scheme, host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


def _client_get(path: str) -> Any:
    with urllib.request.urlopen(_client_url(path), timeout=10) as reply:
        return json.loads(reply.read())


def cmd_version() -> int:
    client_version = DEFAULT_VERSION
    with contextlib.suppress(OSError, ValueError):
        client_version = config_from_env().version
    server_version = ""
    try:
        server_version = str(_client_get("/api/version").get("version", ""))
    except (OSError, ValueError):
        print("Warning: could not connect to a running Ollama instance")
    if server_version:
        print(f"ollama version is {server_version}")
    if server_version != client_version:
        print(f"Warning: client version is {client_version}")
    return 0


def human_bytes(size: int) -> str:
    """Ollama's format.HumanBytes: decimal units."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def human_time(moment: datetime, now: datetime | None = None) -> str:
    """Ollama's format.HumanTime for a moment in the past: "2 days ago", "About a minute ago"..."""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 1:
        return "Less than a second ago"
    if seconds < 2:
        return "1 second ago"
    if seconds < 60:
        return f"{int(seconds)} seconds ago"
    minutes = int(seconds // 60)
    if minutes < 2:
        return "About a minute ago"
    if minutes < 60:
        return f"{minutes} minutes ago"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour ago"
    for limit, divisor, unit in ((48, 1, "hours"), (24 * 14, 24, "days"), (24 * 60, 24 * 7, "weeks")):
        if hours < limit:
            return f"{hours // divisor} {unit} ago"
    if hours < 24 * 365 * 2:
        return f"{hours // (24 * 30)} months ago"
    return f"{hours // (24 * 365)} years ago"


def cmd_list(pattern: str | None) -> int:
    try:
        models = _client_get("/api/tags")["models"]
    except (OSError, ValueError):
        print("Error: could not connect to ollama server, run 'ollama serve' to start it", file=sys.stderr)
        return 1
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for model in models:
        if pattern and not model["name"].lower().startswith(pattern.lower()):
            continue
        modified = human_time(parse_rfc3339(model["modified_at"]))
        rows.append([model["name"], model["digest"][:12], human_bytes(model["size"]), modified])
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:  # tablewriter without borders: left-aligned, four spaces after every column
        print("".join(cell.ljust(width) + "    " for cell, width in zip(row, widths, strict=True)))
    return 0


USAGE = """Ollama stand-in for sollol's tests (not the real Ollama).

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama
  list        List models

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-v", "--version"):
        return cmd_version()
    if args[0] == "serve":
        return cmd_serve()
    if args[0] in ("list", "ls"):
        return cmd_list(args[1] if len(args) > 1 else None)
    print(f'Error: unknown command "{args[0]}" for "ollama"', file=sys.stderr)
    return 1


def standin_script(python: str = sys.executable) -> str:
    """This file as one self-contained executable, its shebang pointing at ``python`` (which needs
    aiohttp for ``serve``). Upload it as ``ollama`` and make it executable."""
    source = Path(__file__).read_text()
    first, _, rest = source.partition("\n")
    if not first.startswith("#!"):
        raise RuntimeError(f"{__file__} lost its shebang line")
    return f"#!{python}\n{rest}"


if __name__ == "__main__":
    sys.exit(main())
