"""The client compatibility matrix (tests/compat/matrix.py) is consistent: every cell names a known client,
call and backend, every client has code that makes its calls, and every ❌ documents a cell that exists."""

from __future__ import annotations

from tests.compat.clients import OBSERVERS
from tests.compat.matrix import BACKENDS, CALL_NOTES, CALLS, CLIENTS, FAILURES, ONLY_ON, SUPPORTED, cells


def test_every_client_is_described_and_has_an_observer() -> None:
    assert list(SUPPORTED) == list(CLIENTS) == list(OBSERVERS)


def test_supported_calls_are_known_columns() -> None:
    for client, calls in SUPPORTED.items():
        assert set(calls) <= set(CALLS), client
        assert len(set(calls)) == len(calls), client
    assert set(CALL_NOTES) <= set(CALLS)
    assert all(set(backends) <= set(BACKENDS) for backends in ONLY_ON.values())


def test_every_documented_failure_is_a_cell() -> None:
    every = set(cells())
    for (client, call, backend), failure in FAILURES.items():
        backends = list(BACKENDS) if backend == "*" else [backend]
        assert all((client, call, b) in every for b in backends), (client, call, backend)
        assert failure.reason and failure.match


def test_cells_cover_each_client_on_each_backend_and_pull_only_on_ollama() -> None:
    every = cells()
    assert len(every) == len(set(every))
    assert {(client, backend) for client, _, backend in every} == {(c, b) for c in CLIENTS for b in BACKENDS}
    assert {backend for _, call, backend in every if call == "pull"} == {"ollama"}
    # within one client and backend, ps runs before unload (unload empties ps)
    for client in CLIENTS:
        order = [call for c, call, b in every if c == client and b == "sharded"]
        if "unload" in order:
            assert order.index("ps") < order.index("unload")
