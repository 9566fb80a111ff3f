"""`sollol bench` against Ollama stand-ins: which rows, the table's and the JSON's shape, what is saved, and
never more requests at once than asked for."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sollol_cli.runtime.bench_results import load_results, results_path
from sollol_cli.settings import Settings
from tests.harness.ollama import StandinFactory, StandinHandle
from tests.unit.cli_helpers import invoke


def manifest(tmp_path: Path, standins: list[StandinHandle]) -> Path:
    rows = "".join(
        f"  - {{name: {s.name}, kind: ollama, address: 127.0.0.1, port: {s.port}, slots: 2}}\n" for s in standins
    )
    path = tmp_path / "cluster.yaml"
    path.write_text(f"name: benched\nbackends:\n{rows}")
    return path


def test_every_backend_with_the_model_is_measured_alone_and_at_once(
    ollama_standin: StandinFactory, tmp_path: Path, _isolated_state: Path
) -> None:
    quick = {"tokens_per_second": 2000.0, "models": [{"name": "tiny:latest"}, {"name": "other:latest"}]}
    a, b = ollama_standin({"name": "a", **quick}), ollama_standin({"name": "b", **quick})
    path = manifest(tmp_path, [a, b])
    result = invoke("bench", "tiny", "-c", "3", "-n", "2", "-t", "8", "--no-gateway", "--json", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["cluster"], data["concurrency"]) == ("benched", 3)
    assert [(r["model"], r["backend"], r["mode"]) for r in data["rows"]] == [
        ("tiny", "a", "distribute"),
        ("tiny", "b", "distribute"),
    ]
    for row in data["rows"]:
        assert set(row) == {"model", "backend", "mode", "single", "concurrent", "measured_at"}
        single, concurrent = row["single"], row["concurrent"]
        assert (single["at_once"], single["requests"], concurrent["at_once"], concurrent["requests"]) == (1, 2, 3, 3)
        for level in (single, concurrent):
            assert level["errors"] == []
            assert level["ttft_s"] > 0 and level["tokens_per_s"] > 0 and level["total_tokens_per_s"] > 0
    for standin in (a, b):
        stats = standin.stats()
        assert stats["requests"]["POST /api/generate"] == 2 + 3
        assert stats["max_in_flight"] <= 3  # never more load than asked for
    saved = load_results(Settings().state_dir, "benched")
    assert [(r.model, r.backend) for r in saved] == [("tiny", "a"), ("tiny", "b")]
    assert results_path(Settings().state_dir, "benched").is_file()

    # a second run of another model keeps the first run's results
    again = invoke("bench", "other", "-c", "1", "-n", "1", "-t", "4", "--json", "-f", str(path))
    assert again.exit_code == 0, again.stderr
    saved = load_results(Settings().state_dir, "benched")
    assert [(r.model, r.backend) for r in saved] == [("other", "a"), ("other", "b"), ("tiny", "a"), ("tiny", "b")]


def test_the_table(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    a = ollama_standin({"name": "a", "tokens_per_second": 2000.0})
    result = invoke("bench", "tiny", "-c", "2", "-n", "1", "-t", "4", "-f", str(manifest(tmp_path, [a])))
    assert result.exit_code == 0, result.stderr
    header, row, gateway = result.stdout.splitlines()
    assert header.split() == ["model", "backend", "mode", "ttft", "tokens/s", "ttft", "x2", "tokens/s", "x2", "errors"]
    assert re.fullmatch(r"tiny +a +distribute +\d+ ms +\d+\.\d +\d+ ms +\d+\.\d +-", row.strip()), row
    ms = r"\d+\.\d\d ms"
    assert re.fullmatch(rf"tiny through sollol serve: [+-]{ms} \({ms} against {ms} direct, median of 20\)", gateway)


def test_a_model_nobody_has_or_no_backend_answering_says_what_run_says(
    ollama_standin: StandinFactory, tmp_path: Path
) -> None:
    a = ollama_standin({"name": "a"})
    result = invoke("bench", "nothing", "-f", str(manifest(tmp_path, [a])))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == ["error: model 'nothing' not found on any node; see `sollol status`"]
    path = tmp_path / "silent.yaml"
    path.write_text("name: silent\nbackends:\n  - {name: gone, kind: ollama, address: 127.0.0.1, port: 1}\n")
    result = invoke("bench", "tiny", "-f", str(path))
    assert result.exit_code == 4  # nothing answers: try again later, as `sollol run` says
    assert result.stderr.splitlines() == ["error: no backend answers (gone), so 'tiny' cannot run"]


def test_later_runs_start_from_what_bench_measured(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    """Every `sollol run` is a new process that has measured nothing itself: without saved results it picks
    among the two backends at random; after `sollol bench` each run goes to the one measured faster."""
    slow = ollama_standin({"name": "slow", "tokens_per_second": 100.0})
    fast = ollama_standin({"name": "fast", "tokens_per_second": 4000.0})
    path = manifest(tmp_path, [slow, fast])
    measured = invoke("bench", "tiny", "-c", "1", "-n", "1", "-t", "8", "--json", "-f", str(path))
    assert measured.exit_code == 0, measured.stderr
    speeds = {r["backend"]: r["single"]["tokens_per_s"] for r in json.loads(measured.stdout)["rows"]}
    assert speeds["fast"] > speeds["slow"]
    before = {s.name: s.stats()["requests"]["POST /api/generate"] for s in (slow, fast)}
    for _ in range(6):
        result = invoke("run", "tiny", "hi", "-f", str(path))
        assert result.exit_code == 0, result.stderr
    after = {s.name: s.stats()["requests"]["POST /api/generate"] for s in (slow, fast)}
    assert (after["slow"] - before["slow"], after["fast"] - before["fast"]) == (0, 6)


def test_status_shows_what_bench_measured(ollama_standin: StandinFactory, tmp_path: Path) -> None:
    a = ollama_standin({"name": "a", "tokens_per_second": 2000.0})
    path = manifest(tmp_path, [a])
    before = invoke("status", "--json", "-f", str(path))
    assert before.exit_code == 0, before.stderr
    assert json.loads(before.stdout)["measured"] == []
    assert "measured by sollol bench" not in invoke("status", "-f", str(path)).stdout

    measured = invoke("bench", "tiny", "-c", "1", "-n", "1", "-t", "8", "--json", "-f", str(path))
    assert measured.exit_code == 0, measured.stderr
    [bench_row] = json.loads(measured.stdout)["rows"]
    data = json.loads(invoke("status", "--json", "-f", str(path)).stdout)
    [row] = data["measured"]
    assert set(row) == {"model", "backend", "mode", "ttft_s", "tokens_per_s", "age_s"}
    assert (row["model"], row["backend"], row["mode"]) == ("tiny", "a", "distribute")
    assert (row["ttft_s"], row["tokens_per_s"]) == (bench_row["single"]["ttft_s"], bench_row["single"]["tokens_per_s"])
    assert 0 <= row["age_s"] < 600

    table = invoke("status", "-f", str(path)).stdout.splitlines()
    header = table.index("measured by sollol bench (one request at a time):")
    assert re.fullmatch(r"  tiny on a: \d+\.\d tokens/s, first token \d+ ms \(\d+ (s|min) ago\)", table[header + 1])
    assert table[header + 2 :] == []


def test_what_the_gateway_adds_is_measured_against_the_backend_that_served(
    ollama_standin: StandinFactory, tmp_path: Path
) -> None:
    a, b = ollama_standin({"name": "a"}), ollama_standin({"name": "b"})
    path = manifest(tmp_path, [a, b])
    result = invoke("bench", "tiny", "-c", "1", "-n", "1", "-t", "2", "--json", "-f", str(path))
    assert result.exit_code == 0, result.stderr
    [added] = json.loads(result.stdout)["gateway"]
    assert set(added) == {"model", "requests", "direct_ms", "gateway_ms", "added_ms", "errors"}
    assert (added["model"], added["requests"], added["errors"]) == ("tiny", 20, [])
    assert added["direct_ms"] > 0 and added["gateway_ms"] > 0 and added["added_ms"] is not None
    # bench's own 1 + 1 per backend, then 20 rounds of: each backend straight once, one through the gateway
    generated = {s.name: s.stats()["requests"]["POST /api/generate"] for s in (a, b)}
    assert sum(generated.values()) == 2 * (1 + 1) + 2 * 20 + 20
    assert min(generated.values()) >= 1 + 1 + 20

    skipped = invoke("bench", "tiny", "-c", "1", "-n", "1", "-t", "2", "--no-gateway", "--json", "-f", str(path))
    assert skipped.exit_code == 0, skipped.stderr
    assert json.loads(skipped.stdout)["gateway"] == []
    assert sum(s.stats()["requests"]["POST /api/generate"] for s in (a, b)) == 64 + 2 * 2
