"""The Vulkan build as data: its CMake options and command lines, its own cache dir next to the CPU one,
and where its Vulkan headers come from (a given dir, the system's, the cached download) without compiling."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sollol_cli import events
from sollol_cli.cli import app
from sollol_cli.errors import BuildError, UsageError
from sollol_cli.llamacpp import build as build_module
from sollol_cli.llamacpp import vulkan_headers
from sollol_cli.llamacpp.build import build, cmake_options, find_build, install_dir
from sollol_cli.llamacpp.cmake import build_commands
from sollol_cli.llamacpp.sdist import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION
from sollol_cli.llamacpp.vulkan_headers import ensure_headers, headers_dir

COMMON = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_RPC=ON",
    "-DGGML_NATIVE=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_OPENMP=OFF",
)
TAIL = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
    "-DLLAMA_BUILD_NUMBER=0",
)


@pytest.mark.parametrize(
    ("backend", "include", "expected"),
    [
        pytest.param("cpu", None, (*COMMON, "-DCMAKE_EXE_LINKER_FLAGS=-static", *TAIL), id="cpu-static"),
        pytest.param("vulkan", None, (*COMMON, *TAIL, "-DGGML_VULKAN=ON"), id="vulkan-system-headers"),
        pytest.param(
            "vulkan",
            Path("/cache/vulkan-headers/trixie/usr/include"),
            (*COMMON, *TAIL, "-DGGML_VULKAN=ON", "-DVulkan_INCLUDE_DIR=/cache/vulkan-headers/trixie/usr/include"),
            id="vulkan-fetched-headers",
        ),
    ],
)
def test_cmake_options(backend: str, include: Path | None, expected: tuple[str, ...]) -> None:
    assert cmake_options(backend, include) == expected


@pytest.mark.parametrize("backend", ["cuda", "rocm", "metal"])
def test_backends_not_built_here_are_refused(backend: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"sollol cannot build the {backend} backend here"):
        build(tmp_path, backend=backend)
    assert not (tmp_path / "llama.cpp").exists()


def test_vulkan_commands() -> None:
    tools = {"cmake": "/usr/bin/cmake", "ninja": "/usr/bin/ninja"}
    src, out = Path("/c/src"), Path("/c/build")
    configure, compile_ = build_commands(src, out, tools, 2, cmake_options("vulkan", Path("/h/include")))
    assert configure == [
        "/usr/bin/cmake", "-S", "/c/src", "-B", "/c/build", "-G", "Ninja", *COMMON, *TAIL, "-DGGML_VULKAN=ON",
        "-DVulkan_INCLUDE_DIR=/h/include", "-DCMAKE_C_FLAGS=-ffile-prefix-map=/c/src=llama.cpp",
        "-DCMAKE_CXX_FLAGS=-ffile-prefix-map=/c/src=llama.cpp",
    ]  # fmt: skip
    assert compile_ == [
        "/usr/bin/cmake",
        "--build",
        "/c/build",
        "--target",
        "ggml-rpc-server",
        "llama-server",
        "-j",
        "2",
    ]


def test_cache_is_keyed_by_backend(tmp_path: Path) -> None:
    assert install_dir(tmp_path) == tmp_path / "llama.cpp" / LLAMA_CPP_PYTHON_VERSION
    assert install_dir(tmp_path, "vulkan") == tmp_path / "llama.cpp" / f"{LLAMA_CPP_PYTHON_VERSION}-vulkan"


def fake_vulkan_install(cache: Path, recorded_backend: str | None) -> None:
    root = install_dir(cache, "vulkan")
    (root / "bin").mkdir(parents=True)
    sha = {}
    for name in ("rpc-server", "llama-server"):
        (root / "bin" / name).write_bytes(name.encode())
        sha[name] = hashlib.sha256(name.encode()).hexdigest()
    record = {"version": LLAMA_CPP_PYTHON_VERSION, "commit": LLAMA_CPP_COMMIT, "protocol": [7, 0, 0], "sha256": sha}
    if recorded_backend is not None:
        record["backend"] = recorded_backend
    (root / "build.json").write_text(json.dumps(record))


def test_vulkan_build_is_found_as_vulkan(tmp_path: Path) -> None:
    fake_vulkan_install(tmp_path, "vulkan")
    found = find_build(tmp_path, "vulkan")
    assert found is not None
    assert (found.backend, found.rpc_server) == ("vulkan", install_dir(tmp_path, "vulkan") / "bin" / "rpc-server")
    assert found.to_json()["backend"] == "vulkan"
    assert find_build(tmp_path) is None  # the CPU build is another directory


def test_record_without_the_backend_is_not_trusted_as_vulkan(tmp_path: Path) -> None:
    """A record with no backend is a CPU build's (records written before backends existed)."""
    fake_vulkan_install(tmp_path, None)
    assert find_build(tmp_path, "vulkan") is None


def test_vulkan_build_needs_glslc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for tool in ("cmake", "strip", "c++", "cc", "ninja"):
        (tmp_path / tool).touch(mode=0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    build_module._required_tools("cpu")
    with pytest.raises(BuildError, match=r"llama.cpp \(vulkan\) needs glslc \(not found on PATH\)") as caught:
        build_module._required_tools("vulkan")
    assert caught.value.hint is not None
    assert "glslc libvulkan-dev spirv-headers" in caught.value.hint


def write_headers(include: Path, *, new: bool) -> Path:
    (include / "vulkan").mkdir(parents=True)
    body = "struct LayerSettingEXT\n{\n};\n" if new else "struct ApplicationInfo\n{\n};\n"
    (include / "vulkan" / "vulkan_structs.hpp").write_text(body)
    return include


def test_headers_given_are_used_when_new_enough(tmp_path: Path) -> None:
    given = write_headers(tmp_path / "given", new=True)
    assert ensure_headers(tmp_path / "cache", given=given, system_include=tmp_path / "none") == given


def test_headers_given_too_old_are_refused(tmp_path: Path) -> None:
    given = write_headers(tmp_path / "given", new=False)
    with pytest.raises(BuildError, match="declaring vk::LayerSettingEXT"):
        ensure_headers(tmp_path / "cache", given=given, system_include=tmp_path / "none")


def test_new_enough_system_headers_need_no_download(tmp_path: Path) -> None:
    system = write_headers(tmp_path / "usr-include", new=True)
    seen: list[events.Event] = []
    assert ensure_headers(tmp_path / "cache", reporter=seen.append, system_include=system) == system
    assert seen == []


def test_cached_download_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(cache_dir: Path) -> Path:
        raise AssertionError("must not download")

    monkeypatch.setattr(vulkan_headers, "_download", no_download)
    cached = write_headers(headers_dir(tmp_path) / "usr" / "include", new=True)
    old_system = write_headers(tmp_path / "usr-include", new=False)
    seen: list[events.Event] = []
    assert ensure_headers(tmp_path, reporter=seen.append, system_include=old_system) == cached
    assert seen == [events.StepDone("llama.cpp", "headers", f"Vulkan headers cached in {cached}")]


def test_failed_download_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(cache_dir: Path) -> Path:
        raise BuildError("no Debian mirror is configured")

    monkeypatch.setattr(vulkan_headers, "_download", failing)
    seen: list[events.Event] = []
    with pytest.raises(BuildError):
        ensure_headers(tmp_path, reporter=seen.append, system_include=tmp_path / "none")
    assert seen == [
        events.StepStarted("llama.cpp", "headers", "libvulkan-dev from Debian trixie"),
        events.StepFailed("llama.cpp", "headers", "no Debian mirror is configured"),
    ]


def test_cli_path_of_the_vulkan_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(tmp_path))
    missing = CliRunner().invoke(app, ["llama-cpp", "path", "--backend", "vulkan"], catch_exceptions=False)
    assert (missing.exit_code, missing.stdout) == (1, "")
    assert missing.stderr == (
        f"error: llama.cpp (vulkan) is not built yet (nothing usable in {install_dir(tmp_path, 'vulkan')}); "
        "run `sollol llama-cpp build --backend vulkan`\n"
    )
    fake_vulkan_install(tmp_path, "vulkan")
    found = CliRunner().invoke(app, ["llama-cpp", "path", "rpc-server", "--backend", "vulkan"], catch_exceptions=False)
    assert (found.exit_code, found.stdout) == (0, f"{install_dir(tmp_path, 'vulkan') / 'bin' / 'rpc-server'}\n")


def test_cli_path_of_a_backend_sollol_does_not_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["llama-cpp", "path", "--backend", "cuda"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (
        2,
        "error: sollol cannot build the cuda backend here; choose one of cpu, vulkan\n",
    )


def test_vulkan_headers_without_the_vulkan_backend_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Vulkan headers are for the Vulkan build"):
        build(tmp_path, vulkan_include=tmp_path)
    assert not (tmp_path / "llama.cpp").exists()
