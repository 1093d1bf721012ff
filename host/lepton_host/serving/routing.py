"""The routing policy: can the edge serve this request, or must the cloud?

Before the edge: a forced mode (tests, maintenance), edge health, the edge queue against the latency budget,
and each sample's preprocessed values against the fixed-point range the accelerator's input can represent (a
value outside it would saturate and the answer would be wrong). After the edge: a cascade, sending the samples
the accelerator is unsure about to the cloud model (classifier confidence below a threshold, autoencoder
reconstruction error above one). Every decision carries a reason that ends up in the response and the metrics.

`plan_route` decides all of it for one request, as a pure function of the policy and the request's facts, and
returns a `RoutePlan`: where each sample goes first and why, the cascade check, and the fallbacks when a path
fails. `plan_executor.py` carries the plan out; the cloud's circuit breaker stays with the cloud client, whose
refusal is one more way the cloud fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from lepton_host.manifest import Manifest

from . import cascade_criteria as C
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
    confidence_threshold: float | None = None  # classifiers: confidence below this -> cloud (cascade)
    error_threshold: float | None = None  # autoencoders: MSE above this -> cloud (cascade)
    # How a classifier's confidence is measured (cascade_criteria.py); None: max probability.
    cascade_criterion: str | None = None
    # When the cloud cannot take work the edge answers anyway (saturated or unsure) and says so.
    degrade_to_edge: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise BadRequest(f"routing mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.cascade_criterion is not None and self.cascade_criterion not in C.CRITERIA:
            raise BadRequest(f"unknown cascade criterion {self.cascade_criterion!r}; known: {', '.join(C.CRITERIA)}")

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


# ---- the plan: what the gateway does with one request ------------------------------------------------------
# The decision is a pure function of the policy and the request's facts (no I/O, no clock), so every row of the
# decision table can be checked on its own; `plan_executor.py` carries a plan out.

# Steps, in the order the executor starts them.
STEP_CLOUD = "cloud"  # the samples not tried on the edge go to the cloud (concurrently with the edge)
STEP_EDGE = "edge"  # the edge samples go to the accelerator through the batcher
STEP_CASCADE = "cascade"  # the edge's unsure answers go to the cloud (classifier confidence, autoencoder error)


@dataclass(frozen=True)
class RequestFacts:
    """What the gateway knows about a request and its paths when it arrives."""

    n: int  # samples in the request
    edge_healthy: bool  # the board is in service and no batch is hung
    edge_wait_s: float  # the batcher's estimate of the queue wait for new work
    has_cloud: bool  # a cloud is configured (whether it answers is the cloud client's business: breaker, retries)
    # Per sample: preprocessed values inside the input's fixed-point range. Only needed when the range decides
    # (see `needs_range_check`); None otherwise.
    in_range: np.ndarray | None = None


@dataclass(frozen=True)
class RoutePlan:
    """Where each sample goes first and why, and what happens after the edge or when a path fails."""

    edge: np.ndarray  # bool per sample: the edge answers it first (else the cloud)
    reasons: np.ndarray  # object array: the reason per sample (a metric label value)
    cascade: str = ""  # LOW_CONFIDENCE / HIGH_ERROR: the edge's unsure answers go to the cloud; "": none
    # An edge batch that fails goes to the cloud (else the request fails: no path left).
    cloud_if_edge_fails: bool = False
    # A cloud that cannot answer leaves its samples to the edge, marked degraded, if the edge is in service at
    # that moment (else the request fails). The cascade's unsure answers always stand when the cloud fails.
    edge_if_cloud_fails: bool = False
    # (to the edge?, reason) when every sample goes the same way for the same reason; None: they differ, or the
    # plan's maker did not say.
    whole: tuple[bool, str] | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        steps = []
        if not self.edge.all():
            steps.append(STEP_CLOUD)
        if self.edge.any():
            steps.append(STEP_EDGE)
            if self.cascade:
                steps.append(STEP_CASCADE)
        return tuple(steps)


def whole_request_route(policy: RoutingPolicy, facts: RequestFacts) -> tuple[bool, str] | None:
    """(to the edge?, reason) when one rule decides for every sample of the request, in order of precedence;
    None when each sample goes by its range check."""
    return _whole_request_route(policy, facts.edge_healthy, facts.edge_wait_s, facts.has_cloud)


def _whole_request_route(policy: RoutingPolicy, edge_healthy: bool, edge_wait_s: float,
                         has_cloud: bool) -> tuple[bool, str] | None:
    if policy.mode == "edge":
        return _EDGE_FORCED
    if policy.mode == "auto" and not has_cloud:
        return _EDGE_NO_CLOUD
    if policy.mode == "cloud":
        return _CLOUD_FORCED
    if not edge_healthy:
        return _CLOUD_EDGE_UNHEALTHY
    if policy.latency_budget_s is not None and edge_wait_s > policy.latency_budget_s:
        return _CLOUD_EDGE_BUSY
    if not policy.check_range:
        return _EDGE_IN_RANGE
    return None


_EDGE_FORCED, _EDGE_NO_CLOUD, _EDGE_IN_RANGE = (True, FORCED), (True, NO_CLOUD), (True, IN_RANGE)
_CLOUD_FORCED, _CLOUD_EDGE_UNHEALTHY, _CLOUD_EDGE_BUSY = (False, FORCED), (False, EDGE_UNHEALTHY), (False, EDGE_BUSY)


def needs_range_check(policy: RoutingPolicy, facts: RequestFacts) -> bool:
    """Whether the plan depends on `facts.in_range` (computing it costs more than the rest of the plan)."""
    return whole_request_route(policy, facts) is None


def cascade_check(policy: RoutingPolicy, task: str) -> str:
    """The check that escalates the edge's answers for this policy and model task: a reason, or ""."""
    if policy.mode != "auto":
        return ""
    if task == "classifier" and policy.confidence_threshold is not None:
        return LOW_CONFIDENCE
    if task == "autoencoder" and policy.error_threshold is not None:
        return HIGH_ERROR
    return ""


def plan_route(policy: RoutingPolicy, task: str, facts: RequestFacts) -> RoutePlan:
    """The plan for one request: pure, from the policy, the model's task and the request's facts."""
    n = facts.n
    whole = whole_request_route(policy, facts)
    if whole is not None:
        to_edge, reason = whole
        edge = np.ones(n, bool) if to_edge else np.zeros(n, bool)
        reasons = np.full(n, reason, object)
    else:
        if facts.in_range is None:
            raise ValueError("the range check decides this request: pass RequestFacts.in_range")
        edge = np.array(facts.in_range, dtype=bool).reshape(n)
        reasons = np.full(n, IN_RANGE, object)
        reasons[~edge] = OUT_OF_RANGE
        whole = (True, IN_RANGE) if edge.all() else (False, OUT_OF_RANGE) if not edge.any() else None
    return RoutePlan(
        edge, reasons,
        cascade=cascade_check(policy, task) if facts.has_cloud else "",
        cloud_if_edge_fails=facts.has_cloud,
        edge_if_cloud_fails=policy.degrade_to_edge and policy.mode != "cloud",
        whole=whole,
    )


PLAN_CACHE_ROWS = 64  # plans decided for the whole request are kept for requests of up to this many samples


class Router:
    """The policy applied to one model: the plan for a request (computing its range check when the plan
    depends on it) and, after the edge, the samples to escalate. The policy is fixed for the router's life: a
    plan that one rule decides for the whole request depends only on that rule and the request's size, and is
    made once (its arrays read-only) and reused."""

    def __init__(self, policy: RoutingPolicy, manifest: Manifest):
        self.policy = policy
        self.manifest = manifest
        self.task = manifest.model.task
        self.input_format = manifest.input.format
        self._lo, self._hi = self.input_format.min_value, self.input_format.max_value
        self.criterion = C.criterion(policy.cascade_criterion, self.task) if self.task in C.DEFAULT_CRITERION else None
        self._plans: dict[tuple, RoutePlan] = {}

    def in_range(self, x_pre: np.ndarray) -> np.ndarray:
        """Per sample: every preprocessed value representable in the accelerator's input format (the format's
        `representable`, as two comparisons against its bounds)."""
        flat = x_pre.reshape(x_pre.shape[0], -1)
        return (flat >= self._lo).all(axis=1) & (flat <= self._hi).all(axis=1)

    def plan(self, x_pre: np.ndarray, edge_healthy: bool, edge_wait_s: float, has_cloud: bool) -> RoutePlan:
        n = x_pre.shape[0]
        whole = _whole_request_route(self.policy, edge_healthy, edge_wait_s, has_cloud)
        if whole is None:
            return plan_route(self.policy, self.task,
                              RequestFacts(n, edge_healthy, edge_wait_s, has_cloud, self.in_range(x_pre)))
        key = (n, whole, has_cloud)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_route(self.policy, self.task, RequestFacts(n, edge_healthy, edge_wait_s, has_cloud))
            if n <= PLAN_CACHE_ROWS:
                plan.edge.flags.writeable = plan.reasons.flags.writeable = False
                self._plans[key] = plan
        return plan

    before_edge = plan  # the plan's `edge` and `reasons` say where each sample goes first and why

    def escalate(self, x_pre: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, str]:
        """Samples whose edge answer should be replaced by the cloud model's (the cascade) -> (mask, reason)."""
        check = cascade_check(self.policy, self.task)
        if check == LOW_CONFIDENCE:
            return self.criterion.unsure(x_pre, y, self.policy.confidence_threshold), check
        if check == HIGH_ERROR:
            return self.criterion.unsure(x_pre, y, self.policy.error_threshold), check
        return np.zeros(y.shape[0], bool), ""


# The scores themselves live in cascade_criteria.py (shared with calibration).
confidence = C.max_probability
reconstruction_error = C.reconstruction_error
