"""One source of exit codes: errors.py. README's table, errors.py's docstring and every exception agree,
and the commands that report per-node results raise instead of returning a number."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import sollol_cli
from sollol_cli import errors
from sollol_cli.cli._run import EXIT_INTERRUPTED
from sollol_cli.errors import PartialFailure, SollolError, UnreachableError
from sollol_cli.provision.apply import NodeOutcome, Status
from sollol_cli.provision.cluster import ClusterOutcome
from sollol_cli.runtime.status import status_failure

README = Path(__file__).parents[2] / "README.md"


def error_classes() -> dict[str, type[SollolError]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls) and issubclass(cls, SollolError) and cls.__module__ == errors.__name__
    }


def readme_codes() -> dict[int, str]:
    section = README.read_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, flags=re.MULTILINE)
    assert rows, "README's exit-code table is missing"
    return {int(code): meaning for code, meaning in rows}


def test_readme_lists_exactly_the_codes_errors_py_gives() -> None:
    from_errors = {cls.exit_code for cls in error_classes().values()}
    listed = set(readme_codes())
    not_in_readme = from_errors - listed
    assert not not_in_readme, f"errors.py exits with {sorted(not_in_readme)}; add them to README's table"
    # 0 is success and 130 is Ctrl-C (cli/_run.py); every other row must be some exception's code
    unexplained = listed - from_errors - {0, EXIT_INTERRUPTED}
    assert not unexplained, f"README lists {sorted(unexplained)}, which no exception in errors.py exits with"
    assert {0, EXIT_INTERRUPTED} <= listed


def test_the_readme_meaning_of_each_code_matches_its_exceptions() -> None:
    meanings = readme_codes()
    assert "usage error" in meanings[errors.UsageError.exit_code]
    assert "invalid manifest" in meanings[errors.ManifestError.exit_code]
    assert "could be reached" in meanings[errors.UnreachableError.exit_code]
    assert "could be reached" in meanings[errors.NoHealthyBackend.exit_code]
    assert "failed" in meanings[errors.PartialFailure.exit_code]
    assert "interrupted" in meanings[EXIT_INTERRUPTED]


def test_the_docstring_tree_matches_the_classes() -> None:
    assert errors.__doc__ is not None
    drawn = {name: int(code) for name, code in re.findall(r"(\w+) \(exit (\d+)\)", errors.__doc__)}
    actual = {name: cls.exit_code for name, cls in error_classes().items()}
    assert drawn == actual


def test_only_errors_py_sets_an_exit_code() -> None:
    for info in pkgutil.walk_packages(sollol_cli.__path__, "sollol_cli."):
        if not info.name.endswith(".__main__"):  # importing it runs the CLI
            importlib.import_module(info.name)
    pending: list[type[SollolError]] = [SollolError]
    elsewhere = []
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__ != errors.__name__ and "exit_code" in vars(cls):
            elsewhere.append(f"{cls.__module__}.{cls.__qualname__}")
    assert elsewhere == [], "set exit codes in errors.py only (subclass the exception with the right code)"


def outcome(*statuses: Status) -> ClusterOutcome:
    return ClusterOutcome("up", [NodeOutcome(f"n{i}", status) for i, status in enumerate(statuses)], dry_run=False)


@pytest.mark.parametrize(
    ("statuses", "raised", "message"),
    [
        ((), None, None),
        (("changed", "unchanged"), None, None),
        (("planned",), None, None),
        (("changed", "failed"), PartialFailure, "`up` failed on 1 of 2 nodes"),
        (("unchanged", "unreachable", "failed"), PartialFailure, "`up` failed on 2 of 3 nodes"),
        (("failed", "failed"), PartialFailure, "`up` failed on 2 of 2 nodes"),
        (("unreachable", "unreachable"), UnreachableError, "`up` reached none of the 2 nodes"),
    ],
)
def test_up_and_down_raise_after_showing_the_nodes(
    statuses: tuple[Status, ...], raised: type[SollolError] | None, message: str | None
) -> None:
    result = outcome(*statuses)
    failure = result.failure
    if raised is None:
        assert failure is None and result.exit_code == 0
        return
    assert type(failure) is raised and failure.message == message and failure.reported
    assert result.exit_code == raised.exit_code  # the `exit_code` field of `up --json`


@pytest.mark.parametrize(
    ("reachable", "total", "raised"),
    [(2, 2, None), (0, 0, None), (1, 2, PartialFailure), (0, 3, UnreachableError)],
)
def test_status_raises_after_showing_the_table(reachable: int, total: int, raised: type[SollolError] | None) -> None:
    failure = status_failure({"cluster": "c", "reachable": reachable, "total": total})
    assert (type(failure) if failure else None) is raised
    assert failure is None or failure.reported
