"""How many layers each rpc backend gets when their speeds are known (pure).

Why not in proportion to speed: llama.cpp runs a sharded model's layers one after another, backend after
backend, for every token. The time of one token is therefore

    T = sum_i n_i * t_i + hops

with n_i the layers on backend i and t_i the time one layer takes there; backends never work at once. T is
linear in the n_i, so under the constraints n_i <= cap_i (what each backend's memory holds) and sum n_i = L,
the minimum puts as many layers as possible on the backend with the smallest t_i, then on the next, and so
on: fill the fastest backend up to its memory, then the next fastest. A split in proportion to speed (or to
memory) keeps giving the slow backend layers it need not hold, and the slow backend sets the pace. Filling
also leaves out backends the others make unnecessary, which saves their network hop.

Speeds are measured as bytes of layer weights a backend runs through per second (decoding one token reads
every weight of a layer once, so t_i = layer bytes / speed_i); the expected tokens/s are 1 / T without the
hops, an upper bound that the coordinator's measured speed is shown next to.

The rules for what is not known:
- a backend without a measured speed (never measured, or its measurement failed), or all speeds within
  SPEED_TOLERANCE of each other (measurements on a loaded machine vary by that much): None, and the caller
  splits by memory as before (even or proportional, headroom everywhere). Ranking an unmeasured backend
  anywhere would be a guess, and a failed measurement must not move every layer;
- unknown memory: the average capacity of the backends whose memory is known, unlimited when none is;
- ties keep the given order (llama-server's `--rpc` order, which is also the order layers are placed in);
- when the backends cannot hold every layer by this estimate: None (split by memory, as without speeds).
A manifest `tensor_split` is applied by the caller before any of this: it always wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Speeds closer than this (fastest / slowest) count as equal: the memory split is kept. Two identical
# rpc-servers measured on a busy machine can differ by tens of percent; a throttled or older one by 2-3x.
SPEED_TOLERANCE = 1.5
# Part of a backend's free memory that layers may take: the rest is for its compute buffers.
LAYER_MEMORY_FRACTION = 0.9


@dataclass(frozen=True)
class BackendSpeed:
    """One rpc backend as the split sees it: the memory it can give this model and its measured speed."""

    memory_bytes: int | None  # None: unknown
    bytes_per_s: float | None  # weights run through per second; None: not measured


def layer_capacity(backends: Sequence[BackendSpeed], layer_bytes: int, layers: int) -> list[int]:
    """Whole layers each backend's memory holds (capped at `layers`); unknown memory gets the known average."""

    def holds(memory: int) -> int:
        return min(layers, int(memory * LAYER_MEMORY_FRACTION) // max(layer_bytes, 1))

    known = [holds(b.memory_bytes) for b in backends if b.memory_bytes is not None]
    fallback = sum(known) // len(known) if known else layers
    return [fallback if b.memory_bytes is None else holds(b.memory_bytes) for b in backends]


def split_by_speed(backends: Sequence[BackendSpeed], layers: int, layer_bytes: int) -> tuple[int, ...] | None:
    """Layers per backend, in the given order (zero for a backend it does not need), or None when the speeds
    do not decide (see the module docstring): the caller then splits by memory."""
    speeds = [b.bytes_per_s for b in backends if b.bytes_per_s is not None and b.bytes_per_s > 0]
    if not backends or layers <= 0 or len(speeds) < len(backends):
        return None
    if max(speeds) < SPEED_TOLERANCE * min(speeds):
        return None
    caps = layer_capacity(backends, layer_bytes, layers)
    counts = [0] * len(backends)
    remaining = layers
    for index in sorted(range(len(backends)), key=lambda i: (-speeds[i], i)):
        take = min(caps[index], remaining)
        counts[index] = take
        remaining -= take
    if remaining:
        return None
    return tuple(counts)


def expected_tokens_per_s(
    layer_counts: Sequence[int], layer_bytes: int, backends: Sequence[BackendSpeed]
) -> float | None:
    """1 / (sum of layers x time per layer): compute only, no network hops. None when a backend that holds
    layers has no measured speed."""
    held = [count * layer_bytes for count in layer_counts]
    return tokens_per_s_for(held, [b.bytes_per_s for b in backends])


def tokens_per_s_for(held_bytes: Sequence[float], speeds: Sequence[float | None]) -> float | None:
    """The same from the bytes of weights each backend holds (a loaded coordinator's log says them)."""
    seconds = 0.0
    for held, speed in zip(held_bytes, speeds, strict=True):
        if held <= 0:
            continue
        if speed is None or speed <= 0:
            return None
        seconds += held / speed
    return 1.0 / seconds if seconds > 0 and math.isfinite(seconds) else None
