"""A sharded model's placement as data for the dashboard: the same parts the `placement` lines describe, and
the lines read back into those parts (a record stores only the lines)."""

from __future__ import annotations

from sollol_cli.sharding.coordinator import CoordinatorRecord
from sollol_cli.sharding.lifecycle import Placed, parse_placement_lines, placement_lines, placement_of

LOG = """\
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors: RPC0[127.0.0.1:50052] model buffer size =    20.01 MiB
load_tensors: RPC1[127.0.0.1:50053] model buffer size =    12.50 MiB
load_tensors:   CPU_Mapped model buffer size =     4.02 MiB
llama_kv_cache: RPC0[127.0.0.1:50052] KV buffer size =     6.00 MiB
llama_kv_cache: RPC1[127.0.0.1:50053] KV buffer size =     2.00 MiB
"""


def record(rpc: list[str], *, n_layer: int | None = 7, split: list[float] | None = None) -> CoordinatorRecord:
    return CoordinatorRecord(
        "big", "d", 1, 1, "127.0.0.1", 1, "", rpc, 0.0, 0.0, 60.0, n_layer=n_layer, split=split or [],
    )  # fmt: skip


def test_parts_and_lines_say_the_same() -> None:
    rec = record(["127.0.0.1:50052", "127.0.0.1:50053", "127.0.0.1:50054"], split=[0.5, 0.5, 0.0])
    parts = placement_of(rec, LOG)
    assert parts == [
        Placed("127.0.0.1:50052", 0, 3, 20.0, 6.0),
        Placed("127.0.0.1:50053", 4, 7, 12.5, 2.0),
        Placed("127.0.0.1:50054", None, None, 0.0, 0.0),
        Placed(None, None, None, 4.0),
    ]
    lines = placement_lines(rec, LOG)
    assert lines == [
        "placement 127.0.0.1:50052: layers 0-3, model 20.0 MiB, KV 6.0 MiB",
        "placement 127.0.0.1:50053: layers 4-7, model 12.5 MiB, KV 2.0 MiB",
        "placement 127.0.0.1:50054: layers -, model 0.0 MiB, KV 0.0 MiB",
        "placement coordinator (this machine): token embeddings, model 4.0 MiB",
    ]
    assert parse_placement_lines(lines) == parts
    assert parts[-1].as_json() == {
        "device": "coordinator", "coordinator": True, "first_layer": None, "last_layer": None,
        "model_mib": 4.0, "kv_mib": 0.0,
    }  # fmt: skip


def test_lines_of_a_coordinator_on_a_node_and_other_lines() -> None:
    lines = [
        "placement [fd00::2]:50052: layers 0-12, model 100.5 MiB, KV 3.0 MiB",
        "placement coordinator (node gpu-1): token embeddings, model 8.0 MiB",
        "something else entirely",
    ]
    assert parse_placement_lines(lines) == [Placed("[fd00::2]:50052", 0, 12, 100.5, 3.0), Placed(None, None, None, 8.0)]
