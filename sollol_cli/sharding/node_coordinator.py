"""A sharded model's coordinator on a node (`models[].coordinator`), driven over SSH.

The node keeps the truth, as for every service sollol starts there: a pidfile (`pid starttime digest
coordinator host port`) in the cluster's run directory, so `sollol down` stops it with the rest of the
node, and `sollol up` leaves it alone (it is not a manifest service). The coordinator listens on the node's
cluster address, so it requires an API key: a fresh one per start, handed over on stdin into a 0600 file
(never in argv, which every user of the node can read).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sollol_cli import events
from sollol_cli.errors import BackendError
from sollol_cli.sharding.coordinator import CoordinatorPlan, CoordinatorRecord
from sollol_cli.ssh import nodeproc
from sollol_cli.ssh.nodeproc import shell_word
from sollol_cli.ssh.runner import CommandRunner

PORT_RANGE = (41100, 41999)  # where a free port is searched when the manifest names none
MODELS_DIR = f"{nodeproc.REMOTE_HOME}/models"  # GGUFs copied for coordinators, by digest, shared by clusters
LOG_TAIL_BYTES = 4 * 2**20


@dataclass(frozen=True)
class NodeLaunch:
    """How to start a coordinator on a node (pure: the start script is tested as text)."""

    cluster: str
    node: str
    plan: CoordinatorPlan  # plan.host is the node's cluster address
    llama_server: str  # path on the node
    port: int | None  # None: a free one from PORT_RANGE, searched from `first_port`
    first_port: int = PORT_RANGE[0]

    @property
    def name(self) -> str:
        return nodeproc.coordinator_name(self.cluster, self.plan.model)

    @property
    def pid_path(self) -> str:
        return nodeproc.pid_path(self.cluster, self.node, self.name)

    @property
    def key_path(self) -> str:
        return key_path(self.cluster, self.node, self.plan.model)

    @property
    def log_path(self) -> str:
        return nodeproc.log_path(self.cluster, self.node, self.name)


def key_path(cluster: str, node: str, model: str) -> str:
    """The coordinator's API key, next to its pidfile (and removed with it)."""
    return f"{nodeproc.run_dir(cluster, node)}/{nodeproc.coordinator_name(cluster, model)}.key"


def start_script(launch: NodeLaunch) -> str:
    """Pick the port, store the API key read from stdin, start llama-server detached; print `pid start port`.

    A free port is one no socket listens on (/proc/net/tcp{,6}, state 0A); the search starts at a random
    point of the range so two starts at once rarely race for the same port.
    """
    q = shell_word
    words = [q(arg) for arg in launch.plan.argv(launch.llama_server, 0)]
    words[words.index("--port") + 1] = '"$port"'
    words += ["--api-key-file", q(launch.key_path)]
    low, high = PORT_RANGE
    if launch.port is not None:
        pick = f"port={launch.port}"
    else:
        pick = (
            "used=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | "
            "awk '$4 == \"0A\" { n = split($2, a, \":\"); print a[n] }' | tr '\\n' ' '); port=; "
            f"for p in $(seq {launch.first_port} {high}) $(seq {low} {launch.first_port}); do "
            'case " $used " in *" $(printf %04X $p) "*) ;; *) port=$p; break;; esac; done; '
            f'[ -n "$port" ] || {{ echo "no free port in {low}-{high}" >&2; exit 1; }}'
        )
    log, key = q(launch.log_path), q(launch.key_path)
    before = (
        f"(umask 077; cat > {key}); "
        f'echo "--- sollol: starting coordinator for {launch.plan.model} on port $port" > {log}; '
    )
    record = f"{launch.plan.digest} coordinator {launch.plan.host} $port"
    start = nodeproc.start_text(
        " ".join(words), run_dir=nodeproc.run_dir(launch.cluster, launch.node), log=launch.log_path,
        pidfile=launch.pid_path, record=record, before=before, report=" $port",
    )  # fmt: skip
    return f"set -e; {pick}; {start}"


def stop_script(cluster: str, node: str, record: CoordinatorRecord) -> str:
    """Stop it if it still is the process started (same start time); then drop its pidfile and key."""
    files = (nodeproc.pid_path(cluster, node, nodeproc.coordinator_name(cluster, record.model)),
             key_path(cluster, node, record.model))  # fmt: skip
    return nodeproc.stop_text(record.pid, record.start_time, remove=files)


async def launch(runner: CommandRunner, spec: NodeLaunch, keep_alive: float) -> CoordinatorRecord:
    api_key = secrets.token_urlsafe(24)
    result = await runner.run(start_script(spec), input=api_key + "\n", timeout=30)
    fields = result.stdout.split()
    if not result.ok or len(fields) != 3 or not all(f.isdigit() for f in fields):
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise BackendError(f"could not start the coordinator for '{spec.plan.model}' on node {spec.node}: {detail[0]}")
    pid, start, port = (int(f) for f in fields)
    now = time.time()
    return CoordinatorRecord(
        spec.plan.model, spec.plan.digest, pid, start, spec.plan.host, port, spec.log_path,
        list(spec.plan.rpc), now, now, keep_alive, node=spec.node, api_key=api_key,
    )  # fmt: skip


async def running(runner: CommandRunner, record: CoordinatorRecord) -> bool:
    result = await runner.run(nodeproc.check_text({"c": (record.pid, record.start_time)}), timeout=15)
    return result.stdout.strip() == "c alive"


async def stop(runner: CommandRunner, cluster: str, record: CoordinatorRecord) -> bool:
    """True when the process was still running and is now stopped."""
    assert record.node is not None
    result = await runner.run(stop_script(cluster, record.node, record), timeout=30)
    return result.stdout.strip() in ("stopped", "killed")


async def log_text(runner: CommandRunner, record: CoordinatorRecord) -> str:
    """The end of its log (the log holds only the current start)."""
    result = await runner.run(f"tail -c {LOG_TAIL_BYTES} {shell_word(record.log)}", timeout=30)
    return result.stdout


# --- the files it needs on the node ---


async def ensure_file(
    runner: CommandRunner, local: Path, final: str, sha256: str, *, mode: int, reporter: events.Reporter
) -> bool:
    """Put `local` at `final` on the node unless the same file (by sha256) is there; True when copied."""
    from sollol_cli.provision.transfer import remote_sha256, upload_checked

    if await remote_sha256(runner, final) == sha256:
        return False
    await upload_checked(runner, local, final, sha256, mode=mode, reporter=reporter, tag="coordinator")
    return True


async def ensure_gguf(
    runner: CommandRunner, local: Path, digest: str, *, reporter: events.Reporter
) -> tuple[str, bool]:
    """The GGUF on the node, copied once per digest; returns its path there and whether it was copied.
    An existing copy of the right size is trusted: it was checked when it arrived (renamed only after)."""
    final = f"{MODELS_DIR}/sha256-{digest}.gguf"
    size = (await asyncio.to_thread(local.stat)).st_size
    found = await runner.run(f"stat -c %s {shell_word(final)} 2>/dev/null", timeout=15)
    if found.ok and found.stdout.strip() == str(size):
        return final, False
    from sollol_cli.provision.transfer import upload_checked

    await upload_checked(runner, local, final, digest, mode=0o644, reporter=reporter, tag="coordinator")
    return final, True


def file_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a controller GGUF, remembered by (path, size, mtime) so a big file is hashed once."""
    import json

    from sollol_cli.llamacpp.build import sha256_file

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    memo = cache_dir / "models" / "digests" / f"{key}.json"
    try:
        return str(json.loads(memo.read_text())["sha256"])
    except (FileNotFoundError, ValueError, KeyError):
        pass
    digest = sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"path": str(path), "sha256": digest}))
    return digest
