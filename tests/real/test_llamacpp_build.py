"""The real llama.cpp build: cached per version, checksums recorded, static and stripped ELF binaries that
run, and `sollol llama-cpp build|path` reporting them."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sollol_cli.cli import app
from sollol_cli.llamacpp import build as build_module
from sollol_cli.llamacpp.build import LlamaCppBinaries, build, find_build, install_dir
from sollol_cli.llamacpp.sdist import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION
from sollol_cli.settings import Settings

pytestmark = pytest.mark.real

PT_INTERP = 3
SHT_SYMTAB = 2


def elf_facts(path: Path) -> tuple[bool, bool]:
    """(has a program interpreter, has a symbol table) from the ELF64 headers: dynamic / not stripped."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64 file"
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    segments = [struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    sections = [struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] for i in range(shnum)]
    return PT_INTERP in segments, SHT_SYMTAB in sections


def test_build_is_installed_in_the_cache_by_version(llama_bins: LlamaCppBinaries) -> None:
    root = install_dir(Settings().cache_dir)
    assert root.name == LLAMA_CPP_PYTHON_VERSION
    assert (llama_bins.rpc_server, llama_bins.llama_server) == (
        root / "bin" / "rpc-server",
        root / "bin" / "llama-server",
    )
    assert (llama_bins.version, llama_bins.commit, llama_bins.protocol) == (
        LLAMA_CPP_PYTHON_VERSION,
        LLAMA_CPP_COMMIT,
        (7, 0, 0),
    )
    assert not (root / "build-tmp").exists()  # the temporary build dir is gone after a successful build
    assert (root / "build.log").stat().st_size > 0


def test_recorded_checksums_match_the_files(llama_bins: LlamaCppBinaries) -> None:
    record = json.loads((install_dir(Settings().cache_dir) / "build.json").read_text())
    for name, path in (("rpc-server", llama_bins.rpc_server), ("llama-server", llama_bins.llama_server)):
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["sha256"][name] == llama_bins.sha256[name] == actual
    assert record["commit"] == LLAMA_CPP_COMMIT
    assert "-DLLAMA_USE_PREBUILT_UI=OFF" in record["cmake_options"]


def test_cached_build_returns_the_same_binaries_without_rebuilding(
    llama_bins: LlamaCppBinaries, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached build was built again")

    mtimes = [p.stat().st_mtime_ns for p in (llama_bins.rpc_server, llama_bins.llama_server)]
    monkeypatch.setattr(build_module, "_build_locked", no_build)
    again = build(Settings().cache_dir)
    assert again == llama_bins == find_build(Settings().cache_dir)
    assert [p.stat().st_mtime_ns for p in (again.rpc_server, again.llama_server)] == mtimes


@pytest.mark.parametrize("name", ["rpc-server", "llama-server"])
def test_binaries_are_static_and_stripped(llama_bins: LlamaCppBinaries, name: str) -> None:
    path = llama_bins.rpc_server if name == "rpc-server" else llama_bins.llama_server
    has_interpreter, has_symbols = elf_facts(path)
    assert not has_interpreter, f"{path} is dynamically linked"
    assert not has_symbols, f"{path} is not stripped"
    if shutil.which("ldd"):
        ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=False)
        assert "not a dynamic executable" in ldd.stdout + ldd.stderr


def test_binaries_run_and_carry_the_pinned_commit(llama_bins: LlamaCppBinaries) -> None:
    version = subprocess.run([str(llama_bins.llama_server), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0
    assert f"commit {LLAMA_CPP_COMMIT}" in version.stdout + version.stderr
    usage = subprocess.run([str(llama_bins.rpc_server), "--help"], capture_output=True, text=True, timeout=30)
    assert "--port PORT" in usage.stdout + usage.stderr


def test_cli_build_json_describes_the_cached_build(llama_bins: LlamaCppBinaries) -> None:
    result = CliRunner().invoke(app, ["llama-cpp", "build", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == llama_bins.to_json()


def test_cli_build_and_path_print_where_the_binaries_are(llama_bins: LlamaCppBinaries) -> None:
    expected = f"rpc-server   {llama_bins.rpc_server}\nllama-server {llama_bins.llama_server}\n"
    built = CliRunner().invoke(app, ["llama-cpp", "build", "-q"], catch_exceptions=False)
    assert (built.exit_code, built.stdout) == (0, expected)
    path = CliRunner().invoke(app, ["llama-cpp", "path"], catch_exceptions=False)
    assert (path.exit_code, path.stdout) == (0, expected)
    one = CliRunner().invoke(app, ["llama-cpp", "path", "llama-server"], catch_exceptions=False)
    assert (one.exit_code, one.stdout) == (0, f"{llama_bins.llama_server}\n")
