"""The sharding benchmark (benchmarks/sharding.py) in its quick mode: a well-formed result from real rpc-servers and
coordinators, the same flags on both paths, and nothing left running afterwards, also when interrupted.
No assertion on speed: that is what the script reports, not what a test on a shared 2-core machine can hold."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sollol_cli.llamacpp.build import LlamaCppBinaries

pytestmark = [pytest.mark.real, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "sharding.py"
MEASURES = ("generation", "prompt_eval", "end_to_end")
PATHS = ("by_hand", "sollol", "direct", "by_hand_c")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def children_of(pid: int) -> dict[int, str]:
    """pid -> command name of every process whose parent is `pid`."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(rest.split()[1]) == pid:
            out[int(stat.parent.name)] = name.split("(", 1)[1]
    return out


def without_endpoints(argv: list[str]) -> list[str]:
    """argv with the values of --rpc and --port blanked: the only flags allowed to differ between the paths."""
    return [("*" if i and argv[i - 1] in ("--rpc", "--port") else arg) for i, arg in enumerate(argv)]


def work_dir(stderr: str) -> Path:
    match = re.search(r"^work directory \(manifest, logs\): (\S+)$", stderr, re.MULTILINE)
    assert match, stderr
    return Path(match[1])


def test_quick_run_reports_both_paths_with_the_same_flags(
    tmp_path: Path, llama_bins: LlamaCppBinaries, tiny_gguf: Path
) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert (result["preset"], result["model"], result["rounds"], result["num_predict"]) == (
        "tiny",
        str(tiny_gguf),
        3,
        16,
    )
    assert result["command"] == f"python benchmarks/sharding.py --quick --json {out}"
    # the hand-started server ran sollol's own coordinator command line, apart from where it connects
    assert result["sollol_argv"][0] == str(llama_bins.llama_server)
    assert without_endpoints(result["by_hand_argv"]) == without_endpoints(result["sollol_argv"])
    assert "-ts" in result["sollol_argv"] and "--rpc" in result["sollol_argv"]
    assert (
        result["by_hand_argv"][result["by_hand_argv"].index("--rpc") + 1]
        != (result["sollol_argv"][result["sollol_argv"].index("--rpc") + 1])
    )
    # greedy decoding: the same prompt gave the same tokens on both coordinators, whoever asked
    assert result["identical_text"] == 3
    assert result["generated_tokens"] == [16]
    for path in PATHS:
        samples = result["samples"][path]
        assert [s["round"] for s in samples] == [0, 1, 2]
        assert all(s["predicted_n"] == 16 and s["prompt_n"] > 0 and s["text"] for s in samples)
    assert [s["text"] for s in result["samples"]["by_hand"]] == [s["text"] for s in result["samples"]["sollol"]]
    assert [s["text"] for s in result["samples"]["direct"]] == [s["text"] for s in result["samples"]["by_hand_c"]]
    # every prompt was evaluated, not answered from the prompt cache (the shared template prefix aside)
    assert min(n for counts in result["prompt_tokens"].values() for n in counts) > 60
    for key in MEASURES:
        row = result["summary"][key]
        assert all(math.isfinite(value) and value > 0 for value in row.values())
        assert set(row) == {*PATHS, "ratio", "paired_ratio", "paired_ratio_direct", "paired_ratio_setups"}
        assert row["ratio"] == pytest.approx(row["sollol"] / row["by_hand"])
    # the table on stdout is the one in the result, with the command line to reproduce it
    assert proc.stdout == result["table"] + "\n"
    lines = proc.stdout.splitlines()
    assert (
        lines[0]
        == "| median | generation (tokens/s) | prompt eval (tokens/s) | end to end (generated tokens / wall s) |"
    )
    assert [line.split(" | ")[0] for line in lines[2:6]] == [
        "| (a) llama-server by hand",
        "| (b) sollol (`sollol run` path)",
        "| (c) sollol's coordinator, plain HTTP",
        "| (d) llama-server by hand, (c)'s prompts",
    ]
    assert lines[7] == "| ratio | generation | prompt eval | end to end |"
    ratio = result["summary"]["generation"]["paired_ratio"]
    assert lines[10].startswith(f"| b / a, paired | {ratio:.3f} | ")
    assert lines[-1] == f"Command: `{result['command']}`"
    # 4 rpc-servers, sollol's coordinator and the hand-started llama-server: all stopped, the work dir removed
    assert len(result["pids"]) == 6
    assert all(gone(pid) for pid in result["pids"])
    assert not work_dir(proc.stderr).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_stops_everything_it_started(
    signum: signal.Signals, llama_bins: LlamaCppBinaries, tiny_gguf: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--rounds", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
            if line.startswith("round 1/200: "):
                break
        started = children_of(proc.pid)
        assert sorted(started.values()) == ["llama-server", "llama-server"] + ["rpc-server"] * 4, started
        os.kill(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert "interrupted: stopping everything this benchmark started" in stderr
    assert stdout == ""
    assert all(gone(pid) for pid in started)
    assert not work_dir("".join(seen)).exists()
