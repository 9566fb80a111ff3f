"""The import rules, read from the source: arrows point down the layers and the packages form no cycle.

  cli -> gateway/ui/api -> runtime -> sharding/provision -> backends/ssh -> manifest -> base

`sollol_cli` itself (`__init__`) sits with cli at the top: it re-exports the Python API (`api`) lazily, and
only the CLI reads its `__version__`. Nothing below the top imports `api`: it is a front end like `gateway`.

Every import counts, wherever it is written: at the top, inside a function (a lazy import is still an
arrow) or under `if TYPE_CHECKING:`. A package may import its own layer or any layer below; the
packages of one layer must not import each other in a circle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "sollol_cli"

# Top to bottom. Each top-level package or module of sollol_cli is in exactly one layer; "__init__" is
# `sollol_cli` itself (its __version__ and the lazy re-export of the Python API).
LAYERS: list[tuple[str, set[str]]] = [
    ("cli", {"cli", "__main__", "__init__"}),
    ("gateway/ui/api", {"gateway", "ui", "demo", "api"}),
    ("runtime", {"runtime"}),
    ("sharding/provision", {"sharding", "provision", "discovery"}),
    ("backends/ssh", {"backends", "ssh", "llamacpp", "placement"}),
    ("manifest", {"manifest"}),
    ("base", {"errors", "events", "settings", "names", "router", "health", "state", "files"}),
]

# Arrows known to be wrong, each being removed by issue 15 ("Shape"). Temporary: the test below fails
# as soon as one is gone, so its entry is deleted with the fix and cannot hide a new one.
KNOWN_WRONG: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Arrow:
    source: str  # top-level unit that imports
    target: str  # top-level unit imported
    where: str  # file:line, for the failure message


def unit_of(module: str) -> str:
    """`sollol_cli.sharding.manager` -> `sharding`; `sollol_cli` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_part(module: str) -> bool:
    """Whether `sollol_cli.<name>` is a module or package (else `from sollol_cli import name` is an attribute)."""
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).is_dir() or (PACKAGE / relative).with_suffix(".py").is_file()


def imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The sollol_cli modules one import statement names (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    if base != "sollol_cli" and not base.startswith("sollol_cli."):
        return []
    # `from sollol_cli import cli` imports the package `cli`; `from sollol_cli import __version__` the root
    return [f"{base}.{a.name}" if is_part(f"{base}.{a.name}") else base for a in node.names]


def arrows() -> list[Arrow]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_of(path)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):  # every statement, including imports inside functions
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in imported(node, module, path.name == "__init__.py"):
                if target == "sollol_cli" or target.startswith("sollol_cli."):
                    source, dest = unit_of(module), unit_of(target)
                    if source != dest:
                        found.append(Arrow(source, dest, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"))
    return found


def layer_index() -> dict[str, int]:
    return {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}


def test_every_package_has_a_layer() -> None:
    units = {unit_of(module_of(path)) for path in PACKAGE.rglob("*.py")}
    ranks = layer_index()
    assert sum(len(units) for _, units in LAYERS) == len(ranks), "a package is in two layers"
    missing = sorted(units - set(ranks))
    assert missing == [], f"put {missing} into one of the LAYERS (and mind its arrows)"
    gone = sorted(set(ranks) - units)
    assert gone == [], f"{gone} no longer exist: drop them from LAYERS"


def test_no_arrow_points_up() -> None:
    ranks = layer_index()
    upward = [
        f"{a.where}: {a.source} ({LAYERS[ranks[a.source]][0]}) imports {a.target} ({LAYERS[ranks[a.target]][0]})"
        for a in arrows()
        if ranks[a.target] < ranks[a.source] and (a.source, a.target) not in KNOWN_WRONG
    ]
    assert upward == [], "imports must point down the layers:\n" + "\n".join(upward)


def test_only_the_top_imports_the_api() -> None:
    """`api` is a front end beside `gateway`: the layer rule alone would let its neighbours import it."""
    users = sorted(
        f"{a.where}: {a.source}" for a in arrows() if a.target == "api" and a.source not in ("cli", "__init__")
    )
    assert users == [], "only cli and sollol_cli itself may import sollol_cli.api:\n" + "\n".join(users)


def test_the_packages_form_no_cycle() -> None:
    cycles = find_cycles(allowed_graph())
    assert cycles == [], "packages that import each other in a circle: " + "; ".join(", ".join(c) for c in cycles)


def test_the_known_wrong_arrows_are_still_there() -> None:
    present = {(a.source, a.target) for a in arrows()}
    fixed = sorted(f"{s} -> {t}" for s, t in KNOWN_WRONG if (s, t) not in present)
    assert fixed == [], f"fixed: {fixed}; delete them from KNOWN_WRONG so they cannot come back"
    ranks = layer_index()
    for source, target in KNOWN_WRONG:  # each entry must excuse something the rules forbid
        graph = allowed_graph()
        graph[source].add(target)
        in_a_cycle = any(source in cycle and target in cycle for cycle in find_cycles(graph))
        assert ranks[target] < ranks[source] or in_a_cycle, f"{source} -> {target} breaks no rule: drop it"


def allowed_graph() -> dict[str, set[str]]:
    """Package -> the packages it imports, without the known wrong arrows."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a in arrows():
        if (a.source, a.target) not in KNOWN_WRONG:
            graph[a.source].add(a.target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The packages of each import circle: every strongly connected component of more than one package
    (Tarjan's algorithm), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def test_find_cycles() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}}) == []
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"z": {"y"}, "y": {"x"}, "x": {"z"}, "p": {"q"}, "q": {"p"}}) == [["p", "q"], ["x", "y", "z"]]


def test_lazy_and_relative_imports_are_arrows() -> None:
    source = "def f():\n    from sollol_cli.runtime import monitor\n"
    [node] = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)]
    assert imported(node, "sollol_cli.sharding.manager", False) == ["sollol_cli.runtime.monitor"]
    [rel] = [n for n in ast.walk(ast.parse("from ..errors import UsageError\n")) if isinstance(n, ast.ImportFrom)]
    assert imported(rel, "sollol_cli.sharding.manager", False) == ["sollol_cli.errors"]
    [pkg] = [n for n in ast.walk(ast.parse("from . import manager\n")) if isinstance(n, ast.ImportFrom)]
    assert imported(pkg, "sollol_cli.sharding", True) == ["sollol_cli.sharding.manager"]
