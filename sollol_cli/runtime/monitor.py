"""Health monitoring: probe every backend concurrently, keep an inventory of what each one has, back off
from failing backends (jittered, capped, so one that comes back is re-admitted) and track a circuit breaker
keyed on the backend each request actually used."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sollol_cli.backends.base import Backend, BackendStatus
from sollol_cli.backends.clients import backend_for
from sollol_cli.backends.http import Timeouts
from sollol_cli.backends.rpc import RpcDevice, RpcProbe, probe_rpc
from sollol_cli.health import BreakerState, CircuitBreaker, ProbeSchedule, ProbeState
from sollol_cli.names import normalize_model_name
from sollol_cli.router import Candidate, SpeedEstimate
from sollol_cli.runtime.inventory import BackendSpec
from sollol_cli.sharding.coordinator import Attachment
from sollol_cli.sharding.pool import RpcServer, ServingBackend

BUSY_TIMEOUT_GRACE = 3


@dataclass
class BackendView:
    """Everything known about one backend, updated by probes and by the requests it serves."""

    spec: BackendSpec
    client: Backend | None
    status: BackendStatus | None = None
    rpc: RpcProbe | None = None  # rpc-servers only
    probe: ProbeState = field(default_factory=ProbeState)
    breaker: BreakerState = field(default_factory=BreakerState)
    in_flight: int = 0  # this process's requests on it now
    # other clients' requests on it at the last probe: what the backend reported in flight (llama-server's
    # /slots) less this process's own; 0 when it does not report (Ollama), see `others_in_flight`
    others_in_flight: int = 0
    served: int = 0
    speed: SpeedEstimate = field(default_factory=SpeedEstimate)
    last_error: str | None = None
    # what the last successful probe saw: one failed probe does not make the models unknown while the
    # backend still counts as healthy (it is taken out after `unhealthy_after` failures)
    models: frozenset[str] = frozenset()
    loaded: frozenset[str] = frozenset()
    busy_timeouts: int = 0  # consecutive connect timeouts since the rpc-server was last seen busy
    probed_at: float | None = None  # the monitor's clock when its last probe ended

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def slots(self) -> int:
        if self.status is not None and self.status.slots:
            return self.status.slots
        return self.spec.slots_hint or 1


def _known_first(live: SpeedEstimate, benched: SpeedEstimate) -> SpeedEstimate:
    return SpeedEstimate(
        live.ttft_s if live.ttft_s is not None else benched.ttft_s,
        live.tokens_per_s if live.tokens_per_s is not None else benched.tokens_per_s,
    )


class Monitor:
    def __init__(
        self,
        specs: list[BackendSpec],
        timeouts: Timeouts,
        *,
        schedule: ProbeSchedule | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        attached: Callable[[], dict[str, Attachment]] | None = None,
    ) -> None:
        self.views = {spec.name: BackendView(spec, _client(spec, timeouts)) for spec in specs}
        self.timeouts = timeouts
        self.schedule = schedule or ProbeSchedule()
        self.breaker = breaker or CircuitBreaker()
        self.clock = clock
        self.attached = attached or dict  # rpc endpoints held by a running coordinator: busy, not probed
        self.changed = asyncio.Event()  # set after every probe round and every finished request
        # `sollol bench`'s saved speeds by (normalised model name, backend): what a process that has served
        # nothing yet (every `sollol run`) knows about a backend's speed for a model; see `candidates`
        self.measured: Mapping[tuple[str, str], SpeedEstimate] = {}

    def view(self, name: str) -> BackendView:
        return self.views[name]

    async def probe_one(self, view: BackendView) -> None:
        ok = False
        try:
            if view.spec.ref.kind == "rpc":
                held = self.attached().get(view.spec.ref.address)
                if held is not None:
                    known = view.rpc
                    protocol, devices = (known.protocol, known.devices) if known is not None else (None, ())
                    if not devices:  # never probed here: the memory its devices had when the coordinator started
                        devices = tuple(RpcDevice(i, free, total) for i, (free, total) in enumerate(held.devices))
                    view.rpc = RpcProbe("busy", protocol, devices, None, held.holder)
                    ok = True
                    view.last_error = None
                    view.probe = self.schedule.after_probe(
                        view.probe, ok=True, now=self.clock(), random=random.random()
                    )
                    view.probed_at = self.clock()
                    return
                before = view.rpc
                seen = await probe_rpc(
                    view.spec.ref.host, view.spec.ref.port,
                    connect_timeout=self.timeouts.connect, reply_timeout=min(self.timeouts.probe, 2.0),
                )  # fmt: skip
                timed_out_while_busy = (
                    seen.state == "down"
                    and before is not None
                    and before.state == "busy"
                    and "timed out" in (seen.error or "")
                )
                view.busy_timeouts = view.busy_timeouts + 1 if timed_out_while_busy else 0
                if before is not None and timed_out_while_busy and view.busy_timeouts <= BUSY_TIMEOUT_GRACE:
                    # A busy rpc-server's accept queue fills with our earlier probes and connects time out.
                    # It was busy a moment ago and nothing refused us: still busy, for a few probes.
                    seen = before
                view.rpc = seen
                ok = seen.state in ("ready", "busy")
                view.last_error = None if ok else (seen.error or seen.state)
            elif view.client is not None:
                own_before = view.in_flight
                view.status = await view.client.probe()
                view.others_in_flight = others_in_flight(view.status.in_flight, max(own_before, view.in_flight))
                ok = view.status.ready
                view.last_error = None if ok else view.status.error
                if ok:
                    view.models = frozenset(m.name for m in view.status.models)
                    view.loaded = frozenset(view.status.loaded)
        except Exception as exc:  # a probe must never take the monitor down
            view.last_error = f"probe failed: {exc}"
        view.probed_at = self.clock()
        was_failing = view.probe.consecutive_failures > 0 or not view.probe.healthy
        view.probe = self.schedule.after_probe(view.probe, ok=ok, now=self.clock(), random=random.random())
        if ok and not view.probe.healthy:
            view.probe = ProbeState(True, 0, view.probe.next_probe_at)
        if ok and was_failing:
            view.breaker = self.breaker.on_back(view.breaker, self.clock())

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe_one(view) for view in self.views.values()))
        self._notify()

    async def run(self) -> None:
        """Probe whatever is due, forever (cancel to stop)."""
        while True:
            now = self.clock()
            due = [v for v in self.views.values() if self.schedule.due(v.probe, now)]
            if due:
                await asyncio.gather(*(self.probe_one(v) for v in due))
                self._notify()
            upcoming = min((v.probe.next_probe_at for v in self.views.values()), default=now + 5.0)
            await asyncio.sleep(max(0.05, min(upcoming - self.clock(), 5.0)))

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    # --- what the shard manager reads (sharding.pool.Backends) ---

    def rpc_servers(self) -> list[RpcServer]:
        return [rpc_server(view) for view in self._rpc_views()]

    async def probe_rpc_servers(self) -> list[RpcServer]:
        views = self._rpc_views()
        await asyncio.gather(*(self.probe_one(view) for view in views))
        return [rpc_server(view) for view in views]

    def serving(self) -> list[ServingBackend]:
        return [
            ServingBackend(
                v.name, v.spec.ref.node, v.spec.machine, v.spec.hint_bytes, tuple(v.status.models), v.spec.ref.kind
            )
            for v in self.views.values()
            if v.spec.ref.kind != "rpc" and v.status is not None
        ]

    def _rpc_views(self) -> list[BackendView]:
        return [view for view in self.views.values() if view.spec.ref.kind == "rpc"]

    def candidates(
        self, kinds: tuple[str, ...] = ("ollama", "llamacpp"), *, model: str | None = None
    ) -> list[Candidate]:
        """The router's view of every serving backend. For `model`, a backend whose speed this process has
        not measured yet gets the speed `sollol bench` saved for it with that model: this process's own
        measurements are newer, so they win."""
        now = self.clock()
        key = normalize_model_name(model) if model is not None else None
        out = []
        for view in self.views.values():
            if view.spec.ref.kind not in kinds:
                continue
            models, loaded = view.models, view.loaded
            healthy = view.probe.healthy and self.breaker.allows(view.breaker, now)
            benched = self.measured.get((key, view.name)) if key is not None else None
            speed = view.speed if benched is None else _known_first(view.speed, benched)
            out.append(
                Candidate(
                    name=view.name,
                    models=models,
                    loaded=loaded,
                    slots=view.slots,
                    in_flight=view.in_flight,
                    others_in_flight=view.others_in_flight,
                    healthy=healthy,
                    priority=view.spec.priority,
                    ttft_s=speed.ttft_s,
                    tokens_per_s=speed.tokens_per_s,
                )  # fmt: skip
            )
        return out

    def unreachable(self, kinds: tuple[str, ...] = ("ollama", "llamacpp")) -> list[str]:
        """Serving backends whose last probe failed: their models are unknown, not absent."""
        return [
            v.name
            for v in self.views.values()
            if v.spec.ref.kind in kinds and (v.status is None or not v.status.reachable)
        ]

    # --- request accounting (called by the dispatcher) ---

    def started(self, view: BackendView) -> None:
        view.in_flight += 1
        view.breaker = self.breaker.on_request(view.breaker, self.clock())

    def finished(self, view: BackendView, *, ok: bool | None, error: str | None = None) -> None:
        """`ok=None`: neither a success nor a failure (the caller cancelled, or the backend was busy loading);
        only the slot is released. Refusals (404, 501, a bad request) are `ok=True`: the backend answered."""
        view.in_flight -= 1
        if ok is None:
            pass
        elif ok:
            view.served += 1
            view.breaker = self.breaker.on_success(view.breaker)
        else:
            view.last_error = error
            view.breaker = self.breaker.on_failure(view.breaker, self.clock())
            # A connect failure means the node is probably gone: probe it again soon rather than waiting.
            view.probe = ProbeState(view.probe.healthy, view.probe.consecutive_failures, self.clock())
        self._notify()


def others_in_flight(reported: int | None, own: int) -> int:
    """Other clients' requests on a backend that reported `reported` in flight while this process had `own`
    there (the larger of its count before and after the probe: a request of ours that started or ended
    during the probe is not taken for someone else's). The router adds these to its own live count, so a
    backend's load is max(reported, own) at probe time and follows our own requests exactly after it."""
    return max((reported or 0) - own, 0)


def _client(spec: BackendSpec, timeouts: Timeouts) -> Backend | None:
    """None for an rpc-server: it is probed over its own protocol and never sent requests."""
    return None if spec.ref.kind == "rpc" else backend_for(spec.ref, alias=spec.alias, timeouts=timeouts)


def rpc_server(view: BackendView) -> RpcServer:
    """An rpc backend's view as sharding reads it: the manifest's devices and what the last probe saw."""
    ref = view.spec.ref
    spec = view.spec
    return RpcServer(
        view.name, ref.host, ref.port, spec.machine, spec.hint_bytes, view.rpc, ref.node, spec.rpc_devices,
        spec.memory_cap_bytes,
    )  # fmt: skip
