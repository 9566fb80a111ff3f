"""The keep-alive watchdog: what it is handed survives the trip, and it leaves when its coordinator has."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from sollol_cli.manifest.loader import load_manifest
from sollol_cli.manifest.models import Cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding import watchdog
from sollol_cli.sharding.lifecycle import coordinator_home
from sollol_cli.sharding.watchdog import watch
from sollol_cli.ssh.nodeproc import process_start_time

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "clusters").glob("*.yaml"))
CLUSTER = Cluster.model_validate({"name": "wd", "backends": [{"kind": "rpc", "address": "127.0.0.1"}]})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_the_cluster_it_is_handed_is_the_manifests(path: Path) -> None:
    cluster = load_manifest(path).cluster
    sent = cluster.model_dump(mode="json", exclude_unset=True, by_alias=True)
    assert Cluster.model_validate(sent) == cluster


def record_of(process: subprocess.Popen[bytes], keep_alive: float) -> coord.CoordinatorRecord:
    start = process_start_time(process.pid)
    assert start is not None
    now = time.time()
    # ready: a watchdog is started only for a coordinator that has loaded
    return coord.CoordinatorRecord(
        "tiny", "d", process.pid, start, "127.0.0.1", 1, "", [], now, now, keep_alive, ready_after_s=0.5
    )


class WatchdogClock:
    """The watchdog's clock, moved only by its own sleeps; each sleep notes whether the coordinator lived."""

    def __init__(self, now: float, process: subprocess.Popen[bytes]) -> None:
        self.now = now
        self.process = process
        self.sleeps: list[tuple[float, float, bool]] = []  # (clock before, seconds, coordinator alive)

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append((self.now, seconds, self.process.poll() is None))
        self.now += seconds
        await asyncio.sleep(0)


def test_it_stops_an_idle_coordinator_and_forgets_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(state_dir=tmp_path)
    home = coordinator_home(settings, "wd")
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    record = record_of(process, keep_alive=0.5)
    record.last_used = record.last_used - 60  # idle for a minute by the wall clock that stops it ...
    coord.save_record(home, record)
    clock = WatchdogClock(record.last_used, process)  # ... but only just used by the watchdog's clock
    monkeypatch.setattr(watchdog, "time", clock)
    monkeypatch.setattr(watchdog, "asyncio", SimpleNamespace(sleep=clock.sleep))
    asyncio.run(asyncio.wait_for(watch(CLUSTER, settings, "tiny", record.pid, record.start_time), 20))
    # It waited the keep-alive out with the coordinator running, and only then stopped it.
    first_at, first_sleep, alive = clock.sleeps[0]
    assert (first_at, alive) == (record.last_used, True) and first_at + first_sleep > record.last_used + 0.5
    assert process.wait(5) is not None and coord.load_record(home, "tiny") is None


def test_it_leaves_a_replaced_coordinator_to_its_own_watchdog(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    home = coordinator_home(settings, "wd")
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        record = record_of(process, keep_alive=0)
        coord.save_record(home, record)
        asyncio.run(asyncio.wait_for(watch(CLUSTER, settings, "tiny", record.pid + 1, record.start_time), 5))
        assert process.poll() is None and coord.load_record(home, "tiny") == record
    finally:
        process.kill()
        process.wait()
