"""The sharding coordinator: a `llama-server --rpc ...` process sollol starts, supervises and reuses.

It runs detached on the controller (its own session, output drained to a log file, never a pipe) or on a
node (node_coordinator.py), and is recorded in the state directory, so a later `sollol run` reuses a warm
coordinator instead of reloading the model, until its keep-alive expires or `sollol down` stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from sollol_cli import events
from sollol_cli.backends.base import BackendRef
from sollol_cli.backends.llamacpp import COORDINATOR_PREFIX
from sollol_cli.errors import BackendError
from sollol_cli.files import write_atomic
from sollol_cli.ssh.nodeproc import process_start_time


@dataclass(frozen=True)
class CoordinatorPlan:
    """Everything that decides how a coordinator is started (pure; its digest decides reuse)."""

    model: str
    gguf: str
    rpc: tuple[str, ...]  # IP:port literals, in layer order
    context: int
    slots: int
    split: tuple[float, ...] | None = None
    host: str = "127.0.0.1"
    embeddings: tuple[str, ...] = ()  # llama-server's embeddings flags (manifest.models.pooling_flags)

    def argv(self, llama_server: str, port: int) -> list[str]:
        argv = [
            llama_server, "-m", self.gguf, "--rpc", ",".join(self.rpc), "-ngl", "999",
            "--host", self.host, "--port", str(port), "-c", str(self.context), "-np", str(self.slots),
            "--metrics", "--alias", self.model, "-lv", "4",
        ]  # fmt: skip
        if self.split:
            argv += ["-ts", ",".join(f"{share:g}" for share in self.split)]
        return argv + list(self.embeddings)

    @property
    def digest(self) -> str:
        fields = asdict(self)
        if not self.embeddings:
            del fields["embeddings"]  # the digest of a plan without them stays what it was: warm coordinators stay
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CoordinatorRecord:
    model: str
    digest: str
    pid: int
    start_time: int
    host: str
    port: int
    log: str
    rpc: list[str]
    started_at: float
    last_used: float
    keep_alive: float  # seconds it stays loaded once idle; negative: until stopped (as Ollama's keep_alive -1)
    ready_after_s: float | None = None
    # endpoint -> [free, total] bytes at start, one pair per device it serves (one pair: one device)
    rpc_memory: dict[str, list[int]] = field(default_factory=dict)
    n_layer: int | None = None
    split: list[float] = field(default_factory=list)
    # the devices the split's shares are for (host:port#index), when an rpc-server serves several; empty: one
    # each, the endpoints in `rpc`
    devices: list[str] = field(default_factory=list)
    # computed once when it became ready: re-reading a growing log on every request would cost more each time
    placement: list[str] = field(default_factory=list)
    node: str | None = None  # None: this machine; else the manifest node it runs on (log is a path there)
    api_key: str | None = None  # required by a coordinator on a node (it listens on the cluster network)
    split_by: str = "memory"  # how the layers were split: memory | speed | manifest (planning.RpcChoice)
    expected_tokens_per_s: float | None = None  # from the placement and the rpc backends' measured speeds
    rpc_speeds: dict[str, float] = field(default_factory=dict)  # endpoint -> bytes of weights per second
    measured_tokens_per_s: float | None = None  # decode speed of a recent request (written at most once a second)

    @property
    def where(self) -> str:
        return f"node {self.node}" if self.node else "this machine"

    @property
    def on_node(self) -> str:
        """` on node NAME` for messages, empty on this machine."""
        return f" on node {self.node}" if self.node else ""


def expires_at(record: CoordinatorRecord) -> float | None:
    """When an idle coordinator is stopped (epoch seconds); None when its keep-alive is forever."""
    return None if record.keep_alive < 0 else record.last_used + record.keep_alive


def backend_ref(record: CoordinatorRecord) -> BackendRef:
    return BackendRef(
        f"{COORDINATOR_PREFIX}{record.model}",
        "llamacpp",
        record.host,
        record.port,
        node=record.node,
        api_key=record.api_key,
    )


def records_dir(state_dir: Path) -> Path:
    return state_dir / "coordinators"


def record_path(state_dir: Path, model: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model)
    return records_dir(state_dir) / f"{safe}.json"


def _parse(path: Path) -> CoordinatorRecord:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return CoordinatorRecord(**data)


def _set_aside(path: Path, reason: str, report: events.Reporter) -> None:
    """A record that does not parse is kept for the user (as the cluster state file is) and said out loud:
    skipping it silently would leave its coordinator running with nothing to stop it. Its process is found
    again by its marker (`adopt_orphans`)."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    try:
        path.replace(aside)
    except FileNotFoundError:
        return  # another sollol process set it aside first
    report(events.Warning(f"coordinator record {path.name}", f"unreadable ({reason}); set aside as {aside}"))


def load_record(state_dir: Path, model: str, report: events.Reporter | None = None) -> CoordinatorRecord | None:
    """The model's record; an unreadable one is None, and set aside when the caller can say so (`report`)."""
    path = record_path(state_dir, model)
    try:
        return _parse(path)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        if report is not None:
            _set_aside(path, _first_line(exc), report)
        return None


def all_records(state_dir: Path, report: events.Reporter | None = None) -> list[CoordinatorRecord]:
    """Every readable record. Readers that run all the time (the monitor) pass no `report` and skip unreadable
    ones; the paths that act on coordinators pass theirs, which sets them aside and warns."""
    out = []
    for path in sorted(records_dir(state_dir).glob("*.json")):
        try:
            out.append(_parse(path))
        except FileNotFoundError:
            continue  # forgotten by another process meanwhile
        except (ValueError, TypeError) as exc:
            if report is not None:
                _set_aside(path, _first_line(exc), report)
    return out


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:120]


@dataclass(frozen=True)
class Attachment:
    holder: str
    devices: tuple[tuple[int, int], ...] = ()  # (free, total) bytes of each device when the coordinator started


def attached_endpoints(state_dir: Path) -> dict[str, Attachment]:
    """rpc endpoints a live coordinator holds -> who holds them (and their memory when it started).
    rpc-server serves one client at a time, so these are busy by design: probing them would only stall."""
    held: dict[str, Attachment] = {}
    for record in all_records(state_dir):
        if alive(record):
            for endpoint in record.rpc:
                memory = record.rpc_memory.get(endpoint, [])
                holder = f"attached to the coordinator for '{record.model}' (pid {record.pid})"
                held[endpoint] = Attachment(holder, tuple(zip(memory[::2], memory[1::2], strict=False)))
    return held


def save_record(state_dir: Path, record: CoordinatorRecord, *, durable: bool = True) -> None:
    """Atomic, and private before the first byte: it may hold an API key, and other processes read it any
    time. `durable=False` skips the fsync, for the updates every request makes (see `update_record`)."""
    path = record_path(state_dir, record.model)
    write_atomic(path, json.dumps(asdict(record), indent=2), mode=0o600, durable=durable)


def same_process(one: CoordinatorRecord, other: CoordinatorRecord) -> bool:
    """Do both records describe one start of one process (a pid alone may have been reused since)?"""
    return (one.pid, one.start_time, one.node) == (other.pid, other.start_time, other.node)


def used_at(when: float) -> Callable[[CoordinatorRecord], None]:
    """The change to a record (for `update_record`) that says it was last used at `when`."""

    def change(record: CoordinatorRecord) -> None:
        record.last_used = when

    return change


def update_record(state_dir: Path, record: CoordinatorRecord, change: Callable[[CoordinatorRecord], None]) -> bool:
    """Apply `change` to the saved record if it still describes the same process as `record`; False when it
    is gone or now describes another start (never bring back the record of a stopped or replaced one).

    Not fsync'd: a sharded request makes two updates (its start and end), and two fsyncs cost it ~20 ms on an
    ordinary disk. Other processes still see the old record or the new, never half of one (the replace is
    atomic); after a power cut the update may be lost, and so is the coordinator it describes."""
    current = load_record(state_dir, record.model)
    if current is None or not same_process(current, record):
        return False
    change(current)
    change(record)
    save_record(state_dir, current, durable=False)
    return True


def forget_record(state_dir: Path, record: CoordinatorRecord) -> None:
    """Remove the record if it still describes `record`'s process (a newer start stays recorded)."""
    current = load_record(state_dir, record.model)
    if current is not None and same_process(current, record):
        record_path(state_dir, record.model).unlink(missing_ok=True)


def alive(record: CoordinatorRecord) -> bool:
    """Is the process still the one started? A coordinator on a node counts as alive while recorded: checking
    costs a round trip, so the paths that act on it or show it check for real (ShardManager.running) and this
    only decides which rpc-servers not to probe."""
    if record.node is not None:
        return True
    return process_start_time(record.pid) == record.start_time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# Every coordinator started on this machine carries its record's path in its environment, so it can be found
# (and stopped) even when its record is lost or unreadable: /proc/PID/environ outlives any file of ours.
MARKER_ENV = "SOLLOL_COORDINATOR"


def start_process(
    plan: CoordinatorPlan, llama_server: str, log: Path, keep_alive: float, *, marker: Path
) -> CoordinatorRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    port = free_port(plan.host)
    with log.open("ab") as out:
        out.write(f"\n--- sollol: starting coordinator for {plan.model} at {time.ctime()}\n".encode())
        out.flush()
        process = subprocess.Popen(  # noqa: S603 - argv is built from validated settings, no shell
            plan.argv(llama_server, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this sollol process (keep-alive) and its Ctrl-C
            env={**os.environ, MARKER_ENV: str(marker)},
        )
    start = process_start_time(process.pid) or 0
    now = time.time()
    return CoordinatorRecord(
        plan.model, plan.digest, process.pid, start, plan.host, port, str(log), list(plan.rpc), now, now, keep_alive
    )


def marked_processes(state_dir: Path) -> list[CoordinatorRecord]:
    """The coordinators running on this machine that were started for `state_dir`'s records, rebuilt from
    /proc (marker, command line, start time) whatever their records say. Rebuilt records are not ready: the
    paths that find them stop them rather than route to them."""
    prefix = f"{MARKER_ENV}={records_dir(state_dir)}/".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if not any(item.startswith(prefix) for item in environ):
                continue
            argv = [word.decode(errors="replace") for word in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:  # gone meanwhile, or another user's
            continue
        pid = int(entry.name)
        start = process_start_time(pid)
        if start is not None:
            found.append(_rebuilt(pid, start, argv, _output_file(entry)))
    return found


def _output_file(proc: Path) -> str:
    """Where the process writes its output (start_process points it at the coordinator's log), or ""."""
    try:
        target = os.readlink(proc / "fd" / "1")
    except OSError:
        return ""
    return target if target.startswith("/") and Path(target).is_file() else ""


def _rebuilt(pid: int, start: int, argv: list[str], log: str) -> CoordinatorRecord:
    """A record from a coordinator's command line (CoordinatorPlan.argv)."""
    flags = {word: argv[i + 1] for i, word in enumerate(argv[:-1]) if word.startswith("-")}
    now = time.time()
    return CoordinatorRecord(
        model=flags.get("--alias", "?"), digest="", pid=pid, start_time=start, host=flags.get("--host", "127.0.0.1"),
        port=int(flags.get("--port", "0")), log=log, rpc=[e for e in flags.get("--rpc", "").split(",") if e],
        started_at=now, last_used=now, keep_alive=0.0,
    )  # fmt: skip


def adopt_orphans(state_dir: Path, report: events.Reporter = events.ignore) -> list[CoordinatorRecord]:
    """Record again every marked coordinator that no record describes (its record was set aside, deleted or
    overwritten), so that the usual paths see the rpc-servers it holds and stop it. Returns those adopted."""
    adopted = []
    for found in marked_processes(state_dir):
        current = load_record(state_dir, found.model, report)
        if current is not None and same_process(current, found):
            continue
        if current is not None:  # the name is taken by a newer start: keep that one, find this by its pid
            found.model = f"{found.model}.orphan-{found.pid}"
        save_record(state_dir, found)
        report(
            events.Warning(
                f"coordinator {found.model}",
                f"found running without a record (pid {found.pid}, port {found.port}, rpc {', '.join(found.rpc)})",
            )
        )
        adopted.append(found)
    return adopted


def stop_process(record: CoordinatorRecord, *, grace_s: float = 5.0) -> bool:
    """Stop the coordinator if it is still the process we started; True when something was stopped."""
    if not alive(record):
        return False
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not alive(record):
            _reap(record.pid)
            return True
        time.sleep(0.05)
    os.kill(record.pid, signal.SIGKILL)
    _reap(record.pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def last_lines(log: str, lines: int = 4) -> str:
    """The end of a coordinator's log, on one line (for error messages)."""
    interesting = [line for line in log.splitlines() if line.strip() and "--- sollol" not in line]
    return " | ".join(line.strip() for line in interesting[-lines:]) or "empty log"


class Host(Protocol):
    """What wait_ready needs of where the coordinator runs (hosts.CoordinatorHost)."""

    async def alive(self, record: CoordinatorRecord) -> bool: ...

    async def log_text(self, record: CoordinatorRecord) -> str: ...

    async def stop(self, record: CoordinatorRecord) -> bool: ...


async def wait_ready(record: CoordinatorRecord, host: Host, *, timeout: float, reporter: events.Reporter) -> float:
    """Poll /health until 200 (503 while loading); fail fast when the process dies (e.g. rpc unreachable).
    Whether it still runs is asked at most once a second: on a node that is an SSH round trip."""
    from sollol_cli.backends.http import Timeouts
    from sollol_cli.backends.llamacpp import LlamaServerBackend

    backend = LlamaServerBackend(backend_ref(record), Timeouts(2.0, 5.0, 2.0))
    started = time.monotonic()
    checked = started
    subject = f"coordinator {record.model}"
    where = record.on_node
    reporter(events.StepStarted(subject, "loading", f"over {len(record.rpc)} rpc backends{where}"))
    while time.monotonic() - started < timeout:
        status = await backend.probe()
        if status.ready:
            elapsed = time.monotonic() - started
            reporter(events.StepDone(subject, "loading", f"ready in {elapsed:.1f} s"))
            return elapsed
        if time.monotonic() - checked >= 1.0 or status.error:
            checked = time.monotonic()
            if not await host.alive(record):
                reporter(events.StepFailed(subject, "loading", "exited"))
                log = last_lines(await host.log_text(record))
                raise BackendError(f"the coordinator for '{record.model}'{where} exited while loading: {log}")
        reporter(events.StepProgress(subject, "loading", time.monotonic() - started, timeout, status.error or ""))
        await asyncio.sleep(0.2)
    await host.stop(record)
    log = last_lines(await host.log_text(record))
    raise BackendError(f"the coordinator for '{record.model}'{where} was not ready within {timeout:.0f} s: {log}")
