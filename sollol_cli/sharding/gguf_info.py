"""What a GGUF file says about its model (architecture, layers, heads, context) and what it needs in memory.

The metadata is scanned directly instead of through `gguf.GGUFReader`: the reader materialises every
vocabulary string, which took 7.2 s for a 152k-token / 280k-merge vocabulary here, while the scan below
skips those arrays by their length prefixes. The `gguf` package still supplies the facts that must match
llama.cpp: the architecture names it knows and the file-type names.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import gguf

from sollol_cli.errors import SollolError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # what the pinned llama.cpp reads; version 1 files are refused there too

# KV cache elements are F16 unless llama-server is told otherwise (--cache-type-k/-v).
DEFAULT_KV_BYTES_PER_ELEMENT = 2
# llama.cpp evaluates prompts in micro-batches of 512 tokens by default (-ub).
DEFAULT_UBATCH = 512
# Overhead beyond weights and KV cache: 10% of the weights for allocator slack, per-backend copies of small
# tensors and the runtime, plus the compute buffer estimated from the model's shape.
WEIGHTS_OVERHEAD_FRACTION = 0.10
# Assumed when a file states no vocabulary size: a Llama-3-sized vocabulary errs on the safe side.
FALLBACK_VOCAB_SIZE = 128_256


class GgufError(SollolError):
    """Why: the file cannot be run by the pinned llama.cpp (not GGUF, damaged, or an unknown architecture)."""


@dataclass(frozen=True)
class GgufInfo:
    """The model facts sollol plans with; per-layer values (some architectures vary heads per layer) are kept."""

    path: Path
    architecture: str
    name: str | None
    block_count: int
    context_length: int | None
    embedding_length: int
    feed_forward_length: int | None
    head_count: int
    head_count_kv_per_layer: tuple[int, ...]
    key_length: int | None
    value_length: int | None
    vocab_size: int | None
    file_size: int
    file_type: int | None

    @property
    def head_count_kv(self) -> int:
        return max(self.head_count_kv_per_layer, default=0)

    @property
    def head_dim_k(self) -> int:
        return self.key_length or self.embedding_length // self.head_count

    @property
    def head_dim_v(self) -> int:
        return self.value_length or self.embedding_length // self.head_count

    @property
    def file_type_name(self) -> str | None:
        if self.file_type is None:
            return None
        try:
            return gguf.LlamaFileType(self.file_type).name
        except ValueError:
            return None


def kv_cache_bytes(info: GgufInfo, context: int, *, bytes_per_element: int = DEFAULT_KV_BYTES_PER_ELEMENT) -> int:
    """K and V for `context` tokens in every layer: 2 * layers * context * kv_heads * head_dim * bytes when
    K and V heads have the same width. Sliding-window layers would need less; counting them in full errs safe."""
    kv_heads_over_layers = sum(info.head_count_kv_per_layer)
    return context * kv_heads_over_layers * (info.head_dim_k + info.head_dim_v) * bytes_per_element


def compute_buffer_bytes(info: GgufInfo, context: int, *, ubatch: int = DEFAULT_UBATCH) -> int:
    """The largest F32 activations of one micro-batch: logits, attention scores (without flash attention),
    and the feed-forward intermediates."""
    tokens = min(ubatch, context)
    vocab = info.vocab_size or FALLBACK_VOCAB_SIZE
    ffn = info.feed_forward_length or 4 * info.embedding_length
    return 4 * tokens * (vocab + info.head_count * context + 3 * ffn)


def estimate_memory_bytes(weights_bytes: int, info: GgufInfo, context: int) -> int:
    """Memory to run the model with `context` tokens: weights + KV cache + overhead, where overhead is
    10% of the weights plus the compute buffer estimate."""
    overhead = int(weights_bytes * WEIGHTS_OVERHEAD_FRACTION) + compute_buffer_bytes(info, context)
    return weights_bytes + kv_cache_bytes(info, context) + overhead


@cache
def known_architectures() -> frozenset[str]:
    return frozenset(gguf.MODEL_ARCH_NAMES.values())


def check_gguf_magic(path: Path) -> None:
    """Raise GgufError unless `path` is a readable file starting with the GGUF magic."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise GgufError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head != GGUF_MAGIC:
        raise GgufError(
            f"{path} is not a GGUF file (it starts with {head!r}, not b'GGUF')",
            hint="llama.cpp needs a .gguf model; convert it with llama.cpp's convert scripts",
        )


def check_architecture(architecture: str, path: Path) -> None:
    if architecture not in known_architectures():
        raise GgufError(
            f"{path} is a '{architecture}' model, an architecture the pinned llama.cpp does not know",
            hint="use a model of a supported architecture (llama, qwen2, gemma3, ...)",
        )


def read_gguf_info(path: Path) -> GgufInfo:
    """Read and check the model facts of a GGUF file (magic, version, known architecture)."""
    return _info(read_metadata(path), path, path.stat().st_size)


class HeaderTruncated(GgufError):
    """Why: the bytes given end before the metadata does; read more of the file."""


def info_from_head(head: bytes, path: Path, file_size: int) -> GgufInfo:
    """The same facts from the first bytes of a file elsewhere (a node's Ollama store): the metadata comes
    first in a GGUF, so a few MiB answer without copying gigabytes. HeaderTruncated asks for more bytes."""
    if head[:4] != GGUF_MAGIC:
        raise GgufError(
            f"{path} is not a GGUF file (it starts with {head[:4]!r}, not b'GGUF')",
            hint="llama.cpp needs a .gguf model; convert it with llama.cpp's convert scripts",
        )
    try:
        meta = _Scanner(head).header(path)
    except (struct.error, ValueError, OverflowError, UnicodeDecodeError) as exc:
        if len(head) < file_size:
            raise HeaderTruncated(f"{path}: the metadata goes beyond the first {len(head)} bytes") from None
        raise GgufError(f"{path} is a damaged GGUF file ({exc})", hint="download or convert it again") from None
    return _info(meta, path, file_size)


def _info(meta: dict[str, MetaValue], path: Path, file_size: int) -> GgufInfo:
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError(f"{path} has no general.architecture in its metadata")
    check_architecture(arch, path)

    def number(key: str, *, required: bool = False) -> int | None:
        values = _as_ints(meta.get(f"{arch}.{key}"))
        if values:  # per-layer values: the largest one bounds every layer
            return max(values)
        if required:
            raise GgufError(f"{path} lacks {arch}.{key}, which llama.cpp needs for a '{arch}' model")
        return None

    block_count = number("block_count", required=True) or 0
    head_count = number("attention.head_count", required=True) or 0
    if block_count <= 0 or head_count <= 0:
        raise GgufError(f"{path} states {block_count} layers and {head_count} attention heads")
    kv_heads = meta.get(f"{arch}.attention.head_count_kv")
    per_layer = (
        _as_ints(kv_heads)
        if isinstance(kv_heads, tuple)
        else (number("attention.head_count_kv") or head_count,) * block_count
    )
    name = meta.get("general.name")
    tokens = meta.get("tokenizer.ggml.tokens")
    token_count = tokens.count if isinstance(tokens, SkippedArray) else len(tokens) if isinstance(tokens, tuple) else 0
    file_type = meta.get("general.file_type")
    return GgufInfo(
        path=path,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        block_count=block_count,
        context_length=number("context_length"),
        embedding_length=number("embedding_length", required=True) or 0,
        feed_forward_length=number("feed_forward_length"),
        head_count=head_count,
        head_count_kv_per_layer=per_layer,
        key_length=number("attention.key_length"),
        value_length=number("attention.value_length"),
        vocab_size=number("vocab_size") or token_count or None,
        file_size=file_size,
        file_type=file_type if isinstance(file_type, int) else None,
    )


def _as_ints(value: MetaValue | None) -> tuple[int, ...]:
    items = value if isinstance(value, tuple) else (value,)
    return tuple(int(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool))


# --- the metadata scan ---


@dataclass(frozen=True)
class SkippedArray:
    """An array too long to be a per-layer value (vocabulary, merges): only its length is kept."""

    count: int


MetaValue = int | float | bool | str | tuple["MetaValue", ...] | SkippedArray

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_KEPT_ARRAY = 4096  # per-layer arrays are this short; anything longer is skipped


def read_metadata(path: Path) -> dict[str, MetaValue]:
    """All key/value pairs of a GGUF header; long arrays come back as `SkippedArray`."""
    check_gguf_magic(path)
    try:
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Scanner(buf).header(path)
    except (struct.error, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise GgufError(f"{path} is a damaged GGUF file ({exc})", hint="download or convert it again") from None


class _Scanner:
    def __init__(self, buf: mmap.mmap | bytes) -> None:
        self.buf = buf
        self.offset = 0

    def header(self, path: Path) -> dict[str, MetaValue]:
        self.offset = 4  # after the magic
        version = self.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise GgufError(f"{path} is GGUF version {version}; the pinned llama.cpp reads versions 2 and 3")
        self.unpack("<Q")  # tensor count
        kv_count = self.unpack("<Q")
        meta: dict[str, MetaValue] = {}
        for _ in range(kv_count):
            key = self.string()
            meta[key] = self.value(self.unpack("<I"))
        return meta

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.buf, self.offset)
        self.offset += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.offset + length
        if end > len(self.buf):
            raise ValueError("a string runs past the end of the file")
        text = self.buf[self.offset : end].decode("utf-8")
        self.offset = end
        return text

    def value(self, vtype: int) -> MetaValue:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise ValueError(f"unknown metadata value type {vtype}")
        (value,) = struct.unpack_from(fmt, self.buf, self.offset)
        self.offset += struct.calcsize(fmt)
        return bool(value) if vtype == 7 else value

    def array(self) -> MetaValue:
        item_type = self.unpack("<I")
        count = self.unpack("<Q")
        if count <= _MAX_KEPT_ARRAY:
            return tuple(self.value(item_type) for _ in range(count))
        fmt = _SCALAR_FORMATS.get(item_type)
        if fmt is not None:
            self.offset += count * struct.calcsize(fmt)
        elif item_type == _STRING:
            buf, offset = self.buf, self.offset
            for _ in range(count):  # the hot loop for vocabularies: lengths only, no decoding
                offset += 8 + struct.unpack_from("<Q", buf, offset)[0]
            self.offset = offset
        else:
            for _ in range(count):
                self.value(item_type)
        if self.offset > len(self.buf):
            raise ValueError("an array runs past the end of the file")
        return SkippedArray(count)
