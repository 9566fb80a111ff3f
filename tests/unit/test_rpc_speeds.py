"""What `-v` and status say about a coordinator's split and speed, and the kept rpc speeds (a cache in the
state directory that several sollol processes write)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.backends.rpc import RpcProbe
from sollol_cli.manifest.models import Cluster
from sollol_cli.runtime.status import model_rows
from sollol_cli.sharding import calibration
from sollol_cli.sharding.calibration import RpcSpeed, known_speeds, load_speeds, save_speed, speed_key, speeds_path
from sollol_cli.sharding.coordinator import CoordinatorRecord
from sollol_cli.sharding.lifecycle import expected_after_load, speed_line, speed_of
from sollol_cli.sharding.pool import RpcServer


def record(**changes: object) -> CoordinatorRecord:
    base = CoordinatorRecord("big", "d", 1, 1, "127.0.0.1", 8080, "", ["a:1", "b:2"], 0.0, 0.0, 60.0)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({}, "speed: split by memory"),
        (
            {"split_by": "speed", "expected_tokens_per_s": 41.04, "measured_tokens_per_s": 30.0},
            "speed: split by measured speed (fastest rpc backend filled first), expected 41.0 tokens/s, "
            "measured 30.0 tokens/s",
        ),
        ({"split_by": "manifest", "measured_tokens_per_s": 12.5},
         "speed: split by the manifest's tensor_split, measured 12.5 tokens/s"),
    ],
)  # fmt: skip
def test_speed_line(changes: dict[str, object], line: str) -> None:
    assert speed_line(record(**changes)) == line


def test_speed_json() -> None:
    assert speed_of(record(split_by="speed", expected_tokens_per_s=9.0)) == {
        "split_by": "speed",
        "expected_tokens_per_s": 9.0,
        "measured_tokens_per_s": None,
    }


def server(port: int) -> RpcServer:
    return RpcServer(f"r{port}", "127.0.0.2", port, "m", None, RpcProbe("ready", (3, 0, 0), ()))


def test_speeds_are_kept_per_endpoint_and_protocol(tmp_path: Path) -> None:
    async def save_both() -> None:
        await asyncio.gather(
            save_speed(tmp_path, speed_key("127.0.0.2:1", "3.0.0"), RpcSpeed(5e9, 50.0, 1.0)),
            save_speed(tmp_path, speed_key("127.0.0.2:2", "3.0.0"), RpcSpeed(2e9, 20.0, 2.0)),
        )

    asyncio.run(save_both())  # both kept: each save merges under the lock
    assert known_speeds(tmp_path, [server(1), server(2), server(3)], "3.0.0") == {
        "127.0.0.2:1": 5e9,
        "127.0.0.2:2": 2e9,
    }
    assert known_speeds(tmp_path, [server(1)], "3.1.0") == {}  # another llama.cpp build measures again


def test_an_unreadable_cache_is_measured_again(tmp_path: Path) -> None:
    speeds_path(tmp_path).write_text("{not json")
    assert load_speeds(tmp_path) == {}
    speeds_path(tmp_path).write_text('{"a:1 rpc 3.0.0": {"bytes_per_s": "x"}, "b:2 rpc 3.0.0": '
                                     '{"bytes_per_s": 1, "tokens_per_s": 2, "measured_at": 3}}')  # fmt: skip
    assert load_speeds(tmp_path) == {"b:2 rpc 3.0.0": RpcSpeed(1.0, 2.0, 3.0)}


LOG = """load_tensors: RPC0[a:1] model buffer size =   100.00 MiB
load_tensors: RPC1[b:2] model buffer size =   300.00 MiB
load_tensors:   CPU_Mapped model buffer size =    62.50 MiB
"""


@pytest.mark.parametrize(
    ("speeds", "expected"),
    [
        # 100 MiB at 1 GiB/s and 300 MiB at 3 GiB/s: 0.1953 s a token
        ({"a:1": 2**30, "b:2": 3 * 2**30}, 5.1),
        ({"a:1": 2**30}, None),  # b:2 holds weights and has no speed
    ],
)
def test_expected_after_load_uses_what_the_log_says_each_backend_holds(
    speeds: dict[str, float], expected: float | None
) -> None:
    assert expected_after_load(record(rpc_speeds=speeds), LOG) == expected


def test_a_failed_measurement_is_reported_and_leaves_the_split_to_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured ones are reused without starting anything; one that cannot be measured is a failed step."""
    monkeypatch.setattr(calibration, "ensure_tiny_model", lambda *args, **kwargs: tmp_path / "calibrate.gguf")
    asyncio.run(save_speed(tmp_path, speed_key("127.0.0.2:1", "3.0.0"), RpcSpeed(5e9, 50.0, 1.0)))
    heard: list[events.Event] = []
    got = asyncio.run(
        calibration.calibrate_all(
            [server(1), server(2)], "3.0.0", llama_server=str(tmp_path / "no-llama-server"), state_dir=tmp_path,
            cache_dir=tmp_path, home=tmp_path / "home", reporter=heard.append,
        )
    )  # fmt: skip
    assert got == {"127.0.0.2:1": 5e9}
    assert [type(e).__name__ for e in heard] == ["StepStarted", "StepFailed"]
    failed = heard[1]
    assert isinstance(failed, events.StepFailed) and failed.subject == "rpc backend r2"
    assert failed.reason.startswith(f"cannot start {tmp_path / 'no-llama-server'}: ")


@pytest.mark.parametrize(
    ("first", "second", "calls", "kept"),
    [
        # a difference beyond the tolerance is measured again in the opposite order; each keeps its best
        ({1: 10.0, 2: 30.0}, {2: 20.0, 1: 25.0}, [1, 2, 2, 1], {1: 25.0, 2: 30.0}),
        # within the tolerance: measured once
        ({1: 28.0, 2: 30.0}, {}, [1, 2], {1: 28.0, 2: 30.0}),
    ],
)
def test_a_deciding_difference_is_measured_twice(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    first: dict[int, float],
    second: dict[int, float],
    calls: list[int],
    kept: dict[int, float],
) -> None:
    monkeypatch.setattr(calibration, "ensure_tiny_model", lambda *args, **kwargs: tmp_path / "calibrate.gguf")
    seen: list[int] = []

    async def measure(server: RpcServer, **kwargs: object) -> RpcSpeed:
        seen.append(server.port)
        speeds = first if seen.count(server.port) == 1 else second
        return RpcSpeed(speeds[server.port], 1.0, 0.0)

    monkeypatch.setattr(calibration, "calibrate", measure)
    got = asyncio.run(
        calibration.calibrate_all(
            [server(1), server(2)], "3.0.0", llama_server="llama-server", state_dir=tmp_path, cache_dir=tmp_path,
            home=tmp_path, reporter=lambda event: None,
        )
    )  # fmt: skip
    assert seen == calls
    assert got == {f"127.0.0.2:{port}": speed for port, speed in kept.items()}
    assert known_speeds(tmp_path, [server(1), server(2)], "3.0.0") == got  # the best ones are kept


def test_status_rows_show_the_split_and_speed_under_the_placement() -> None:
    """`sollol status`: the speed line follows a running coordinator's placement; --json has it as data."""
    cluster = Cluster.model_validate({"name": "c", "models": [{"name": "big"}, {"name": "idle"}]})
    running = record(placement=["placement a:1: layers 0-8, model 1.0 MiB, KV 0.0 MiB"], split_by="speed")
    big, idle = model_rows(cluster, None, {"big": running})
    assert big["placement"] == [*running.placement, "speed: split by measured speed (fastest rpc backend filled first)"]
    assert big["speed"] == {"split_by": "speed", "expected_tokens_per_s": None, "measured_tokens_per_s": None}
    assert (idle["placement"], idle["speed"]) == ([], None)
