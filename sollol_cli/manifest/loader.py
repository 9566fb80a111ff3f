"""Load cluster.yaml: ruamel round-trip (keeps line numbers and comments) -> pydantic `Cluster`.

Every problem becomes a `ManifestProblem` with file:line:col; all of them are raised together.
"""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sollol_cli.errors import ManifestError, ManifestNotFound, ManifestProblem, UsageError
from sollol_cli.manifest.models import Cluster, CrossCheckProblems

DEFAULT_NAME = "cluster.yaml"
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedManifest:
    path: Path
    cluster: Cluster
    document: Any  # the ruamel CommentedMap, for round-trip edits (discover --write)
    sha256: str


def find_manifest(given: Path | None, env_default: Path | None = None) -> Path:
    """The manifest to use: the argument, else ./cluster.yaml, else $SOLLOL_MANIFEST."""
    if given is not None:
        return given
    local = Path(DEFAULT_NAME)
    if local.exists():
        return local
    if env_default is not None:
        return env_default
    raise ManifestNotFound(
        "no manifest: ./cluster.yaml does not exist and SOLLOL_MANIFEST is not set",
        hint="pass the manifest path or create cluster.yaml (examples: examples/clusters/)",
    )


def load_manifest(path: Path) -> LoadedManifest:
    raw = _read_bytes(path)
    name = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position_of_offset(raw, exc.start)
        raise ManifestError(
            [ManifestProblem(name, line, col, "", "file is not UTF-8 text; save it as UTF-8")]
        ) from None
    document = parse_yaml(text, name)
    cluster = validate_document(document, name)
    return LoadedManifest(path, cluster, document, hashlib.sha256(raw).hexdigest())


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise ManifestNotFound(f"manifest {path} does not exist", hint="check the path")
    if path.is_dir():
        raise UsageError(f"manifest {path} is a directory", hint=f"give the YAML file, e.g. {path / DEFAULT_NAME}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read manifest {path}: {exc.strerror or exc}", hint="check its permissions") from None


def _position_of_offset(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def parse_yaml(text: str, name: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        document = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise ManifestError([ManifestProblem(name, line, col, "", f"YAML syntax error: {problem}")]) from None
    except YAMLError as exc:
        raise ManifestError([ManifestProblem(name, 1, 1, "", f"YAML error: {exc}")]) from None
    except RecursionError:  # ruamel composes nested collections recursively
        depth, line, col = _deepest(text)
        message = f"nested {depth} levels deep, too deep to read; a manifest needs only a few levels"
        raise ManifestError([ManifestProblem(name, line, col, "", message)]) from None
    if document is None:
        raise ManifestError([ManifestProblem(name, 1, 1, "", "the manifest is empty; start with 'nodes:'")])
    if not isinstance(document, dict):
        line, col = _content_start(text)
        message = f"the manifest must be a mapping of keys, not a {_kind(document)}"
        raise ManifestError([ManifestProblem(name, line, col, "", message)])
    return document


def _yaml_events(text: str) -> Iterator[Any]:
    """ruamel's parse events (iterative, so any depth is fine), until the first syntax error."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        yield from YAML(typ="rt").parse(text)
    except YAMLError:
        return


def _deepest(text: str) -> tuple[int, int, int]:
    """The greatest nesting depth and the 1-based line/column where it is first reached."""
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

    depth, deepest, line, col = 0, 0, 1, 1
    for event in _yaml_events(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > deepest:
                deepest, line, col = depth, event.start_mark.line + 1, event.start_mark.column + 1
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
    return deepest, line, col


def _content_start(text: str) -> tuple[int, int]:
    """1-based line/column of the document's first value (after comments, blank lines and `---`)."""
    from ruamel.yaml.events import NodeEvent

    for event in _yaml_events(text):
        if isinstance(event, NodeEvent):
            return event.start_mark.line + 1, event.start_mark.column + 1
    return 1, 1


def validate_document(document: Any, name: str) -> Cluster:
    try:
        return Cluster.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        problems = [p for error in errors for p in _problems(document, error, name)]
        if not any(_cross_problems(error) for error in errors):
            cross = _cross_check_despite(document)
            problems += [_problem(document, loc, message, name, at_key=True) for loc, message in cross]
        problems.sort(key=lambda p: (p.line, p.column))
        raise ManifestError(problems) from None


def _cross_check_despite(document: Any) -> list[tuple[Loc, str]]:
    """Checks across fields (names, references, ports) need valid nodes, backends and models; when only other
    sections have type errors, run them anyway so every problem is reported at once."""
    from sollol_cli.manifest.models import Backend, Model, Node, cross_check

    if not isinstance(document, dict):
        return []
    parts: dict[str, list[Any]] = {}
    for key, kind in (("nodes", Node), ("backends", Backend), ("models", Model)):
        items = document.get(key) or []
        if not isinstance(items, list):
            return []
        try:
            parts[key] = [kind.model_validate(item) for item in items]
        except ValidationError:
            return []  # reported already; checking across a broken list would guess
    if not any(parts.values()):
        return []
    cluster = Cluster.model_construct(nodes=parts["nodes"], backends=parts["backends"], models=parts["models"])
    return list(cross_check(cluster))


def _cross_problems(error: ErrorDetails) -> CrossCheckProblems | None:
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ValueError) and ctx_error.args and isinstance(ctx_error.args[0], CrossCheckProblems):
        return ctx_error.args[0]
    return None


def _problems(document: Any, error: ErrorDetails, name: str) -> list[ManifestProblem]:
    cross = _cross_problems(error)
    if cross is not None:
        return [_problem(document, loc, message, name, at_key=True) for loc, message in cross]
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else (f"; expected one of: {', '.join(allowed)}" if allowed else "")
        )
        return [_problem(document, loc, f"unknown key '{key}'{hint}", name, at_key=True)]
    if kind == "missing":
        return [_problem(document, loc, f"missing required key '{loc[-1]}'", name)]
    return [_problem(document, loc, _message(error), name)]


def _problem(document: Any, loc: Loc, message: str, name: str, *, at_key: bool = False) -> ManifestProblem:
    line, col, found = locate(document, loc, at_key=at_key)
    return ManifestProblem(name, line, col, dotted(found), message)


def locate(document: Any, loc: Loc, *, at_key: bool = False) -> tuple[int, int, Loc]:
    """1-based line/column of `loc` in a ruamel document, and the part of `loc` that exists.

    A missing key points at its parent mapping; `at_key` points at a key rather than its value.
    """
    node = document
    line, col = _own_position(document)
    walked: list[str | int] = []
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if isinstance(node, dict) and part in node:
            # containers point at their key: "nodes:" is easier to find than the first item below it
            point_at_key = (at_key and last) or _is_container(node[part])
            lc: Any = cast(Any, node).lc
            pos = lc.key(part) if point_at_key else lc.value(part)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            pos = cast(Any, node).lc.item(part)
            line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        elif isinstance(part, str) and not isinstance(node, dict):
            continue  # pydantic's own loc parts (union tags, validators) have no YAML position
        else:
            walked.append(part)  # a missing key: keep its name in the path, position stays on the parent
            break
        walked.append(part)
    return line, col, tuple(walked)


def _own_position(node: Any) -> tuple[int, int]:
    lc = getattr(node, "lc", None)
    if lc is None or lc.line is None:
        return 1, 1
    return lc.line + 1, lc.col + 1


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list)


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_FRIENDLY = {
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
    "list_type": "expected a list",
    "dict_type": "expected a mapping of keys",
    "model_type": "expected a mapping of keys",
    "model_attributes_type": "expected a mapping of keys",
}


def _message(error: ErrorDetails) -> str:
    friendly = _FRIENDLY.get(error["type"])
    if friendly:
        return f"{friendly}, got {_show(error.get('input'))}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message[:1].lower() + message[1:] if message[:2] != message[:2].upper() else message


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _kind(value: Any) -> str:
    return "list" if isinstance(value, list) else type(value).__name__


def _allowed_keys(loc: Loc) -> list[str]:
    """The keys the model at `loc` accepts (for "did you mean")."""
    model: Any = Cluster
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = _model_in(model.model_fields[part].annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside Optional[...] / list[...] / Annotated[...], if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
