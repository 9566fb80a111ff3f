"""The hybrid decision as a table: (manifest model, GGUF, what the backends report) -> (shard?, why)."""

from __future__ import annotations

from typing import Any

import pytest

from sollol_cli.backends.base import ModelEntry
from sollol_cli.backends.rpc import RpcDevice, RpcProbe, RpcState
from sollol_cli.manifest.models import Model
from sollol_cli.sharding.decision import decide
from sollol_cli.sharding.hosts import ModelFile
from sollol_cli.sharding.pool import RpcServer, ServingBackend
from sollol_cli.state import ClusterState, NodeState

GIB = 2**30


def rpc(name: str, free_gib: float | None, machine: str | None = None, state: RpcState = "ready") -> RpcServer:
    devices = (RpcDevice(0, int(free_gib * GIB), 64 * GIB),) if free_gib is not None else ()
    return RpcServer(name, "10.0.0.1", 50052, machine or name, None, RpcProbe(state, (3, 0, 0), devices))


def ollama(
    name: str, models: dict[str, float], node: str | None = None, hint_gib: float | None = None
) -> ServingBackend:
    entries = tuple(ModelEntry(m, int(size * GIB)) for m, size in models.items())
    return ServingBackend(name, node, name, int(hint_gib * GIB) if hint_gib else None, entries)


STATE = ClusterState(cluster="c", nodes={"n1": NodeState(address="10.0.0.2", mem_available_bytes=2 * GIB)})
FILE = ModelFile("/m.gguf", 8 * GIB, GIB)


@pytest.mark.parametrize(
    ("model", "file", "serving", "rpcs", "expected"),
    [
        (None, None, [], [], (False, "distribute: not a manifest model, served by the nodes that have it")),
        ({"mode": "distribute"}, FILE, [], [rpc("r1", 32)], (False, "distribute (set in the manifest)")),
        ({}, None, [], [rpc("r1", 32)], (False, "distribute: model size unknown (no GGUF found, no node reports it)")),
        (  # free memory from the rpc-servers' probes
            {"mode": "shard"}, FILE, [], [rpc("r1", 8), rpc("r2", 8)],
            (True, "shard (set in the manifest): needs 9.9 GiB; 2 rpc backends have 16.0 GiB together"),
        ),
        (  # an rpc-server the last probe found down is not counted (nor named as "memory unknown")
            {"mode": "shard"}, FILE, [], [rpc("r1", 8), rpc("r2", 8), rpc("r3", None, state="down")],
            (True, "shard (set in the manifest): needs 9.9 GiB; 2 rpc backends have 16.0 GiB together"),
        ),
        (  # n1's free memory from what `up` measured
            {}, FILE, [ollama("n1", {"big": 8}, node="n1")], [rpc("r1", 8), rpc("r2", 8)],
            (True, "shard: needs 9.9 GiB, largest node has 2.0 GiB (n1); 2 rpc backends have 16.0 GiB together"),
        ),
        (  # two rpc-servers on one machine count its memory once
            {}, FILE, [ollama("n1", {"big": 8}, node="n1")], [rpc("r1", 8, "m"), rpc("r2", 8, "m")],
            (False, "cannot run: needs 9.9 GiB, largest node has 2.0 GiB (n1); 2 rpc backends on 1 machine have 8.0 GiB together"),
        ),
        (  # no GGUF: the size a node reports
            {}, None, [ollama("n1", {"big": 1}, hint_gib=64)], [rpc("r1", 8)],
            (False, "distribute: needs 1.5 GiB, fits on n1 (64.0 GiB per manifest hint)"),
        ),
    ],
)  # fmt: skip
def test_decide(
    model: dict[str, Any] | None,
    file: ModelFile | None,
    serving: list[ServingBackend],
    rpcs: list[RpcServer],
    expected: tuple[bool, str],
) -> None:
    manifest = Model.model_validate({"name": "big", **model}) if model is not None else None
    assert decide("big", manifest, file, serving, rpcs, STATE) == expected
