"""The node's provisioning lock and checked uploads, with a real shell (LocalRunner) and real `flock`."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.provision.nodelock import holder_text, node_lock
from sollol_cli.provision.transfer import TransferError, upload_checked
from sollol_cli.ssh.runner import LocalRunner


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


async def test_second_holder_waits_for_the_first_and_is_told_who() -> None:
    waiting = asyncio.Event()
    seen: list[events.Event] = []

    def reporter(event: events.Event) -> None:
        seen.append(event)
        if isinstance(event, events.StepStarted) and event.step == "waiting":
            waiting.set()

    second_has_it = asyncio.Event()

    async def second() -> None:
        async with LocalRunner("n1") as runner, node_lock(runner, "lab", "n1", "up", reporter):
            second_has_it.set()

    async with LocalRunner("n1") as runner, node_lock(runner, "lab", "n1", "up"):
        task = asyncio.create_task(second())
        await waiting.wait()
        assert not second_has_it.is_set()
    await task
    assert second_has_it.is_set()
    assert [(e.subject, e.step, e.detail) for e in seen if isinstance(e, events.StepStarted)] == [
        ("n1", "waiting", f"for {holder_text('up')} on this node")
    ]


async def test_locks_are_per_cluster_and_node() -> None:
    async with LocalRunner("n1") as runner, node_lock(runner, "lab", "n1", "up"):
        for cluster, node in (("lab", "n2"), ("other", "n1")):
            async with LocalRunner(node) as other:
                await asyncio.wait_for(_hold(other, cluster, node), timeout=30)


async def _hold(runner: LocalRunner, cluster: str, node: str) -> None:
    async with node_lock(runner, cluster, node, "up"):
        pass


async def test_checksum_mismatch_leaves_the_final_file_alone(tmp_path: Path) -> None:
    final = tmp_path / "bin" / "rpc-server"
    final.parent.mkdir()
    final.write_bytes(b"another run's binary")
    local = tmp_path / "build" / "rpc-server"
    local.parent.mkdir()
    local.write_bytes(b"this run's binary")
    async with LocalRunner("n1") as runner:
        with pytest.raises(
            TransferError, match=r"n1: checksum mismatch after upload of rpc-server: \w+ != 000000000000"
        ):
            await upload_checked(runner, local, str(final), "0" * 64, mode=0o755, tag="n1")
        assert final.read_bytes() == b"another run's binary"
        assert sorted(p.name for p in final.parent.iterdir()) == ["rpc-server"]  # no upload left behind
        await upload_checked(
            runner, local, str(final), hashlib.sha256(b"this run's binary").hexdigest(), mode=0o755, tag="n1"
        )
        assert final.read_bytes() == b"this run's binary"
        assert sorted(p.name for p in final.parent.iterdir()) == ["rpc-server"]
