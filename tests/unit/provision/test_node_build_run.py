"""The node-side build script, run for real by this machine's shell (LocalRunner: what a node's shell does over
SSH), with stand-in configure and compile commands so it takes no minutes: sources extracted from the uploaded
tarball, progress lines turned into events, the marker written last and found by the facts probe, a second
run finding the build, and a failed step reported in one line that points at `sollol logs NODE build`."""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.llamacpp.build import sha256_file
from sollol_cli.llamacpp.nodeplan import NodeBuildPlan, Toolchain, cached_builds_probe, node_build_plan
from sollol_cli.llamacpp.sdist import VENDOR_PREFIX
from sollol_cli.provision.nodebuild import NodeBuildError, SourceTarball, build_on_node
from sollol_cli.ssh.runner import LocalRunner


def sdist(path: Path) -> SourceTarball:
    """A stand-in sdist: the vendored tree's CMakeLists.txt and a file in a directory the build skips."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("CMakeLists.txt", b"project(x)\n"), ("models/big.gguf", b"unused")):
            info = tarfile.TarInfo(VENDOR_PREFIX + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return SourceTarball(path, sha256_file(path))


def plan_for(home: Path, configure: str, compile_: str) -> NodeBuildPlan:
    """The real plan with its commands replaced (`{root}` in them: the build's directory)."""
    tools = {name: f"/usr/bin/{name}" for name in ("cmake", "strip", "c++", "cc", "make")}
    plan = node_build_plan("cpu", ["rpc-server"], Toolchain(tools), home=str(home), cpus=2)
    assert isinstance(plan, NodeBuildPlan)
    configured, compiled = (("sh", "-c", text.format(root=plan.root)) for text in (configure, compile_))
    return replace(plan, strip="true", configure=configured, compile=compiled)


def run(plan: NodeBuildPlan, source: SourceTarball, home: Path, seen: list[events.Event]) -> bool:
    log = str(home / ".sollol" / "lab" / "n1" / "log" / "build.log")
    return asyncio.run(
        build_on_node(LocalRunner("n1"), plan, source, node="n1", home=str(home), log=log, reporter=seen.append)
    )


def test_a_build_runs_reports_progress_and_leaves_a_complete_build(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = sdist(tmp_path / "sdist.tar.gz")
    plan = plan_for(
        home,
        configure="echo '-- Build files have been written to: x'",
        compile_="echo '[1/2] compiling'; echo '[2/2] linking'; mkdir -p {root}/build/bin && "
        "echo rpc > {root}/build/bin/ggml-rpc-server",
    )
    seen: list[events.Event] = []
    assert run(plan, source, home, seen) is True
    progress = [(e.completed, e.total) for e in seen if isinstance(e, events.StepProgress) and e.step == "build"]
    assert progress == [(1, 2), (2, 2)]
    steps = [e.detail for e in seen if isinstance(e, events.StepStarted) and e.step == "build"]
    assert steps == ["source", "configure", "compile", "install"]
    src = Path(plan.source_dir)
    assert (src / "CMakeLists.txt").is_file() and not (src / "models").exists()
    assert (Path(plan.root) / "bin" / "rpc-server").read_text() == "rpc\n"
    probe = subprocess.run(["sh", "-c", cached_builds_probe()], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True)  # fmt: skip
    assert probe.stdout == f"nodebuild={plan.key}\n"
    log = (home / ".sollol" / "lab" / "n1" / "log" / "build.log").read_text()
    assert "-- Build files have been written to: x" in log and log.endswith("sollol-build-exit 0\n")
    # the marker is there: a second run (one that waited for the lock, say) builds nothing
    again: list[events.Event] = []
    assert run(plan, source, home, again) is False
    assert not any(isinstance(e, events.StepProgress) for e in again)
    # a binary that no longer matches its checksum is not a complete build
    (Path(plan.root) / "bin" / "rpc-server").write_text("changed")
    probe = subprocess.run(["sh", "-c", cached_builds_probe()], env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True)  # fmt: skip
    assert probe.stdout == ""
    assert run(plan, source, home, []) is True  # and is built again
    assert (Path(plan.root) / "bin" / "rpc-server").read_text() == "rpc\n"


def test_a_failed_step_is_one_line_pointing_at_the_log_and_leaves_no_marker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plan = plan_for(home, configure="echo 'CMake Error: no compiler'; exit 3", compile_="echo never")
    with pytest.raises(NodeBuildError) as caught:
        run(plan, sdist(tmp_path / "sdist.tar.gz"), home, [])
    assert caught.value.message == (
        "llama.cpp configure failed on the node (exit 3): CMake Error: no compiler; see `sollol logs n1 build`"
    )
    assert not (Path(plan.root) / "build.json").exists()
    assert "never" not in (home / ".sollol" / "lab" / "n1" / "log" / "build.log").read_text()
