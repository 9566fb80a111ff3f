"""A model in a node's Ollama store: matching its name to a manifest path (pure), and reading its GGUF
facts from the start of the blob."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from sollol_cli.sharding.gguf_info import GgufError, read_gguf_info
from sollol_cli.sharding.remote_store import RemoteBlob, match_manifest, remote_info
from sollol_cli.ssh.runner import LocalRunner
from tests.harness.models import write_gguf

STORE = "/home/u/.ollama/models"
LISTING = [
    f"{STORE}/manifests/registry.ollama.ai/library/Tiny/latest",
    f"{STORE}/manifests/registry.ollama.ai/library/tiny-big/q8",
    f"{STORE}/manifests/hf.co/Org/Repo/Q4_K_M",
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiny", LISTING[0]),
        ("TINY:latest", LISTING[0]),
        ("library/tiny-big:q8", LISTING[1]),
        ("hf.co/org/repo:q4_k_m", LISTING[2]),
        ("tiny-big", None),
        ("other", None),
    ],
)
def test_match_manifest(name: str, expected: str | None) -> None:
    assert match_manifest(LISTING, STORE, name) == expected


# --- the GGUF facts of a blob on a node, from the start of the file ---


class CountingRunner(LocalRunner):
    def __init__(self) -> None:
        super().__init__("node3")
        self.limits: list[int | None] = []

    async def read_file(self, remote: str, *, limit: int | None = None) -> bytes:
        self.limits.append(limit)
        return await super().read_file(remote, limit=limit)


def big_vocab_gguf(path: Path, tokens: int) -> Path:
    """Metadata longer than the first read (a 300k-token vocabulary is about 5.5 MiB)."""
    names = [f"token{i}" for i in range(tokens)]
    return write_gguf(path, tokens=names, block_count=4, attention__head_count=4, embedding_length=64)


def test_remote_info_reads_more_only_when_the_metadata_is_longer(tmp_path: Path) -> None:
    path = big_vocab_gguf(tmp_path / "blob", 300_000)
    runner = CountingRunner()
    info = asyncio.run(remote_info(runner, "node3", RemoteBlob(str(path), "ab", path.stat().st_size)))
    assert runner.limits == [4 * 2**20, 16 * 2**20]
    assert replace(info, path=path) == read_gguf_info(path)
    assert (info.vocab_size, info.block_count, str(info.path)) == (300_000, 4, f"node3:{path}")


def test_remote_info_of_a_blob_shorter_than_its_manifest_says(tmp_path: Path) -> None:
    path = big_vocab_gguf(tmp_path / "blob", 300_000)
    cut = tmp_path / "cut"
    cut.write_bytes(path.read_bytes()[: 3 * 2**20])
    with pytest.raises(GgufError) as error:
        asyncio.run(remote_info(LocalRunner("node3"), "node3", RemoteBlob(str(cut), "ab", path.stat().st_size)))
    assert error.value.message == f"node3:{cut} ends inside its metadata (damaged or still downloading)"


def test_remote_info_of_a_blob_that_is_not_gguf(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GgufError) as error:
        asyncio.run(remote_info(LocalRunner("node3"), "node3", RemoteBlob(str(blob), "ab", 104)))
    assert error.value.message == f"node3:{blob} is not a GGUF file (it starts with b'PK\\x03\\x04', not b'GGUF')"
