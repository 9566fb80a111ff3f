"""Request bodies checked against the types Ollama's Go structs accept.

Why: Ollama rejects a wrongly typed field with a 400 before doing anything; without the same check here a
bad body would reach a backend (or the llama-server translation) and fail there as a confusing 5xx.
Unknown fields are allowed, as Ollama allows them: clients move faster than servers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from sollol_cli.gateway.problems import Problem

Check = Callable[[Any], bool]
Spec = dict[str, tuple[Check, str]]

INT64 = 2**63


def is_int(value: Any) -> bool:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def any_of(*checks: Check) -> Check:
    return lambda value: any(check(value) for check in checks)


STRING = (is_str, "a string")
BOOL = (is_bool, "true or false")
INTEGER = (is_int, "an integer")
OBJECT = (is_object, "an object")
STRINGS = (list_of(is_str), "a list of strings")
FORMAT = (any_of(is_str, is_object), '"json" or a JSON schema object')
KEEP_ALIVE = (any_of(is_number, is_str), 'a duration like "5m" or a number of seconds')
THINK = (any_of(is_bool, is_str), 'true, false, "low", "medium" or "high"')

_COMMON: Spec = {"model": STRING, "options": OBJECT, "keep_alive": KEEP_ALIVE, "stream": BOOL}
_GENERATION: Spec = {
    **_COMMON, "format": FORMAT, "think": THINK, "logprobs": BOOL, "top_logprobs": INTEGER,
    "truncate": BOOL, "shift": BOOL,
}  # fmt: skip

GENERATE: Spec = {
    **_GENERATION, "prompt": STRING, "suffix": STRING, "system": STRING, "template": STRING, "raw": BOOL,
    "images": STRINGS, "context": (list_of(is_int), "a list of integers"),
}  # fmt: skip

_TOOL_CALL: Spec = {"function": OBJECT, "id": STRING}
_FUNCTION_CALL: Spec = {"name": STRING, "arguments": OBJECT, "index": INTEGER}
MESSAGE: Spec = {
    "role": STRING, "content": STRING, "thinking": STRING, "images": STRINGS,
    "tool_calls": (list_of(is_object), "a list of objects"), "tool_name": STRING, "tool_call_id": STRING,
}  # fmt: skip
CHAT: Spec = {
    **_GENERATION, "messages": (list_of(is_object), "a list of message objects"),
    "tools": (list_of(is_object), "a list of tool objects"),
}  # fmt: skip
EMBED: Spec = {
    **_COMMON, "input": (any_of(is_str, list_of(is_str)), "a string or a list of strings"),
    "truncate": BOOL, "dimensions": INTEGER,
}  # fmt: skip
EMBEDDINGS: Spec = {**_COMMON, "prompt": STRING}
NAMED: Spec = {"model": STRING, "name": STRING, "verbose": BOOL, "insecure": BOOL, "stream": BOOL}
COPY: Spec = {"source": STRING, "destination": STRING}

# Ollama's runner options with their Go types; unknown options are ignored, as Ollama ignores them.
_INT_OPTIONS = (
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch", "num_gpu", "main_gpu",
    "num_thread", "mirostat",
)  # fmt: skip
_FLOAT_OPTIONS = (
    "top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty",
    "tfs_z", "mirostat_tau", "mirostat_eta",
)  # fmt: skip
_BOOL_OPTIONS = ("penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "vocab_only", "f16_kv")
OPTIONS: Spec = {
    **dict.fromkeys(_INT_OPTIONS, INTEGER),
    **dict.fromkeys(_FLOAT_OPTIONS, (is_number, "a number")),
    **dict.fromkeys(_BOOL_OPTIONS, BOOL),
    "stop": (any_of(is_str, list_of(is_str)), "a string or a list of strings"),
}


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or a 400 naming what is wrong with it."""
    if not raw.strip():
        raise Problem(400, "missing request body")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise Problem(400, "invalid JSON body: nested too deeply") from None
    except UnicodeDecodeError:
        raise Problem(400, "invalid JSON body: not UTF-8") from None
    except ValueError as exc:
        raise Problem(400, f"invalid JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise Problem(400, f"the request body must be a JSON object, not {_kind(data)}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check(body: dict[str, Any], spec: Spec, where: str = "") -> None:
    """400 for the first field whose type is wrong; null is accepted everywhere (Go reads it as unset)."""
    for name, (ok, expected) in spec.items():
        value = body.get(name)
        if value is not None and not ok(value):
            raise Problem(400, f"invalid request: '{where}{name}' must be {expected}, not {_kind(value)}")


def check_generate(body: dict[str, Any]) -> str:
    check(body, GENERATE)
    _check_options(body)
    return require_model(body)


def check_chat(body: dict[str, Any]) -> str:
    check(body, CHAT)
    _check_options(body)
    for i, message in enumerate(body.get("messages") or []):
        check(message, MESSAGE, f"messages[{i}].")
        for j, call in enumerate(message.get("tool_calls") or []):
            check(call, _TOOL_CALL, f"messages[{i}].tool_calls[{j}].")
            check(call.get("function") or {}, _FUNCTION_CALL, f"messages[{i}].tool_calls[{j}].function.")
    return require_model(body)


def check_embed(body: dict[str, Any], spec: Spec = EMBED) -> str:
    check(body, spec)
    _check_options(body)
    return require_model(body)


def _check_options(body: dict[str, Any]) -> None:
    options = body.get("options")
    if isinstance(options, dict):
        check(options, OPTIONS, "options.")


def require_model(body: dict[str, Any], *, legacy_name: bool = False) -> str:
    """The model a request names (`name` is the older spelling some routes still accept)."""
    model = body.get("model")
    if not model and legacy_name:
        model = body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise Problem(400, "model is required")
    return model.strip()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
