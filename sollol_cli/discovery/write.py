"""`discover --write`: add what was found to the manifest as `backends`, keeping its comments and order."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.manifest.models import Cluster, listeners


def new_backends(cluster: Cluster, found: list[Found]) -> list[Found]:
    """Backends not yet in the manifest (as a node role or a backend), in the order found."""
    known = {(host, port) for _, host, port in listeners(cluster)}
    known |= {(node.address, getattr(node, role).port) for node in cluster.nodes for role in node.roles}
    out = []
    for item in found:
        if item.kind != "unknown" and (item.address, item.port) not in known:
            known.add((item.address, item.port))
            out.append(item)
    return out


def add_backends(document: Any, additions: list[Found]) -> str:
    """The manifest text with `additions` appended to `backends:` (created if missing)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    backends = document.get("backends")
    if backends is None:
        backends = CommentedSeq()
        document["backends"] = backends
    for item in additions:
        entry = CommentedMap()
        entry["kind"] = item.kind
        entry["address"] = item.address
        entry["port"] = item.port
        entry.fa.set_flow_style()
        backends.append(entry)
        label = f"found by sollol discover: {item.kind} {item.version or ''}".rstrip()
        backends.yaml_add_eol_comment(label, len(backends) - 1)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def write_manifest(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.sollol-tmp")
    tmp.write_text(text)
    tmp.replace(path)
