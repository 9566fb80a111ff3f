"""`discover --write`: add what was found to the manifest's `backends`, changing nothing else in the file.

A ruamel round-trip dump keeps comments but re-indents the whole file in one style (and moves comment
columns). So the new entries are inserted as text where ruamel's line/column information says the
`backends` list ends, and the result is parsed again and compared with the intended document. Only when
that check fails (an unusual layout, e.g. a flow-style `backends: [...]` with entries) is the document
dumped by ruamel: comments kept, layout normalised, and the caller is told so.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import re
import socket
import stat
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sollol_cli.discovery.fingerprint import Found
from sollol_cli.errors import ManifestError
from sollol_cli.files import write_atomic
from sollol_cli.manifest.loader import parse_yaml, validate_document
from sollol_cli.manifest.models import LOCAL, Cluster, listeners

COMMENT = "found by sollol discover"
DEFAULT_OFFSET = 2  # "  - " under a top-level key, unless the file indents its lists otherwise


@dataclass(frozen=True)
class Edit:
    text: str
    kept_layout: bool  # False: ruamel re-dumped the file (comments kept, indentation normalised)


@dataclass(frozen=True)
class WriteResult:
    added: list[Found]
    kept_layout: bool = True


def new_backends(
    cluster: Cluster, found: Iterable[Found], aliases: Mapping[str, Collection[str]] | None = None
) -> list[Found]:
    """Backends not yet in the manifest (as a node role or a backend), in the order found.
    `aliases` maps host names used in the manifest to their addresses (see `resolve_names`)."""
    names = aliases or {}
    known: set[tuple[str, int]] = set()
    endpoints = [(host, port) for _, host, port in listeners(cluster)]
    endpoints += [(node.address, getattr(node, role).port) for node in cluster.nodes for role in node.roles]
    for host, port in endpoints:
        known.add((host, port))
        known.update((address, port) for address in names.get(host, ()))
    out = []
    for item in found:
        if item.kind != "unknown" and (item.address, item.port) not in known:
            known.add((item.address, item.port))
            out.append(item)
    return out


def host_names(cluster: Cluster) -> list[str]:
    """Addresses in the manifest that are names, not IP literals (they need resolving to compare)."""
    hosts = [node.address for node in cluster.nodes] + [backend.address for backend in cluster.backends]
    return sorted({h for h in hosts if h != LOCAL and not _is_ip(h)})


async def resolve_names(names: Iterable[str], *, timeout: float = 3.0) -> dict[str, set[str]]:
    """Each name's addresses; a name that does not resolve in time maps to nothing."""
    loop = asyncio.get_running_loop()

    async def one(name: str) -> tuple[str, set[str]]:
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError):
            return name, set()
        return name, {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}

    return dict(await asyncio.gather(*(one(name) for name in names)))


def update_manifest(
    path: Path, found: list[Found], aliases: Mapping[str, Collection[str]] | None = None
) -> WriteResult:
    """Add the new backends among `found` to the manifest at `path`; never writes an invalid manifest."""
    name = str(path)
    text = path.read_bytes().decode("utf-8")
    additions = new_backends(validate_document(parse_yaml(text, name), name), found, aliases)
    if not additions:
        return WriteResult([])
    edit = add_backends(text, additions)
    validate_document(parse_yaml(edit.text, name), name)
    write_manifest(path, edit.text)
    return WriteResult(additions, edit.kept_layout)


def add_backends(text: str, additions: list[Found]) -> Edit:
    """The manifest text with `additions` appended to `backends:` (created at the end if missing)."""
    document = parse_yaml(text, "manifest")
    entries = [_entry(item) for item in additions]
    expected = _plain(document)
    expected["backends"] = [*(expected.get("backends") or []), *entries]
    inserted = _insert(text, document, additions)
    if inserted is not None and _parses_to(inserted, expected):
        return Edit(inserted, kept_layout=True)
    return Edit(_dump(document, additions), kept_layout=False)


def write_manifest(path: Path, text: str) -> None:
    """Replace the file atomically, keeping its permissions (and the file a symlink points to)."""
    target = path.resolve()
    write_atomic(target, text, mode=stat.S_IMODE(target.stat().st_mode))


# -- text insertion ----------------------------------------------------------------------------------------


def _insert(text: str, document: Any, additions: list[Found]) -> str | None:
    """Insert the entries as lines, or None when the layout is not one this handles."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if not isinstance(document, CommentedMap) or document.fa.flow_style():
        return None
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = re.split(r"(?<=\n)", text)
    if lines[-1] == "":
        lines.pop()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += newline
    backends = document.get("backends")
    if backends is None:
        block = ["backends:" + newline, *_item_lines(additions, _list_offset(document, lines), newline)]
        return "".join(lines + block)
    if not isinstance(backends, CommentedSeq):
        return None
    if not backends:  # `backends: []`
        key_line = document.lc.key("backends")[0]
        line, column = document.lc.value("backends")
        if line != key_line or lines[line][column : column + 2] != "[]":
            return None
        head, tail = lines[line][:column].rstrip(" "), lines[line][column + 2 :]
        lines[line] = head + (tail if tail.strip() else newline)
        at, offset = line + 1, _list_offset(document, lines)
    else:
        located = _end_of_last_item(backends, lines)
        if located is None:
            return None
        at, offset = located
    return "".join(lines[:at] + _item_lines(additions, offset, newline) + lines[at:])


def _dash_column(seq: Any, index: int, lines: list[str]) -> int | None:
    """Column of the `-` before item `index` of a block sequence, or None if the layout is unexpected."""
    line, column = seq.lc.item(index)
    before = lines[line][:column].rstrip()
    if not before.endswith("-") or before[:-1].strip():
        return None
    return len(before) - 1


def _end_of_last_item(seq: Any, lines: list[str]) -> tuple[int, int] | None:
    """(line index after the last item's last content line, its dash column)."""
    if not seq:
        return None
    dash = _dash_column(seq, len(seq) - 1, lines)
    if dash is None:
        return None
    last = seq.lc.item(len(seq) - 1)[0]
    for index in range(last + 1, len(lines)):
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank lines and comments may belong to the next section: insert before them
        if len(lines[index]) - len(lines[index].lstrip(" ")) <= dash:
            break
        last = index
    return last + 1, dash


def _list_offset(document: Any, lines: list[str]) -> int:
    """How far this file indents the `-` of a top-level list (0 or 2, usually)."""
    from ruamel.yaml.comments import CommentedSeq

    for value in document.values():
        if isinstance(value, CommentedSeq) and value and not value.fa.flow_style():
            dash = _dash_column(value, 0, lines)
            if dash is not None:
                return dash
    return DEFAULT_OFFSET


def _item_lines(additions: list[Found], offset: int, newline: str) -> list[str]:
    return [f"{' ' * offset}- {_flow(_entry(item))}  # {_label(item)}{newline}" for item in additions]


def _entry(item: Found) -> dict[str, Any]:
    return {"kind": item.kind, "address": item.address, "port": item.port}


def _label(item: Found) -> str:
    # the version comes from whatever answered on the network: keep it to harmless characters
    version = re.sub(r"[^A-Za-z0-9._+:-]", "", item.version or "")[:40]
    return f"{COMMENT}: {item.kind} {version}".rstrip()


def _flow(entry: dict[str, Any]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

    mapping = CommentedMap(entry)
    mapping.fa.set_flow_style()
    out = io.StringIO()
    YAML(typ="rt").dump(mapping, out)
    return out.getvalue().strip()


def _parses_to(text: str, expected: Any) -> bool:
    try:
        return bool(_plain(parse_yaml(text, "manifest")) == expected)
    except ManifestError:
        return False


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- fallback ----------------------------------------------------------------------------------------------


def _dump(document: Any, additions: list[Found]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = YAML(typ="rt")
    yaml.indent(mapping=2, sequence=4, offset=2)
    backends = document.get("backends")
    if backends is None:
        backends = document["backends"] = CommentedSeq()
    for item in additions:
        entry = CommentedMap(_entry(item))
        entry.fa.set_flow_style()
        backends.append(entry)
        backends.yaml_add_eol_comment(_label(item), len(backends) - 1)
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
