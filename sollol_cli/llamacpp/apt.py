"""Debian packages as build inputs, without changing how the machine's apt is set up.

Some build inputs (newer Vulkan headers) come from a Debian release newer than the machine's. They are fetched
with apt itself, pointed at a private sources list, lists and cache under sollol's cache dir: apt checks the
archive's signatures as usual, and the machine's own sources, lists and installed packages stay as they were.
The mirror is the one the machine's apt already uses (read from /etc/apt each time, never written down).
"""

from __future__ import annotations

import re
from pathlib import Path

ETC_APT = Path("/etc/apt")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def host_suite(os_release: Path = Path("/etc/os-release")) -> str | None:
    """This machine's release codename (`bookworm`), or None where os-release does not name one."""
    try:
        text = os_release.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    return None


def apt_mirror(suite: str, etc_apt: Path = ETC_APT) -> str | None:
    """The mirror apt already uses for `suite` (sources.list or sources.list.d, one-line or deb822), or None."""
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*.list"))]
    for path in files:
        for line in _read(path).splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1]
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(path)):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith(("#", " ")):
                    fields[key.strip().lower()] = value.strip()
            wanted = "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split()
            if wanted and fields.get("enabled", "yes").lower() != "no" and fields.get("uris"):
                return fields["uris"].split()[0]
    return None


def private_apt_options(root: Path) -> list[str]:
    """`apt-get` options that keep sources, lists and cache under `root` (and nothing else of the machine's)."""
    return [
        "-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={root / 'lists'}",
        "-o", f"Dir::Cache={root / 'cache'}",
        "-o", "APT::Get::List-Cleanup=false",
    ]  # fmt: skip


def private_sources_line(mirror: str, suite: str, keyring: Path | None) -> str:
    signed = f"[signed-by={keyring}] " if keyring is not None else ""
    return f"deb {signed}{mirror} {suite} main\n"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
