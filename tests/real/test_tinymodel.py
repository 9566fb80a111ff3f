"""The generated test model: a valid llama GGUF with the preset's metadata, deterministic, generated once."""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from sollol_cli import events
from sollol_cli.errors import UsageError
from sollol_cli.llamacpp import tinymodel
from sollol_cli.llamacpp.sdist import LLAMA_CPP_PYTHON_VERSION
from sollol_cli.llamacpp.tinymodel import (
    CHAT_TEMPLATE,
    PRESETS,
    ensure_tiny_model,
    model_path,
    write_model,
)
from sollol_cli.settings import Settings
from sollol_cli.sharding.gguf_info import read_gguf_info, read_metadata
from tests.harness.llama import ServerGroup

pytestmark = pytest.mark.real

BLOCK_TENSORS = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]


def field(reader: gguf.GGUFReader, key: str) -> Any:
    return reader.fields[key].contents()


def vocab_file() -> Path:
    return Settings().cache_dir / "models" / f"vocab-{LLAMA_CPP_PYTHON_VERSION}-ggml-vocab-llama-spm.gguf"


def fresh_cache(tmp_path: Path) -> Path:
    """A cache dir that shares only the pinned sdist (so nothing is downloaded again)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "sdist").symlink_to(Settings().cache_dir / "sdist", target_is_directory=True)
    return cache


def test_tiny_model_has_the_llama_metadata(tiny_gguf: Path) -> None:
    reader = gguf.GGUFReader(tiny_gguf)
    expected = {
        "general.architecture": "llama",
        "general.name": "sollol-tiny",
        "general.file_type": gguf.LlamaFileType.MOSTLY_F16,
        "llama.context_length": 4096,
        "llama.embedding_length": 256,
        "llama.block_count": 8,
        "llama.feed_forward_length": 1024,
        "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 4,
        "llama.rope.dimension_count": 32,
        "llama.vocab_size": 32000,
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    assert {key: field(reader, key) for key in expected} == expected
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)


def test_tokenizer_is_copied_from_the_pinned_vocab(tiny_gguf: Path) -> None:
    model, vocab = gguf.GGUFReader(tiny_gguf), gguf.GGUFReader(vocab_file())
    keys = [key for key in vocab.fields if key.startswith("tokenizer.ggml.")]
    assert {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"} <= set(keys)
    assert {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.model"} <= set(keys)
    for key in keys:
        assert model.fields[key].types == vocab.fields[key].types, key
        assert field(model, key) == field(vocab, key), key
    assert field(model, "tokenizer.ggml.tokens")[:3] == ["<unk>", "<s>", "</s>"]


def test_tensors_have_llama_names_shapes_and_types(tiny_gguf: Path) -> None:
    reader = gguf.GGUFReader(tiny_gguf)
    tensors = {t.name: t for t in reader.tensors}
    names = ["token_embd.weight", "output_norm.weight", "output.weight"]
    names += [f"blk.{i}.{part}.weight" for i in range(8) for part in BLOCK_TENSORS]
    assert [t.name for t in reader.tensors] == names
    shapes = {  # GGUF order (ne0, ne1): input width first
        "token_embd.weight": [256, 32000],
        "output.weight": [256, 32000],
        "output_norm.weight": [256],
        "blk.3.attn_q.weight": [256, 256],
        "blk.3.attn_k.weight": [256, 128],  # 4 KV heads of 32
        "blk.3.attn_v.weight": [256, 128],
        "blk.3.attn_output.weight": [256, 256],
        "blk.3.ffn_gate.weight": [256, 1024],
        "blk.3.ffn_up.weight": [256, 1024],
        "blk.3.ffn_down.weight": [1024, 256],
        "blk.3.ffn_norm.weight": [256],
    }
    assert {name: [int(n) for n in tensors[name].shape] for name in shapes} == shapes
    for tensor in reader.tensors:
        expected = gguf.GGMLQuantizationType.F32 if len(tensor.shape) == 1 else gguf.GGMLQuantizationType.F16
        assert tensor.tensor_type == expected, tensor.name
    assert np.all(tensors["blk.0.attn_norm.weight"].data == 1.0)


def test_output_matrix_is_its_own_random_matrix(tiny_gguf: Path) -> None:
    tensors = {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(tiny_gguf).tensors}
    embedding, output = tensors["token_embd.weight"], tensors["output.weight"]
    assert np.isfinite(embedding).all() and np.isfinite(output).all()
    correlation = np.corrcoef(embedding.ravel(), output.ravel())[0, 1]
    assert abs(correlation) < 0.01
    assert embedding.std() == pytest.approx(1.0, rel=0.05)
    assert output.std() == pytest.approx(1 / 16, rel=0.05)  # 1/sqrt(fan_in 256)
    down = tensors["blk.0.ffn_down.weight"]
    assert down.std() == pytest.approx(1 / 32, rel=0.05)  # fan_in 1024


def test_metadata_scan_agrees_with_gguf_reader(tiny_gguf: Path) -> None:
    reader = gguf.GGUFReader(tiny_gguf)
    scanned = read_metadata(tiny_gguf)
    assert list(scanned) == [key for key in reader.fields if not key.startswith("GGUF.")]
    for key, value in scanned.items():
        if isinstance(value, int | str | bool):
            assert value == field(reader, key), key
    info = read_gguf_info(tiny_gguf)
    assert (info.architecture, info.name, info.block_count, info.embedding_length) == ("llama", "sollol-tiny", 8, 256)
    assert (info.head_count, info.head_count_kv, info.head_dim_k, info.head_dim_v) == (8, 4, 32, 32)
    assert (info.context_length, info.feed_forward_length, info.vocab_size) == (4096, 1024, 32000)
    assert (info.file_type, info.file_type_name, info.file_size) == (1, "MOSTLY_F16", tiny_gguf.stat().st_size)


def test_cached_call_returns_without_generating_or_rewriting(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached model was generated again")

    monkeypatch.setattr(tinymodel, "write_model", no_generation)
    before = tiny_gguf.stat()
    seen: list[events.Event] = []
    again = ensure_tiny_model(Settings().cache_dir, "tiny", reporter=seen.append)
    after = again.stat()
    assert again == tiny_gguf
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert seen == []


def test_generation_is_deterministic_and_cached_by_parameters(tmp_path: Path, tiny_gguf: Path) -> None:
    cache = fresh_cache(tmp_path)
    seen: list[events.Event] = []
    generated = ensure_tiny_model(cache, "tiny", reporter=seen.append)
    assert generated == model_path(cache, "tiny")
    assert re.fullmatch(r"tiny-[0-9a-f]{12}\.gguf", generated.name) and generated.name == tiny_gguf.name
    assert generated.read_bytes() == tiny_gguf.read_bytes()  # same seed, another process and cache: same bytes
    assert [type(e) for e in seen if not isinstance(e, events.StepProgress)] == [events.StepStarted, events.StepDone]
    progress = [e for e in seen if isinstance(e, events.StepProgress)]
    assert progress[-1].completed == progress[-1].total == 3 + 8 * len(BLOCK_TENSORS)
    assert not list(generated.parent.glob("*.part"))


def test_another_seed_gives_other_weights(tmp_path: Path, tiny_gguf: Path) -> None:  # tiny_gguf: the vocab is cached
    spec = dataclasses.replace(PRESETS["tiny"], block_count=1)
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_model(first, spec, vocab_file(), name="t")
    write_model(second, dataclasses.replace(spec, seed=spec.seed + 1), vocab_file(), name="t")
    a, b = first.read_bytes(), second.read_bytes()
    assert len(a) == len(b) and a != b
    data_start = gguf.GGUFReader(first).data_offset
    assert a[:data_start] == b[:data_start]  # same header and metadata; only the weights differ
    assert model_path(tmp_path, "tiny") != model_path(tmp_path, "big")


def test_unknown_preset_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown test model preset 'huge'; use one of: tiny, chat, calibrate, big"):
        ensure_tiny_model(tmp_path, "huge")


def post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_llama_server_decodes_varied_tokens_greedily(llama_servers: ServerGroup, tiny_gguf: Path) -> None:
    """The property the sharding tests rely on: greedy output is deterministic and not one token repeated."""
    server = llama_servers.llama_server(tiny_gguf)
    greedy = {"prompt": [1, 15043, 29892, 590], "n_predict": 24, "temperature": 0, "top_k": 1, "seed": 42}
    first = post(f"{server.url}/completion", greedy | {"return_tokens": True})
    tokens = first["tokens"]
    assert len(tokens) == 24 and len(set(tokens)) >= 16, tokens
    assert post(f"{server.url}/completion", greedy | {"return_tokens": True})["tokens"] == tokens
    rendered = post(f"{server.url}/apply-template", {"messages": [{"role": "user", "content": "Hi"}]})
    assert rendered["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_preset_has_the_chatml_markers_as_control_tokens(
    llama_servers: ServerGroup, chat_gguf: Path, tiny_gguf: Path
) -> None:
    model, tiny = gguf.GGUFReader(chat_gguf), gguf.GGUFReader(tiny_gguf)
    added = {
        "tokenizer.ggml.tokens": ["<|im_start|>", "<|im_end|>"],
        "tokenizer.ggml.scores": [0.0, 0.0],
        "tokenizer.ggml.token_type": [gguf.TokenType.CONTROL, gguf.TokenType.CONTROL],
    }
    for key, tail in added.items():
        assert field(model, key) == field(tiny, key) + tail, key
    assert field(model, "llama.vocab_size") == 32002
    assert field(model, "tokenizer.ggml.add_space_prefix") is False
    assert "tokenizer.ggml.add_space_prefix" not in tiny.fields
    assert [int(n) for n in {t.name: t for t in model.tensors}["output.weight"].shape] == [256, 32002]
    server = llama_servers.llama_server(chat_gguf)
    rendered = post(f"{server.url}/apply-template", {"messages": [{"role": "user", "content": "Hi"}]})
    assert rendered["prompt"] == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    tokens = post(f"{server.url}/tokenize", {"content": rendered["prompt"], "parse_special": True})["tokens"]
    # each marker is one token, and "user" (1792) has no space put before it (that would be "▁user", 1404)
    assert tokens == [32000, 1792, 13, 18567, 32001, 13, 32000, 465, 22137, 13]


@pytest.mark.slow
def test_big_preset(tiny_big_gguf: Path) -> None:
    info = read_gguf_info(tiny_big_gguf)
    assert (info.block_count, info.embedding_length, info.feed_forward_length) == (16, 1024, 2816)
    assert (info.head_count, info.head_count_kv) == (16, 16)
    assert 530e6 < info.file_size < 560e6
