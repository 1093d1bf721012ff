"""Prometheus metrics of the model lifecycle (versions, switches, canaries), in the node's serving registry."""

from __future__ import annotations

from prometheus_client import Counter, Gauge


class LifecycleMetrics:
    def __init__(self, registry, prefix: str = "lepton_gateway"):
        p = prefix
        self.answers = Counter(f"{p}_version_answers", "Inference requests answered, by model version and path",
                               ["model", "version", "path"], registry=registry)
        self.transitions = Counter(
            f"{p}_version_transitions",
            "Version lifecycle events: serving, canary, promoted, rolled back, refused, unloaded",
            ["model", "version", "event"], registry=registry)
        self.serving = Gauge(f"{p}_serving_version", "The version that answers unversioned requests", ["model"],
                             registry=registry)
        self.share = Gauge(f"{p}_canary_share", "Share of unversioned requests sent to the canary version", ["model"],
                           registry=registry)

    def answered(self, model: str, version: int, path: str) -> None:
        self.answers.labels(model, str(version), path).inc()

    def transition(self, model: str, version: int, event: str) -> None:
        self.transitions.labels(model, str(version), event).inc()
        if event in ("serving", "promoted"):
            self.serving.labels(model).set(version)

    def canary_share(self, model: str, share: float) -> None:
        self.share.labels(model).set(share)
