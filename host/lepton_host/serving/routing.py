"""The routing policy: can the edge serve this request, or must the cloud?

Before the edge: a forced mode (tests, maintenance), edge health, the edge queue against the latency budget,
and each sample's preprocessed values against the fixed-point range the accelerator's input can represent (a
value outside it would saturate and the answer would be wrong). After the edge: a cascade, sending the samples
the accelerator is unsure about to the cloud model (classifier confidence below a threshold, autoencoder
reconstruction error above one). Every decision carries a reason that ends up in the response and the metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from lepton_host.manifest import Manifest

from .errors import BadRequest

MODES = ("auto", "edge", "cloud")

# Reasons (also metric label values).
FORCED = "forced"
IN_RANGE = "in_range"
EDGE_UNHEALTHY = "edge_unhealthy"
EDGE_BUSY = "edge_over_latency_budget"
EDGE_FAILED = "edge_failed"
OUT_OF_RANGE = "input_out_of_range"
LOW_CONFIDENCE = "low_confidence"
HIGH_ERROR = "high_reconstruction_error"
CLOUD_DOWN = "cloud_unavailable"
NO_CLOUD = "no_cloud"

POLICY_FILE = "serving.json"


@dataclass
class RoutingPolicy:
    mode: str = "auto"
    latency_budget_s: float | None = 0.050  # estimated edge queue wait above this -> cloud
    check_range: bool = True
    confidence_threshold: float | None = None  # classifiers: max softmax below this -> cloud (cascade)
    error_threshold: float | None = None  # autoencoders: MSE above this -> cloud (cascade)
    # When the cloud cannot take work the edge answers anyway (saturated or unsure) and says so.
    degrade_to_edge: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadRequest(f"routing mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def for_package(cls, manifest: Manifest, package_dir: str | Path | None = None, **overrides) -> RoutingPolicy:
        """Defaults from the manifest (the autoencoder's threshold), then `DIR/serving.json`, then overrides
        (command-line flags); keys left None in `overrides` do not override."""
        values: dict = {}
        if manifest.model.task == "autoencoder" and manifest.model.threshold is not None:
            values["error_threshold"] = manifest.model.threshold
        if package_dir is not None and (Path(package_dir) / POLICY_FILE).is_file():
            path = Path(package_dir) / POLICY_FILE
            try:
                loaded = json.loads(path.read_text()).get("routing", {})
            except (json.JSONDecodeError, AttributeError) as e:
                raise BadRequest(f"{path}: not a JSON object with a 'routing' section ({e})") from None
            known = {f.name for f in fields(cls)}
            unknown = set(loaded) - known
            if unknown:
                raise BadRequest(f"{path}: unknown routing keys {sorted(unknown)}; known: {sorted(known)}")
            values.update(loaded)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PreDecision:
    edge: np.ndarray  # bool per sample: try the edge
    reasons: np.ndarray  # object array of reason strings per sample


class Router:
    def __init__(self, policy: RoutingPolicy, manifest: Manifest):
        self.policy = policy
        self.manifest = manifest
        self.task = manifest.model.task
        self.input_format = manifest.input.format

    def before_edge(self, x_pre: np.ndarray, edge_healthy: bool, edge_wait_s: float, has_cloud: bool) -> PreDecision:
        n = x_pre.shape[0]
        p = self.policy
        if p.mode == "edge" or (p.mode == "auto" and not has_cloud):
            return PreDecision(np.ones(n, bool), np.full(n, FORCED if p.mode == "edge" else NO_CLOUD, object))
        if p.mode == "cloud":
            return PreDecision(np.zeros(n, bool), np.full(n, FORCED, object))
        if not edge_healthy:
            return PreDecision(np.zeros(n, bool), np.full(n, EDGE_UNHEALTHY, object))
        if p.latency_budget_s is not None and edge_wait_s > p.latency_budget_s:
            return PreDecision(np.zeros(n, bool), np.full(n, EDGE_BUSY, object))
        edge = np.ones(n, bool)
        reasons = np.full(n, IN_RANGE, object)
        if p.check_range:
            ok = self.input_format.representable(x_pre).reshape(n, -1).all(axis=1)
            edge &= ok
            reasons[~ok] = OUT_OF_RANGE
        return PreDecision(edge, reasons)

    def escalate(self, x_pre: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
        """Samples whose edge answer should be replaced by the cloud model's (the cascade) -> (mask, reason)."""
        n = y.shape[0]
        if self.policy.mode != "auto":
            return np.zeros(n, bool), ""
        if self.task == "classifier" and self.policy.confidence_threshold is not None:
            return confidence(y) < self.policy.confidence_threshold, LOW_CONFIDENCE
        if self.task == "autoencoder" and self.policy.error_threshold is not None:
            return reconstruction_error(x_pre, y) > self.policy.error_threshold, HIGH_ERROR
        return np.zeros(n, bool), ""


def confidence(y: np.ndarray) -> np.ndarray:
    """Max class probability per sample. Outputs that already are probabilities (a softmax head, within
    fixed-point rounding) are used as they are; logits go through a softmax first."""
    y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    if y.size and (y >= 0).all() and np.allclose(y.sum(axis=1), 1.0, atol=0.05):
        return y.max(axis=1)
    z = np.exp(y - y.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).max(axis=1)


def reconstruction_error(x_pre: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = np.asarray(x_pre, dtype=np.float64).reshape(x_pre.shape[0], -1)
    y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
    if x.shape != y.shape:
        raise BadRequest(f"autoencoder output shape {y.shape[1:]} differs from its input {x.shape[1:]}")
    return ((x - y) ** 2).mean(axis=1)
