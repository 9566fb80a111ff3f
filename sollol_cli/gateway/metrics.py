"""Prometheus metrics of the gateway, in a private registry (so tests and several apps in one process never
share counters), plus per-backend gauges read from the monitor at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sollol_cli.runtime.monitor import Monitor

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1)


class _BackendCollector(Collector):
    """In-flight requests and health of each backend, as the monitor sees them when Prometheus scrapes."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "sollol_backend_in_flight", "Requests the gateway has in flight on each backend.", labels=["backend"]
        )
        up = GaugeMetricFamily("sollol_backend_up", "1 when the last health probe succeeded.", labels=["backend"])
        for view in self.monitor.views.values():
            in_flight.add_metric([view.name], view.in_flight)
            up.add_metric([view.name], 1.0 if view.probe.healthy else 0.0)
        yield in_flight
        yield up


class GatewayMetrics:
    def __init__(self, monitor: Monitor, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "sollol_gateway_requests", "Requests answered, by route, method and status.",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "sollol_gateway_errors", "Requests that failed: error status, or an error line after streaming began.",
            ["route", "status"], registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge("sollol_gateway_in_flight", "Requests being handled now.", registry=registry)
        self.queue_depth = Gauge(
            "sollol_gateway_queue_depth", "Requests waiting for a free backend slot.", registry=registry
        )
        self.queue_depth.set_function(queue_depth)
        self.backend_latency = Histogram(
            "sollol_backend_request_seconds", "Time from sending a request to a backend to its last byte.",
            ["backend"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "sollol_time_to_first_token_seconds", "Time from sending a request to a backend to its first chunk.",
            ["backend"], buckets=_TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "sollol_tokens_generated", "Tokens generated, by backend.", ["backend"], registry=registry
        )
        self.overhead = Histogram(
            "sollol_gateway_overhead_seconds", "Time the gateway itself added before the response headers.",
            buckets=_OVERHEAD_BUCKETS, registry=registry,
        )  # fmt: skip
        registry.register(_BackendCollector(monitor))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
