"""KV cache and memory estimates from model facts (pure arithmetic, checked against published figures)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sollol_cli.sharding.gguf_info import (
    FALLBACK_VOCAB_SIZE,
    GgufInfo,
    compute_buffer_bytes,
    estimate_memory_bytes,
    kv_cache_bytes,
)

MIB = 1024**2
GIB = 1024**3


def info(
    *,
    layers: int,
    embd: int,
    heads: int,
    kv_heads: int | tuple[int, ...],
    ff: int | None = None,
    vocab: int | None = 32000,
    key_length: int | None = None,
    value_length: int | None = None,
) -> GgufInfo:
    per_layer = kv_heads if isinstance(kv_heads, tuple) else (kv_heads,) * layers
    return GgufInfo(
        path=Path("m.gguf"),
        architecture="llama",
        name=None,
        block_count=layers,
        context_length=4096,
        embedding_length=embd,
        feed_forward_length=ff,
        head_count=heads,
        head_count_kv_per_layer=per_layer,
        key_length=key_length,
        value_length=value_length,
        vocab_size=vocab,
        file_size=0,
        file_type=1,
    )


LLAMA2_7B = info(layers=32, embd=4096, heads=32, kv_heads=32, ff=11008, vocab=32000)
LLAMA3_8B = info(layers=32, embd=4096, heads=32, kv_heads=8, ff=14336, vocab=128256)
TINY = info(layers=8, embd=256, heads=8, kv_heads=4, ff=1024, vocab=32000)


@pytest.mark.parametrize(
    ("model", "context", "bytes_per_element", "expected"),
    [
        (LLAMA2_7B, 4096, 2, 2 * GIB),  # the well-known 2 GiB of llama-2-7b at 4k context, F16
        (LLAMA2_7B, 2048, 2, 1 * GIB),
        (LLAMA3_8B, 8192, 2, 1 * GIB),  # grouped-query attention: 8 KV heads of 32
        (LLAMA3_8B, 8192, 1, GIB // 2),  # q8_0-sized cache elements
        (TINY, 1024, 2, 4 * MIB),  # 2 * 8 layers * 1024 * 4 heads * 32 dims * 2 bytes
        # K and V heads of different widths (e.g. DeepSeek-style 192/128): each counted with its own width
        (
            info(layers=2, embd=1024, heads=8, kv_heads=8, key_length=192, value_length=128),
            100,
            2,
            100 * 2 * 8 * 320 * 2,
        ),
        # per-layer KV heads, zero for recurrent layers of hybrid models
        (info(layers=4, embd=512, heads=8, kv_heads=(0, 8, 0, 4)), 1000, 2, 1000 * 12 * 2 * 64 * 2),
    ],
)
def test_kv_cache_bytes(model: GgufInfo, context: int, bytes_per_element: int, expected: int) -> None:
    assert kv_cache_bytes(model, context, bytes_per_element=bytes_per_element) == expected


def test_kv_cache_is_linear_in_context() -> None:
    assert kv_cache_bytes(TINY, 4096) == 4 * kv_cache_bytes(TINY, 1024)
    assert kv_cache_bytes(TINY, 0) == 0


def test_head_dims_default_to_embedding_over_heads() -> None:
    assert (LLAMA3_8B.head_dim_k, LLAMA3_8B.head_dim_v, LLAMA3_8B.head_count_kv) == (128, 128, 8)
    mixed = info(layers=2, embd=1024, heads=8, kv_heads=(0, 2))
    assert mixed.head_count_kv == 2


@pytest.mark.parametrize(
    ("model", "context", "expected"),
    [
        # 4 bytes * 512 tokens * (logits 32000 + scores 8 heads * 1024 + FFN 3 * 1024)
        (TINY, 1024, 4 * 512 * (32000 + 8 * 1024 + 3 * 1024)),
        # a micro-batch never exceeds the context
        (TINY, 256, 4 * 256 * (32000 + 8 * 256 + 3 * 1024)),
        (LLAMA2_7B, 4096, 4 * 512 * (32000 + 32 * 4096 + 3 * 11008)),
        # unknown vocabulary and FFN width: a Llama-3-sized vocabulary and 4 * n_embd
        (
            dataclasses.replace(TINY, vocab_size=None, feed_forward_length=None),
            512,
            4 * 512 * (FALLBACK_VOCAB_SIZE + 8 * 512 + 3 * 1024),
        ),
    ],
)
def test_compute_buffer_bytes(model: GgufInfo, context: int, expected: int) -> None:
    assert compute_buffer_bytes(model, context) == expected


@pytest.mark.parametrize(
    ("model", "weights", "context"),
    [(TINY, 49_242_560, 1024), (LLAMA2_7B, 13_478_104_576, 4096), (LLAMA3_8B, 4_920_734_016, 8192)],
)
def test_memory_is_weights_plus_kv_plus_overhead(model: GgufInfo, weights: int, context: int) -> None:
    overhead = int(weights * 0.10) + compute_buffer_bytes(model, context)
    assert estimate_memory_bytes(weights, model, context) == weights + kv_cache_bytes(model, context) + overhead


def test_memory_estimate_for_the_tiny_model() -> None:
    # 49 MB of weights + 4 MiB KV + 4.9 MB (10%) + 88.6 MB compute buffer
    assert estimate_memory_bytes(49_242_560, TINY, 1024) == 146_965_792


def test_memory_grows_with_context_and_weights() -> None:
    assert estimate_memory_bytes(10**9, LLAMA3_8B, 8192) > estimate_memory_bytes(10**9, LLAMA3_8B, 4096)
    assert estimate_memory_bytes(2 * 10**9, LLAMA3_8B, 4096) > estimate_memory_bytes(10**9, LLAMA3_8B, 4096)
