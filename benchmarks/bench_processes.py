"""What the sharding benchmarks share: the processes they start (each in its own session, all stopped however
the script ends, also on SIGTERM), rpc-servers that are ready when they answer HELLO, and progress on stderr.

Imported by the scripts next to it as `bench_processes` (a script's own directory is on its import path)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from sollol_cli import events
from sollol_cli.backends.rpc import probe_rpc
from sollol_cli.llamacpp.build import LlamaCppBinaries, build
from sollol_cli.llamacpp.tinymodel import ensure_tiny_model
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.lifecycle import stop_all

T = TypeVar("T")


@dataclass
class Children:
    """Every process this script starts itself, stopped however the script ends."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:  # the child keeps its own handle: output drains to the file, never a pipe
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def report(event: events.Event) -> None:
    """sollol's progress (building, loading, calibrating) and warnings on stderr."""
    if isinstance(event, events.StepStarted | events.StepDone):
        say(f"{event.subject}: {event.step} {event.detail}".rstrip())
    elif isinstance(event, events.StepFailed):
        say(f"{event.subject}: {event.step} failed: {event.reason}")
    elif isinstance(event, events.Warning):
        say(f"warning: {event.subject}: {event.message}")


async def start_rpc_server(children: Children, binary: Path, host: str, threads: int, log: Path) -> str:
    """An rpc-server on a free port of `host`; ready when it answers HELLO (it exits 0 when it cannot bind)."""
    for _ in range(3):  # a free port can be taken by someone else before the server binds it
        port = coord.free_port(host)
        process = children.start([str(binary), "-H", host, "-p", str(port), "-t", str(threads)], log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if (await probe_rpc(host, port)).state == "ready":
                return f"{host}:{port}"
            await asyncio.sleep(0.05)
        if process.poll() is None:
            break
    raise RuntimeError(f"rpc-server did not become ready; see {log}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the same cleanup stops every child."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_measurement(
    measure: Coroutine[Any, Any, T], settings: Settings, cluster: str, children: Children, work: Path
) -> T | None:
    """Run `measure`, then stop sollol's coordinators of `cluster` and every child, however it ended; `work`
    is removed unless it failed (its logs are kept then). None: interrupted (Ctrl-C or SIGTERM)."""
    keep_logs = False
    try:
        return asyncio.run(measure)
    except KeyboardInterrupt:
        say("interrupted: stopping everything this benchmark started")
        return None
    except Exception:
        keep_logs = True
        raise
    finally:
        stop_all(settings, cluster)  # sollol's coordinator runs in its own session: stop it by its record
        children.stop_all()
        if keep_logs:
            say(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_with_defaults(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict[str, Any], defaults: dict[str, Any]
) -> argparse.Namespace:
    """The arguments, with what `--quick` (or a full run) sets for each one not given."""
    args = parser.parse_args(argv)
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def workspace(preset: str, name: str) -> tuple[LlamaCppBinaries, Path, Path, Settings]:
    """The llama.cpp build and the generated model from sollol's cache (built or generated if missing), a
    fresh work directory, and settings that keep sollol's state there and run that build's llama-server."""
    cache = Settings().cache_dir
    binaries = build(cache, reporter=report)
    model = ensure_tiny_model(cache, preset, reporter=report)
    work = Path(tempfile.mkdtemp(prefix=f"sollol-bench-{name}-"))
    settings = Settings(state_dir=work / "state", cache_dir=cache, llama_server_path=binaries.llama_server)
    say(f"work directory (manifest, logs): {work}")
    return binaries, model, work, settings
