"""Choosing the rpc backends for a coordinator, as a table: probes in, endpoints and split out (or a refusal)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sollol_cli.backends.rpc import RpcDevice, RpcProbe
from sollol_cli.errors import BackendError, NoHealthyBackend, NotEnoughMemory, SollolError
from sollol_cli.manifest.models import Model
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.planning import RpcChoice, choose_rpc_servers
from sollol_cli.sharding.pool import RpcServer

GIB = 2**30
FILE = ModelFile("/m.gguf", 3 * GIB, GIB)


def rpc(
    port: int, state: str = "ready", free_gib: float | None = 4, protocol: Any = (3, 0, 0), machine: str = ""
) -> RpcServer:
    devices = (RpcDevice(0, int(free_gib * GIB), 8 * GIB),) if free_gib is not None else ()
    probe = RpcProbe(state, protocol, devices)  # type: ignore[arg-type]
    return RpcServer(f"r{port}", "10.0.0.1", port, machine or f"m{port}", None, probe)


@pytest.mark.parametrize(
    ("servers", "model", "expected"),
    [
        (
            [rpc(1, free_gib=6), rpc(2, free_gib=2)], {},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.75, 0.25),
                      {"10.0.0.1:1": [6 * GIB, 8 * GIB], "10.0.0.1:2": [2 * GIB, 8 * GIB]}),
        ),
        (  # a down one is left out when the rest can hold the model
            [rpc(1, free_gib=6), rpc(2, state="down")], {},
            RpcChoice(("10.0.0.1:1",), (1.0,), {"10.0.0.1:1": [6 * GIB, 8 * GIB]}),
        ),
        (  # the manifest's tensor_split, when it has one share per ready backend
            [rpc(1), rpc(2)], {"tensor_split": [1, 3]},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.25, 0.75),
                      {"10.0.0.1:1": [4 * GIB, 8 * GIB], "10.0.0.1:2": [4 * GIB, 8 * GIB]}, split_by="manifest"),
        ),
        (  # memory unknown: an even split, nothing recorded
            [rpc(1, free_gib=None), rpc(2, free_gib=None)], {},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.5, 0.5), {}),
        ),
    ],
)  # fmt: skip
def test_choice(servers: list[RpcServer], model: dict[str, Any], expected: RpcChoice) -> None:
    assert choose_rpc_servers(Model.model_validate({"name": "big", **model}), FILE, servers, "3.0.0") == expected


# 3 GiB of weights and 1 GiB of KV over 7 layers + the output layer: 512 MiB a layer
LAYERED = ModelFile("/m.gguf", 3 * GIB, GIB, n_layer=7)
FAST, SLOW = 4 * GIB, GIB  # bytes of layer weights per second


@pytest.mark.parametrize(
    ("servers", "model", "speeds", "expected"),
    [
        (  # the fast one (second in order) filled to its memory (3.6 GiB: 7 layers), the slow one the rest
            [rpc(1, free_gib=4), rpc(2, free_gib=4)], {}, {"10.0.0.1:1": SLOW, "10.0.0.1:2": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (1.0, 7.0),
                      {"10.0.0.1:1": [4 * GIB, 8 * GIB], "10.0.0.1:2": [4 * GIB, 8 * GIB]}, split_by="speed",
                      expected_tokens_per_s=round(1 / (0.5 + 7 * 0.125), 1)),
        ),
        (  # the fast one holds it all: the slow one is not attached
            [rpc(1, free_gib=6), rpc(2, free_gib=6)], {}, {"10.0.0.1:1": FAST, "10.0.0.1:2": SLOW},
            RpcChoice(("10.0.0.1:1",), (8.0,), {"10.0.0.1:1": [6 * GIB, 8 * GIB]}, split_by="speed",
                      expected_tokens_per_s=1.0),
        ),
        (  # speeds within the tolerance: the memory split, with what it is expected to give
            [rpc(1, free_gib=4), rpc(2, free_gib=4)], {}, {"10.0.0.1:1": FAST, "10.0.0.1:2": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.5, 0.5),
                      {"10.0.0.1:1": [4 * GIB, 8 * GIB], "10.0.0.1:2": [4 * GIB, 8 * GIB]}, split_by="memory",
                      expected_tokens_per_s=1.0),
        ),
        (  # split_by: memory keeps the memory split; the speeds still say what to expect of it
            [rpc(1, free_gib=4), rpc(2, free_gib=4)], {"split_by": "memory"},
            {"10.0.0.1:1": SLOW, "10.0.0.1:2": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.5, 0.5),
                      {"10.0.0.1:1": [4 * GIB, 8 * GIB], "10.0.0.1:2": [4 * GIB, 8 * GIB]}, split_by="memory",
                      expected_tokens_per_s=round(1 / (4 * 0.5 + 4 * 0.125), 1)),
        ),
        (  # the manifest's tensor_split wins over any speed
            [rpc(1, free_gib=4), rpc(2, free_gib=4)], {"tensor_split": [1, 1]},
            {"10.0.0.1:1": SLOW, "10.0.0.1:2": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (0.5, 0.5),
                      {"10.0.0.1:1": [4 * GIB, 8 * GIB], "10.0.0.1:2": [4 * GIB, 8 * GIB]}, split_by="manifest",
                      expected_tokens_per_s=round(1 / (4 * 0.5 + 4 * 0.125), 1)),
        ),
        (  # manifest `memory_mib` caps what is planned on a backend (8 GiB free, 4 GiB allowed: 7 layers);
            # status still shows what it has
            [rpc(1, free_gib=8), RpcServer("r2", "10.0.0.1", 2, "m2", None, rpc(2, free_gib=8).probe,
                                           memory_cap=4 * GIB)], {},
            {"10.0.0.1:1": SLOW, "10.0.0.1:2": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2"), (1.0, 7.0),
                      {"10.0.0.1:1": [8 * GIB, 8 * GIB], "10.0.0.1:2": [8 * GIB, 8 * GIB]}, split_by="speed",
                      expected_tokens_per_s=round(1 / (0.5 + 7 * 0.125), 1)),
        ),
        (  # two rpc-servers on one machine share its memory: 2 GiB each, 3 layers; the third is fast too
            [rpc(1, free_gib=4, machine="m"), rpc(2, free_gib=4, machine="m"), rpc(3, free_gib=2)], {},
            {"10.0.0.1:1": FAST, "10.0.0.1:2": SLOW, "10.0.0.1:3": FAST},
            RpcChoice(("10.0.0.1:1", "10.0.0.1:2", "10.0.0.1:3"), (3.0, 2.0, 3.0),
                      {f"10.0.0.1:{p}": [free * GIB, 8 * GIB] for p, free in ((1, 4), (2, 4), (3, 2))},
                      split_by="speed",
                      expected_tokens_per_s=round(1 / (6 * 0.125 + 2 * 0.5), 1)),
        ),
    ],
)  # fmt: skip
def test_choice_by_speed(
    servers: list[RpcServer], model: dict[str, Any], speeds: dict[str, float], expected: RpcChoice
) -> None:
    chosen = choose_rpc_servers(
        Model.model_validate({"name": "big", **model}), LAYERED, servers, "3.0.0", speeds=speeds
    )
    assert dataclasses.replace(chosen, speeds={}) == expected
    assert chosen.speeds == {endpoint: speeds[endpoint] for endpoint in chosen.endpoints}  # kept for the record


@pytest.mark.parametrize(
    ("servers", "error", "message"),
    [
        ([], NoHealthyBackend, "model 'big' needs sharding but no rpc backend is ready: none configured"),
        (
            [rpc(1, state="busy"), rpc(2, state="down")], NoHealthyBackend,
            "model 'big' needs sharding but no rpc backend is ready: r1 (10.0.0.1:1) is busy (another coordinator "
            "is attached); r2 (10.0.0.1:2) is down",
        ),
        (
            [rpc(1, free_gib=2), rpc(2, state="down")], NotEnoughMemory,
            "model 'big' needs 4.0 GiB but the ready rpc backends have 2.0 GiB; missing: r2 (10.0.0.1:2) is down",
        ),
        (
            [rpc(1), rpc(2, protocol=(2, 0, 0))], BackendError,
            "rpc backend r2 (10.0.0.1:2) speaks protocol 2.0.0, the coordinator's llama.cpp speaks 3.0.0",
        ),
    ],
)  # fmt: skip
def test_refusal(servers: list[RpcServer], error: type[SollolError], message: str) -> None:
    with pytest.raises(error) as raised:
        choose_rpc_servers(Model.model_validate({"name": "big"}), FILE, servers, "3.0.0")
    assert raised.value.message == message
