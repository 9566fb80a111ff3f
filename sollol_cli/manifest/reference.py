"""The manifest reference in README.md, generated from the pydantic models so it can never drift."""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sollol_cli.manifest import models

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level", models.Cluster),
    ("ssh", models.SshOptions),
    ("nodes[]", models.Node),
    ("nodes[].ssh", models.SshOverrides),
    ("nodes[].resources", models.Resources),
    ("nodes[].ollama", models.OllamaRole),
    ("nodes[].rpc", models.RpcRole),
    ("nodes[].llamacpp", models.LlamacppRole),
    ("nodes[].llama_cpp", models.NodeLlamaCpp),
    ("backends[]", models.Backend),
    ("llama_cpp", models.LlamaCpp),
    ("models[]", models.Model),
    ("gateway", models.Gateway),
    ("routing", models.Routing),
    ("discovery", models.Discovery),
]


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return "mapping"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return " \\| ".join(f"`{m.value}`" for m in annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {int: "integer", float: "number", str: "text", bool: "boolean"}.get(annotation, str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value}`"
    value = field.default
    if value is None or value is PydanticUndefined:
        return ""
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = str(value).lower()
    return f"`{value}`"


def manifest_reference() -> str:
    out: list[str] = []
    for title, model in SECTIONS:
        out.append(f"**{title}**\n")
        out.append("| key | type | default | meaning |")
        out.append("|---|---|---|---|")
        for name, field in model.model_fields.items():
            meaning = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |")
        out.append("")
    return "\n".join(out)
