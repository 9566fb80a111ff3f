"""Coordinator records shared by several sollol processes on one machine: one start at a time (a lock that
another process holds), a record that no longer parses set aside with a warning, and the process it described
found again by its marker and stopped. Separate processes, synchronised by what they print."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sollol_cli import events
from sollol_cli.files import held_lock
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import coordinator_home, stop_all
from sollol_cli.ssh.nodeproc import process_start_time

HOLD = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0); os.pwrite(fd, b"sollol (pid 1) starting coordinator big", 0)
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until its stdin closes
    """
)


def test_a_lock_held_by_another_process_is_waited_for_and_its_holder_named(tmp_path: Path) -> None:
    path = tmp_path / "coordinators.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin is not None and holder.stdout is not None
    assert holder.stdout.readline() == "locked\n"
    heard: list[str] = []
    order: list[str] = []

    async def scenario() -> None:
        waiting = asyncio.Event()

        def on_wait(other: str) -> None:
            heard.append(other)
            waiting.set()

        async def take() -> None:
            async with held_lock(path, "me", on_wait=on_wait):
                order.append("taken")

        task = asyncio.create_task(take())
        await waiting.wait()  # it is waiting for the other process ...
        assert not task.done()
        order.append("released")
        assert holder.stdin is not None
        holder.stdin.close()  # ... which lets go by exiting
        await asyncio.to_thread(holder.wait, 10)
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    assert heard == ["sollol (pid 1) starting coordinator big"]
    assert order == ["released", "taken"]
    assert path.read_text() == "me"


def test_two_tasks_of_one_process_take_turns(tmp_path: Path) -> None:
    path = tmp_path / "coordinators.lock"

    async def scenario() -> list[str]:
        order: list[str] = []
        inside, second_waits = asyncio.Event(), asyncio.Event()

        async def first() -> None:
            async with held_lock(path, "first"):
                order.append("first in")
                inside.set()
                await second_waits.wait()
                order.append("first out")

        async def second() -> None:
            await inside.wait()
            async with held_lock(path, "second", on_wait=lambda holder: second_waits.set()):
                order.append("second in")

        await asyncio.wait_for(asyncio.gather(first(), second()), 10)
        return order

    assert asyncio.run(scenario()) == ["first in", "first out", "second in"]


@pytest.fixture
def marked(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process marked as the coordinator of model `big` of cluster `c`, with a llama-server-like command
    line (what `marked_processes` reads back)."""
    home = coordinator_home(Settings(state_dir=tmp_path), "c")
    code = "import sys; sys.stdin.read()"
    argv = [sys.executable, "-c", code, "-m", "/m/big.gguf", "--rpc", "10.0.0.1:50052,10.0.0.2:50052",
            "-ngl", "999", "--host", "127.0.0.1", "--port", "41234", "--alias", "big"]  # fmt: skip
    env = {coord.MARKER_ENV: str(coord.record_path(home, "big"))}
    with (tmp_path / "big.log").open("ab") as log:  # its output goes to its log, as start_process points it
        process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, env=env, start_new_session=True)
    try:
        yield home, process
    finally:
        process.kill()
        process.wait()


def _wait_for_marker(home: Path, pid: int) -> coord.CoordinatorRecord:
    # Popen returns when exec closes its error pipe, which the kernel does before it has set up the new
    # program's environment: for a moment /proc/PID/environ is still empty
    deadline = time.monotonic() + 10
    while True:
        found = {r.pid: r for r in coord.marked_processes(home)}
        if pid in found or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert pid in found, "the marked process was not found"
    return found[pid]


def test_a_marked_process_is_found_with_what_its_command_line_says(
    marked: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    home, process = marked
    found = _wait_for_marker(home, process.pid)
    assert (found.model, found.host, found.port) == ("big", "127.0.0.1", 41234)
    assert found.rpc == ["10.0.0.1:50052", "10.0.0.2:50052"]
    assert found.start_time == process_start_time(process.pid)
    assert found.log == str(home.parent.parent / "big.log")  # its log, for the message that stops it
    assert found.ready_after_s is None  # found, not known to serve: the paths that find it stop it
    other = coordinator_home(Settings(state_dir=home.parent.parent), "another")
    assert coord.marked_processes(other) == []  # another cluster's coordinators are not ours


def test_down_sets_a_corrupt_record_aside_and_still_stops_its_coordinator(
    marked: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    home, process = marked
    _wait_for_marker(home, process.pid)
    path = coord.record_path(home, "big")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"model": "big", "pid": 12')  # cut off mid-write
    assert coord.all_records(home) == []  # a reader that only looks skips it and leaves it be
    assert path.exists()
    said: list[events.Event] = []
    assert stop_all(Settings(state_dir=tmp_path), "c", said.append) == ["big"]
    assert process.wait(10) is not None
    assert [type(e) for e in said] == [events.Warning, events.Warning]
    aside, adopted = (e for e in said if isinstance(e, events.Warning))
    assert aside.subject == "coordinator record big.json" and "unreadable" in aside.message
    (kept,) = path.parent.glob("big.json.corrupt-*")
    assert kept.read_text() == '{"model": "big", "pid": 12' and aside.message.endswith(f"set aside as {kept}")
    assert adopted.message == (
        f"found running without a record (pid {process.pid}, port 41234, rpc 10.0.0.1:50052, 10.0.0.2:50052)"
    )
    assert coord.all_records(home) == []


def test_an_orphan_holds_its_rpc_servers_once_adopted(marked: tuple[Path, subprocess.Popen[bytes]]) -> None:
    home, process = marked
    _wait_for_marker(home, process.pid)
    assert coord.attached_endpoints(home) == {}  # nothing recorded: its rpc-servers would be probed, and stall
    (adopted,) = coord.adopt_orphans(home)
    assert set(coord.attached_endpoints(home)) == {"10.0.0.1:50052", "10.0.0.2:50052"}
    assert coord.adopt_orphans(home) == []  # recorded now: adopted once
    saved = json.loads(coord.record_path(home, "big").read_text())
    assert (saved["pid"], saved["ready_after_s"]) == (process.pid, None)
    assert adopted.pid == process.pid


def test_an_orphan_whose_name_is_taken_by_a_newer_start_is_recorded_beside_it(
    marked: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    home, process = marked
    _wait_for_marker(home, process.pid)
    newer = coord.CoordinatorRecord("big", "d", 1, 1, "127.0.0.1", 1, "", ["10.0.0.3:50052"], 0.0, 0.0, 60.0)
    coord.save_record(home, newer)
    (adopted,) = coord.adopt_orphans(home)
    assert adopted.model == f"big.orphan-{process.pid}"
    assert coord.load_record(home, "big") == newer
    assert {r.model for r in coord.all_records(home)} == {"big", f"big.orphan-{process.pid}"}


def test_a_record_is_updated_only_while_it_describes_the_same_process(tmp_path: Path) -> None:
    first = coord.CoordinatorRecord("big", "d", 10, 100, "127.0.0.1", 1, "", [], 0.0, 0.0, 60.0)
    coord.save_record(tmp_path, first)
    assert coord.update_record(tmp_path, first, lambda r: setattr(r, "last_used", 5.0))
    assert coord.load_record(tmp_path, "big") == first and first.last_used == 5.0
    replaced = coord.CoordinatorRecord("big", "d", 11, 101, "127.0.0.1", 2, "", [], 0.0, 0.0, 60.0)
    coord.save_record(tmp_path, replaced)  # another process started a new one meanwhile
    assert not coord.update_record(tmp_path, first, lambda r: setattr(r, "last_used", 9.0))
    coord.forget_record(tmp_path, first)  # the old one's end does not forget the new one
    assert coord.load_record(tmp_path, "big") == replaced
    coord.forget_record(tmp_path, replaced)
    assert coord.load_record(tmp_path, "big") is None
    assert not coord.update_record(tmp_path, replaced, lambda r: None)  # never brought back
    assert coord.load_record(tmp_path, "big") is None
