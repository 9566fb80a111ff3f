"""The hybrid decision and the tensor split as tables: memory figures in, mode and its sentence out."""

from __future__ import annotations

import pytest

from sollol_cli.errors import UsageError
from sollol_cli.manifest.models import ModelMode
from sollol_cli.placement import (
    GIB,
    ModeDecision,
    ModelSize,
    NodeMemory,
    Placement,
    RpcMemory,
    decide_mode,
    estimate_overhead_bytes,
    split_for,
)

MIB = 1024**2


def g(gib: float) -> int:
    return int(gib * GIB)


def size(weights: float, kv: float = 0.0, overhead: float = 0.0) -> ModelSize:
    return ModelSize(g(weights), g(kv), g(overhead))


def node(name: str, free: float | None = None, hint: float | None = None, machine: str | None = None) -> NodeMemory:
    return NodeMemory(name, machine or name, None if free is None else g(free), None if hint is None else g(hint))


def rpc(name: str, free: float | None = None, hint: float | None = None, machine: str | None = None) -> RpcMemory:
    return RpcMemory(name, machine or name, None if free is None else g(free), None if hint is None else g(hint))


def dev(name: str, free: float | None, machine: str, gpu: str | None = None) -> RpcMemory:
    """A device of an rpc-server serving several: `backend#index`, on a GPU (`gpu`) or the machine's CPU."""
    backend = name.split("#")[0]
    return RpcMemory(name, machine, None if free is None else g(free), None, backend, gpu)


AUTO, DISTRIBUTE, SHARD = ModelMode.auto, ModelMode.distribute, ModelMode.shard
# one rpc-server serving a 2 GiB GPU and the CPU, beside a CPU-only rpc-server on the same 24 GiB machine
GPU_AND_CPU = [dev("r1#0", 2, "m1", "Vulkan0"), dev("r1#1", 24, "m1"), rpc("r2", free=24, machine="m1")]
TWO_RPC = [rpc("r1", free=6), rpc("r2", free=6)]

# (id, model size, manifest mode, nodes with the model, rpc backends, expected decision)
DECIDE_CASES: list[tuple[str, ModelSize, ModelMode, list[NodeMemory], list[RpcMemory], ModeDecision]] = [
    ("fits-on-two-nodes", size(4, 0.5, 0.6), AUTO,
     [node("gpu2", free=20.1), node("cpu1", free=3), node("gpu1", free=22)], TWO_RPC,
     ModeDecision(Placement.distribute,
                  "distribute: needs 5.1 GiB, fits on gpu1 (22.0 GiB free), gpu2 (20.1 GiB free)", ["gpu1", "gpu2"])),
    ("fits-exactly", size(8), AUTO, [node("n1", free=8)], [],
     ModeDecision(Placement.distribute, "distribute: needs 8.0 GiB, fits on n1 (8.0 GiB free)", ["n1"])),
    ("weights-alone-fit", size(7, 0, 0.5), AUTO, [node("n1", free=8.5)], TWO_RPC,
     ModeDecision(Placement.distribute, "distribute: needs 7.5 GiB, fits on n1 (8.5 GiB free)", ["n1"])),
    ("kv-cache-pushes-over", size(7, 1.5, 0.5), AUTO, [node("n1", free=8.5)], TWO_RPC,
     ModeDecision(Placement.shard,
                  "shard: needs 9.0 GiB, largest node has 8.5 GiB (n1); 2 rpc backends have 12.0 GiB together",
                  ["r1", "r2"])),
    ("on-no-node-shards", size(5), AUTO, [], TWO_RPC,
     ModeDecision(Placement.shard,
                  "shard: needs 5.0 GiB, no node serves 'big' whole; 2 rpc backends have 12.0 GiB together",
                  ["r1", "r2"])),
    ("cannot-run", size(41.3), AUTO, [node("gpu1", free=23.5)], [rpc("r1", free=20), rpc("r2", free=10)],
     ModeDecision(Placement.none,
                  "cannot run: needs 41.3 GiB, largest node has 23.5 GiB (gpu1); 2 rpc backends have 30.0 GiB together",
                  [])),
    ("cannot-run-no-rpc", size(41.3), AUTO, [node("gpu1", free=23.5)], [],
     ModeDecision(Placement.none,
                  "cannot run: needs 41.3 GiB, largest node has 23.5 GiB (gpu1); there are no rpc backends", [])),
    ("cannot-run-anywhere", size(1), AUTO, [], [],
     ModeDecision(Placement.none, "cannot run: needs 1.0 GiB, no node serves 'big' whole; there are no rpc backends",
                  [])),
    # measured memory beats the manifest's hint
    ("hint-used-when-nothing-measured", size(5), AUTO, [node("n1", hint=16)], [],
     ModeDecision(Placement.distribute, "distribute: needs 5.0 GiB, fits on n1 (16.0 GiB per manifest hint)", ["n1"])),
    ("measured-beats-hint", size(5), AUTO, [node("n1", free=4, hint=16)], [],
     ModeDecision(Placement.none, "cannot run: needs 5.0 GiB, largest node has 4.0 GiB (n1); there are no rpc backends",
                  [])),
    ("measured-zero-beats-hint", size(5), AUTO, [node("n1", free=0, hint=16)], TWO_RPC,
     ModeDecision(Placement.shard,
                  "shard: needs 5.0 GiB, largest node has 0.0 GiB (n1); 2 rpc backends have 12.0 GiB together",
                  ["r1", "r2"])),
    ("unknown-memory-assumed-to-fit", size(5), AUTO, [node("n1", free=2), node("n2")], TWO_RPC,
     ModeDecision(Placement.distribute, "distribute: needs 5.0 GiB; memory of n2 is unknown, assuming it fits",
                  ["n2"])),
    # rpc-servers on one machine share its memory
    ("shared-machine-counted-once", size(35), AUTO, [],
     [rpc("r1", free=20, machine="m1"), rpc("r2", free=20, machine="m1"), rpc("r3", free=10, machine="m2")],
     ModeDecision(Placement.none,
                  "cannot run: needs 35.0 GiB, no node serves 'big' whole; "
                  "3 rpc backends on 2 machines have 30.0 GiB together", [])),
    ("shared-machine-takes-largest-figure", size(25), AUTO, [],
     [rpc("r1", free=12, machine="m1"), rpc("r2", free=15, machine="m1"), rpc("r3", free=10, machine="m2")],
     ModeDecision(Placement.shard,
                  "shard: needs 25.0 GiB, no node serves 'big' whole; 3 rpc backends on 2 machines have 25.0 GiB together",
                  ["r1", "r2", "r3"])),
    ("shared-machine-measured-beats-hint", size(15), AUTO, [],
     [rpc("r1", free=10, machine="m1"), rpc("r2", hint=40, machine="m1")],
     ModeDecision(Placement.none,
                  "cannot run: needs 15.0 GiB, no node serves 'big' whole; "
                  "2 rpc backends on 1 machine have 10.0 GiB together", [])),
    ("rpc-hints-add-up", size(15), AUTO, [], [rpc("r1", hint=8), rpc("r2", hint=8)],
     ModeDecision(Placement.shard,
                  "shard: needs 15.0 GiB, no node serves 'big' whole; 2 rpc backends have 16.0 GiB together",
                  ["r1", "r2"])),
    ("rpc-unknown-memory", size(15), AUTO, [node("n1", free=4)], [rpc("r1", free=10), rpc("r2")],
     ModeDecision(Placement.shard,
                  "shard: needs 15.0 GiB, largest node has 4.0 GiB (n1); 2 rpc backends have 10.0 GiB together "
                  "(memory of r2 unknown), assuming the unknown memory makes up the rest", ["r1", "r2"])),
    # memory per device: a GPU's own VRAM counts beside the machine's RAM, which its CPU devices share
    ("gpu-vram-beside-shared-ram", size(25), AUTO, [], GPU_AND_CPU,
     ModeDecision(Placement.shard,
                  "shard: needs 25.0 GiB, no node serves 'big' whole; 2 rpc backends with 3 devices on 1 machine "
                  "have 26.0 GiB together", ["r1", "r2"])),
    ("gpu-vram-not-enough-with-ram", size(27), AUTO, [], GPU_AND_CPU,
     ModeDecision(Placement.none,
                  "cannot run: needs 27.0 GiB, no node serves 'big' whole; 2 rpc backends with 3 devices on 1 machine "
                  "have 26.0 GiB together", [])),
    ("two-gpus-of-one-machine-both-count", size(18), AUTO, [],
     [dev("g1", 10, "m1", "CUDA0"), dev("g2", 10, "m1", "CUDA1")],
     ModeDecision(Placement.shard,
                  "shard: needs 18.0 GiB, no node serves 'big' whole; 2 rpc backends on 1 machine have 20.0 GiB "
                  "together", ["g1", "g2"])),
    ("one-gpu-named-by-two-servers-once", size(18), AUTO, [],
     [dev("g1", 10, "m1", "CUDA0"), dev("g2", 10, "m1", "CUDA0")],
     ModeDecision(Placement.none,
                  "cannot run: needs 18.0 GiB, no node serves 'big' whole; 2 rpc backends on 1 machine have 10.0 GiB "
                  "together", [])),
    ("one-backend-two-devices", size(3), SHARD, [], [dev("r1#0", 2, "m1", "Vulkan0"), dev("r1#1", 24, "m1")],
     ModeDecision(Placement.shard, "shard (set in the manifest): needs 3.0 GiB; 1 rpc backend with 2 devices has "
                  "26.0 GiB", ["r1"])),
    ("unknown-device-named", size(30), AUTO, [], [dev("r1#0", None, "m1", "CUDA0"), dev("r1#1", 24, "m1")],
     ModeDecision(Placement.shard, "shard: needs 30.0 GiB, no node serves 'big' whole; 1 rpc backend with 2 "
                  "devices has 24.0 GiB (memory of r1#0 unknown), assuming the unknown memory makes up the rest",
                  ["r1"])),
    # the manifest's mode wins, and the reason says when that is risky
    ("forced-distribute-fits", size(5), DISTRIBUTE, [node("n1", free=8)], TWO_RPC,
     ModeDecision(Placement.distribute, "distribute (set in the manifest): needs 5.0 GiB, fits on n1 (8.0 GiB free)",
                  ["n1"])),
    ("forced-distribute-too-big", size(41.3), DISTRIBUTE, [node("gpu1", free=23.5), node("gpu2", hint=16)], TWO_RPC,
     ModeDecision(Placement.distribute,
                  "distribute (set in the manifest): needs 41.3 GiB, but largest node has 23.5 GiB (gpu1); "
                  "it may fail to load or run slowly", [])),
    ("forced-distribute-unknown", size(5), DISTRIBUTE, [node("n1")], [],
     ModeDecision(Placement.distribute, "distribute (set in the manifest): needs 5.0 GiB; memory of n1 is unknown",
                  ["n1"])),
    ("forced-distribute-on-no-node", size(5), DISTRIBUTE, [], TWO_RPC,
     ModeDecision(Placement.distribute, "distribute (set in the manifest): needs 5.0 GiB, but no node has 'big'", [])),
    ("forced-shard-although-it-fits", size(5), SHARD, [node("n1", free=80)], TWO_RPC,
     ModeDecision(Placement.shard, "shard (set in the manifest): needs 5.0 GiB; 2 rpc backends have 12.0 GiB together",
                  ["r1", "r2"])),
    ("forced-shard-too-little", size(20), SHARD, [], TWO_RPC,
     ModeDecision(Placement.shard,
                  "shard (set in the manifest): needs 20.0 GiB; 2 rpc backends have 12.0 GiB together; "
                  "that is less than it needs, loading may fail", ["r1", "r2"])),
    ("forced-shard-one-rpc", size(2), SHARD, [], [rpc("r1", hint=4)],
     ModeDecision(Placement.shard, "shard (set in the manifest): needs 2.0 GiB; 1 rpc backend has 4.0 GiB",
                  ["r1"])),
    ("forced-shard-no-rpc", size(5), SHARD, [node("n1", free=80)], [],
     ModeDecision(Placement.shard, "shard (set in the manifest): needs 5.0 GiB, but there are no rpc backends to "
                  "shard over", [])),
]  # fmt: skip


@pytest.mark.parametrize(
    ("model_size", "mode", "nodes", "rpcs", "expected"),
    [c[1:] for c in DECIDE_CASES],
    ids=[c[0] for c in DECIDE_CASES],
)
def test_decide_mode(
    model_size: ModelSize, mode: ModelMode, nodes: list[NodeMemory], rpcs: list[RpcMemory], expected: ModeDecision
) -> None:
    assert decide_mode("big", model_size, mode, nodes, rpcs) == expected


def test_model_size_adds_weights_kv_and_overhead() -> None:
    assert ModelSize(weights_bytes=100, kv_bytes=20, overhead_bytes=3).total_bytes == 123


@pytest.mark.parametrize(
    ("weights", "overhead"),
    [(0, 512 * MIB), (g(10), 512 * MIB + g(0.5)), (g(40), 512 * MIB + g(2))],
    ids=["empty", "10-gib", "40-gib"],
)
def test_estimate_overhead_bytes(weights: int, overhead: int) -> None:
    assert estimate_overhead_bytes(weights) == overhead


# (id, rpc backends, manifest override, expected shares)
SPLIT_CASES: list[tuple[str, list[RpcMemory], list[float] | None, list[float]]] = [
    ("none", [], None, []),
    ("one", [rpc("r1", free=3)], None, [1.0]),
    ("proportional", [rpc("r1", free=10), rpc("r2", free=30)], None, [0.25, 0.75]),
    ("hints", [rpc("r1", hint=10), rpc("r2", hint=30)], None, [0.25, 0.75]),
    ("measured-beats-hint", [rpc("r1", free=10, hint=100), rpc("r2", hint=30)], None, [0.25, 0.75]),
    ("shared-machine-split-evenly",
     [rpc("r1", free=20, machine="m1"), rpc("r2", free=20, machine="m1"), rpc("r3", free=20, machine="m2")],
     None, [0.25, 0.25, 0.5]),
    ("unknown-gets-average", [rpc("r1", free=10), rpc("r2"), rpc("r3", free=30)], None, [1 / 6, 2 / 6, 3 / 6]),
    ("nothing-known-even", [rpc("r1"), rpc("r2")], None, [0.5, 0.5]),
    ("all-zero-even", [rpc("r1", free=0), rpc("r2", free=0)], None, [0.5, 0.5]),
    ("override-scaled", [rpc("r1", free=30), rpc("r2", free=10)], [1, 3], [0.25, 0.75]),
    ("override-with-zero-share", [rpc("r1", free=30), rpc("r2", free=10)], [0, 2], [0.0, 1.0]),
    # one share per device: a GPU's by its VRAM, the machine's CPU devices split its RAM
    ("gpu-and-cpu-devices", GPU_AND_CPU, None, [2 / 26, 12 / 26, 12 / 26]),
    ("two-gpus-of-one-machine", [dev("g1", 10, "m1", "CUDA0"), dev("g1#1", 30, "m1", "CUDA1")], None, [0.25, 0.75]),
    ("override-per-device", GPU_AND_CPU, [1, 1, 2], [0.25, 0.25, 0.5]),
]  # fmt: skip


@pytest.mark.parametrize(("rpcs", "override", "shares"), [c[1:] for c in SPLIT_CASES], ids=[c[0] for c in SPLIT_CASES])
def test_split_for(rpcs: list[RpcMemory], override: list[float] | None, shares: list[float]) -> None:
    assert split_for(rpcs, override) == pytest.approx(shares)


SPLIT_ERRORS = [
    ("wrong-length", [1.0], "tensor_split has 1 shares but the model is sharded over 2 rpc backends; "
     "give one share per rpc backend"),
    ("negative", [1.0, -1.0], "tensor_split needs non-negative shares with a positive sum"),
    ("all-zero", [0.0, 0.0], "tensor_split needs non-negative shares with a positive sum"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), [c[1:] for c in SPLIT_ERRORS], ids=[c[0] for c in SPLIT_ERRORS])
def test_split_for_rejects_bad_override(override: list[float], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        split_for(TWO_RPC, override)
    assert raised.value.message == message


def test_split_for_asks_one_share_per_device() -> None:
    with pytest.raises(UsageError) as raised:
        split_for(GPU_AND_CPU, [1, 1])
    assert raised.value.message == (
        "tensor_split has 2 shares but the model is sharded over 3 devices of 2 rpc backends; give one share per device"
    )
