"""The systemd test nodes' root filesystem uses the Debian mirror apt already uses (read at build time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.sshhosts import HostsError
from tests.harness.systemdnodes import apt_mirror

DEB822 = """Types: deb
URIs: http://mirror.test/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.test/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"sources.list": "deb http://one.test/debian bookworm main\n"}, "http://one.test/debian"),
        ({"sources.list": "deb [arch=amd64 signed-by=/k.gpg] http://two.test/d bookworm main\n"}, "http://two.test/d"),
        (
            {"sources.list": "# deb http://old.test/d bookworm main\ndeb http://sec.test/d bookworm-security main\n"},
            None,
        ),
        ({"sources.list.d/debian.sources": DEB822}, "http://mirror.test/debian"),
        ({"sources.list.d/x.sources": DEB822.replace("Types: deb\n", "Types: deb\nEnabled: no\n", 1)}, None),
        (
            {"sources.list.d/extra.list": "deb https://three.test/debian bookworm main contrib\n"},
            "https://three.test/debian",
        ),
    ],
)
def test_apt_mirror(files: dict[str, str], expected: str | None, tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    if expected is None:
        with pytest.raises(HostsError, match="no apt source for 'bookworm'"):
            apt_mirror("bookworm", tmp_path)
    else:
        assert apt_mirror("bookworm", tmp_path) == expected
