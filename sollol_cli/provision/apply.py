"""Bring nodes to the planned state, concurrently. Each node's work catches its own errors, so one failed
node never stops the others; results come back per node, never as the first exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sollol_cli import events
from sollol_cli.errors import SollolError
from sollol_cli.manifest.models import Cluster, Node
from sollol_cli.names import normalize_model_name
from sollol_cli.provision import services as svc
from sollol_cli.provision.facts import NodeFacts, facts_script, parse_facts
from sollol_cli.provision.nodebuild import STEP_NAME, SourceTarball, build_on_node
from sollol_cli.provision.nodelock import node_lock
from sollol_cli.provision.plan import (
    BuildOnNode,
    EnsureModels,
    Fail,
    Forget,
    Keep,
    NodePlan,
    Start,
    Step,
    Stop,
    Upload,
    command,
    describe,
    desired_on,
    plan_down,
    plan_up,
)
from sollol_cli.provision.readiness import Readiness, probe_service
from sollol_cli.ssh.nodeproc import check_text, log_path, run_dir, shell_word
from sollol_cli.ssh.runner import CommandRunner

Status = Literal["changed", "unchanged", "failed", "unreachable", "planned"]
RunnerFactory = Callable[[Node], Awaitable[CommandRunner]]
Prober = Callable[[svc.ServiceSpec], Awaitable[Readiness]]


class StepError(SollolError):
    """Why: one step on one node failed; the node is reported failed and the others carry on."""


@dataclass
class ServiceOutcome:
    name: str
    kind: str
    host: str
    port: int
    digest: str
    manager: str
    pid: int | None = None
    start_time: int | None = None
    version: str | None = None
    ready: bool = False
    started: bool = False  # started by this run (not kept running from before)


@dataclass
class NodeOutcome:
    node: str
    status: Status
    plan: NodePlan | None = None
    failures: list[str] = field(default_factory=list)
    services: list[ServiceOutcome] = field(default_factory=list)
    facts: NodeFacts | None = None
    changed: list[str] = field(default_factory=list)  # human lines of what was done
    backend: str | None = None  # the llama.cpp build's backend (None: no llama.cpp service on the node)
    build: str | None = None  # what that build is: `vulkan 0.3.36`, `node_bin_dir`, ...

    @property
    def error(self) -> str | None:
        return self.failures[0] if self.failures else None


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    ready_timeout: float = 60.0
    manager: str = "auto"  # auto | process


DEFAULT_OPTIONS = Options()


def _home_path(path: str, home: str) -> str:
    return home + path[len("$HOME") :] if path.startswith("$HOME/") else path


class NodeJob:
    """Provision one node: connect, gather facts, plan, apply, verify."""

    def __init__(
        self,
        cluster: Cluster,
        node: Node,
        builds: svc.Builds,
        reporter: events.Reporter,
        prober: Prober,
        options: Options,
        source: SourceTarball | None = None,
    ) -> None:
        """`builds`: what the controller can put on this node; `source`: the pinned sources, for a node that
        builds its own binaries."""
        self.cluster, self.node, self.builds, self.source = cluster, node, builds, source
        self.report, self.prober, self.options = reporter, prober, options
        self.desired = svc.node_services(cluster.name, node, {})  # until the facts are in (see `up`)

    def _step(self, step: str, detail: str = "") -> None:
        self.report(events.StepStarted(self.node.name, step, detail))

    async def gather(self, runner: CommandRunner) -> NodeFacts:
        self._step("facts")
        ollama = self.node.ollama.binary if self.node.ollama else None
        # every build's paths: which one the node gets is chosen from these facts
        paths = sorted({source.remote_path for build in self.builds.values() for source in build.values()})
        models = [self.node.llamacpp.model] if self.node.llamacpp else []
        result = await runner.run(facts_script(self.cluster.name, self.node.name, paths, ollama, models), timeout=30)
        if result.exit_status != 0:
            raise StepError(f"gathering facts failed: {result.stderr.strip() or result.stdout.strip()}")
        return parse_facts(result.stdout)

    async def up(self, runner: CommandRunner) -> NodeOutcome:
        facts = await self.gather(runner)
        want = desired_on(self.cluster, self.node, self.builds, facts)
        self.desired, choice = want.services, want.choice
        plan = plan_up(
            self.node.name, self.desired, want.sources, facts,
            manager=self.options.manager, backend=choice, build=want.build, node_build=want.node_build,
        )  # fmt: skip
        outcome = NodeOutcome(self.node.name, "planned", plan, facts=facts)
        if choice is not None:
            outcome.backend, outcome.build = choice.backend, want.build or None
        if self.options.dry_run:
            return outcome
        failed = {step.service for step in plan.failures}
        outcome.failures.extend(f"{step.service}: {step.reason}" for step in plan.failures)
        for step in plan.steps:
            if isinstance(step, Fail):
                continue
            if isinstance(step, Start | EnsureModels) and step.spec.name in failed:
                continue  # its binary did not arrive, or its node lacks what it needs: already reported
            try:
                await self._apply(runner, step, facts, outcome)
            except SollolError as exc:
                name = _service_of(step)
                failed.add(name)
                if isinstance(step, Upload):
                    failed.update(s.name for s in self.desired if svc.BINARY_FOR[s.kind] == step.binary.name)
                if isinstance(step, BuildOnNode):
                    failed.update(s.name for s in self.desired if s.kind in ("rpc", "llamacpp"))
                outcome.failures.append(f"{_verb(step)} {name}: {exc.message}")
                self.report(events.StepFailed(self.node.name, _verb(step), exc.message))
        outcome.status = "failed" if outcome.failures else ("changed" if outcome.changed else "unchanged")
        return outcome

    async def down(self, runner: CommandRunner) -> NodeOutcome:
        facts = await self.gather(runner)
        plan = plan_down(self.node.name, facts)
        outcome = NodeOutcome(self.node.name, "planned", plan, facts=facts)
        if self.options.dry_run:
            return outcome
        for step in plan.steps:
            try:
                await self._apply(runner, step, facts, outcome)
            except SollolError as exc:
                outcome.failures.append(f"{_verb(step)} {_service_of(step)}: {exc.message}")
        outcome.status = "failed" if outcome.failures else ("changed" if outcome.changed else "unchanged")
        return outcome

    async def _apply(self, runner: CommandRunner, step: object, facts: NodeFacts, outcome: NodeOutcome) -> None:
        match step:
            case Upload(binary):
                self._step("upload", binary.name)
                await self._upload(runner, binary, facts.home)
                outcome.changed.append(describe(step))
            case BuildOnNode(plan):
                self._step(STEP_NAME, f"llama.cpp {plan.backend} ({', '.join(t for _, t in plan.binaries)})")
                if self.source is None:
                    raise StepError("no llama.cpp sources to build from")
                log = _home_path(log_path(self.cluster.name, self.node.name, STEP_NAME), facts.home)
                built = await build_on_node(
                    runner, plan, self.source, node=self.node.name, home=facts.home, log=log, reporter=self.report
                )
                self.report(events.StepDone(self.node.name, STEP_NAME, plan.root if built else "built by another run"))
                outcome.changed.append(describe(step))
            case Stop(service, _):
                self._step("stop", service.name)
                await self._stop(runner, step, facts.home)
                outcome.changed.append(describe(step))
            case Forget(service):
                await runner.run(self._command(step, facts.home), timeout=15)
            case Start(spec, manager, _):
                self._step("start", spec.name)
                pid, start = await self._start(runner, step, facts.home)
                outcome.changed.append(describe(step))
                started = ServiceOutcome(
                    spec.name, spec.kind, spec.host, spec.port, spec.digest, manager, pid, start, started=True
                )
                outcome.services.append(started)
                started.version = await self._wait_ready(runner, spec, manager, pid, start)
                started.ready = True
                self.report(events.StepDone(self.node.name, "ready", f"{spec.kind} on {spec.host}:{spec.port}"))
            case Keep(spec, running):
                kept = ServiceOutcome(
                    spec.name, spec.kind, spec.host, spec.port, spec.digest, running.manager,
                    running.pid or None, running.start_time or None,
                )  # fmt: skip
                outcome.services.append(kept)
                readiness = await self.prober(spec)
                if readiness.ready:
                    kept.version = readiness.version
                else:  # e.g. still loading its model after an earlier, interrupted `up`
                    kept.version = await self._wait_ready(
                        runner, spec, running.manager, running.pid, running.start_time
                    )
                kept.ready = True
            case EnsureModels(spec, models):
                pulled = await self._ensure_models(spec, models)
                if pulled:
                    outcome.changed.append(f"pulled {', '.join(pulled)} on {spec.name}")

    async def _upload(self, runner: CommandRunner, binary: svc.BinarySource, home: str) -> None:
        from sollol_cli.provision.transfer import upload_checked

        assert binary.local_path is not None and binary.sha256 is not None
        final = _home_path(binary.remote_path, home)
        # tagged per node (several local nodes may share one machine); upload_checked adds a per-run part
        await upload_checked(
            runner, Path(binary.local_path), final, binary.sha256, mode=0o755, reporter=self.report, tag=self.node.name
        )

    def _command(self, step: Step, home: str) -> str:
        text = command(step, self.cluster.name, self.node.name, home)
        assert text is not None, step
        return text

    async def _stop(self, runner: CommandRunner, step: Stop, home: str) -> None:
        result = await runner.run(self._command(step, home), timeout=30)
        if result.exit_status != 0:
            raise StepError(f"could not stop pid {step.service.pid}: {(result.stdout + result.stderr).strip()}")

    async def _start(self, runner: CommandRunner, step: Start, home: str) -> tuple[int, int]:
        spec, manager = step.spec, step.manager
        if manager.startswith("systemd-"):
            scope: svc.SystemdScope = "user" if manager == "systemd-user" else "system"
            path = svc.unit_path(spec.name, scope, home)
            dirs = [path.rsplit("/", 1)[0], _home_path(run_dir(spec.cluster, spec.node), home)]
            dirs.append(_home_path(spec.log_path, home).rsplit("/", 1)[0])
            await runner.run("mkdir -p " + " ".join(shell_word(d) for d in dirs), timeout=15, check=True)
            await runner.write_file(path, svc.unit_text(spec, home=home).encode(), mode=0o644)
            record = f"{manager} {spec.digest} {spec.kind} {spec.host} {spec.port}\n"
            record_path = f"{run_dir(spec.cluster, spec.node)}/{spec.name}.unit"
            await runner.write_file(_home_path(record_path, home), record.encode())
            unit = f"{spec.name}.service"
            await runner.run(
                f"{svc.systemctl(scope, 'daemon-reload')} && {svc.systemctl(scope, 'enable', '--now', unit)}",
                timeout=60,
                check=True,
            )
            return 0, 0
        result = await runner.run(self._command(step, home), timeout=30)
        parts = result.stdout.split()
        if result.exit_status != 0 or len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise StepError(f"could not start: {(result.stderr or result.stdout).strip()[-300:]}")
        return int(parts[0]), int(parts[1])

    async def _wait_ready(
        self, runner: CommandRunner, spec: svc.ServiceSpec, manager: str, pid: int, start: int
    ) -> str | None:
        self._step("waiting", f"for {spec.kind} to answer on {spec.host}:{spec.port}")
        deadline = time.monotonic() + self.options.ready_timeout
        last = Readiness(False, detail="no answer yet")
        while time.monotonic() < deadline:
            last = await self.prober(spec)
            if last.ready:
                return last.version
            if manager == "process":
                check = await runner.run(check_text({"s": (pid, start)}), timeout=15)
                if "s dead" in check.stdout:
                    tail = await self._log_tail(runner, spec)
                    held = await port_holder(runner, spec.host, spec.port)
                    raise StepError(f"{spec.kind} exited right after start: {held or tail}")
            await asyncio.sleep(0.25)
        raise StepError(f"not ready after {self.options.ready_timeout:.0f}s ({last.detail})")

    async def _log_tail(self, runner: CommandRunner, spec: svc.ServiceSpec, lines: int = 3) -> str:
        result = await runner.run(f"tail -n {lines} {shell_word(spec.log_path)} 2>/dev/null", timeout=15)
        text = " | ".join(line.strip() for line in result.stdout.splitlines() if line.strip())
        return text or "no output in its log"

    async def _ensure_models(self, spec: svc.ServiceSpec, models: tuple[str, ...]) -> list[str]:
        from sollol_cli.backends.base import BackendRef
        from sollol_cli.backends.ollama import OllamaBackend

        backend = OllamaBackend(BackendRef(self.node.name, "ollama", spec.host, spec.port))
        present = {normalize_model_name(str(m.get("name", ""))) for m in await backend.tags()}
        pulled = []
        for model in models:
            if normalize_model_name(model) in present:
                continue
            self._step("pull", model)
            async for chunk in backend.pull({"model": model, "stream": True}):
                if "total" in chunk:
                    self.report(
                        events.StepProgress(
                            self.node.name, "pull", float(chunk.get("completed", 0)), float(chunk["total"]), model
                        )
                    )
            pulled.append(model)
            self.report(events.StepDone(self.node.name, "pull", model))
        return pulled


async def port_holder(runner: CommandRunner, host: str, port: int) -> str | None:
    """rpc-server exits silently when it cannot bind: say who holds the port (a listener, or a connection
    that happened to get it as its local port), if anyone does."""
    result = await runner.run(f"ss -tanpH 'sport = :{port}' 2>/dev/null", timeout=15)
    rows = [row for row in (line.split() for line in result.stdout.splitlines()) if len(row) >= 5]
    rows = [row for row in rows if row[3].rsplit(":", 1)[0].strip("[]") in (host, "0.0.0.0", "*", "::")]
    # a listener first, then a live connection (with its process), then what is left (TIME-WAIT)
    rows.sort(key=lambda row: {"LISTEN": 0, "ESTAB": 1}.get(row[0], 2))
    if not rows:
        return None
    row = rows[0]
    who = row[5] if len(row) > 5 else "another process"
    return f"port {port} on {host} is taken ({row[0]} {row[3]} -> {row[4]}, {who}); free it or change the port"


def _service_of(step: object) -> str:
    match step:
        case Upload(binary):
            return binary.name
        case BuildOnNode(_):
            return "llama.cpp"
        case Stop(service, _) | Forget(service):
            return service.name
        case Start(spec, _, _) | Keep(spec, _) | EnsureModels(spec, _):
            return spec.name
    return "?"


def _verb(step: object) -> str:
    name = type(step).__name__.lower()
    return {"ensuremodels": "pull", "buildonnode": STEP_NAME}.get(name, name)


async def run_nodes(
    cluster: Cluster,
    action: Literal["up", "down"],
    *,
    connect: RunnerFactory,
    builds: Mapping[str, svc.Builds],
    reporter: events.Reporter = events.ignore,
    prober: Prober = probe_service,
    options: Options = DEFAULT_OPTIONS,
    only: list[str] | None = None,
    source: SourceTarball | None = None,
) -> list[NodeOutcome]:
    """Run `up` or `down` on every node (or `only` these) concurrently; one outcome per node. `builds`: per
    node, what the controller can put there; `source`: the pinned sources for nodes that build their own."""
    nodes = [n for n in cluster.nodes if only is None or n.name in only]

    async def one(node: Node) -> NodeOutcome:
        job = NodeJob(cluster, node, builds.get(node.name, {}), reporter, prober, options, source)
        reporter(events.StepStarted(node.name, "connect", node.host))
        try:
            runner = await connect(node)
        except SollolError as exc:
            reporter(events.StepFailed(node.name, "connect", exc.message))
            return NodeOutcome(node.name, "unreachable", failures=[f"connect: {exc.message}"])
        try:
            async with runner:
                if options.dry_run:
                    outcome = await (job.up(runner) if action == "up" else job.down(runner))
                else:  # one `up`/`down` per node at a time, in any process: a second one waits here
                    async with node_lock(runner, cluster.name, node.name, action, reporter):
                        outcome = await (job.up(runner) if action == "up" else job.down(runner))
        except SollolError as exc:
            reporter(events.StepFailed(node.name, "facts", exc.message))
            return NodeOutcome(node.name, "failed", failures=[exc.message])
        if outcome.status in ("failed",):
            reporter(events.StepFailed(node.name, action, outcome.failures[0]))
        else:
            reporter(events.StepDone(node.name, action, outcome.status))
        return outcome

    return list(await asyncio.gather(*(one(node) for node in nodes)))


def check_protocols(outcomes: list[NodeOutcome], expected: str) -> None:
    """rpc-servers must all speak the coordinator's protocol; a node that differs is failed, not hidden."""
    for outcome in outcomes:
        for service in outcome.services:
            if service.kind == "rpc" and service.ready and service.version and service.version != expected:
                outcome.failures.append(
                    f"{service.name}: rpc protocol {service.version} differs from the coordinator's {expected}; "
                    "use the same llama.cpp build on every node"
                )
                outcome.status = "failed"
