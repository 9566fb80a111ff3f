"""Vulkan headers new enough for the pinned llama.cpp's Vulkan backend.

ggml-vulkan.cpp uses `vk::LayerSettingEXT` (Vulkan headers 1.3.261 and later); Debian 12 ships 1.3.239, and
its compile stops after ~6 minutes with "'LayerSettingEXT' is not a member of 'vk'". The headers are only
needed at build time, so where the machine's own are too old, sollol takes Debian trixie's `libvulkan-dev`
(1.4.x): downloaded with apt from the mirror the machine already uses (see apt.py), unpacked into the cache
with `dpkg-deb -x`, never installed. Checked first, in order: a directory the user names, the system's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import BuildError
from sollol_cli.llamacpp import apt

SUBJECT = "llama.cpp"
HEADERS_SUITE = "trixie"
HEADERS_PACKAGE = "libvulkan-dev"
SYSTEM_INCLUDE = Path("/usr/include")
# a declaration the pinned ggml-vulkan.cpp needs and older headers lack
NEEDED_DECLARATION = "struct LayerSettingEXT"


def headers_new_enough(include_dir: Path) -> bool:
    """Whether `include_dir/vulkan/vulkan_structs.hpp` declares what ggml-vulkan.cpp needs."""
    try:
        return NEEDED_DECLARATION in (include_dir / "vulkan" / "vulkan_structs.hpp").read_text(errors="replace")
    except OSError:
        return False


def headers_dir(cache_dir: Path) -> Path:
    return cache_dir / "vulkan-headers" / HEADERS_SUITE


def ensure_headers(
    cache_dir: Path,
    *,
    reporter: events.Reporter = events.ignore,
    given: Path | None = None,
    system_include: Path = SYSTEM_INCLUDE,
) -> Path:
    """An include dir holding new enough Vulkan headers: `given`, the system's, the cached download, or a new
    download of trixie's libvulkan-dev (~1.5 MB, a few seconds)."""
    if given is not None:
        if not headers_new_enough(given):
            raise BuildError(
                f"{given} has no Vulkan C++ headers declaring vk::LayerSettingEXT (needs Vulkan headers >= 1.3.261)",
                hint="point --vulkan-include at the `include` dir of newer headers, or leave it out",
            )
        return given
    if headers_new_enough(system_include):
        return system_include
    include = headers_dir(cache_dir) / "usr" / "include"
    if headers_new_enough(include):
        reporter(events.StepDone(SUBJECT, "headers", f"Vulkan headers cached in {include}"))
        return include
    reporter(events.StepStarted(SUBJECT, "headers", f"{HEADERS_PACKAGE} from Debian {HEADERS_SUITE}"))
    try:
        include = _download(cache_dir)
    except BuildError as error:
        reporter(events.StepFailed(SUBJECT, "headers", error.message))
        raise
    reporter(events.StepDone(SUBJECT, "headers", str(include)))
    return include


def _download(cache_dir: Path) -> Path:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(
                f"the system's Vulkan headers are too old for llama.cpp and {tool} is missing to fetch newer ones",
                hint="install Vulkan headers >= 1.3.261 and pass their include dir with --vulkan-include",
            )
    suite = apt.host_suite()
    mirror = apt.apt_mirror(suite, apt.ETC_APT) if suite else None
    if mirror is None:
        raise BuildError(
            f"the system's Vulkan headers are too old for llama.cpp and no Debian mirror is configured in "
            f"{apt.ETC_APT} to fetch {HEADERS_PACKAGE} from {HEADERS_SUITE}",
            hint="install Vulkan headers >= 1.3.261 and pass their include dir with --vulkan-include",
        )
    root = headers_dir(cache_dir)
    work = root.with_name(root.name + ".fetching")
    shutil.rmtree(work, ignore_errors=True)
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial", "deb"):
        (work / sub).mkdir(parents=True)
    keyring = apt.DEBIAN_KEYRING if apt.DEBIAN_KEYRING.is_file() else None
    (work / "sources.list").write_text(apt.private_sources_line(mirror, HEADERS_SUITE, keyring))
    options = apt.private_apt_options(work)
    _run(["apt-get", "-q", *options, "update"], cwd=work)
    _run(["apt-get", "-q", *options, "download", HEADERS_PACKAGE], cwd=work / "deb")
    debs = sorted((work / "deb").glob(f"{HEADERS_PACKAGE}_*.deb"))
    if not debs:
        raise BuildError(f"apt-get download {HEADERS_PACKAGE} left no .deb in {work / 'deb'}")
    _run(["dpkg-deb", "-x", str(debs[-1]), str(work / "unpacked")], cwd=work)
    if not headers_new_enough(work / "unpacked" / "usr" / "include"):
        raise BuildError(f"{debs[-1].name} has no usable vulkan/vulkan_structs.hpp")
    shutil.rmtree(root, ignore_errors=True)
    (work / "unpacked").rename(root)
    (root / "SOURCE").write_text(f"{debs[-1].name} from {mirror} {HEADERS_SUITE}\n")
    shutil.rmtree(work, ignore_errors=True)  # the lists (~20 MB) are not needed again
    return root / "usr" / "include"


def _run(cmd: list[str], *, cwd: Path) -> None:
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, errors="replace", env={**os.environ, "LC_ALL": "C"}
    )
    if done.returncode != 0:
        tail = "\n".join(f"  {line}" for line in (done.stdout + done.stderr).strip().splitlines()[-8:])
        raise BuildError(f"`{' '.join(cmd[:2])} ... {cmd[-1]}` failed (exit {done.returncode}):\n{tail}")
