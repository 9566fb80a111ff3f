"""Keep-alive for coordinators that `sollol run` leaves warm: a small detached process per coordinator start
that stops it once it has been idle for `keep_alive` (as Ollama unloads a model), then exits.

`sollol serve` needs none: its own loop expires what it started. The watchdog exits as soon as the
coordinator it watches is gone or replaced (the replacement has a watchdog of its own).

Run as `python -m sollol_cli.sharding.watchdog`, with {"cluster", "settings", "model", "pid", "start_time"}
as JSON on stdin.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from sollol_cli.backends.http import close_session
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import Coordinators

if TYPE_CHECKING:
    from sollol_cli.manifest.models import Cluster
    from sollol_cli.settings import Settings

MAX_SLEEP_S = 10.0  # look again at least this often: the record may have been extended, replaced or removed


def spawn(cluster: Cluster, settings: Settings, record: coord.CoordinatorRecord) -> None:
    """Start the watchdog for `record` in a session of its own (it outlives this command and its Ctrl-C)."""
    payload = {
        "cluster": cluster.model_dump(mode="json", exclude_unset=True, by_alias=True),
        "settings": settings.model_dump(mode="json"),
        "model": record.model,
        "pid": record.pid,
        "start_time": record.start_time,
    }
    process = subprocess.Popen(  # noqa: S603 - our own module, no shell
        [sys.executable, "-m", "sollol_cli.sharding.watchdog"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps(payload).encode())
    process.stdin.close()


async def watch(cluster: Cluster, settings: Settings, model: str, pid: int, start_time: int) -> None:
    coordinators = Coordinators(cluster, settings)
    try:
        while True:
            record = coord.load_record(coordinators.home, model)
            if record is None or (record.pid, record.start_time) != (pid, start_time):
                return
            if record.node is None and not coord.alive(record):
                coord.forget_record(coordinators.home, record)
                return
            expires = coord.expires_at(record)
            if expires is None:  # kept for ever (keep_alive -1): look again, a later request may change it
                await asyncio.sleep(MAX_SLEEP_S)
                continue
            due = expires - time.time()
            if due <= 0:
                await coordinators.expire()
                await asyncio.sleep(1.0)  # busy: expire() moved its last use to now
                continue
            await asyncio.sleep(min(due + 0.2, MAX_SLEEP_S))
    finally:
        await coordinators.close()
        await close_session()


def main() -> None:
    from sollol_cli.manifest.models import Cluster
    from sollol_cli.settings import Settings

    data: dict[str, Any] = json.loads(sys.stdin.read())
    cluster = Cluster.model_validate(data["cluster"])
    settings = Settings.model_validate(data["settings"])
    asyncio.run(watch(cluster, settings, data["model"], int(data["pid"]), int(data["start_time"])))


if __name__ == "__main__":
    main()
