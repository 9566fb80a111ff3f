"""Pure health policy: when to probe a backend next, and whether requests may go to it.

Every state here is an immutable dataclass; policy methods return a new state and never mutate. Time is
always an argument (`now`, in seconds on any monotonic clock) and randomness is a number in [0, 1) passed
in, so the gateway's health loop owns the clock and tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


@dataclass(frozen=True)
class ProbeState:
    """One backend as the prober sees it. A backend starts unhealthy and due, so it is probed at once."""

    healthy: bool = False
    consecutive_failures: int = 0
    next_probe_at: float = 0.0


@dataclass(frozen=True)
class ProbeSchedule:
    """Probe healthy backends every `interval_s`; back off exponentially from a failing one, but never
    beyond `max_backoff_s`, so a node that comes back is re-admitted within that time. Jitter spreads the
    probes of backends that failed together (one switch, one power cut) instead of hitting them in step."""

    interval_s: float = 5.0
    max_backoff_s: float = 60.0
    jitter: float = 0.2  # a backoff is shortened by up to this fraction
    unhealthy_after: int = 2  # consecutive failed probes before a healthy backend is taken out

    def delay_s(self, consecutive_failures: int, random: float) -> float:
        """Seconds until the next probe; `random` in [0, 1)."""
        if consecutive_failures <= 0:
            return self.interval_s
        # The exponent is bounded so a long outage cannot overflow the float.
        backoff = self.interval_s * 2.0 ** min(consecutive_failures - 1, 62)
        return min(backoff, self.max_backoff_s) * (1.0 - self.jitter * random)

    def after_probe(self, state: ProbeState, *, ok: bool, now: float, random: float) -> ProbeState:
        if ok:
            return ProbeState(True, 0, now + self.delay_s(0, random))
        failures = state.consecutive_failures + 1
        healthy = state.healthy and failures < self.unhealthy_after
        return ProbeState(healthy, failures, now + self.delay_s(failures, random))

    def due(self, state: ProbeState, now: float) -> bool:
        return now >= state.next_probe_at


class BreakerPhase(StrEnum):
    closed = "closed"  # requests flow; counting consecutive failures
    open = "open"  # too many failures: no requests until the cooldown has passed
    half_open = "half_open"  # cooldown over: one trial request decides


@dataclass(frozen=True)
class BreakerState:
    """Stored phase of one backend's breaker. `open` turns into `half_open` by the passing of time alone,
    so read the phase with `CircuitBreaker.phase(state, now)`, not from `stored_phase`."""

    stored_phase: BreakerPhase = BreakerPhase.closed
    failures: int = 0
    opened_at: float = 0.0
    trial_started_at: float | None = None  # a half-open trial request is under way


@dataclass(frozen=True)
class CircuitBreaker:
    """Keyed by the gateway on the backend that actually served a request (after retries, not the first
    choice). The caller decides what a failure is: connection errors, 5xx and broken streams are; a 4xx is
    the client's fault and is not."""

    failure_threshold: int = 3
    cooldown_s: float = 30.0

    def phase(self, state: BreakerState, now: float) -> BreakerPhase:
        if state.stored_phase is BreakerPhase.open and now - state.opened_at >= self.cooldown_s:
            return BreakerPhase.half_open
        return state.stored_phase

    def allows(self, state: BreakerState, now: float) -> bool:
        phase = self.phase(state, now)
        if phase is BreakerPhase.closed:
            return True
        if phase is BreakerPhase.open:
            return False
        # Half-open: one trial at a time; a trial that never reported back (cancelled) expires after a cooldown.
        started = state.trial_started_at
        return started is None or now - started >= self.cooldown_s

    def on_request(self, state: BreakerState, now: float) -> BreakerState:
        """Record that a request was sent; in half-open it becomes the trial."""
        if self.phase(state, now) is BreakerPhase.half_open:
            return replace(state, stored_phase=BreakerPhase.half_open, trial_started_at=now)
        return state

    def on_success(self, state: BreakerState) -> BreakerState:
        return BreakerState()

    def on_back(self, state: BreakerState, now: float) -> BreakerState:
        """A probe found the backend answering again after failed probes (a restart, a network blip): an
        open breaker half-opens at once, so the next request is its trial instead of waiting out the
        cooldown. Only after failed probes: a backend that answers probes but fails requests keeps its
        cooldown, or every request failure would be followed by another trial."""
        if self.phase(state, now) is BreakerPhase.open:
            return replace(state, stored_phase=BreakerPhase.half_open, trial_started_at=None)
        return state

    def on_failure(self, state: BreakerState, now: float) -> BreakerState:
        phase = self.phase(state, now)
        if phase is BreakerPhase.half_open:
            return BreakerState(BreakerPhase.open, state.failures + 1, opened_at=now)
        if phase is BreakerPhase.open:
            # A request sent before the breaker opened: it must not stretch the cooldown.
            return replace(state, failures=state.failures + 1)
        failures = state.failures + 1
        if failures >= self.failure_threshold:
            return BreakerState(BreakerPhase.open, failures, opened_at=now)
        return replace(state, failures=failures)


class Answer(StrEnum):
    """What a backend's error answer says about the backend. Only `broken` counts against it."""

    refused = "refused"  # the request's own fault (400, 401, 413, ...): the caller gets it; the backend is fine
    elsewhere = "elsewhere"  # it lacks this model, route or feature (404, 501): another backend may have it
    busy = "busy"  # loading its model or full (503, 429): wait for it or go elsewhere; the backend is fine
    broken = "broken"  # the server failed (500, 502, 504, ...): a failure for its breaker; retry elsewhere


# Words servers use when a feature, route or model is missing rather than broken (llama-server's 501
# `not_supported_error` "This server does not support embeddings", "Infill is not supported by this model").
# Ollama's "model requires more system memory" is this node's limit, not a fault: another may have the memory.
_NOT_SUPPORTED = ("not supported", "does not support", "unsupported", "not implemented", "requires more system memory")


# 500s that are the request's fault: Ollama checks option types only when loading the runner, llama-server
# answers 500 when a body field has the wrong JSON type (an nlohmann::json exception).
_CALLERS_FAULT = ("must be of type", "json.exception")


def judge_answer(status: int, message: str = "", kind: str = "") -> Answer:
    """Classify an error status with its message and error type (`kind`, e.g. llama-server's
    `not_supported_error`); a 2xx is never passed here."""
    if status in (404, 405, 501) or kind in ("not_found_error", "not_supported_error"):
        return Answer.elsewhere
    if status in (429, 503, 529) or kind in ("unavailable_error", "overloaded_error"):
        return Answer.busy
    if status < 500:
        return Answer.refused
    text = message.lower()
    if any(words in text for words in _CALLERS_FAULT):
        return Answer.refused
    if any(words in text for words in _NOT_SUPPORTED):
        return Answer.elsewhere  # a 500 from an unsupported feature (llama-server throws for some of them)
    return Answer.broken
