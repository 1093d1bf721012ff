"""Prometheus metrics of one server, in a registry of its own (so several servers can live in one process,
as they do in the tests and the demo)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

# Sub-millisecond resolution: the edge path answers in tens of microseconds to a few milliseconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    def __init__(self, prefix: str = "lepton"):
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict = {}
        r, p = self.registry, prefix
        self.requests = Counter(
            f"{p}_requests", "HTTP requests by route and outcome", ["route", "outcome"], registry=r
        )
        self.inferences = Counter(
            f"{p}_inferences", "Inference requests by the path that answered and why",
            ["model", "path", "reason"], registry=r,
        )
        self.rows = Counter(f"{p}_rows", "Samples answered, by path", ["model", "path"], registry=r)
        # Per sample, where `rows` counts per path: how many the cascade escalated, how many left before the edge
        # and why (the offload fraction by reason is this over rows).
        self.samples = Counter(
            f"{p}_samples", "Samples answered, by the path that answered and why", ["model", "path", "reason"],
            registry=r,
        )
        self.request_latency = Histogram(
            f"{p}_request_latency_seconds", "End-to-end latency of an inference request inside the server",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_latency = Histogram(
            f"{p}_queue_latency_seconds", "Time a request waited in the batching queue",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.compute_latency = Histogram(
            f"{p}_edge_compute_latency_seconds", "Backend predict() time per batch (edge compute)",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cloud_latency = Histogram(
            f"{p}_cloud_latency_seconds", "Cloud round trip per request, retries and hedges included",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            f"{p}_batch_size", "Samples per backend call", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.queue_depth = Gauge(f"{p}_queue_depth", "Requests waiting in the batching queue", ["model"], registry=r)
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
