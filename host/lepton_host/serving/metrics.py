"""Prometheus metrics of one server, in a registry of its own (so several servers can live in one process,
as they do in the tests and the demo).

The metrics every inference updates (requests, inferences, rows, samples, the request/queue/compute latencies,
batch sizes, queue depth) are kept as plain numbers by `LoopCounter`, `LoopHistogram` and `LoopGauge`: they are
updated on the server's event loop only, so they need none of prometheus_client's per-update locks and checks
(a tenth of the cost), and the registry exports them in prometheus_client's own form (same names, types,
samples). The rest, some of them updated from other threads (the audit's), are prometheus_client's."""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

__all__ = ["BATCH_BUCKETS", "CONTENT_TYPE_LATEST", "LATENCY_BUCKETS", "LoopCounter", "LoopGauge", "LoopHistogram",
           "ServingMetrics"]

# Sub-millisecond resolution: the edge path answers in tens of microseconds to a few milliseconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class _CounterChild:
    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount

    def samples(self, name: str, labels: dict):
        return [(name + "_total", labels, self.value), (name + "_created", labels, self.created)]


class _GaugeChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = float(value)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def samples(self, name: str, labels: dict):
        return [(name, labels, self.value)]


class _HistogramChild:
    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        i = bisect_left(self.bounds, amount)  # the first bucket whose upper bound holds it, as prometheus_client
        if i < len(self.counts):
            self.counts[i] += 1

    def samples(self, name: str, labels: dict):
        out, acc = [], 0
        for bound, count in zip(self.bounds, self.counts):
            acc += count
            out.append((name + "_bucket", {**labels, "le": floatToGoString(bound)}, float(acc)))
        out += [(name + "_count", labels, float(acc)), (name + "_sum", labels, self.sum),
                (name + "_created", labels, self.created)]
        return out


class _LoopFamily:
    """A labelled metric updated on one event loop's thread only (see the module docstring)."""

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames=(), registry: CollectorRegistry | None = None):
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], object] = {}
        if registry is not None:
            registry.register(self)

    def _child(self):
        raise NotImplementedError

    def labels(self, *values):
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
            child = self._children[key] = self._child()
        return child

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> list[Metric]:
        m = Metric(self.name, self.documentation, self.kind)
        for key, child in list(self._children.items()):
            for sample_name, labels, value in child.samples(self.name, dict(zip(self.labelnames, key))):
                m.add_sample(sample_name, labels, value)
        return [m]


class LoopCounter(_LoopFamily):
    kind = "counter"

    def _child(self):
        return _CounterChild()


class LoopGauge(_LoopFamily):
    kind = "gauge"

    def _child(self):
        return _GaugeChild()


class LoopHistogram(_LoopFamily):
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labelnames=(), registry: CollectorRegistry | None = None,
                 buckets=LATENCY_BUCKETS):
        bounds = [float(b) for b in buckets]
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        super().__init__(name, documentation, labelnames, registry)

    def _child(self):
        return _HistogramChild(self.bounds)


class ServingMetrics:
    def __init__(self, prefix: str = "lepton"):
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict = {}
        r, p = self.registry, prefix
        # Updated on the event loop only (see the module docstring).
        self.requests = LoopCounter(
            f"{p}_requests", "HTTP requests by route and outcome", ["route", "outcome"], registry=r
        )
        self.inferences = LoopCounter(
            f"{p}_inferences", "Inference requests by the path that answered and why",
            ["model", "path", "reason"], registry=r,
        )
        self.rows = LoopCounter(f"{p}_rows", "Samples answered, by path", ["model", "path"], registry=r)
        # Per sample, where `rows` counts per path: how many the cascade escalated, how many left before the edge
        # and why (the offload fraction by reason is this over rows).
        self.samples = LoopCounter(
            f"{p}_samples", "Samples answered, by the path that answered and why", ["model", "path", "reason"],
            registry=r,
        )
        self.request_latency = LoopHistogram(
            f"{p}_request_latency_seconds", "End-to-end latency of an inference request inside the server",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_latency = LoopHistogram(
            f"{p}_queue_latency_seconds", "Time a request waited in the batching queue",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute_latency = LoopHistogram(
            f"{p}_edge_compute_latency_seconds", "Backend predict() time per batch (edge compute)",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cloud_latency = Histogram(
            f"{p}_cloud_latency_seconds", "Cloud round trip per request, retries and hedges included",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = LoopHistogram(
            f"{p}_batch_size", "Samples per backend call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = LoopGauge(f"{p}_queue_depth", "Requests waiting in the batching queue", ["model"],
                                     registry=r)
        self.breaker_state = Gauge(
            f"{p}_cloud_breaker_state", "Cloud circuit breaker: 0 closed, 1 half-open, 2 open", registry=r
        )
        self.breaker_transitions = Counter(
            f"{p}_cloud_breaker_transitions", "Breaker state changes", ["to"], registry=r
        )
        self.cloud_attempts = Counter(
            f"{p}_cloud_attempts", "Cloud HTTP attempts by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.rejected = Counter(f"{p}_rejected", "Requests refused before inference, by cause", ["cause"], registry=r)
        self.edge_in_service = Gauge(
            f"{p}_edge_in_service", "Edge (board) in service: 1, or out of it until a self-test passes: 0", registry=r
        )
        self.edge_transitions = Counter(
            f"{p}_edge_transitions", "Edge taken out of / brought back into service", ["to"], registry=r
        )
        self.audit = Counter(
            f"{p}_audit", "Edge answers re-computed on the bit-exact emulator: audited, mismatches, dropped",
            ["outcome"], registry=r,
        )
        self.fault_schedule_start = Gauge(
            f"{p}_fault_schedule_start_time_seconds", "Unix time at which the fault schedule's clock started",
            registry=r,
        )
        self.fault_injected = Gauge(
            f"{p}_fault_injected", "Scheduled emulated-board fault active now (serve --fault)", ["kind"], registry=r
        )

    def child(self, metric, *labels):
        """`metric.labels(*labels)`, looked up once: the hot path asks for the same few children per request."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def render(self) -> bytes:
        return generate_latest(self.registry)
