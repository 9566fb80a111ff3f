"""The llama.cpp build cache without compiling: a build.json whose checksums match is reused, anything else is
not; user overrides win; concurrent builders wait on the lock and reuse what the first one installed."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sollol_cli import events
from sollol_cli.cli import app
from sollol_cli.errors import BuildError, UsageError
from sollol_cli.llamacpp import build as build_module
from sollol_cli.llamacpp.build import LlamaCppBinaries, build, find_build, install_dir, resolve_binaries
from sollol_cli.llamacpp.sdist import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION
from sollol_cli.settings import Settings


def fake_install(cache: Path, *, version: str = LLAMA_CPP_PYTHON_VERSION) -> dict[str, str]:
    """Lay out an install dir the way build() leaves it, with small stand-in files instead of binaries."""
    root = install_dir(cache)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    sha = {}
    for name in ("rpc-server", "llama-server"):
        data = f"#!fake {name}\n".encode()
        (root / "bin" / name).write_bytes(data)
        sha[name] = hashlib.sha256(data).hexdigest()
    record = {"version": version, "commit": LLAMA_CPP_COMMIT, "protocol": [7, 0, 0], "sha256": sha}
    (root / "build.json").write_text(json.dumps(record))
    return sha


def test_complete_install_is_found(tmp_path: Path) -> None:
    sha = fake_install(tmp_path)
    found = find_build(tmp_path)
    root = tmp_path / "llama.cpp" / LLAMA_CPP_PYTHON_VERSION
    assert found == LlamaCppBinaries(
        root / "bin" / "rpc-server", root / "bin" / "llama-server", LLAMA_CPP_PYTHON_VERSION, LLAMA_CPP_COMMIT,
        (7, 0, 0), sha,
    )  # fmt: skip
    assert found.to_json()["rpc_server"] == str(root / "bin" / "rpc-server")
    assert found.to_json()["protocol"] == [7, 0, 0]
    json.dumps(found.to_json())  # serialisable as is


def test_nothing_built_is_none(tmp_path: Path) -> None:
    assert find_build(tmp_path) is None


def test_changed_binary_is_not_trusted(tmp_path: Path) -> None:
    fake_install(tmp_path)
    (install_dir(tmp_path) / "bin" / "llama-server").write_bytes(b"tampered")
    assert find_build(tmp_path) is None


def test_missing_binary_is_not_trusted(tmp_path: Path) -> None:
    fake_install(tmp_path)
    (install_dir(tmp_path) / "bin" / "rpc-server").unlink()
    assert find_build(tmp_path) is None


@pytest.mark.parametrize("record", ["", "{", "[]", '{"version": "0.3.36"}', '{"sha256": null}'])
def test_broken_record_is_not_trusted(tmp_path: Path, record: str) -> None:
    fake_install(tmp_path)
    (install_dir(tmp_path) / "build.json").write_text(record)
    assert find_build(tmp_path) is None


def test_record_of_another_version_is_not_trusted(tmp_path: Path) -> None:
    fake_install(tmp_path, version="0.0.1")
    assert find_build(tmp_path) is None


def test_cached_build_is_returned_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_install(tmp_path)

    def no_build(*args: object, **kwargs: object) -> LlamaCppBinaries:
        raise AssertionError("must not build")

    monkeypatch.setattr(build_module, "_build_locked", no_build)
    seen: list[events.Event] = []
    assert build(tmp_path, reporter=seen.append) == find_build(tmp_path)
    assert seen == [events.StepDone("llama.cpp", "build", f"cached in {install_dir(tmp_path) / 'bin'}")]


def test_concurrent_builders_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    building, second_waits = threading.Event(), threading.Event()

    def slow_build(
        cache_dir: Path, reporter: events.Reporter, jobs: int, *, clean: bool, **_: object
    ) -> LlamaCppBinaries:
        calls.append(jobs)
        building.set()
        assert second_waits.wait(10), "the second builder never waited for the first"  # holds the lock till then
        fake_install(cache_dir)
        found = find_build(cache_dir)
        assert found is not None
        return found

    monkeypatch.setattr(build_module, "_build_locked", slow_build)
    results: dict[str, LlamaCppBinaries] = {}
    second_events: list[events.Event] = []

    def second_reporter(event: events.Event) -> None:
        second_events.append(event)
        if isinstance(event, events.StepStarted) and event.step == "waiting":
            second_waits.set()

    def first() -> None:
        results["first"] = build(tmp_path, jobs=3)

    thread = threading.Thread(target=first)
    thread.start()
    assert building.wait(10)  # the first builder holds the lock
    results["second"] = build(tmp_path, jobs=3, reporter=second_reporter)
    thread.join()
    assert calls == [3]
    assert results["first"] == results["second"]
    assert second_events == [
        events.StepStarted("llama.cpp", "waiting", "another process is building llama.cpp"),
        events.StepDone("llama.cpp", "build", f"cached in {install_dir(tmp_path) / 'bin'}"),
    ]


def test_failed_build_reports_step_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(cache_dir: Path, reporter: events.Reporter, jobs: int, *, clean: bool, **_: object) -> LlamaCppBinaries:
        raise BuildError("llama.cpp compile failed (exit 1); log: x")

    monkeypatch.setattr(build_module, "_build_locked", failing)
    seen: list[events.Event] = []
    with pytest.raises(BuildError):
        build(tmp_path, reporter=seen.append)
    assert seen == [events.StepFailed("llama.cpp", "build", "llama.cpp compile failed (exit 1); log: x")]


def test_missing_toolchain_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BuildError, match=r"needs cmake, strip, c\+\+, cc, ninja or make \(not found on PATH\)"):
        build_module._required_tools()


def test_overrides_win_over_the_cache(tmp_path: Path) -> None:
    fake_install(tmp_path / "cache")
    mine = tmp_path / "my-rpc-server"
    mine.write_bytes(b"my own build")
    settings = Settings(cache_dir=tmp_path / "cache", rpc_server_path=mine)
    resolved = resolve_binaries(settings)
    assert resolved is not None
    assert resolved.rpc_server == mine
    assert resolved.llama_server == install_dir(tmp_path / "cache") / "bin" / "llama-server"
    assert resolved.sha256["rpc-server"] == hashlib.sha256(b"my own build").hexdigest()


def test_overrides_alone_are_enough(tmp_path: Path) -> None:
    paths = {}
    for name in ("rpc", "llama"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(name.encode())
    settings = Settings(cache_dir=tmp_path / "empty", rpc_server_path=paths["rpc"], llama_server_path=paths["llama"])
    resolved = resolve_binaries(settings)
    assert resolved is not None
    assert (resolved.rpc_server, resolved.llama_server) == (paths["rpc"], paths["llama"])


def test_one_override_without_a_build_is_not_enough(tmp_path: Path) -> None:
    mine = tmp_path / "rpc"
    mine.write_bytes(b"x")
    assert resolve_binaries(Settings(cache_dir=tmp_path / "empty", rpc_server_path=mine)) is None


def test_override_that_is_not_a_file_is_an_error(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, llama_server_path=tmp_path / "missing")
    with pytest.raises(UsageError, match="SOLLOL_LLAMA_SERVER_PATH points at .*missing, which is not a file"):
        resolve_binaries(settings)


def test_llama_server_path_of_the_original_sollol_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    monkeypatch.setenv("LLAMA_SERVER_PATH", str(theirs))
    assert Settings().llama_server_path == theirs
    with pytest.raises(UsageError, match=r"^LLAMA_SERVER_PATH points at .*theirs, which is not a file"):
        resolve_binaries(Settings(cache_dir=tmp_path))
    monkeypatch.setenv("SOLLOL_LLAMA_SERVER_PATH", str(ours))  # sollol's own name wins
    assert Settings().llama_server_path == ours
    with pytest.raises(UsageError, match=r"^SOLLOL_LLAMA_SERVER_PATH points at .*ours, which is not a file"):
        resolve_binaries(Settings(cache_dir=tmp_path))


def test_no_overrides_means_the_cached_build(tmp_path: Path) -> None:
    assert resolve_binaries(Settings(cache_dir=tmp_path)) is None
    fake_install(tmp_path)
    assert resolve_binaries(Settings(cache_dir=tmp_path)) == find_build(tmp_path)


def test_cli_path_without_a_build_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["llama-cpp", "path"], catch_exceptions=False)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == (
        f"error: llama.cpp is not built yet (nothing usable in {install_dir(tmp_path)}); run `sollol llama-cpp build`\n"
    )


def test_cli_path_of_an_unknown_binary_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["llama-cpp", "path", "ollama"], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (2, "error: unknown binary 'ollama'; use rpc-server or llama-server\n")


def test_cli_path_json_uses_the_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("rpc", "llama"):
        (tmp_path / name).write_bytes(name.encode())
    monkeypatch.setenv("SOLLOL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SOLLOL_RPC_SERVER_PATH", str(tmp_path / "rpc"))
    monkeypatch.setenv("SOLLOL_LLAMA_SERVER_PATH", str(tmp_path / "llama"))
    result = CliRunner().invoke(app, ["llama-cpp", "path", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["rpc_server"], data["llama_server"]) == (str(tmp_path / "rpc"), str(tmp_path / "llama"))
    assert data["sha256"]["rpc-server"] == hashlib.sha256(b"rpc").hexdigest()
