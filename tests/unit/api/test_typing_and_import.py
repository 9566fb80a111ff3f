"""The API as a user's program sees it: `mypy --strict` checks a small program against the installed
package's types (py.typed) and finds no `Any` coming out of it, and `import sollol_cli` stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

USER_PROGRAM = """
import asyncio
from collections.abc import Sequence

from sollol_cli import AsyncCluster, BackendError, ChatResponse, SyncCluster


def ask(cluster: SyncCluster, question: str) -> str:
    answer: ChatResponse = cluster.chat("llama3.2", [{"role": "user", "content": question}])
    served = answer.sollol.backend if answer.sollol is not None else None
    return f"{answer.message.content} ({served}, {answer.eval_count} tokens, {answer.done_reason})"


def stream(cluster: SyncCluster) -> str:
    return "".join(part.response or "" for part in cluster.generate("llama3.2", "hi", stream=True))


def vectors(cluster: SyncCluster) -> Sequence[Sequence[float]]:
    return cluster.embed("nomic-embed-text", ["a", "b"]).embeddings


async def agents(questions: list[str]) -> list[str]:
    async with AsyncCluster("cluster.yaml", stop_on_close=True) as cluster:
        answers = await asyncio.gather(*(cluster.chat("llama3.2", [{"role": "user", "content": q}]) for q in questions))
        async for part in await cluster.chat("llama3.2", [{"role": "user", "content": "go"}], stream=True):
            print(part.message.content or "", end="")
        names = [m.model or "" for m in (await cluster.list()).models]
        status = await cluster.status()
        print(status.reachable, [row.name for row in status.backends], names)
    return [a.message.content or "" for a in answers]


def safe(cluster: SyncCluster) -> str | None:
    try:
        return cluster.generate("llama3.2", "hi").response
    except BackendError as exc:
        return exc.message
"""


def mypy(tmp_path: Path, source: str, *flags: str) -> list[str]:
    path = tmp_path / "user_program.py"
    path.write_text(textwrap.dedent(source))
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", *flags, "--cache-dir", str(tmp_path / "cache"), "--no-error-summary",
         "--config-file", "", "--python-version", "3.11", str(path)],
        capture_output=True, text=True, cwd=tmp_path, check=False, timeout=600,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return [line.split(": ", 1)[1] for line in result.stdout.splitlines() if ": error: " in line or ": note: " in line]


@pytest.mark.slow
def test_a_user_program_type_checks_strictly_with_no_any_from_the_api(tmp_path: Path) -> None:
    # --disallow-any-expr: an expression typed Any anywhere (an untyped answer, field or call) is an error
    wrong = USER_PROGRAM + (
        "\n\nnot_a_number: int = SyncCluster().chat('m').message.content\nimport sollol_cli\nsollol_cli.NoSuchThing\n"
    )
    errors = mypy(tmp_path, wrong, "--disallow-any-expr")
    # the two mistakes are found, so the API's types were read (an untyped package would make them Any), and
    # the lazy re-export does not turn unknown names into Any
    assert errors == [
        'error: Incompatible types in assignment (expression has type "str | None", variable has type "int")  '
        "[assignment]",
        'error: Module has no attribute "NoSuchThing"  [attr-defined]',
    ]


def test_the_package_says_it_is_typed() -> None:
    assert (ROOT / "sollol_cli" / "py.typed").is_file()


def imported_modules(code: str) -> set[str]:
    script = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout))


def test_import_sollol_cli_stays_cheap() -> None:
    loaded = imported_modules("import sollol_cli")
    heavy = {"aiohttp", "asyncssh", "rich", "typer", "pydantic", "sollol_cli.api"}
    assert loaded & heavy == set()


def test_the_cli_does_not_load_the_api() -> None:
    loaded = imported_modules("import sollol_cli.cli")
    assert "sollol_cli.api" not in loaded and "aiohttp" not in loaded


def test_the_api_is_loaded_on_first_use() -> None:
    loaded = imported_modules("import sollol_cli\nsollol_cli.AsyncCluster")
    assert {"sollol_cli.api", "aiohttp"} <= loaded
    assert {"rich", "typer", "asyncssh"} & loaded == set()
    import sollol_cli

    assert sollol_cli.SyncCluster.__module__ == "sollol_cli.api.sync"
    with pytest.raises(AttributeError):
        _ = sollol_cli.NoSuchThing  # type: ignore[attr-defined]


def test_sollol_cli_hands_out_exactly_the_api() -> None:
    import sollol_cli
    from sollol_cli import api

    assert set(api.__all__) == sollol_cli._API
    assert all(getattr(sollol_cli, name) is getattr(api, name) for name in api.__all__)
