"""`sollol init`'s file work: read an old SynapticLlamas config, check and write the new manifest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sollol_cli.errors import UsageError
from sollol_cli.files import write_atomic
from sollol_cli.manifest.loader import parse_yaml, validate_document
from sollol_cli.manifest.models import Cluster
from sollol_cli.manifest.starter import Starter, from_synapticllamas, render


@dataclass(frozen=True)
class Written:
    path: Path | None  # None: written to stdout
    text: str
    cluster: Cluster
    read: list[Path]  # the config files it came from
    notes: list[str]  # what the user should still do


def read_synapticllamas(path: Path, *, name: str) -> tuple[Starter, list[Path]]:
    """The config and, when it lies beside it, SynapticLlamas' list of Ollama nodes (`<stem>_nodes.json`)."""
    config = _read_json(path)
    nodes_path = path.with_name(f"{path.stem}_nodes.json")
    nodes = _read_json(nodes_path) if nodes_path.is_file() else None
    starter = from_synapticllamas(config, source=str(path), nodes=nodes, nodes_source=str(nodes_path), name=name)
    return starter, [path] + ([nodes_path] if nodes is not None else [])


def write_manifest(starter: Starter, output: Path | None, *, force: bool, read: list[Path]) -> Written:
    """Render, prove that the text is a valid manifest, then write it (`output` None: the caller prints it)."""
    text = render(starter)
    cluster = validate_document(parse_yaml(text, "generated manifest"), "generated manifest")
    if output is not None:
        if output.is_dir():
            raise UsageError(f"{output} is a directory", hint="give a file name, e.g. -o cluster.yaml")
        if output.exists() and not force:
            raise UsageError(f"{output} exists", hint="pass --force to replace it, or -o another file")
        try:
            write_atomic(output, text)
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    return Written(output, text, cluster, read, starter.notes)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist", hint="SynapticLlamas keeps it in ~/.synapticllamas.json") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
