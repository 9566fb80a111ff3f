"""A tiny random-weight llama GGUF that the pinned llama.cpp really runs: the test model for every real test.

No trustworthy tiny GGUF LLM is on the package registries, so we generate one: seeded random weights in
llama's tensor layout, and the real SentencePiece vocabulary copied from the vocab-only GGUF that the
pinned llama.cpp tree ships. `output.weight` is its own random matrix: tying it to the token embedding
makes greedy decoding repeat one token, which would hide sharding bugs that change the output.

Its chat template is ChatML. In the `chat` preset, as in real ChatML models, the vocabulary also has
`<|im_start|>` and `<|im_end|>` as control tokens and puts no space before text: llama-server's structured
outputs on /v1/chat/completions (a JSON schema or `json_object`) feed the template's generation prompt to
the grammar token by token, and fail with "Failed to initialize samplers" on the other presets, where the
markers are plain text and the first piece is " <" (SentencePiece's space prefix), which llama-server drops.

The file depends only on the preset's parameters, the seed and the pinned vocabulary, so it is generated
once per machine and cached as `<cache_dir>/models/<preset>-<hash>.gguf`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from sollol_cli import events
from sollol_cli.errors import UsageError
from sollol_cli.llamacpp.sdist import LLAMA_CPP_PYTHON_VERSION, ensure_sdist, extract_vendor_file

VOCAB_FILE = "models/ggml-vocab-llama-spm.gguf"
# Bump when the generator changes in a way that changes the bytes it writes.
FORMAT_VERSION = 1
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")  # appended to the pinned vocabulary as control tokens (`chat`)
# ChatML as a Jinja template: llama-server renders it with --jinja, and its legacy template detection
# recognises `<|im_start|>` without it, so /v1/chat/completions works either way.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_SUBJECT = "test model"


@dataclass(frozen=True)
class TinyModelSpec:
    """The shape of a generated model; every field goes into the cache file name's hash."""

    block_count: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    context_length: int = 4096
    rms_eps: float = 1e-5
    seed: int = 20261
    # Matrices get std = weight_gain / sqrt(fan_in) (LeCun), so each block adds about as much to the residual
    # stream as the unit-scale token embedding holds: greedy output then varies along the sequence and
    # changes when any single layer is wrong, which is what the sharding tests need to see.
    weight_gain: float = 1.0
    embedding_std: float = 1.0
    chatml_tokens: bool = False  # the ChatML markers as control tokens, no space prefix (see the module doc)

    @property
    def head_dim(self) -> int:
        return self.embedding_length // self.head_count


PRESETS: dict[str, TinyModelSpec] = {
    # ~49 MB: 8 layers with grouped-query attention; the two 32000 x 256 F16 vocabulary matrices are 2/3 of it.
    "tiny": TinyModelSpec(block_count=8, embedding_length=256, feed_forward_length=1024, head_count=8, head_count_kv=4),
    # tiny with a realistic ChatML tokenizer: structured outputs on /v1/chat/completions work with it.
    "chat": TinyModelSpec(
        block_count=8, embedding_length=256, feed_forward_length=1024, head_count=8, head_count_kv=4, chatml_tokens=True
    ),
    # ~333 MB, 268 MB of it layers and output: what sollol runs on one rpc-server to measure its speed
    # (sharding/calibration.py), big enough that the layers' compute outweighs a token's fixed costs
    # (network round trips, sampling), which a smaller model let dominate the measurement.
    "calibrate": TinyModelSpec(
        block_count=8, embedding_length=1024, feed_forward_length=2816, head_count=16, head_count_kv=16
    ),
    # ~543 MB: for "the model does not fit on one node" cases.
    "big": TinyModelSpec(
        block_count=16, embedding_length=1024, feed_forward_length=2816, head_count=16, head_count_kv=16
    ),
}


def spec_hash(spec: TinyModelSpec) -> str:
    fields = asdict(spec)
    if not spec.chatml_tokens:
        del fields["chatml_tokens"]  # the presets without it keep the names (and caches) they had
    identity = {
        "spec": fields,
        "format": FORMAT_VERSION,
        "vocab": f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}:{VOCAB_FILE}",
        "chat_template": CHAT_TEMPLATE,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def model_path(cache_dir: Path, preset: str = "tiny") -> Path:
    return cache_dir / "models" / f"{preset}-{spec_hash(_spec(preset))}.gguf"


def ensure_tiny_model(cache_dir: Path, preset: str = "tiny", *, reporter: events.Reporter = events.ignore) -> Path:
    """Return the cached model of `preset`, generating it on first use (a few seconds; `big` ~543 MB)."""
    spec = _spec(preset)
    target = model_path(cache_dir, preset)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several test processes may ask at once: one generates, the others wait and then find the file.
    with _locked(target.parent / ".generate.lock"):
        if target.is_file():
            return target
        vocab = _vocab_file(cache_dir)
        reporter(events.StepStarted(_SUBJECT, "generate", f"{preset} -> {target}"))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            write_model(tmp, spec, vocab, name=f"sollol-{preset}", reporter=reporter)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        reporter(events.StepDone(_SUBJECT, "generate", f"{target.stat().st_size / 1e6:.0f} MB"))
    return target


def write_model(
    path: Path, spec: TinyModelSpec, vocab: Path, *, name: str, reporter: events.Reporter = events.ignore
) -> None:
    """Write the model to `path`, generating one tensor at a time so the big preset needs little memory."""
    writer = gguf.GGUFWriter(None, "llama")
    writer.add_name(name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.embedding_length)
    writer.add_block_count(spec.block_count)
    writer.add_feed_forward_length(spec.feed_forward_length)
    writer.add_head_count(spec.head_count)
    writer.add_head_count_kv(spec.head_count_kv)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_layer_norm_rms_eps(spec.rms_eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _copy_tokenizer(vocab, writer, chatml=spec.chatml_tokens)
    writer.add_vocab_size(n_vocab)
    writer.add_chat_template(CHAT_TEMPLATE)

    layout = list(_tensor_layout(spec, n_vocab))
    for tensor_name, shape, dtype in layout:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(tensor_name, shape, np.dtype(dtype), nbytes)

    rng = np.random.default_rng(spec.seed)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, (tensor_name, shape, dtype) in enumerate(layout, start=1):
            writer.write_tensor_data(_weights(rng, spec, tensor_name, shape, dtype))
            reporter(events.StepProgress(_SUBJECT, "generate", done, len(layout), "tensors"))
        writer.flush()
        for out in writer.fout or []:
            os.fsync(out.fileno())
    finally:
        writer.close()


def _weights(
    rng: np.random.Generator, spec: TinyModelSpec, tensor_name: str, shape: tuple[int, ...], dtype: type
) -> np.ndarray[Any, Any]:
    if len(shape) == 1:  # RMS norm scales: ones, as in a freshly initialised model
        return np.ones(shape, dtype=np.float32)
    std = spec.embedding_std if tensor_name == "token_embd.weight" else spec.weight_gain / math.sqrt(shape[1])
    return (rng.standard_normal(shape, dtype=np.float32) * std).astype(dtype)


def _tensor_layout(spec: TinyModelSpec, n_vocab: int) -> Iterator[tuple[str, tuple[int, ...], type]]:
    """(name, numpy shape, dtype) in file order. numpy shapes are (rows, cols) = GGUF's ne reversed."""
    embd, ff = spec.embedding_length, spec.feed_forward_length
    q_width = spec.head_count * spec.head_dim
    kv_width = spec.head_count_kv * spec.head_dim
    yield "token_embd.weight", (n_vocab, embd), np.float16
    yield "output_norm.weight", (embd,), np.float32
    yield "output.weight", (n_vocab, embd), np.float16
    for i in range(spec.block_count):
        yield f"blk.{i}.attn_norm.weight", (embd,), np.float32
        yield f"blk.{i}.attn_q.weight", (q_width, embd), np.float16
        yield f"blk.{i}.attn_k.weight", (kv_width, embd), np.float16
        yield f"blk.{i}.attn_v.weight", (kv_width, embd), np.float16
        yield f"blk.{i}.attn_output.weight", (embd, q_width), np.float16
        yield f"blk.{i}.ffn_norm.weight", (embd,), np.float32
        yield f"blk.{i}.ffn_gate.weight", (ff, embd), np.float16
        yield f"blk.{i}.ffn_up.weight", (ff, embd), np.float16
        yield f"blk.{i}.ffn_down.weight", (embd, ff), np.float16


# What the ChatML tokens add to each per-token array of the vocabulary.
_ADDED: dict[str, list[Any]] = {
    "tokenizer.ggml.tokens": list(CHATML_TOKENS),
    "tokenizer.ggml.scores": [0.0] * len(CHATML_TOKENS),
    "tokenizer.ggml.token_type": [int(gguf.TokenType.CONTROL)] * len(CHATML_TOKENS),
}


def _copy_tokenizer(vocab: Path, writer: gguf.GGUFWriter, *, chatml: bool = False) -> int:
    """Copy every `tokenizer.ggml.*` field; with `chatml`, append the ChatML control tokens and put no space
    before text (as real ChatML models do). Return the vocabulary size."""
    added = _ADDED if chatml else {}
    reader = gguf.GGUFReader(vocab)
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        main_type = field.types[0]
        if main_type == gguf.GGUFValueType.ARRAY:
            values = list(field.contents()) + added.get(key, [])
            writer.add_key_value(key, values, main_type, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), main_type)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(field.data) + len(added.get(key, []))
    if n_vocab == 0:
        raise UsageError(f"{vocab} has no tokenizer.ggml.tokens", hint="delete it so sollol extracts it again")
    if chatml:
        writer.add_add_space_prefix(False)
    return n_vocab


def _vocab_file(cache_dir: Path) -> Path:
    dest = cache_dir / "models" / f"vocab-{LLAMA_CPP_PYTHON_VERSION}-{Path(VOCAB_FILE).name}"
    if not dest.is_file():
        extract_vendor_file(ensure_sdist(cache_dir), VOCAB_FILE, dest)
    return dest


def _spec(preset: str) -> TinyModelSpec:
    try:
        return PRESETS[preset]
    except KeyError:
        raise UsageError(f"unknown test model preset '{preset}'", hint=f"use one of: {', '.join(PRESETS)}") from None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
