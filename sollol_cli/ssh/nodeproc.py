"""The node-side process protocol, in one place: where sollol keeps its files on a node, how it quotes
for the node's shell, and how it starts, checks and stops a detached process there.

Every process sollol starts on a node without systemd (a manifest service, a sharded model's coordinator)
is started in a session of its own (setsid + nohup, all I/O redirected, so it outlives the SSH session) and
leaves a pidfile in its run directory: one line `pid starttime digest kind host port`. The start time
(field 22 of /proc/PID/stat, in clock ticks since boot) tells the process apart from a later one that
reused its pid, so a stop never kills a stranger. /proc/PID/stat holds the process name in parentheses, and
that name may contain spaces and ')': the fields are counted after the LAST ')' only.

Pure: every function returns shell text (tested as text, and run on this machine by the tests), except
`process_start_time`, which reads this machine's /proc.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

REMOTE_HOME = "$HOME/.sollol"  # expanded by the node's shell; everything sollol writes lives below it


# --- where things live on a node -------------------------------------------------------------------
# Per cluster, so `down` of one cluster never touches another's services; and per node, because several
# manifest nodes may be one machine (`address: local`) and each node's `up`/`down` must only see its own.


def run_dir(cluster: str, node: str) -> str:
    return f"{REMOTE_HOME}/{cluster}/{node}/run"


def log_path(cluster: str, node: str, service: str) -> str:
    return f"{REMOTE_HOME}/{cluster}/{node}/log/{service}.log"


def pid_path(cluster: str, node: str, service: str) -> str:
    return f"{run_dir(cluster, node)}/{service}.pid"


def coordinator_name(cluster: str, model: str) -> str:
    """The service name (and file name stem) of a sharded model's coordinator on a node."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model)
    return f"sollol-{cluster}-coordinator-{safe}"


def shell_word(arg: str) -> str:
    """Quote for the node's shell, but let `$HOME/...` and `~/...` mean the home of the node's user."""
    for prefix in ("$HOME/", "~/"):
        if arg.startswith(prefix):
            return '"$HOME"/' + shlex.quote(arg[len(prefix) :])
    return shlex.quote(arg)


# --- the pidfile -----------------------------------------------------------------------------------


PidfileLine = tuple[int, int, str, str, str, int]  # pid, start time, digest, kind, host, port


def parse_pidfile(words: list[str]) -> PidfileLine | None:
    """A pidfile's words (`pid starttime digest kind host port`), or None for anything else: a truncated
    pidfile, from a controller killed mid-write, is not ours."""
    if len(words) != 6 or not (words[0].isdigit() and words[1].isdigit() and words[5].isdigit()):
        return None
    pid, start, digest, kind, host, port = words
    return int(pid), int(start), digest, kind, host, int(port)


# --- /proc/PID/stat --------------------------------------------------------------------------------


def start_time_from_stat(text: str) -> int | None:
    """The start time in a /proc/PID/stat line, or None for a zombie (or text that is not one)."""
    _, paren, rest = text.rpartition(")")
    fields = rest.split()  # fields[0] is field 3 (the state), so field 22 is fields[19]
    if not paren or len(fields) < 20 or fields[0] == "Z" or not fields[19].isdigit():
        return None
    return int(fields[19])


def process_start_time(pid: int) -> int | None:
    """The start time of a process on this machine, or None when it is gone or a zombie."""
    try:
        return start_time_from_stat(Path(f"/proc/{pid}/stat").read_text(errors="replace"))
    except OSError:
        return None


# The same two rules for the node's shell (POSIX sh): `sollol_started PID` prints the start time (fails for a
# gone process or a zombie); `sollol_alive PID START` succeeds when PID still is the process started then.
SHELL_FUNCTIONS = (
    'sollol_started() { _st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; _st=${_st##*") "}; '
    'set -- $_st; [ "$1" != Z ] && echo "${20}"; }; '
    'sollol_alive() { [ -n "$2" ] && [ "$(sollol_started "$1")" = "$2" ]; }; '
)


# --- start, check, stop ----------------------------------------------------------------------------


def start_text(
    command: str, *, run_dir: str, log: str, pidfile: str, record: str, before: str = "", report: str = ""
) -> str:
    """Start `command` (shell text, its words quoted) detached in `run_dir`, appending to `log`; write
    `pid start RECORD` to `pidfile` and print `pid start REPORT`.

    `record` and `report` are shell text inside double quotes (the coordinator's `$port` expands there);
    `before` runs first, in `run_dir` (shell text ending in `; `). All I/O is redirected (else the SSH channel
    never closes) and the process gets a session of its own, so it survives the SSH session.
    """
    log_dir = log.rsplit("/", 1)[0]
    return (
        f"{SHELL_FUNCTIONS}mkdir -p {shell_word(run_dir)} {shell_word(log_dir)} && cd {shell_word(run_dir)} && "
        f"{before}{{ trap '' HUP; setsid nohup {command} >>{shell_word(log)} 2>&1 </dev/null & }}; "
        "pid=$!; start=$(sollol_started $pid || echo 0); "
        f'echo "$pid $start {record}" > {shell_word(pidfile)}; echo "$pid $start{report}"'
    )


def stop_text(pid: int, start_time: int, *, remove: Iterable[str] = (), grace_s: float = 5.0) -> str:
    """Stop the process only if `pid` still is the process started (same start time): TERM, then KILL after
    `grace_s`. Prints gone | stopped | killed (exit 0) or still-running (exit 1); the files in `remove` (the
    process's records) are removed unless it is still running."""
    tries = max(1, round(grace_s / 0.1))
    alive = f"sollol_alive {pid} {start_time}"
    text = (
        f"( {SHELL_FUNCTIONS}if ! {alive}; then echo gone; exit 0; fi; kill -TERM {pid} 2>/dev/null; "
        f"for i in $(seq {tries}); do {alive} || {{ echo stopped; exit 0; }}; sleep 0.1; done; "
        f"kill -KILL {pid} 2>/dev/null; sleep 0.2; {alive} && {{ echo still-running; exit 1; }}; echo killed )"
    )
    files = " ".join(shell_word(path) for path in remove)
    return f"{text} && rm -f {files}" if files else text


def check_text(pids: dict[str, tuple[int, int]]) -> str:
    """Print `name alive|dead` for each recorded (pid, start time); zombies count as dead."""
    checks = [
        f'if sollol_alive {pid} {start}; then echo "{name} alive"; else echo "{name} dead"; fi'
        for name, (pid, start) in sorted(pids.items())
    ]
    return SHELL_FUNCTIONS + "; ".join(checks) if checks else "true"


def scan_text(run_dir: str) -> str:
    """Print `svc=NAME PIDFILE-LINE alive|dead` for every pidfile in `run_dir`."""
    return (
        f'{SHELL_FUNCTIONS}for f in {shell_word(run_dir)}/*.pid; do [ -f "$f" ] || continue; set -- $(cat "$f"); '
        'n=$(basename "$f" .pid); if sollol_alive "$1" "$2"; then a=alive; else a=dead; fi; '
        'echo "svc=$n $* $a"; done'
    )
