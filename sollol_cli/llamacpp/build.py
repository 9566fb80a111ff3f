"""Build `rpc-server` and `llama-server` from the pinned llama.cpp sources, stripped, cached by version + backend.

The CPU binaries are fully static so sollol can copy them to any x86-64 Linux node as they are. The Vulkan
binaries (`backend="vulkan"`) are the same sources with `-DGGML_VULKAN=ON` and without `-static`: they load the
node's libvulkan.so.1 and its GPU driver at run time, and they need newer Vulkan headers than Debian 12 has to
compile (vulkan_headers.py). A build takes minutes (CPU ~4, Vulkan ~13 on 2 cores), so it runs once per
machine and backend: the install dir holds a `build.json` with the checksums, and a file lock keeps
concurrent processes (pytest workers, CI and a user) from building at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from sollol_cli import events
from sollol_cli.errors import BuildError, UsageError
from sollol_cli.files import write_atomic
from sollol_cli.llamacpp.cmake import (
    BACKEND_OPTION,
    BACKEND_TOOLS,
    GENERATORS,
    STATIC_LINK,
    TAIL_OPTIONS,
    TARGETS,
    TOOLCHAIN,
    VULKAN_PACKAGES,
    base_options,
    build_commands,
    install_hint,
    missing_tools,
)
from sollol_cli.llamacpp.sdist import (
    LLAMA_CPP_COMMIT,
    LLAMA_CPP_PYTHON_VERSION,
    RPC_PROTOCOL_VERSION,
    VENDOR_PREFIX,
    ensure_sdist,
)
from sollol_cli.llamacpp.vulkan_headers import ensure_headers
from sollol_cli.settings import Settings, env_name

SUBJECT = "llama.cpp"
# Parts of the vendored tree no build target reads (vocab files, docs, Python packages): ~120 MB not extracted.
# `.git` is a dangling gitdir pointer; without it CMake cannot pick up an enclosing repository's commit.
SKIPPED_TOP_DIRS = frozenset({"models", "docs", "media", "benches", "gguf-py", ".github", ".devops", ".git"})
# what `sollol llama-cpp build` can make on the controller; CUDA and ROCm need the toolkit where the GPU is
BACKENDS = ("cpu", "vulkan")
# the binaries run on other nodes' CPUs, not just this one; the CPU build is static to run anywhere
CMAKE_OPTIONS = (*base_options(native=False), STATIC_LINK, *TAIL_OPTIONS)
_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_PROGRESS = re.compile(r"^\[\s*(\d+)%\]")
_LOG_TAIL_LINES = 15


@dataclass(frozen=True)
class LlamaCppBinaries:
    """A usable pair of binaries; `sha256` is keyed by installed name ("rpc-server", "llama-server")."""

    rpc_server: Path
    llama_server: Path
    version: str
    commit: str
    protocol: tuple[int, int, int]
    sha256: dict[str, str]
    backend: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rpc_server"], data["llama_server"] = str(self.rpc_server), str(self.llama_server)
        data["protocol"] = list(self.protocol)
        return data


def install_dir(cache_dir: Path, backend: str = "cpu") -> Path:
    """`<cache>/llama.cpp/<version>` for the CPU build, `<version>-<backend>` for the others."""
    suffix = "" if backend == "cpu" else f"-{backend}"
    return cache_dir / "llama.cpp" / f"{LLAMA_CPP_PYTHON_VERSION}{suffix}"


def log_path(cache_dir: Path, backend: str = "cpu") -> Path:
    return install_dir(cache_dir, backend) / "build.log"


def cmake_options(backend: str = "cpu", vulkan_include: Path | None = None) -> tuple[str, ...]:
    """The CMake options of a build: the static CPU set, or for Vulkan the same without `-static` (libvulkan is
    loaded from the node at run time) plus the Vulkan backend and, where given, the headers to compile with."""
    if backend == "cpu":
        return CMAKE_OPTIONS
    if backend != "vulkan":
        raise UsageError(f"sollol cannot build the {backend} backend here", hint=f"choose one of {', '.join(BACKENDS)}")
    options = [*base_options(native=False), *TAIL_OPTIONS, BACKEND_OPTION["vulkan"]]
    if vulkan_include is not None:
        options.append(f"-DVulkan_INCLUDE_DIR={vulkan_include}")
    return tuple(options)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_progress(line: str) -> tuple[int, int] | None:
    """(completed, total) from a Ninja `[n/N]` or make `[ xx%]` status line; None for any other line."""
    if match := _NINJA_PROGRESS.match(line):
        return int(match[1]), int(match[2])
    if match := _MAKE_PROGRESS.match(line):
        return int(match[1]), 100
    return None


def find_build(cache_dir: Path, backend: str = "cpu") -> LlamaCppBinaries | None:
    """The cached build for the pinned version, or None if it is missing, partial or its checksums differ."""
    root = install_dir(cache_dir, backend)
    try:
        meta = json.loads((root / "build.json").read_text())
        recorded = {name: str(meta["sha256"][name]) for name in TARGETS}
        version, commit = str(meta["version"]), str(meta["commit"])
        major, minor, patch = (int(part) for part in meta["protocol"])
        recorded_backend = str(meta.get("backend", "cpu"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if (version, commit, recorded_backend) != (LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT, backend):
        return None
    paths = {name: root / "bin" / name for name in TARGETS}
    try:
        if any(sha256_file(paths[name]) != recorded[name] for name in TARGETS):
            return None
    except OSError:
        return None
    return LlamaCppBinaries(
        paths["rpc-server"], paths["llama-server"], version, commit, (major, minor, patch), recorded, backend
    )


def resolve_binaries(settings: Settings) -> LlamaCppBinaries | None:
    """The binaries sollol uses on this machine: user overrides (`SOLLOL_RPC_SERVER_PATH`,
    `SOLLOL_LLAMA_SERVER_PATH` or SOLLOL's `LLAMA_SERVER_PATH`) win over the cached build; None if neither is
    there (nothing is built here)."""
    cached = find_build(settings.cache_dir)
    overrides = {"rpc-server": settings.rpc_server_path, "llama-server": settings.llama_server_path}
    if all(path is None for path in overrides.values()):
        return cached
    chosen: dict[str, Path] = {}
    for name, override in overrides.items():
        if override is not None:
            chosen[name] = override.expanduser()
            if not chosen[name].is_file():
                env = env_name(name.replace("-", "_") + "_path")
                raise UsageError(f"{env} points at {chosen[name]}, which is not a file", hint="fix or unset it")
    if len(chosen) < len(overrides):
        if cached is None:
            return None
        chosen.setdefault("rpc-server", cached.rpc_server)
        chosen.setdefault("llama-server", cached.llama_server)
    sha256 = {name: sha256_file(path) for name, path in chosen.items()}
    # user-provided binaries carry no build record; the version they speak is checked by HELLO at run time
    return LlamaCppBinaries(
        chosen["rpc-server"], chosen["llama-server"], LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT,
        RPC_PROTOCOL_VERSION, sha256,
    )  # fmt: skip


def build(
    cache_dir: Path,
    *,
    reporter: events.Reporter = events.ignore,
    jobs: int | None = None,
    force: bool = False,
    backend: str = "cpu",
    vulkan_include: Path | None = None,
) -> LlamaCppBinaries:
    """Return the cached build, or build it (minutes) and install it into the cache. `vulkan_include` names
    Vulkan headers to use instead of the system's or the fetched ones (backend vulkan only)."""
    cmake_options(backend)  # an unknown backend is refused before anything is locked or created
    if vulkan_include is not None and backend != "vulkan":
        raise UsageError("Vulkan headers are for the Vulkan build", hint="add --backend vulkan or leave them out")
    if not force and (found := find_build(cache_dir, backend)) is not None:
        return _cached(found, reporter)
    root = install_dir(cache_dir, backend)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock", reporter):
        # another process may have finished the same build while we waited for the lock
        if not force and (found := find_build(cache_dir, backend)) is not None:
            return _cached(found, reporter)
        try:
            return _build_locked(
                cache_dir, reporter, jobs or _cpu_count(), clean=force, backend=backend, vulkan_include=vulkan_include
            )
        except BuildError as error:
            reporter(events.StepFailed(SUBJECT, "build", error.message))
            raise


def _cached(found: LlamaCppBinaries, reporter: events.Reporter) -> LlamaCppBinaries:
    reporter(events.StepDone(SUBJECT, "build", f"cached in {found.rpc_server.parent}"))
    return found


@contextmanager
def _exclusive(lock_file: Path, reporter: events.Reporter) -> Iterator[None]:
    with lock_file.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            reporter(events.StepStarted(SUBJECT, "waiting", "another process is building llama.cpp"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) or 1


def _build_locked(
    cache_dir: Path,
    reporter: events.Reporter,
    jobs: int,
    *,
    clean: bool,
    backend: str = "cpu",
    vulkan_include: Path | None = None,
) -> LlamaCppBinaries:
    root = install_dir(cache_dir, backend)
    work = root / "build-tmp"  # kept after a failure, so the next attempt resumes the compile
    if clean and work.exists():
        shutil.rmtree(work)
    log = log_path(cache_dir, backend)
    tools = _required_tools(backend)
    if backend == "vulkan":
        vulkan_include = ensure_headers(cache_dir, reporter=reporter, given=vulkan_include)
    options = cmake_options(backend, vulkan_include)

    reporter(events.StepStarted(SUBJECT, "source", f"llama-cpp-python {LLAMA_CPP_PYTHON_VERSION}"))
    source = _extract_source(ensure_sdist(cache_dir), work / "src")
    reporter(events.StepDone(SUBJECT, "source", f"commit {LLAMA_CPP_COMMIT}"))

    build_dir = work / "build"
    configure, compile_ = build_commands(source, build_dir, tools, jobs, options)
    with log.open("w") as log_file:
        reporter(events.StepStarted(SUBJECT, "configure", "cmake"))
        try:
            run_logged(configure, log_file, log, reporter, step="configure")
        except BuildError as error:
            if backend == "vulkan" and "SPIRV-Headers" in error.message:  # CMake's package name
                raise BuildError(error.message, hint=f"apt-get install {VULKAN_PACKAGES}") from error
            raise
        reporter(events.StepDone(SUBJECT, "configure"))
        reporter(events.StepStarted(SUBJECT, "compile", f"{len(TARGETS)} targets, {jobs} jobs"))
        run_logged(compile_, log_file, log, reporter, step="compile")
        reporter(events.StepDone(SUBJECT, "compile"))

    reporter(events.StepStarted(SUBJECT, "install", str(root / "bin")))
    binaries = _install(build_dir, root, tools["strip"], backend, options)
    shutil.rmtree(work, ignore_errors=True)
    size = sum(path.stat().st_size for path in (binaries.rpc_server, binaries.llama_server))
    reporter(events.StepDone(SUBJECT, "install", f"{size / 2**20:.1f} MiB in {root / 'bin'}"))
    return binaries


def _required_tools(backend: str = "cpu") -> dict[str, str]:
    found = {name: shutil.which(name) for name in (*TOOLCHAIN, *BACKEND_TOOLS.get(backend, ()), *GENERATORS)}
    missing = missing_tools(backend, found)
    if missing:
        raise BuildError(
            f"building llama.cpp{'' if backend == 'cpu' else f' ({backend})'} needs {', '.join(missing)} "
            "(not found on PATH)",
            hint=install_hint(backend),
        )
    return {name: path for name, path in found.items() if path}


def _extract_source(tarball: Path, dest: Path) -> Path:
    """Extract vendor/llama.cpp (without the unused parts) once; a marker says the extraction completed."""
    marker = dest / ".sollol-extracted"
    if marker.is_file():
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(tarball) as tar:
            for member in tar:
                if not member.name.startswith(VENDOR_PREFIX):
                    continue
                relative = member.name[len(VENDOR_PREFIX) :]
                if not relative or relative.split("/", 1)[0] in SKIPPED_TOP_DIRS:
                    continue
                member.name = relative
                tar.extract(member, dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise BuildError(
            f"could not extract llama.cpp from {tarball}: {exc}", hint="delete the file so it is downloaded again"
        ) from exc
    if not (dest / "CMakeLists.txt").is_file():
        raise BuildError(f"{tarball.name} has no vendor/llama.cpp tree", hint="delete it so it is downloaded again")
    marker.write_text(LLAMA_CPP_COMMIT + "\n")
    return dest


def run_logged(cmd: list[str], log_file: TextIO, log: Path, reporter: events.Reporter, *, step: str) -> None:
    """Run `cmd` with its output going to the log; compile progress lines become StepProgress events."""
    log_file.write(f"$ {' '.join(cmd)}\n")
    log_file.flush()
    tail: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    env = {**os.environ, "LC_ALL": "C"}  # the progress parser and error tails expect untranslated output
    try:
        process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            errors="replace", env=env,
        )  # fmt: skip
    except OSError as exc:
        raise BuildError(f"could not run {cmd[0]}: {exc}") from exc
    assert process.stdout is not None
    last: tuple[int, int] | None = None
    with process:
        try:
            for line in process.stdout:
                log_file.write(line)
                tail.append(line.rstrip())
                progress = parse_progress(line)
                if progress is not None and progress != last:
                    last = progress
                    reporter(events.StepProgress(SUBJECT, step, progress[0], progress[1]))
        except BaseException:  # Ctrl-C: do not leave a compiler running behind us
            process.kill()
            raise
        finally:
            log_file.flush()
    if process.returncode != 0:
        lines = "\n".join(f"  {line}" for line in tail)
        raise BuildError(f"llama.cpp {step} failed (exit {process.returncode}); log: {log}; last lines:\n{lines}")


def _install(build_dir: Path, root: Path, strip: str, backend: str, options: tuple[str, ...]) -> LlamaCppBinaries:
    """Copy and strip the binaries into a fresh bin dir, then swap it in and write build.json last."""
    staging = root / "bin.new"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for name, target in TARGETS.items():
        built = build_dir / "bin" / target
        if not built.is_file():
            raise BuildError(f"the build finished but {built} is missing", hint=f"read {root / 'build.log'}")
        shutil.copy2(built, staging / name)
        done = subprocess.run([strip, "--strip-all", str(staging / name)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(f"strip failed on {name}: {done.stderr.strip()}")
    (root / "build.json").unlink(missing_ok=True)  # the old record must not vouch for a half-swapped dir
    final = root / "bin"
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)
    sha256 = {name: sha256_file(final / name) for name in TARGETS}
    record = {
        "version": LLAMA_CPP_PYTHON_VERSION,
        "commit": LLAMA_CPP_COMMIT,
        "protocol": list(RPC_PROTOCOL_VERSION),
        "sha256": sha256,
        "backend": backend,
        "cmake_options": list(options),
    }
    write_atomic(root / "build.json", json.dumps(record, indent=2) + "\n")
    return LlamaCppBinaries(
        final / "rpc-server", final / "llama-server", LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT,
        RPC_PROTOCOL_VERSION, sha256, backend,
    )  # fmt: skip
