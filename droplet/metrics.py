"""Prometheus metrics of schedulers and workers, served over HTTP when `metrics_port` is set.

Several processes on one host (N workers per VM) cannot share a port, so each takes the first
free port from `metrics_port` upwards and reports it in its status record; `droplet status`
shows which is which.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from droplet.middleware import Middleware
from droplet.proto import pb

log = logging.getLogger(__name__)

_PORT_ATTEMPTS = 100
_KEPT_FUNCTIONS = 1000  # labelled histograms kept at hand (the registry keeps them all)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Metrics:
    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "droplet_messages_total", "Messages handled, by kind", ["role", "kind"],
            registry=self.registry,
        )
        self.errors = Counter(
            "droplet_errors_total", "Failed calls and requests, by error code",
            ["role", "code"], registry=self.registry,
        )
        self.run_seconds = Histogram(
            "droplet_function_seconds", "Time spent running a function", ["function"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge(
            "droplet_queue_depth", "Messages ready in a queue", ["queue"],
            registry=self.registry,
        )
        self.workers = Gauge("droplet_workers", "Live workers", registry=self.registry)
        self.pins = Gauge("droplet_pins", "Pinned DAG functions", registry=self.registry)
        self.port = 0
        self._by_kind: dict[str, Counter] = {}
        self._by_function: dict[str, Histogram] = {}

    def serve(self, first_port: int) -> int:
        """Starts the HTTP endpoint on the first free port from first_port; 0 when off."""
        if first_port <= 0:
            return 0
        for port in range(first_port, first_port + _PORT_ATTEMPTS):
            try:
                start_http_server(port, registry=self.registry)
            except OSError:
                continue
            self.port = port
            log.info("metrics on http://0.0.0.0:%d/metrics", port)
            return port
        log.warning("no free metrics port in %d..%d", first_port, first_port + _PORT_ATTEMPTS)
        return 0

    def message(self, kind: str) -> None:
        # labels() costs more than the increment: the children are kept (kinds are few).
        counter = self._by_kind.get(kind)
        if counter is None:
            counter = self._by_kind[kind] = self.messages.labels(self.role, kind)
        counter.inc()

    def observe_run(self, function: str, seconds: float) -> None:
        histogram = self._by_function.get(function)
        if histogram is None:
            if len(self._by_function) >= _KEPT_FUNCTIONS:
                self._by_function.clear()
            histogram = self._by_function[function] = self.run_seconds.labels(function)
        histogram.observe(seconds)

    def error(self, code_name: str) -> None:
        self.errors.labels(self.role, code_name).inc()


class MetricsMiddleware(Middleware):
    """Counts what the message cycle and the executor report."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def after_message(self, kind: str, error_code: int) -> None:
        self.metrics.message(kind)
        if error_code != pb.NO_ERROR:
            self.metrics.error(_code_name(error_code))

    def after_run(self, function: str, seconds: float, outcome: pb.Value) -> None:
        self.metrics.observe_run(function, seconds)
        if outcome.type == pb.ERROR:
            info = pb.ErrorInfo()
            info.ParseFromString(outcome.body)
            self.metrics.error(_code_name(info.code))


def _code_name(code: int) -> str:
    return pb.ErrorCode.Name(code) if code in pb.ErrorCode.values() else str(code)
