"""The speed-aware layer split as a table: memory and speeds in, layers per backend out (or None: split by
memory), and the tokens/s such a split is expected to give."""

from __future__ import annotations

import pytest

from sollol_cli.sharding.layer_split import BackendSpeed, expected_tokens_per_s, layer_capacity, split_by_speed

MB = 1_000_000
LAYER = 10 * MB  # bytes of one layer; a backend holds int(memory * 0.9) // LAYER layers


def b(memory_mb: int | None, speed: float | None) -> BackendSpeed:
    return BackendSpeed(None if memory_mb is None else memory_mb * MB, speed)


@pytest.mark.parametrize(
    ("backends", "layers", "expected"),
    [
        # the fast one first, filled to its memory (90 MB: 8 layers of 10 MB), the slow one the rest
        ([b(100, 3.0), b(100, 1.0)], 12, (9, 3)),
        # --rpc order kept: the fast one is second, it still gets its fill
        ([b(100, 1.0), b(100, 3.0)], 12, (3, 9)),
        # the fast one holds everything: the slow one is left out (0 layers, no hop)
        ([b(200, 3.0), b(200, 1.0)], 12, (12, 0)),
        # three backends: fastest, then the next fastest, the slowest only what is left
        ([b(60, 1.0), b(60, 5.0), b(60, 2.0)], 12, (2, 5, 5)),
        # the slow one must be used: the fast one cannot hold it all
        ([b(30, 9.0), b(200, 1.0)], 12, (2, 10)),
        # tie between the two fast ones: the first in order is filled first
        ([b(60, 4.0), b(60, 4.0), b(60, 1.0)], 12, (5, 5, 2)),
        # unknown memory: the known average (9 layers here)
        ([b(100, 3.0), b(None, 1.0)], 12, (9, 3)),
        ([b(None, 3.0), b(100, 1.0)], 12, (9, 3)),
        # no memory known at all: unlimited, the fastest takes everything
        ([b(None, 1.0), b(None, 3.0)], 12, (0, 12)),
    ],
)  # fmt: skip
def test_split(backends: list[BackendSpeed], layers: int, expected: tuple[int, ...]) -> None:
    assert split_by_speed(backends, layers, LAYER) == expected


@pytest.mark.parametrize(
    "backends",
    [
        [b(100, None), b(100, None)],  # no speed known: memory decides
        [b(100, None), b(100, 2.0)],  # one not measured (or its measurement failed): memory decides
        [b(100, 1.2), b(100, 1.0)],  # within the tolerance: measurement noise, memory decides
        [b(50, 3.0), b(50, 1.0)],  # together they hold 8 of 12 layers: the memory split, as without speeds
        [b(200, 1.0)],  # one backend: nothing to choose
        [],
    ],
)
def test_speeds_do_not_decide(backends: list[BackendSpeed]) -> None:
    assert split_by_speed(backends, 12, LAYER) is None


def test_capacity_caps_at_the_layer_count() -> None:
    assert layer_capacity([b(10_000, 1.0), b(25, 1.0), b(None, 1.0)], LAYER, 12) == [12, 2, 7]


@pytest.mark.parametrize(
    ("counts", "backends", "expected"),
    [
        # 9 layers at 3 layers/s... in bytes: 9 * 10 MB / 30 MB/s + 3 * 10 MB / 10 MB/s = 3 + 3 s
        ((9, 3), [b(100, 30 * MB), b(100, 10 * MB)], 1 / 6),
        ((12, 0), [b(200, 30 * MB), b(200, None)], 1 / 4),  # a backend without layers needs no speed
        ((6, 6), [b(100, 30 * MB), b(100, None)], None),  # one that holds layers does
        ((0, 0), [b(100, 30 * MB), b(100, 10 * MB)], None),
    ],
)  # fmt: skip
def test_expected_tokens_per_s(counts: tuple[int, ...], backends: list[BackendSpeed], expected: float | None) -> None:
    got = expected_tokens_per_s(counts, LAYER, backends)
    assert got == (None if expected is None else pytest.approx(expected))


def test_speed_split_is_faster_than_an_even_one() -> None:
    """The point of the rule: on the table's first row, the filled split beats the even one by the model."""
    backends = [b(100, 30 * MB), b(100, 10 * MB)]
    filled = split_by_speed(backends, 12, LAYER)
    assert filled is not None
    fast, even = expected_tokens_per_s(filled, LAYER, backends), expected_tokens_per_s((6, 6), LAYER, backends)
    assert fast is not None and even is not None and fast > even
