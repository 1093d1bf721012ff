"""The cascade's latency, predicted from measured edge and cloud latencies.

A request the edge answers alone takes the edge's latency; one the cascade escalates takes the edge's and
then the cloud's; one sent to the cloud before the edge (out of range) takes the cloud's. With measured samples
of each path, the mixture's mean and percentiles follow without assuming a distribution: the escalated path's
latencies are sums of an edge and a cloud sample (all pairs, or a fixed-seed subset of them when that is many).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_PAIRS = 200_000


@dataclass(frozen=True)
class LatencyPrediction:
    mean_s: float
    p50_s: float
    p99_s: float

    def to_dict(self) -> dict:
        return {"mean_ms": self.mean_s * 1e3, "p50_ms": self.p50_s * 1e3, "p99_ms": self.p99_s * 1e3}


class LatencyModel:
    def __init__(self, edge_s, cloud_s, seed: int = 0):
        self.edge = np.sort(np.asarray(edge_s, np.float64))
        self.cloud = np.sort(np.asarray(cloud_s, np.float64))
        if self.edge.size == 0 or self.cloud.size == 0:
            raise ValueError("the latency model needs at least one edge and one cloud latency")
        n_pairs = self.edge.size * self.cloud.size
        if n_pairs <= MAX_PAIRS:
            both = (self.edge[:, None] + self.cloud[None, :]).ravel()
        else:
            rng = np.random.default_rng(seed)
            both = (rng.choice(self.edge, MAX_PAIRS) + rng.choice(self.cloud, MAX_PAIRS))
        self.both = np.sort(both)

    def mean_s(self, escalated: float, pre_routed: float) -> float:
        edge_only = 1.0 - escalated - pre_routed
        return float(edge_only * self.edge.mean() + escalated * self.both.mean() + pre_routed * self.cloud.mean())

    def quantile_s(self, q: float, escalated: float, pre_routed: float) -> float:
        """The q-quantile (0..1) of the mixture: the smallest latency whose mixture CDF reaches q."""
        weights = (1.0 - escalated - pre_routed, escalated, pre_routed)
        paths = (self.edge, self.both, self.cloud)
        grid = np.unique(np.concatenate([p for p, w in zip(paths, weights) if w > 0]))

        def cdf(x):
            return sum(w * np.searchsorted(p, x, side="right") / p.size for p, w in zip(paths, weights) if w > 0)

        c = cdf(grid)
        i = int(np.searchsorted(c, q - 1e-12, side="left"))
        return float(grid[min(i, grid.size - 1)])

    def predict(self, escalated: float, pre_routed: float) -> LatencyPrediction:
        return LatencyPrediction(self.mean_s(escalated, pre_routed), self.quantile_s(0.5, escalated, pre_routed),
                                 self.quantile_s(0.99, escalated, pre_routed))


def summarize(latencies_s) -> LatencyPrediction:
    """The same numbers, measured: mean, p50, p99 of observed latencies."""
    v = np.asarray(latencies_s, np.float64)
    return LatencyPrediction(float(v.mean()), float(np.percentile(v, 50)), float(np.percentile(v, 99)))
