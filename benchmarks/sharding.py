"""Tokens/s of sollol's sharded path next to a llama-server started by hand with the same flags (target: sollol
within 3%), measured in one run on this machine.

    python benchmarks/sharding.py [--preset big|tiny] [--rounds 24] [--warmup 2] [--num-predict 128]
                                  [--rpc-threads N] [--seed 1] [--json PATH] [--quick]

Setup (everything on 127.0.0.1, the real static llama.cpp build from the sollol cache, built if missing):

- two pairs of rpc-servers, all four with the same `-t`, by default half the cores: the two servers of a pair
  share this machine, and with `-t` = every core (what `sollol up` gives an rpc-server on its own node) their
  threads spin-wait against each other and generation gets many times slower;
- sollol: a manifest listing pair A as `backends: [{kind: rpc}, ...]` and the model as `mode: shard` with a
  `gguf:` path, driven in-process exactly as `sollol run` drives it (`open_cluster`, then
  `runtime.prompt.answer` on the dispatcher). Sollol plans, starts and reuses its own coordinator;
- by hand: `llama-server` on pair B with the argv of sollol's `CoordinatorPlan.argv` (same split, context, slots,
  verbosity; only `--rpc` and `--port` differ). The script checks that this is the command line sollol's
  coordinator really runs (`/proc/PID/cmdline`).

Four request paths, one request each per round: (a) the hand-started llama-server over plain HTTP (a streamed
`/completion`, the minimal client anyone would write); (b) sollol's path, with (a)'s prompt; (c) sollol's own
coordinator over plain HTTP, with a different prompt (the same one would be answered from (b)'s prompt cache);
(d) the hand-started server with (c)'s prompt. b/a is the comparison asked for; b/c isolates what sollol's request
path costs on the very same processes; c/d compares the two setups with the same plain client, so a difference
between them (or the noise floor of this machine) shows up there and not disguised as sollol's cost. Each
coordinator serves two requests per round: the same duty for both.

Why two rpc-server pairs and not one: an rpc-server serves one client at a time, so with one pair the two
coordinators would have to take turns, reloading the model over RPC at every switch. With two pairs both stay
loaded and the paths alternate request by request, one of the 24 orders of the four per round (none is favoured
by going first), which cancels drift on this noisy 2-core machine far better than blocks. One request runs at a
time, so the idle pair uses no CPU; both pairs are the same binary and flags on the same machine.

Every server is started in its own session, as sollol starts its coordinator and as servers started from their
own terminal run: Linux groups CPU time per session (autogroup), and a hand-started server sharing this script's
session would compete with the client and the rpc-servers for one share (in a run here, that made sollol look
5-9% faster).

The prompt starts with a tag and the round number so llama-server's prompt cache cannot skip its evaluation (a
fixed prompt would measure prompt eval on ~1 token). Greedy decoding (temperature 0, fixed seed) must give the same
text for the same prompt on both coordinators: the script counts the rounds where it does, a check that they did
the same work. The plain-HTTP paths get the prompt already rendered with the model's chat template, the text sollol
renders through `/apply-template`.

Measured per request, from llama-server's own timings (`timings` of the final `/completion` event; sollol's final
Ollama chunk carries the same numbers as `eval_count`/`eval_duration`): generation tokens/s and prompt-eval
tokens/s; and from this process, end-to-end tokens/s = generated tokens / wall time of the whole request (for
sollol this includes its `/apply-template` round trip and coordinator bookkeeping). Reported: the medians, the
ratio of the medians and the median of the per-round ratios (paired, the steadier measure).

Every process the script starts is stopped when it ends, also on Ctrl-C or SIGTERM (not after SIGKILL: the
servers run in their own sessions).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bench_processes import (
    Children,
    parse_with_defaults,
    report,
    run_measurement,
    say,
    sigterm_as_interrupt,
    start_rpc_server,
    workspace,
)

from sollol_cli.llamacpp.build import LlamaCppBinaries
from sollol_cli.manifest.loader import load_manifest
from sollol_cli.runtime.dispatch import Dispatcher, Trace
from sollol_cli.runtime.prompt import PromptOptions, answer, generate_request
from sollol_cli.runtime.session import open_cluster
from sollol_cli.settings import Settings
from sollol_cli.sharding import coordinator as coord
from sollol_cli.sharding.manager import ShardManager

LOOPBACK = "127.0.0.1"
CLUSTER = "bench-sharding"
MODEL = "bench"
CONTEXT = 2048
PROMPT = (
    "{tag} {n}. Explain how a cluster of small machines can serve one large language model: how the layers "
    "are split between the machines, what travels over the network for every generated token, why the slowest "
    "link decides the speed, and what an operator should measure before and after adding another machine."
)
PATHS = {
    "by_hand": "(a) llama-server by hand",
    "sollol": "(b) sollol (`sollol run` path)",
    "direct": "(c) sollol's coordinator, plain HTTP",
    "by_hand_c": "(d) llama-server by hand, (c)'s prompts",
}
# (a) and (b) get the same prompts, (c) and (d) others: (c) shares (b)'s coordinator, which would answer a prompt it
# has just evaluated from its cache (the tag is the first word, so only the chat template's prefix is shared)
TAGS = {"by_hand": "Request", "sollol": "Request", "direct": "Question", "by_hand_c": "Question"}
PLAIN_HTTP = ("by_hand", "direct", "by_hand_c")
# every order of the four paths, one per round, so none is favoured by going first or last
ORDERS = list(itertools.permutations(PATHS))
QUICK = {"preset": "tiny", "rounds": 3, "warmup": 1, "num_predict": 16}
DEFAULTS = {"preset": "big", "rounds": 24, "warmup": 2, "num_predict": 128}
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Sample:
    """One request's numbers: counts and milliseconds from llama-server, wall seconds from this process."""

    round: int
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    wall_s: float
    text: str

    @property
    def generation(self) -> float:
        return self.predicted_n / self.predicted_ms * 1000

    @property
    def prompt_eval(self) -> float:
        return self.prompt_n / self.prompt_ms * 1000

    @property
    def end_to_end(self) -> float:
        return self.predicted_n / self.wall_s


# --- processes ---


async def wait_healthy(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {process.returncode} while loading; see {log}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/health") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"llama-server not ready after 600 s; see {log}")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")


# --- the two request paths ---


async def by_hand(session: aiohttp.ClientSession, url: str, rendered: str, opts: PromptOptions, n: int) -> Sample:
    """One streamed `/completion` with the fields sollol's translation sends."""
    body = {"stream": True, "n_predict": opts.num_predict, "temperature": opts.temperature, "seed": opts.seed}
    text: list[str] = []
    final: dict[str, Any] = {}
    started = time.perf_counter()
    # llama-server closes the connection after a streamed answer: say so, or the pool would reuse a dying one
    async with session.post(
        f"{url}/completion", json={**body, "prompt": rendered}, headers={"Connection": "close"}
    ) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            text.append(event.get("content") or "")
            if event.get("stop"):
                final = event
    wall = time.perf_counter() - started
    timings = final.get("timings")
    if not isinstance(timings, dict):
        raise RuntimeError("llama-server's stream ended without its final event")
    return Sample(
        n,
        timings["prompt_n"],
        timings["prompt_ms"],
        timings["predicted_n"],
        timings["predicted_ms"],
        wall,
        "".join(text),
    )


async def through_sollol(dispatcher: Dispatcher, prompt: str, opts: PromptOptions, n: int) -> Sample:
    """What `sollol run MODEL PROMPT` does, minus writing to the terminal."""
    body = generate_request(MODEL, prompt, opts)
    text: list[str] = []
    started = time.perf_counter()
    final = await answer(dispatcher, "generate", body, Trace(MODEL), text.append)
    wall = time.perf_counter() - started
    if not final.get("done"):
        raise RuntimeError("sollol's stream ended without its final chunk")
    return Sample(
        n,
        int(final.get("prompt_eval_count", 0)),
        int(final.get("prompt_eval_duration", 0)) / 1e6,
        int(final.get("eval_count", 0)),
        int(final.get("eval_duration", 0)) / 1e6,
        wall,
        "".join(text),
    )


async def render(session: aiohttp.ClientSession, url: str, prompt: str) -> str:
    """The prompt in the model's chat template, as sollol's generate renders it before `/completion`."""
    async with session.post(f"{url}/apply-template", json={"messages": [{"role": "user", "content": prompt}]}) as resp:
        resp.raise_for_status()
        return str((await resp.json())["prompt"])


# --- the run ---


@dataclass
class Run:
    args: argparse.Namespace
    binaries: LlamaCppBinaries
    model_path: Path
    work: Path
    settings: Settings
    children: Children = field(default_factory=Children)
    pids: list[int] = field(default_factory=list)  # every process started, sollol's coordinator included


def write_manifest(run: Run, pair: list[str]) -> Path:
    lines = [f"name: {CLUSTER}", f"llama_cpp: {{bin_dir: {run.binaries.llama_server.parent}}}", "backends:"]
    for index, endpoint in enumerate(pair):
        host, port = endpoint.rsplit(":", 1)
        lines.append(f"  - {{name: rpc-{index}, kind: rpc, address: {host}, port: {port}}}")
    lines += [
        "models:",
        f"  - {{name: {MODEL}, mode: shard, gguf: {run.model_path}, context: {CONTEXT}, keep_alive: 86400}}",
    ]
    path = run.work / "cluster.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def sollol_plan(manager: ShardManager, record: coord.CoordinatorRecord) -> coord.CoordinatorPlan:
    """The plan sollol's running coordinator was started from, rebuilt from its record and the manifest."""
    model = manager.model(MODEL)
    assert model is not None
    file = manager.files.get(model)
    split = tuple(record.split) or None
    return coord.CoordinatorPlan(model.name, file.path, tuple(record.rpc), model.context, model.slots, split)


@contextlib.asynccontextmanager
async def sollol_runtime(run: Run, manifest: Path) -> AsyncIterator[tuple[ShardManager, Dispatcher]]:
    """The objects `sollol run` builds (see cli/commands/run.py), stopping the coordinator on the way out."""
    cluster = load_manifest(manifest).cluster
    async with open_cluster(cluster, run.settings, reporter=report, stop_on_close=True) as rt:
        assert rt.shards is not None
        yield rt.shards, rt.dispatcher


async def measure(run: Run) -> dict[str, Any]:
    args = run.args
    rpc = run.binaries.rpc_server
    say(f"starting 4 rpc-servers (-t {args.rpc_threads}) on {LOOPBACK}")
    pair_sollol = [
        await start_rpc_server(run.children, rpc, LOOPBACK, args.rpc_threads, run.work / f"rpc-a{i}.log")
        for i in (0, 1)
    ]
    pair_hand = [
        await start_rpc_server(run.children, rpc, LOOPBACK, args.rpc_threads, run.work / f"rpc-b{i}.log")
        for i in (0, 1)
    ]
    run.pids += [process.pid for process in run.children.processes]
    opts = PromptOptions(temperature=0.0, seed=args.seed, num_predict=args.num_predict)
    manifest = write_manifest(run, pair_sollol)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        sollol_runtime(run, manifest) as (manager, dispatcher),
    ):
        say("sollol: first request (it plans, starts and loads its coordinator)")
        await through_sollol(dispatcher, prompt_for("sollol", "W0"), opts, -1)
        record = coord.load_record(manager.home, MODEL)
        if record is None or not coord.alive(record):
            raise RuntimeError("sollol's coordinator is not running after its first answer")
        run.pids.append(record.pid)
        llama_server = str(run.binaries.llama_server)
        sollol_argv = sollol_plan(manager, record).argv(llama_server, record.port)
        if cmdline(record.pid) != sollol_argv:
            raise RuntimeError(f"sollol's coordinator runs {cmdline(record.pid)}, not its plan's {sollol_argv}")
        hand_port = coord.free_port(LOOPBACK)
        hand_plan = dataclasses.replace(sollol_plan(manager, record), rpc=tuple(pair_hand))
        hand_argv = hand_plan.argv(llama_server, hand_port)
        say(f"by hand: {shlex.join(hand_argv)}")
        hand_log = run.work / "llama-server-by-hand.log"
        hand = run.children.start(hand_argv, hand_log)
        run.pids.append(hand.pid)
        hand_url = f"http://{LOOPBACK}:{hand_port}"
        urls = {"by_hand": hand_url, "by_hand_c": hand_url, "direct": f"http://{record.host}:{record.port}"}
        await wait_healthy(session, urls["by_hand"], hand, hand_log)

        async def request(path: str, label: str, n: int) -> Sample:
            prompt = prompt_for(path, label)
            if path == "sollol":
                return await through_sollol(dispatcher, prompt, opts, n)
            return await by_hand(session, urls[path], await render(session, urls[path], prompt), opts, n)

        for i in range(args.warmup):
            for path in PATHS:
                if i or path != "sollol":  # sollol answered the first one while starting its coordinator
                    await request(path, f"W{i}", -1)
        samples: dict[str, list[Sample]] = {path: [] for path in PATHS}
        for n in range(args.rounds):
            for path in ORDERS[n % len(ORDERS)]:
                samples[path].append(await request(path, str(n + 1), n))
            speeds = ", ".join(f"{PATHS[path][:3]} {samples[path][-1].generation:.1f}" for path in PATHS)
            say(f"round {n + 1}/{args.rounds}: generation tokens/s: {speeds}")
    return summarize(run, samples, sollol_argv, hand_argv)


MEASURES: dict[str, tuple[str, Callable[[Sample], float]]] = {
    "generation": ("generation (tokens/s)", lambda s: s.generation),
    "prompt_eval": ("prompt eval (tokens/s)", lambda s: s.prompt_eval),
    "end_to_end": ("end to end (generated tokens / wall s)", lambda s: s.end_to_end),
}


def prompt_for(path: str, label: str) -> str:
    return PROMPT.format(tag=TAGS[path], n=label)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median of the per-round ratios: each round's requests ran back to back, so drift cancels."""
    return statistics.median(x / y for x, y in zip(numerator, denominator, strict=True))


# name in the result -> (numerator, denominator, paired, what it tells)
RATIOS = {
    "ratio": ("sollol", "by_hand", False, "b / a, medians: sollol against the hand-started server"),
    "paired_ratio": ("sollol", "by_hand", True, "b / a, paired"),
    "paired_ratio_direct": ("sollol", "direct", True, "b / c, paired: sollol's request path alone (same processes)"),
    "paired_ratio_setups": ("direct", "by_hand_c", True, "c / d, paired: the two setups, same plain client"),
}


def summarize(
    run: Run, samples: dict[str, list[Sample]], sollol_argv: list[str], hand_argv: list[str]
) -> dict[str, Any]:
    summary: dict[str, dict[str, float]] = {}
    for key, (_, value_of) in MEASURES.items():
        values = {path: [value_of(s) for s in items] for path, items in samples.items()}
        medians = {path: statistics.median(v) for path, v in values.items()}
        summary[key] = dict(medians)
        for name, (top, bottom, paired, _) in RATIOS.items():
            ratio = paired_ratio(values[top], values[bottom]) if paired else medians[top] / medians[bottom]
            summary[key][name] = ratio
    args = run.args
    return {
        "command": shlex.join(["python", "benchmarks/sharding.py", *sys.argv[1:]]),
        "preset": args.preset,
        "model": str(run.model_path),
        "model_bytes": run.model_path.stat().st_size,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "num_predict": args.num_predict,
        "rpc_threads": args.rpc_threads,
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "sollol_argv": sollol_argv,
        "by_hand_argv": hand_argv,
        # greedy decoding: the same prompt must give the same text on both coordinators, whoever asks
        "identical_text": sum(
            a.text == b.text and c.text == d.text for a, b, c, d in zip(*(samples[path] for path in PATHS), strict=True)
        ),
        "generated_tokens": sorted({s.predicted_n for items in samples.values() for s in items}),
        "prompt_tokens": {path: sorted({s.prompt_n for s in items}) for path, items in samples.items()},
        "summary": summary,
        "samples": {path: [dataclasses.asdict(s) for s in items] for path, items in samples.items()},
        "pids": run.pids,
    }


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    names = [name for name, _ in MEASURES.values()]
    rows = table(
        ["median", *names],
        [[label, *(f"{summary[key][path]:.1f}" for key in MEASURES)] for path, label in PATHS.items()],
    )
    rows += [""] + table(
        ["ratio", *(name.split(" (")[0] for name in names)],
        [[label, *(f"{summary[key][name]:.3f}" for key in MEASURES)] for name, (*_, label) in RATIOS.items()],
    )
    tokens = ", ".join(map(str, result["generated_tokens"]))
    rows += [
        "",
        f"`{result['preset']}` test model ({result['model_bytes'] / 1e6:.0f} MB, F16) split over 2 rpc-servers "
        f"(`-t {result['rpc_threads']}`) per coordinator, all on 127.0.0.1 of one {result['cpus']}-core machine; "
        f"{result['rounds']} requests per path, the four paths in rotating order, after {result['warmup']} warm-up; "
        f"{tokens} tokens generated per request, temperature 0, seed {result['seed']}; the same prompt gave the same "
        f"text on both coordinators in {result['identical_text']}/{result['rounds']} rounds. Paired: median of the "
        "per-round ratios.",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(rows)


# --- entry point ---


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("big", "tiny"), help="test model: big (543 MB, default) or tiny")
    parser.add_argument("--rounds", type=int, help="measured requests per path (default 24)")
    parser.add_argument("--warmup", type=int, help="untimed requests per path first (default 2)")
    parser.add_argument("--num-predict", type=int, help="tokens generated per request (default 128)")
    parser.add_argument(
        "--rpc-threads", type=int, default=max(1, (os.cpu_count() or 1) // 2), help="rpc-server -t (default: cores/2)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the whole result (every sample) to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny model, 3 rounds, 16 tokens")
    args = parse_with_defaults(parser, argv, QUICK, DEFAULTS)
    if min(args.rounds, args.warmup, args.num_predict, args.rpc_threads) < 1:
        parser.error("--rounds, --warmup, --num-predict and --rpc-threads must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with sigterm_as_interrupt():
        # sollol keeps its coordinator records in the work dir; it runs the same llama-server as the hand run
        binaries, model_path, work, settings = workspace(args.preset, "sharding")
        run = Run(args, binaries, model_path, work, settings)
        result = run_measurement(measure(run), settings, CLUSTER, run.children, work)
        if result is None:
            return EXIT_INTERRUPTED
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result | {"table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
