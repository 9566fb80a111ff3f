"""apt pointed at private sources, lists and cache: the options and the sources line as data (the mirror
lookup itself is tested with the systemd harness, which uses it too)."""

from __future__ import annotations

from pathlib import Path

from sollol_cli.llamacpp.apt import host_suite, private_apt_options, private_sources_line


def test_private_apt_options_keep_everything_under_root() -> None:
    assert private_apt_options(Path("/c/apt")) == [
        "-o", "Dir::Etc::SourceList=/c/apt/sources.list",
        "-o", "Dir::Etc::SourceParts=/c/apt/sources.list.d",
        "-o", "Dir::State::Lists=/c/apt/lists",
        "-o", "Dir::Cache=/c/apt/cache",
        "-o", "APT::Get::List-Cleanup=false",
    ]  # fmt: skip


def test_private_sources_line() -> None:
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    assert private_sources_line("http://mirror.test/debian", "trixie", keyring) == (
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.test/debian trixie main\n"
    )
    assert private_sources_line("http://mirror.test/debian", "trixie", None) == (
        "deb http://mirror.test/debian trixie main\n"
    )


def test_host_suite(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    assert host_suite(release) == "bookworm"
    release.write_text('NAME="Some Linux"\n')
    assert host_suite(release) is None
    assert host_suite(tmp_path / "missing") is None
