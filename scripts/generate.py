"""Regenerate the committed generated files: JSON Schema, shell completions, README --help blocks and the
client compatibility matrix (from tests/compat/matrix.py).

python scripts/generate.py          # write them
python scripts/generate.py --check  # exit 1 if any is stale (the tests do the same)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_BLOCK = re.compile(r"(<!-- manifest-reference -->\n)(.*?)(<!-- /manifest-reference -->\n)", re.S)
COMPAT_BLOCK = re.compile(r"(<!-- compat-matrix -->\n)(.*?)(<!-- /compat-matrix -->\n)", re.S)
HELP_BLOCK = re.compile(r"(<!-- help: (?P<cmd>[a-z -]+) -->\n```text\n)(?P<body>.*?)(```\n)", re.S)


def generated() -> dict[Path, str]:
    sys.path.insert(0, str(ROOT))
    from sollol_cli.cli.commands.completion import completion_script
    from sollol_cli.manifest.schema import SCHEMA_FILE, cluster_schema_text

    files = {ROOT / "examples" / "clusters" / SCHEMA_FILE: cluster_schema_text()}
    # the demo's packaged manifest is the localhost example, word for word
    demo = ROOT / "sollol_cli" / "demo" / "localhost.yaml"
    files[ROOT / "examples" / "clusters" / "localhost.yaml"] = demo.read_text()
    for shell in ("bash", "zsh", "fish"):
        files[ROOT / "completions" / f"sollol.{shell}"] = completion_script(shell)
    readme = ROOT / "README.md"
    from sollol_cli.manifest.reference import manifest_reference

    text = HELP_BLOCK.sub(lambda m: m[1] + help_text(m["cmd"].split()) + m[4], readme.read_text())
    from tests.compat.matrix import render_markdown

    text = REFERENCE_BLOCK.sub(lambda m: m[1] + manifest_reference() + m[3], text)
    files[readme] = COMPAT_BLOCK.sub(lambda m: m[1] + render_markdown() + m[3], text)
    return files


def help_text(args: list[str]) -> str:
    """`sollol ARGS --help` as a user sees it in an 80-column terminal, without colour."""
    from typer.testing import CliRunner

    from sollol_cli.cli import app

    env = {"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1", "FORCE_COLOR": None}
    result = CliRunner().invoke(app, [*args[1:], "--help"], env=env, prog_name="sollol")
    lines = [line.rstrip() for line in result.stdout.splitlines()]
    return "\n".join(lines).strip("\n") + "\n"


def stale() -> list[Path]:
    return [path for path, text in generated().items() if not path.exists() or path.read_text() != text]


def main() -> int:
    if "--check" in sys.argv:
        paths = stale()
        for path in paths:
            print(f"stale: {path.relative_to(ROOT)} (run: python scripts/generate.py)")
        return 1 if paths else 0
    for path, text in generated().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
