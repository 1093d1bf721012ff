"""The accuracy–offload frontier of a Big/LITTLE cascade, and the point that meets a target.

Given, per labelled held-out sample, whether the edge and the cloud answer it correctly, the edge's score on
each escalation criterion (cascade_criteria.py), and which samples the gateway sends to the cloud before the
edge (inputs outside the accelerator's fixed-point range), every threshold gives one system: the samples the
criterion finds unsure are answered by the cloud, the rest by the edge. `frontier` evaluates all of them at
once; `choose` picks the one a target asks for. Pure numpy: the same inputs give the same choice every time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lepton_host.errors import LeptonError
from lepton_host.serving.cascade_criteria import Criterion


class CalibrationError(LeptonError):
    """Calibration cannot run on what it was given (labels, data, a target outside [0, 1])."""


@dataclass(frozen=True)
class Frontier:
    """One criterion's systems, ordered from no escalation to all of it."""

    criterion: str
    thresholds: np.ndarray  # escalate where score < t (or > t for escalate-above criteria)
    offload: np.ndarray  # fraction of samples answered by the cloud: pre-routed or escalated
    escalated: np.ndarray  # fraction escalated by the criterion after the edge answered
    accuracy: np.ndarray  # system accuracy


@dataclass(frozen=True)
class OperatingPoint:
    criterion: str
    threshold: float
    offload_fraction: float
    escalated_fraction: float
    pre_routed_fraction: float
    cascade_accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """What the chosen point must meet; at most one is set (none: `accuracy` = cloud-only - 0.3 pp)."""

    accuracy: float | None = None
    max_offload: float | None = None
    mean_latency_s: float | None = None

    def describe(self) -> str:
        if self.max_offload is not None:
            return f"best accuracy with at most {self.max_offload:.1%} offloaded"
        if self.mean_latency_s is not None:
            return f"best accuracy with a predicted mean latency of at most {self.mean_latency_s * 1e3:.3g} ms"
        return f"least offload with accuracy at least {self.accuracy:.2%}"


def _cut_points(sorted_scores: np.ndarray, escalate_above: bool) -> np.ndarray:
    """Thresholds between consecutive distinct scores (midpoints: a sample whose score ties the threshold is
    not a coin toss), from escalating none to escalating all."""
    u = np.unique(sorted_scores)
    if u.size == 0:
        return np.zeros(1)
    mids = (u[:-1] + u[1:]) / 2
    if escalate_above:  # escalate where s > t: from t above every score down to below every score
        return np.concatenate([[np.nextafter(u[-1], np.inf)], mids[::-1], [np.nextafter(u[0], -np.inf)]])
    return np.concatenate([[np.nextafter(u[0], -np.inf)], mids, [np.nextafter(u[-1], np.inf)]])


def frontier(criterion: Criterion, scores: np.ndarray, edge_correct: np.ndarray, cloud_correct: np.ndarray,
             pre_routed: np.ndarray) -> Frontier:
    """Every threshold of `criterion` over these samples. `scores` matter only for samples not pre-routed."""
    scores = np.asarray(scores, np.float64)
    edge_correct = np.asarray(edge_correct, bool)
    cloud_correct = np.asarray(cloud_correct, bool)
    pre_routed = np.asarray(pre_routed, bool)
    n = scores.size
    if n == 0:
        raise CalibrationError("no held-out samples to calibrate on")
    on_edge = ~pre_routed
    thresholds = _cut_points(np.sort(scores[on_edge]), criterion.escalate_above)
    s = scores[on_edge]
    gain = (cloud_correct[on_edge].astype(np.int64) - edge_correct[on_edge].astype(np.int64))
    # For each threshold: how many edge samples it escalates and the accuracy it gains by doing so.
    order = np.argsort(-s if criterion.escalate_above else s, kind="stable")
    s_sorted, gain_sorted = s[order], gain[order]
    if criterion.escalate_above:
        k = np.searchsorted(-s_sorted, -thresholds, side="left")  # count of s > t
    else:
        k = np.searchsorted(s_sorted, thresholds, side="left")  # count of s < t
    cum_gain = np.concatenate([[0], np.cumsum(gain_sorted)])
    base = int(edge_correct[on_edge].sum()) + int(cloud_correct[pre_routed].sum())
    accuracy = (base + cum_gain[k]) / n
    escalated = k / n
    offload = escalated + pre_routed.sum() / n
    return Frontier(criterion.name, thresholds, offload, escalated, accuracy)


def point(f: Frontier, i: int, pre_routed_fraction: float) -> OperatingPoint:
    return OperatingPoint(f.criterion, float(f.thresholds[i]), float(f.offload[i]), float(f.escalated[i]),
                          float(pre_routed_fraction), float(f.accuracy[i]))


def choose(frontiers: list[Frontier], target: Target, pre_routed_fraction: float,
           mean_latency_s=None) -> tuple[OperatingPoint, bool]:
    """-> (the point the target asks for, whether it meets the target).

    An accuracy target: the least offload that reaches it (then the higher accuracy); when none does, the most
    accurate point. An offload or latency limit: the most accurate point within it (then the less offload);
    when none is within, the least offload. Remaining ties go to the earlier criterion in `frontiers`, then to
    the lower threshold index. `mean_latency_s(escalated, pre_routed) -> s` is needed for a latency target."""
    by_accuracy = target.max_offload is None and target.mean_latency_s is None
    best, best_key = None, None
    for rank, f in enumerate(frontiers):
        for i in range(f.thresholds.size):
            acc, off = float(f.accuracy[i]), float(f.offload[i])
            if target.max_offload is not None:
                ok = off <= target.max_offload + 1e-12
            elif target.mean_latency_s is not None:
                ok = mean_latency_s(float(f.escalated[i]), pre_routed_fraction) <= target.mean_latency_s
            else:
                ok = acc >= target.accuracy - 1e-12
            cheap_first = ok if by_accuracy else not ok
            key = (ok, -off, acc) if cheap_first else (ok, acc, -off)
            key += (-rank,)
            if best_key is None or key > best_key:
                best, best_key = (f, i), key
    f, i = best
    return point(f, i, pre_routed_fraction), best_key[0]


def check_target(target: Target) -> None:
    if sum(v is not None for v in (target.accuracy, target.max_offload, target.mean_latency_s)) > 1:
        raise CalibrationError("give one target: an accuracy, a maximum offload or a latency budget")
    for name, v in (("target accuracy", target.accuracy), ("maximum offload", target.max_offload)):
        if v is not None and not 0.0 <= v <= 1.0:
            raise CalibrationError(f"the {name} is a fraction in [0, 1], got {v} (0.98 means 98%)")
    if target.mean_latency_s is not None and target.mean_latency_s <= 0:
        raise CalibrationError(f"the latency budget must be positive, got {target.mean_latency_s * 1e3:g} ms")
